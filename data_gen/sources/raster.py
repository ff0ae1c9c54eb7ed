"""Raster reading onto one pixel grid: the image grid of a scene, or a tile window of it.

Everything a source reads (labels, second date, change mask, band files) goes through :func:`read_onto`, which
reads a window directly when the rasters share a grid and reprojects (``rasterio.warp.reproject``) otherwise.
Rasters without a CRS can only be aligned when they have the image's size; anything else is a clear error.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds

from .errors import SourceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grid:
    """A pixel grid: CRS (None for plain PNG/JPEG), affine transform and size."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    def window(self, col: int, row: int, width: int, height: int) -> Grid:
        return Grid(self.crs, self.transform @ Affine.translation(col, row), width, height)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        xs, ys = [], []
        for c, r in ((0, 0), (self.width, 0), (0, self.height), (self.width, self.height)):
            x, y = self.transform @ (c, r)
            xs.append(x)
            ys.append(y)
        return min(xs), min(ys), max(xs), max(ys)

    def bounds_lonlat(self) -> tuple[float, float, float, float] | None:
        if self.crs is None:
            return None
        return transform_bounds(self.crs, "EPSG:4326", *self.bounds, densify_pts=21)


def open_raster(path: str | Path) -> rasterio.io.DatasetReader:
    """``rasterio.open`` without the warning plain PNG/JPEG files raise for having no geotransform."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            return rasterio.open(path)
        except rasterio.errors.RasterioIOError as e:
            raise SourceError(f"cannot read raster {path}: {e}") from None


def grid_of(ds: rasterio.io.DatasetReader) -> Grid:
    crs = ds.crs if ds.crs else None
    transform = ds.transform if crs is not None else Affine.identity()
    return Grid(crs, transform, ds.width, ds.height)


def crs_string(crs: CRS | None) -> str | None:
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def gsd_of(grid: Grid) -> float | None:
    """Metres per pixel (mean of x and y); from the latitude of the grid's centre for geographic CRSs."""
    if grid.crs is None:
        return None
    a, b, _, d, e, _ = tuple(grid.transform)[:6]
    px, py = math.hypot(a, d), math.hypot(b, e)
    if grid.crs.is_geographic:
        _, lat = grid.transform @ (grid.width / 2, grid.height / 2)
        return float((px * 111_320.0 * math.cos(math.radians(lat)) + py * 110_574.0) / 2)
    factor = grid.crs.linear_units_factor[1] if grid.crs.linear_units_factor else 1.0
    return float((px + py) / 2 * factor)


def check_alignable(src: Grid, dst: Grid, src_name: str, dst_name: str) -> None:
    """Raise unless ``src`` can be put on ``dst``: both georeferenced and overlapping, or the same size."""
    if src.crs is None or dst.crs is None:
        if (src.width, src.height) != (dst.width, dst.height):
            which = "neither has a CRS" if src.crs is None and dst.crs is None else "one of them has no CRS"
            raise SourceError(
                f"{src_name} is {src.width}x{src.height} px but {dst_name} is {dst.width}x{dst.height} px and "
                f"{which}, so they cannot be aligned (give both a CRS or the same size)"
            )
        return
    sb = transform_bounds(src.crs, dst.crs, *src.bounds, densify_pts=21)
    db = dst.bounds
    if sb[0] >= db[2] or sb[2] <= db[0] or sb[1] >= db[3] or sb[3] <= db[1]:
        raise SourceError(
            f"{src_name} does not overlap {dst_name}: its bounds {tuple(round(v, 2) for v in sb)} vs "
            f"{tuple(round(v, 2) for v in db)} in {crs_string(dst.crs)}"
        )


def _same_grid_offset(src: Grid, dst: Grid) -> tuple[int, int] | None:
    """(col, row) of ``dst``'s origin on ``src`` when both share CRS and pixel size on whole-pixel offsets."""
    if src.crs is None or dst.crs is None or src.crs != dst.crs:
        return None
    s, d = src.transform, dst.transform
    if not all(
        math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
        for x, y in zip((s.a, s.b, s.d, s.e), (d.a, d.b, d.d, d.e))
    ):
        return None
    col, row = ~s @ (d.c, d.f)
    if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
        return None
    return int(round(col)), int(round(row))


