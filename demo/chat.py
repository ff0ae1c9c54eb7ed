"""The chat's event handlers: load, ask (streamed, with progress and Stop), export, reset — one per user action.

Each handler finds the caller's ``ChatSession`` by its Gradio session hash (``demo.sessions``), so concurrent users
never share a conversation, an image or a file. Handlers return plain values and ``gr.update``s in the order of
the output lists ``demo.app`` wires them to (``LOAD_OUTPUTS`` ...), so tests drive them without a browser.
Nothing here knows about models or geometry beyond calling the session and drawing its answer.
"""

import logging
from pathlib import Path
from typing import Any

import gradio as gr

from demo import examples, render
from demo.exports import TABLE_HEADERS, region_rows, regions_summary, write_exports
from demo.sessions import ChatSession, Sessions
from demo.turns import Finished, Progress, Stopped, run_turn
from demo.uploads import describe_source, one_line, parse_bands, read_images, receive
from rsvlm.assistant import Answer, Assistant, WindowBudget

logger = logging.getLogger(__name__)

# What the library's messages name as code, said as the page's controls.
PAGE_WORDS = {
    "(max_tiles)": "(raise “Window budget” in Options)",
    "(time_budget_s)": "(raise “Time budget” in Options)",
    "pass bands=[...] (1-based indexes) or another preset": "set “Band indices” (e.g. 4,3,2) or another “Band preset” in Options",
    "(pass bands=[...] to choose)": "(choose them with “Band indices” in Options)",
    "(rsvlm serve --max-file-size)": "(the server's --max-file-size)",
}
DEFAULT_WINDOW_BUDGET = 100
DEFAULT_TIME_BUDGET_S = 60


def for_the_page(text: str) -> str:
    for code, words in PAGE_WORDS.items():
        text = text.replace(code, words)
    return text


def _key(request) -> str | None:
    return getattr(request, "session_hash", None)


