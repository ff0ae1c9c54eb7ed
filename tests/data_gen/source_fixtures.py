"""Tiny georeferenced fixtures for the data_gen source tests, written by code (torchgeo style).

The base scene is 96 x 80 px at 1 m in UTM 33N (EPSG:32633), origin (500000, 5000080): an RGBN uint8 image
whose left third is vegetation (high NIR), middle third bare soil, right third water (green > NIR), and a
label raster on the same grid with a building block, a road row, woodland and water.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine

CRS = "EPSG:32633"
X0, Y0 = 500_000.0, 5_000_080.0
W, H = 96, 80
TRANSFORM = Affine(1.0, 0.0, X0, 0.0, -1.0, Y0)
DATA = Path(__file__).resolve().parents[2] / "../shared/data"
REPO_DATA = Path(__file__).resolve().parents[1] / "data"


def write_raster(path: Path, arr: np.ndarray, crs: str | None = CRS, transform: Affine | None = TRANSFORM,
                 nodata: float | None = None, driver: str = "GTiff") -> Path:  # fmt: skip
    """Write [C, H, W] (or [H, W]) ``arr`` to ``path``; ``crs=None`` writes a plain raster without georeference."""
    arr = arr[None] if arr.ndim == 2 else arr
    profile = {"driver": driver, "count": arr.shape[0], "height": arr.shape[1], "width": arr.shape[2],
               "dtype": arr.dtype.name}  # fmt: skip
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    if nodata is not None:
        profile["nodata"] = nodata
    path.parent.mkdir(parents=True, exist_ok=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(arr)
    return path


def base_labels() -> np.ndarray:
    """[H, W] uint8 under landcover.ai: 0 background, 1 building, 2 woodland, 3 water, 4 road."""
    lab = np.zeros((H, W), np.uint8)
    lab[:, :32] = 2  # woodland, left third
    lab[:, 64:] = 3  # water, right third
    lab[40:44, :64] = 4  # a road across the land
    lab[10:20, 40:52] = 1  # a building on bare ground
    lab[55:60, 36:44] = 1  # a second building
    return lab


def base_rgbn() -> np.ndarray:
    """[4, H, W] uint8 RGBN matching :func:`base_labels` spectrally (vegetation, soil, water)."""
    lab = base_labels()
    colours = {0: (150, 120, 90, 140), 1: (200, 200, 200, 180), 2: (40, 90, 40, 200), 3: (30, 60, 90, 20),
               4: (180, 180, 180, 170)}  # fmt: skip
    img = np.zeros((4, H, W), np.uint8)
    for v, c in colours.items():
        for b in range(4):
            img[b][lab == v] = c[b]
    return img


def write_scene(folder: Path, nodata_rows: int = 0) -> dict[str, Path]:
    """The base image (RGBN GeoTIFF) and its labels on the same grid. ``nodata_rows`` blanks the bottom rows."""
    img = base_rgbn()
    if nodata_rows:
        img[:, H - nodata_rows :] = 0
    return {
        "image": write_raster(folder / "image.tif", img, nodata=0),
        "labels": write_raster(folder / "labels.tif", base_labels()),
    }


def write_osm(path: Path, lon0: float, lat0: float, dlon: float, dlat: float) -> Path:
    """A hand-written .osm with a building, a named residential road and a named canal inside the given box."""

    def node(i: int, fx: float, fy: float) -> str:
        return f'<node id="{i}" version="1" lat="{lat0 + fy * dlat:.8f}" lon="{lon0 + fx * dlon:.8f}"/>'

    nodes = [node(1, 0.45, 0.7), node(2, 0.55, 0.7), node(3, 0.55, 0.8), node(4, 0.45, 0.8),
             node(5, 0.05, 0.5), node(6, 0.95, 0.5), node(7, 0.8, 0.05), node(8, 0.8, 0.95)]  # fmt: skip
    ways = [
        '<way id="100" version="1"><nd ref="1"/><nd ref="2"/><nd ref="3"/><nd ref="4"/><nd ref="1"/>'
        '<tag k="building" v="yes"/></way>',
        '<way id="101" version="1"><nd ref="5"/><nd ref="6"/><tag k="highway" v="residential"/>'
        '<tag k="name" v="Mill Lane"/></way>',
        '<way id="102" version="1"><nd ref="7"/><nd ref="8"/><tag k="waterway" v="canal"/>'
        '<tag k="name" v="Old Canal"/></way>',
    ]
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6">\n'
        + "\n".join(nodes + ways)
        + "\n</osm>\n"
    )
    path.write_text(text)
    return path