def read_onto(
    ds: rasterio.io.DatasetReader,
    bands: list[int],
    dst: Grid,
    scene_grid: Grid,
    resampling: Resampling = Resampling.nearest,
    fill: float = 0,
    dtype=None,
) -> np.ndarray:
    """Read ``bands`` of ``ds`` onto the ``dst`` grid (a window of ``scene_grid``). Returns [len(bands), H, W].

    Without CRSs the raster was checked to have the scene's size, so the window is read at the same pixels.
    Pixels the source does not cover get ``fill``.
    """
    src = grid_of(ds)
    dtype = dtype or ds.dtypes[bands[0] - 1]
    out_shape = (len(bands), dst.height, dst.width)
    if src.crs is None or dst.crs is None:
        col, row = ~scene_grid.transform @ (dst.transform.c, dst.transform.f)
        offset = (int(round(col)), int(round(row)))
    else:
        offset = _same_grid_offset(src, dst)
    if offset is not None:
        win = Window(offset[0], offset[1], dst.width, dst.height)
        inside = offset[0] >= 0 and offset[1] >= 0 and offset[0] + dst.width <= ds.width
        if inside and offset[1] + dst.height <= ds.height:  # boundless reads go through a slow VRT
            return ds.read(bands, window=win, out_dtype=dtype).reshape(out_shape)
        return ds.read(bands, window=win, boundless=True, fill_value=fill, out_dtype=dtype).reshape(out_shape)

    # Different CRS or resolution: read the source window that covers dst (plus a margin), then reproject.
    sb = transform_bounds(dst.crs, src.crs, *dst.bounds, densify_pts=21)
    out = np.full(out_shape, fill, dtype=dtype)
    try:
        fb = from_bounds(*sb, transform=src.transform)
    except rasterio.errors.WindowError:
        return out
    c0, r0 = math.floor(fb.col_off) - 2, math.floor(fb.row_off) - 2
    win = Window(
        c0, r0, math.ceil(fb.col_off + fb.width) + 2 - c0, math.ceil(fb.row_off + fb.height) + 2 - r0
    )
    full = Window(0, 0, src.width, src.height)
    try:
        win = win.intersection(full)
    except rasterio.errors.WindowError:
        return out
    if win.width <= 0 or win.height <= 0:
        return out
    arr = ds.read(bands, window=win, out_dtype=dtype)
    src_nodata = ds.nodata if ds.nodata is not None else None
    # All bands in one call: GDAL sets the warp up once.
    reproject(
        arr,
        out,
        src_transform=ds.window_transform(win),
        src_crs=src.crs,
        src_nodata=src_nodata,
        dst_transform=dst.transform,
        dst_crs=dst.crs,
        dst_nodata=fill,
        resampling=resampling,
    )
    return out


# --- image bands ------------------------------------------------------------------------------------------

S2_BAND = re.compile(
    r"^(?P<prefix>.*?)[_-]?(?P<band>B(?:0?[1-9]|1[0-2]|8A))\.(?:tif|tiff|jp2)$", re.IGNORECASE
)


@dataclass(frozen=True)
class BandPlan:
    """Which bands make the RGB composite and which is NIR (1-based band indices, or band files)."""

    rgb: tuple[int, int, int]
    nir: int | None
    sensor: str


def plan_bands(count: int, descriptions: tuple[str | None, ...], extra: dict) -> BandPlan:
    """Pick RGB (+NIR) from the band count, band descriptions, or ``extra['bands']`` / ``extra['nir_band']``.

    3 bands: RGB. 4: RGBN (NAIP, PlanetScope). 6: Landsat 4-7 TM/ETM+ (B1-5, B7). 7-11: Landsat 8/9 OLI
    (coastal first). 12-13: Sentinel-2 L1C/L2A stacks (B1...B12). Others: the first three bands.
    """
    if extra.get("bands"):
        r, g, b = (int(x) for x in extra["bands"])
        nir = extra.get("nir_band")
        return BandPlan((r, g, b), int(nir) if nir else None, "user")
    names = [(d or "").strip().lower() for d in descriptions]
    if all(names) and len(names) >= 3:
        idx = {n: i + 1 for i, n in enumerate(names)}
        pick = {k: next((idx[n] for n in cands if n in idx), None) for k, cands in {
            "r": ("red", "r", "b4", "b04", "sr_b4"), "g": ("green", "g", "b3", "b03", "sr_b3"),
            "b": ("blue", "b", "b2", "b02", "sr_b2"), "n": ("nir", "near infrared", "b8", "b08", "nir08"),
        }.items()}  # fmt: skip
        if pick["r"] and pick["g"] and pick["b"]:
            return BandPlan((pick["r"], pick["g"], pick["b"]), pick["n"], "described")
    if count == 4:
        return BandPlan((1, 2, 3), 4, "rgbn")
    if count == 6:
        return BandPlan((3, 2, 1), 4, "landsat-tm")
    if 7 <= count <= 11:
        return BandPlan((4, 3, 2), 5, "landsat-oli")
    if count in (12, 13):
        return BandPlan((4, 3, 2), 8, "sentinel-2")
    if count >= 3:
        return BandPlan((1, 2, 3), None, "rgb")
    return BandPlan((1, 1, 1), None, "grey")


def stretch_limits(
    ds: rasterio.io.DatasetReader, bands: list[int], max_side: int = 1024
) -> list[tuple[float, float]]:
    """Per-band 2nd and 98th percentiles of valid pixels from a decimated read (one per scene, cheap)."""
    scale = max(1, math.ceil(max(ds.width, ds.height) / max_side))
    shape = (len(bands), max(1, ds.height // scale), max(1, ds.width // scale))
    arr = ds.read(bands, out_shape=shape, resampling=Resampling.nearest, masked=True).astype("float64")
    limits = []
    for band in arr:
        vals = band.compressed() if np.ma.isMaskedArray(band) else band.ravel()
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            limits.append((0.0, 1.0))
            continue
        lo, hi = np.percentile(vals, [2, 98])
        limits.append((float(lo), float(hi if hi > lo else lo + 1)))
    return limits


def to_uint8(arr: np.ndarray, limits: list[tuple[float, float]] | None) -> np.ndarray:
    """[C, H, W] any dtype -> [H, W, C] uint8; uint8 passes through, others are stretched to ``limits``."""
    if arr.dtype == np.uint8 or limits is None:
        return np.ascontiguousarray(np.moveaxis(arr.astype(np.uint8), 0, -1))
    out = np.empty(arr.shape, dtype=np.uint8)
    for i, (lo, hi) in enumerate(limits):
        scaled = (arr[i].astype(np.float32) - lo) * (255.0 / (hi - lo))
        out[i] = np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(out, 0, -1))
