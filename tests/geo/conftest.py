"""The code-written GeoTIFF/PNG/JPEG fixtures of ``tests/make_fixtures.py``, written once per test file."""

from __future__ import annotations

from pathlib import Path

import pytest
from make_fixtures import write_all


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> dict[str, Path]:
    return write_all(tmp_path_factory.mktemp("geo"))