def _error(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": f"⚠️ {for_the_page(text)}"}


def _notes(warnings: list[str]) -> dict[str, Any]:
    lines = "\n".join(f"- {for_the_page(w)}" for w in dict.fromkeys(warnings))
    return {"role": "assistant", "content": f"**Notes**\n{lines}"}


class ChatApp:
    """The handlers, bound to one assistant; every per-user thing lives in the caller's ``ChatSession``."""

    def __init__(
        self,
        assistant: Assistant,
        *,
        checkpoint: str = "default",
        max_new_tokens: int = 128,
        max_file_size: int | None = None,
    ):
        self.assistant = assistant
        self.checkpoint = checkpoint
        self.max_new_tokens = max_new_tokens
        self.max_file_size = max_file_size
        self.sessions = Sessions(assistant)

    def chat(self, request) -> ChatSession:
        return self.sessions.get(_key(request))

    # ----------------------------------------------------------------------------------------------------------
    # /load: outputs LOAD_OUTPUTS = (files, status, map, before/after, chat, regions, date 1, date 2)
    def load(self, files, preset: str | None, band_indices: str | None, request: gr.Request):
        """New image(s): moved into the session's folder, read, a new conversation. A bad upload is one chat
        line naming the file, and is cleared from the upload box."""
        chat = self.chat(request)
        if not files:
            chat.clear_images()
            return self._loaded(chat, files=None)
        try:
            bands = parse_bands(preset, band_indices)
            paths, names = receive(files, chat, self.max_file_size)
        except ValueError as error:
            return self._refused(chat, error, [])
        return self._open(chat, paths, names, bands, files=gr.update())

    def reload(self, preset: str | None, band_indices: str | None, request: gr.Request):
        """The band options changed: the same image(s) read again with them."""
        chat = self.chat(request)
        if not chat.paths:
            return self._loaded(chat, files=gr.update())
        try:
            bands = parse_bands(preset, band_indices)
        except ValueError as error:
            chat.messages = [*chat.messages, _error(one_line(error))]
            return self._loaded(chat, files=gr.update(), dates=(gr.update(), gr.update()))
        return self._open(chat, list(chat.paths), list(chat.names), bands, files=gr.update())

    def load_example(self, request: gr.Request):
        """The gallery example picked by ``claim_example``: its image(s) and band preset."""
        chat = self.chat(request)
        example = examples.EXAMPLES[chat.example]
        chat.clear_images()
        return self._open(chat, example.paths, list(example.files), example.bands, files=None)

    def _open(self, chat: ChatSession, paths, names, bands, files):
        try:
            previews, sources = read_images(paths, bands)
            chat.session.set_images(paths, bands=bands)  # reads at model size; aligns two dates
        except (ValueError, OSError) as error:
            return self._refused(chat, error, paths)
        chat.paths, chat.names, chat.bands = list(paths), list(names), bands
        chat.previews, chat.sources, chat.answer = previews, sources, None
        note = f"Loaded {describe_source(names, sources, bands)}. Ask a question, or pick a suggestion below."
        chat.messages = [{"role": "assistant", "content": note}]
        warnings = [w for p in previews for w in p.warnings]
        if warnings:
            chat.messages.append(_notes(warnings))
        dates = chat.session.dates if len(paths) == 2 and chat.session.dates else ("", "")
        return self._loaded(chat, files=files, dates=dates)

    def _refused(self, chat: ChatSession, error: BaseException, paths):
        chat.clear_images()
        chat.messages = [*chat.messages, _error(one_line(error, list(paths)))]
        return self._loaded(chat, files=None)  # the upload box is cleared: nothing stays listed

    def _loaded(self, chat: ChatSession, files, dates=("", "")):
        image, slider = self._views(chat)
        return (files, self.status(chat), image, slider, _shown(chat), _table(None), *dates)

    # ----------------------------------------------------------------------------------------------------------
    # A question is claimed first (Ask disabled, Stop shown), so one typed while an answer runs stays in its box.
    def claim(self, question: str, request: gr.Request, keep_box: bool = False):
        """-> (question box, question sent, Ask button, Stop button)."""
        chat = self.chat(request)
        if chat.busy:
            raise gr.Error(
                "An answer is still running: your question stays in the box (Stop ends the answer).",
                print_exception=False,
            )
        chat.busy = True
        box = gr.update() if keep_box else ""
        return box, question, gr.update(interactive=False), gr.update(visible=True)

    def claim_suggestion(self, text: str, request: gr.Request):
        return self.claim(text, request, keep_box=True)  # what the user was typing stays

    def claim_example(self, evt: gr.SelectData, request: gr.Request):
        self.chat(request).example = evt.index
        return self.claim(examples.EXAMPLES[evt.index].question, request, keep_box=True)

    def release(self, request: gr.Request):
        self.chat(request).busy = False
        return gr.update(interactive=True), gr.update(visible=False)

    def stop(self, request: gr.Request) -> None:
        self.chat(request).stop.set()

    # /ask: outputs ASK_OUTPUTS = (chat, map, before/after, regions)
    def ask(
        self,
        question: str,
        date1: str,
        date2: str,
        window_budget: float,
        time_budget_s: float,
        request: gr.Request,
    ):
        """Stream one answer into the chat: a status line (seconds, windows read / to read), the text as the
        language pass writes it, then the regions on the map and in the table."""
        chat = self.chat(request)
        question = (question or "").strip()
        keep = (gr.update(), gr.update(), gr.update())
        if not question:
            chat.messages = [*chat.messages, _error("the question is empty")]
            yield _shown(chat), *keep
            return
        if not chat.paths:
            error = _error("upload an image (GeoTIFF, PNG or JPEG) or pick an example first")
            chat.messages = [*chat.messages, {"role": "user", "content": question}, error]
            yield _shown(chat), *keep
            return
        chat.busy = True
        chat.stop.clear()
        finished = False
        status: dict[str, Any] = {
            "role": "assistant",
            "content": "",
            "metadata": {"title": "Reading the image…", "status": "pending"},
        }
        reply: dict[str, Any] = {"role": "assistant", "content": ""}
        try:
            dates = self._dates(chat, date1, date2)
            budget = WindowBudget(
                max_windows=max(0, int(window_budget)),
                seconds=float(time_budget_s) if time_budget_s else None,
            )
            chat.messages = [*chat.messages, {"role": "user", "content": question}, status, reply]
            yield _shown(chat), *keep
            step: Progress = Progress()
            try:
                for step in run_turn(
                    chat.session,
                    question,
                    stop=chat.stop,
                    dates=dates,
                    budget=budget,
                    max_new_tokens=self.max_new_tokens,
                ):
                    if isinstance(step, Finished):
                        break
                    status["metadata"] = {"title": _running_title(step), "status": "pending"}
                    reply["content"] = step.text
                    yield _shown(chat), *keep
            except Stopped:
                status["metadata"] = {"title": f"Stopped after {step.elapsed_s:.0f} s", "status": "done"}
                reply["content"] = f"{step.text} …" if step.text else "(stopped before any text)"
                yield _shown(chat), *keep
                finished = True
                return
            answer: Answer = step.answer  # type: ignore[attr-defined]
            chat.answer = answer
            chat.turns += 1
            status["metadata"] = {"title": _done_title(answer, step), "status": "done"}
            reply["content"] = answer.text or "(no text)"
            if answer.warnings:
                chat.messages.append(_notes(answer.warnings))
            image, slider = self._views(chat, answer)
            finished = True
            yield _shown(chat), image, slider, _table(answer)
        except Exception as error:  # one line in the chat; the app keeps serving
            if not isinstance(error, (ValueError, OSError)):
                logger.exception("the assistant failed", exc_info=error)
            chat.messages = [m for m in chat.messages if m is not status and m is not reply]
            chat.messages.append(_error(one_line(error, chat.paths)))
            finished = True
            yield _shown(chat), *keep
        finally:
            if not finished:
                chat.stop.set()  # the page went away mid-answer: let the worker end early
            chat.busy = False

    def _dates(self, chat: ChatSession, date1: str, date2: str) -> tuple[str, str] | None:
        """The date labels typed in Options (either may be blank: the file-name label stays); a change of labels
        is said in the chat, and the conversation goes on under them."""
        if len(chat.paths) != 2 or chat.session.dates is None:
            return None
        old = chat.session.dates
        new = ((date1 or "").strip() or old[0], (date2 or "").strip() or old[1])
        if new != old and chat.session.history:
            chat.messages = [
                *chat.messages,
                {
                    "role": "assistant",
                    "content": f"Dates now {new[0]} and {new[1]}; the conversation goes on with them.",
                },
            ]
        return new

    # ----------------------------------------------------------------------------------------------------------
    # /export: outputs EXPORT_OUTPUTS = (GeoJSON, mask GeoTIFF, CSV)
    def export(self, request: gr.Request):
        """The last answer's files, written under generated names in the session's own folder."""
        chat = self.chat(request)
        hidden = gr.update(value=None, visible=False)
        if chat.answer is None:
            return hidden, hidden, hidden
        try:
            files = write_exports(chat.answer, chat.folder, chat.turns)
        except (ValueError, OSError) as error:
            chat.messages = [*chat.messages, _error(one_line(error))]
            return hidden, hidden, hidden
        return tuple(
            gr.update(value=path, visible=True) if path else hidden
            for path in (files.geojson, files.mask, files.csv)
        )

    # /reset: outputs RESET_OUTPUTS = (chat, map, before/after, regions, GeoJSON, mask GeoTIFF, CSV)
    def reset(self, request: gr.Request):
        """A new conversation on the same image(s)."""
        chat = self.chat(request)
        chat.session.reset()
        chat.answer = None
        chat.messages = []
        image, slider = self._views(chat)
        hidden = gr.update(value=None, visible=False)
        return [], image, slider, _table(None), hidden, hidden, hidden

    def suggest(self, request: gr.Request):
        """The suggestion buttons for what is loaded (change questions only with two dates)."""
        texts = examples.suggestions(len(self.chat(request).paths))
        return tuple(gr.update(value=t) for t in texts)

    def close_session(self, request: gr.Request) -> None:
        """The tab closed or the client went away: the session's folder goes with it."""
        self.sessions.close(_key(request))

    # ----------------------------------------------------------------------------------------------------------
    def model_line(self) -> str:
        config = self.assistant.model.config
        device = self.assistant.model.device.type.upper()
        dtype = str(self.assistant.dtype).removeprefix("torch.")
        trained = "" if not self.assistant.warnings else " (untrained adapters)"
        llm, vision = (
            Path(str(name)).name for name in (config.text_model, config.vision_model)
        )  # names, not paths
        return f"**Model** {Path(self.checkpoint).name}{trained} · LLM {llm} · vision {vision} · {dtype} on {device}"

    def status(self, chat: ChatSession | None) -> str:
        loaded = chat is not None and chat.sources
        image = describe_source(chat.names, chat.sources, chat.bands) if loaded else "none loaded"
        return f"{self.model_line()}  \n**Image** {image}"

    def _views(self, chat: ChatSession, answer: Answer | None = None):
        """(map, before/after): one image with its regions, or two dates in a slider with the change regions
        over the later date (regions are on the reference image: the later date of a pair)."""
        if not chat.previews:
            return gr.update(value=None, visible=True), gr.update(value=None, visible=False)
        arrays = [render.to_uint8(p) for p in chat.previews]
        if answer is not None and answer.regions:
            reference = chat.previews[-1]
            scale = reference.scale / render.display_factor(reference)
            arrays[-1] = render.draw_regions(arrays[-1], answer.regions, scale=scale)
        if len(arrays) == 1:
            return gr.update(value=arrays[0], visible=True), gr.update(value=None, visible=False)
        labels = chat.session.dates or tuple(chat.names)
        before, after = render.same_size(arrays)
        pair = (
            render.captioned(before, labels[0]),
            render.captioned(after, labels[1], corner="bottom-right"),
        )
        return gr.update(value=None, visible=False), gr.update(value=pair, visible=True)


def _shown(chat: ChatSession) -> list[dict[str, Any]]:
    """The messages as of now: copies, since the running answer keeps updating its own status and reply."""
    return [{**m, "metadata": dict(m["metadata"])} if "metadata" in m else dict(m) for m in chat.messages]


def _running_title(step: Progress) -> str:
    if step.windows is None:
        what = "Writing the answer" if step.text else "Reading the image"
        return f"{what}… {step.elapsed_s:.0f} s"
    done, total = step.windows
    return f"Reading full-resolution windows {done}/{total}… {step.elapsed_s:.0f} s"


def _done_title(answer: Answer, step: Progress) -> str:
    title = f"Answered in {step.elapsed_s:.1f} s"
    if step.first_text_s is not None:
        title += f" (first text at {step.first_text_s:.1f} s)"
    if answer.windows > 1 and (answer.tiles or answer.regions):
        title += f" · {answer.tiles} of {answer.windows} windows read at full resolution"
    elif answer.windows > 1:
        title += " · one pass on the overview (no regions to decode)"
    return title


def _table(answer: Answer | None) -> dict[str, Any]:
    rows = region_rows(answer)
    return gr.update(value={"headers": TABLE_HEADERS, "data": rows}, label=regions_summary(answer))
