"""What several ``tests/geo`` files share: the bundled NAIP pair, real files from ../shared/data, test grids."""

from __future__ import annotations

from pathlib import Path

import pytest
from make_fixtures import ORIGIN_UTM, UTM18, from_origin
from shapely.geometry import Polygon

TESTS = Path(__file__).parents[1]
NAIP_2020 = TESTS / "data" / "naip_2020_256.tif"
NAIP_2009 = TESTS / "data" / "naip_2009_256.tif"
SHARED = TESTS.parent / ".." / "shared" / "data"

# One projected, one geographic and one distorting CRS, each with a plausible pixel size.
GRIDS = {
    "utm": (UTM18, from_origin(*ORIGIN_UTM, 10, 10)),
    "4326": ("EPSG:4326", from_origin(-75.0, 37.0, 1e-4, 1e-4)),
    "3857": ("EPSG:3857", from_origin(-8_350_000.0, 4_450_000.0, 12.5, 12.5)),
}


def shared(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"{relative} not in ../shared/data")
    return path


def is_ccw(ring: list) -> bool:
    return Polygon(ring).exterior.is_ccw


def one_line(error: pytest.ExceptionInfo) -> str:
    """The error's message, checked to be one line and a ValueError (a RasterError), never a GDAL traceback."""
    message = str(error.value)
    assert "\n" not in message and message, message
    assert isinstance(error.value, ValueError)
    return message
