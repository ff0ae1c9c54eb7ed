"""Geo I/O: read rasters (windows, overviews, bands, nodata), align two dates, and map pixels to the world.

The data flow this module serves::

    GeoTIFF / PNG / JPEG --read_image--> GeoImage (raw float32 bands + valid mask + CRS + window transform)
    GeoImage --rgb()/composite()--> float32 [3, H, W] in [0, 1] for an RGB-trained vision tower
    pixels (box / polygon / mask) --transform--> CRS --pyproj--> GeoJSON in EPSG:4326 (RFC 7946), areas in m²

Conventions:

- Pixel coordinates are (x = column, y = row) with (0, 0) the top-left corner of the top-left pixel; a pixel box
  is (x1, y1, x2, y2) in that frame. ``GeoImage.transform`` maps pixels of the *array read* (after windowing and
  decimation) to CRS units; with no CRS it maps them to pixels of the source file instead, so a box always
  maps back to the source.
- Every bad input raises ``RasterError`` (a ``ValueError``) with a one-line message, never a GDAL traceback.
- A raster bigger than ``max_pixels`` is never read whole: the error names its size and suggests a window or an
  overview read. Nothing is allocated from what a header claims before that check.
- Areas come from an equal-area projection (Lambert azimuthal equal-area centred on the geometry), never from
  degrees and never from Web Mercator units.
- Writes go to a temporary file in the destination folder and are moved into place with ``os.replace``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
import shapely
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Geod, Transformer
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NodataShadowWarning, NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from shapely.geometry.polygon import orient
from shapely.ops import unary_union

from rsvlm.atomic import atomic_path
from rsvlm.bands import (
    PRESETS,
    RasterError,
    band_index,
    canonical_composite,
    default_composite,
    get_preset,
    render_composite,
    resolve_bands,
    spectral_index,
    stretch,
    stretch_limits,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "GeoImage",
    "RasterError",
    "RasterInfo",
    "align_pair",
    "area_m2",
    "atomic_write",
    "geometry_to_pixels",
    "inspect_raster",
    "mask_area_m2",
    "mask_to_pixel_polygons",
    "mask_to_polygons",
    "SparseMask",
    "pixel_box_to_geometry",
    "pixel_polygon_to_geometry",
    "pixel_shapes_to_geometries",
    "union_geometries",
    "read_image",
    "write_geojson",
    "write_mask_geotiff",
    "write_masks_geotiff",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 64 * 1024 * 1024  # 64 Mpx: a 13-band float32 read of this size is ~3.5 GB
WGS84 = CRS.from_epsg(4326)
_SUPPORTED_KINDS = "uif"  # unsigned, signed, float; complex and others are refused
_GEOD = Geod(ellps="WGS84")


# ----------------------------------------------------------------------------------------------------------------
# Opening and inspecting


@dataclass
class RasterInfo:
    """What a raster's header says (no pixels read). ``gsd`` is metres per pixel, None without a CRS;
    ``overviews`` are the decimation factors of band 1's internal or external overviews."""

    path: str
    driver: str
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    crs: CRS | None
    transform: Affine
    nodata: float | None
    band_descriptions: tuple[str | None, ...]
    colorinterp: tuple[str, ...]
    gsd: float | None
    overviews: list[int]
    bounds: tuple[float, float, float, float]  # (left, bottom, right, top) in CRS units (pixels without CRS)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)


def _gdal_message(error: BaseException) -> str:
    """The useful part of a rasterio/GDAL error chain ("See previous exception" wrappers are skipped)."""
    parts: list[str] = []
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = " ".join(str(e).split())
        if text and "previous exception" not in text and text not in parts:
            parts.append(text)
        e = e.__cause__ or e.__context__
    message = "; ".join(parts) or type(error).__name__
    return message[:240]


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        warnings.simplefilter("ignore", NodataShadowWarning)
        yield


@contextmanager
def _open_raster(path: str | os.PathLike) -> Iterator[Any]:
    """Open a raster for reading, turning every way it can fail into a one-line ``RasterError``."""
    p = Path(path)
    if not p.exists():
        raise RasterError(f"no such file: {p}")
    if p.is_dir():
        raise RasterError(f"{p} is a folder, not a raster file")
    if p.stat().st_size == 0:
        raise RasterError(f"{p} is empty (0 bytes)")
    try:
        with _quiet():
            src = rasterio.open(p)
    except (RasterioError, CPLE_BaseError) as e:
        raise RasterError(f"{p} is not a raster that GDAL can read ({_gdal_message(e)})") from e
    with src:
        yield src


def _crs_of(src: Any) -> CRS | None:
    crs = src.crs
    if crs is None or not crs.to_wkt():
        return None
    return crs


def _gsd(transform: Affine, crs: CRS | None, width: int, height: int) -> float | None:
    """Metres on the ground per pixel at the centre of the grid, None without a CRS.

    Measured on the ellipsoid (geodesic lengths of one pixel step east and south). A projected CRS whose
    nominal pixel size agrees within 1 % (UTM and other local projections: scale factor ~0.9996-1.001) reports
    the nominal size, which is what users know it by; one that does not (Web Mercator away from the equator:
    a "10 m" pixel is 5 m at 60° N) reports the ground size, which is what the GSD means to a model or a user.
    """
    if crs is None:
        return None
    step_x = math.hypot(transform.a, transform.d)
    step_y = math.hypot(transform.b, transform.e)
    nominal = None
    if crs.is_projected:
        try:
            nominal = (step_x + step_y) / 2 * float(crs.linear_units_factor[1])
        except Exception:  # unusual units: measure on the ellipsoid only
            nominal = None
    try:
        cx, cy = width / 2, height / 2
        xs, ys = zip(transform @ (cx, cy), transform @ (cx + 1, cy), transform @ (cx, cy + 1))
        lon, lat = _to_wgs84(crs).transform(np.array(xs), np.array(ys))
        _, _, dx = _GEOD.inv(lon[0], lat[0], lon[1], lat[1])
        _, _, dy = _GEOD.inv(lon[0], lat[0], lon[2], lat[2])
        measured = float((dx + dy) / 2)
    except Exception:  # outside the projection's domain: the nominal size is all there is
        return nominal
    if not math.isfinite(measured) or measured <= 0:
        return nominal
    if nominal is not None and abs(measured / nominal - 1) < 0.01:
        return nominal
    return measured


def inspect_raster(path: str | os.PathLike) -> RasterInfo:
    """Header facts of a raster without reading pixels (cheap even for a 200,000² file)."""
    with _open_raster(path) as src:
        crs = _crs_of(src)
        return RasterInfo(
            path=str(path),
            driver=src.driver,
            width=src.width,
            height=src.height,
            count=src.count,
            dtypes=tuple(src.dtypes),
            crs=crs,
            transform=src.transform if crs is not None else Affine.identity(),
            nodata=src.nodata,
            band_descriptions=tuple(src.descriptions),
            colorinterp=tuple(c.name for c in src.colorinterp),
            gsd=_gsd(src.transform, crs, src.width, src.height),
            overviews=list(src.overviews(1)) if src.count else [],
            bounds=tuple(src.bounds) if crs is not None else (0.0, float(src.height), float(src.width), 0.0),
        )


# ----------------------------------------------------------------------------------------------------------------
# The image


@dataclass
class GeoImage:
    """Pixels of one read plus everything needed to put them back on the map.

    ``data`` float32 [C, H, W] raw values (0 where invalid); ``valid`` bool [H, W] (False for nodata, NaN,
    alpha-masked or outside-the-footprint pixels). ``transform`` maps array pixels to CRS units, or to source
    pixels when ``crs`` is None. ``window`` (col_off, row_off, width, height) is the part of the source read;
    ``source_shape`` the full source (H, W); ``scale`` source pixels per array pixel (> 1 for overview reads).
    """

    data: np.ndarray
    valid: np.ndarray
    band_names: list[str]
    crs: CRS | None = None
    transform: Affine = field(default_factory=Affine.identity)
    path: str | None = None
    window: tuple[int, int, int, int] | None = None
    source_shape: tuple[int, int] | None = None
    scale: float = 1.0
    preset: str | None = None
    nodata: float | None = None
    warnings: list[str] = field(default_factory=list)
    # Per-band (lo, hi) limits used instead of this read's own percentiles, so that windows of one scene are
    # stretched alike (see ``band_stretch_limits``; the assistant sets them from a large scene's overview).
    scene_stretch: list[tuple[float, float] | None] | None = None

    def __post_init__(self) -> None:
        if self.data.ndim != 3:
            raise RasterError(f"GeoImage data must be [C, H, W], got shape {self.data.shape}")
        if self.valid.shape != self.data.shape[1:]:
            raise RasterError(f"valid mask {self.valid.shape} does not match data {self.data.shape[1:]}")
        if len(self.band_names) != self.data.shape[0]:
            raise RasterError(f"{len(self.band_names)} band names for {self.data.shape[0]} bands")
        if self.window is None:
            self.window = (0, 0, self.width, self.height)
        if self.source_shape is None:
            self.source_shape = (self.height, self.width)

    @classmethod
    def from_array(
        cls,
        array: np.ndarray,
        band_names: Sequence[str] | None = None,
        crs: CRS | str | None = None,
        transform: Affine | None = None,
        valid: np.ndarray | None = None,
    ) -> GeoImage:
        """An in-memory image (an upload, a PIL image): [H, W], [H, W, C<=4] or [C, H, W]."""
        a = np.asarray(array)
        if a.ndim == 2:
            a = a[None]
        elif a.ndim == 3 and a.shape[2] <= 4 and a.shape[0] > 4:
            a = np.moveaxis(a, 2, 0)
        if a.ndim != 3:
            raise RasterError(f"an image array must be 2-D or 3-D, got shape {a.shape}")
        data = a.astype(np.float32)
        ok = np.isfinite(data).all(0) if valid is None else np.asarray(valid, bool) & np.isfinite(data).all(0)
        data[:, ~ok] = 0
        if band_names is None:
            band_names = resolve_bands(None, data.shape[0], source="array").names
        crs = CRS.from_user_input(crs) if isinstance(crs, str) else crs
        warns = [] if crs is not None else ["image has no CRS: outputs stay in pixel coordinates"]
        return cls(data, ok, list(band_names), crs, transform or Affine.identity(), warnings=warns)

    # -- shape and geometry facts

    @property
    def count(self) -> int:
        return int(self.data.shape[0])

    @property
    def height(self) -> int:
        return int(self.data.shape[1])

    @property
    def width(self) -> int:
        return int(self.data.shape[2])

    @property
    def gsd(self) -> float | None:
        """Metres per pixel of this array (source GSD × scale), None without a CRS."""
        return _gsd(self.transform, self.crs, self.width, self.height)

    @property
    def pixel_transform(self) -> Affine:
        """Array pixels -> source pixels (window offset and decimation)."""
        col_off, row_off, w, h = self.window  # type: ignore[misc]
        return Affine.translation(col_off, row_off) @ Affine.scale(w / self.width, h / self.height)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of this array in CRS units (source pixels without a CRS)."""
        return tuple(rasterio.transform.array_bounds(self.height, self.width, self.transform))[:4]  # type: ignore

    def to_source_pixels(self, points: np.ndarray) -> np.ndarray:
        """Array pixel coordinates [N, 2] (x, y) -> source raster pixel coordinates [N, 2]."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        xs, ys = self.pixel_transform @ (pts[:, 0], pts[:, 1])
        return np.stack([xs, ys], axis=1)

    # -- what a model sees

    def rgb(self, preset: str | None = None) -> np.ndarray:
        """float32 [3, H, W] in [0, 1]. ``preset`` is a composite name (``true-colour``, ``false-colour``,
        ``ndvi``, ``ndwi``, ``swir``, ``grey``) or a band preset that re-labels the bands (``rgbn``...); None
        picks true colour when red/green/blue are known, grey for 1-2 bands, else the first three bands."""
        names = self.band_names
        composite: str | None
        if preset is None:
            composite = default_composite(names)
        elif _is_band_preset(preset):
            names = resolve_bands(preset, self.count, source=self._name).names
            composite = default_composite(names)
        else:
            composite = canonical_composite(preset)
        limits = self.scene_stretch or [None] * self.count
        if composite is None:  # unnamed bands: the first three, each stretched
            return np.stack([stretch(self.data[i], self.valid, limits=limits[i]) for i in range(3)])
        return render_composite(self.data, self.valid, names, composite, limits)

    def band_stretch_limits(self) -> list[tuple[float, float] | None]:
        """This read's per-band 2-98 % limits, to pass on to windows of the same scene."""
        return [stretch_limits(band, self.valid) for band in self.data]

    def composite(self, name: str) -> np.ndarray:
        """A named composite as float32 [3, H, W] in [0, 1] (see ``rsvlm.bands``)."""
        return render_composite(
            self.data, self.valid, self.band_names, canonical_composite(name), self.scene_stretch
        )

    def index(self, name: str) -> np.ndarray:
        """The raw spectral index (``ndvi`` / ``ndwi``) float32 [H, W] in [-1, 1], NaN where invalid."""
        return spectral_index(self.data, self.valid, self.band_names, canonical_composite(name))

    def bands_for_model(self, n: int) -> np.ndarray:
        """float32 [n, H, W] in [0, 1] for a tower with ``n`` input channels: 3 -> ``rgb()``, 1 -> grey,
        4 -> R, G, B, NIR when known, ``count`` -> every band stretched on its own (a learned band adapter)."""
        if n == 3:
            return self.rgb()
        if n == 1:
            return self.rgb().mean(0, keepdims=True)
        if n == 4:
            picks = [band_index(self.band_names, b) for b in ("red", "green", "blue", "nir")]
            if all(p is not None for p in picks):
                limits = self.scene_stretch or [None] * self.count
                return np.stack([stretch(self.data[p], self.valid, limits=limits[p]) for p in picks])  # type: ignore[index]
        if n == self.count:
            limits = self.scene_stretch or [None] * self.count
            return np.stack([stretch(b, self.valid, limits=lim) for b, lim in zip(self.data, limits)])
        raise RasterError(
            f"the model expects {n} bands but {self._name} has {self.count} ({', '.join(self.band_names)})"
        )

    # -- outputs on this image's grid

    def box_to_geometry(self, box_xyxy: Sequence[float]) -> dict | None:
        """A box in this array's pixels -> GeoJSON Polygon in EPSG:4326 (None without a CRS)."""
        return pixel_box_to_geometry(box_xyxy, self.transform, self.crs)

    def mask_to_polygons(
        self, mask: np.ndarray, simplify_px: float = 0.5, min_area_px: float = 4
    ) -> list[dict]:
        return mask_to_polygons(mask, self.transform, self.crs, simplify_px, min_area_px)

    def mask_area_m2(self, mask: np.ndarray) -> float | None:
        return mask_area_m2(mask, self.transform, self.crs)

    @property
    def _name(self) -> str:
        return Path(self.path).name if self.path else "image"


def _is_band_preset(name: str) -> bool:
    try:
        get_preset(name)
        return True
    except RasterError:
        return False


# ----------------------------------------------------------------------------------------------------------------
# Reading


def _as_window(window: Any, width: int, height: int, name: str, notes: list[str]) -> Window:
    """Validate a (col_off, row_off, width, height) window; clip it to the raster (with a note) if it spills."""
    if window is None:
        return Window(0, 0, width, height)
    if isinstance(window, Window):
        values = [window.col_off, window.row_off, window.width, window.height]
    else:
        try:
            values = [float(v) for v in window]
        except (TypeError, ValueError):
            values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise RasterError(f"window must be (col_off, row_off, width, height), got {window!r}")
    col, row, w, h = (int(round(v)) for v in values)
    if w <= 0 or h <= 0:
        raise RasterError(f"window {tuple(values)} has no area")
    c0, r0, c1, r1 = max(col, 0), max(row, 0), min(col + w, width), min(row + h, height)
    if c1 <= c0 or r1 <= r0:
        raise RasterError(f"window {(col, row, w, h)} lies outside {name} ({width} × {height} pixels)")
    if (c0, r0, c1, r1) != (col, row, col + w, row + h):
        notes.append(f"window {(col, row, w, h)} clipped to the raster: {(c0, r0, c1 - c0, r1 - r0)}")
    return Window(c0, r0, c1 - c0, r1 - r0)


def _overview_shape(win: Window, overview_size: int | None) -> tuple[int, int]:
    h, w = int(win.height), int(win.width)
    if overview_size is None:
        return h, w
    if int(overview_size) <= 0:
        raise RasterError(f"overview_size must be a positive number of pixels, got {overview_size}")
    factor = max(w, h) / int(overview_size)
    if factor <= 1:
        return h, w
    return max(1, round(h / factor)), max(1, round(w / factor))


def read_image(
    path: str | os.PathLike,
    bands: str | Sequence[int] | None = None,
    window: tuple[int, int, int, int] | Window | None = None,
    max_pixels: int | None = None,
    overview_size: int | None = None,
    allow_empty: bool = False,
) -> GeoImage:
    """Read a raster (or a window of it, optionally decimated) into a ``GeoImage``.

    ``bands``: a preset name (``rgb``, ``rgbn``/``naip``, ``bgrn``, ``sentinel2-l1c``, ``sentinel2-l2a``,
    ``landsat8``/``landsat9``, ``grey``), 1-based band indexes, or None to guess. ``window``: (col_off, row_off,
    width, height) in source pixels. ``overview_size``: the long side of a decimated read (internal overviews are
    used when present; the transform is scaled to match). ``max_pixels`` (default 64 Mpx) bounds the pixels
    allocated; a bigger request is refused with its size named. ``allow_empty`` returns an all-invalid window
    instead of raising (for tiling a scene with nodata borders).
    """
    with _open_raster(path) as src:
        return _read(src, Path(path), bands, window, max_pixels, overview_size, None, allow_empty)


def _read(
    src: Any,
    path: Path,
    bands: str | Sequence[int] | None,
    window: Any,
    max_pixels: int | None,
    overview_size: int | None,
    out_shape: tuple[int, int] | None,
    allow_empty: bool,
) -> GeoImage:
    name = path.name
    notes: list[str] = []
    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    crs = _crs_of(src)
    if src.count == 0:
        raise RasterError(f"{name} has no bands")

    interps = [c.name for c in src.colorinterp]
    palette = bands is None and src.count == 1 and src.colorinterp[0] == ColorInterp.palette
    selection = resolve_bands(bands, src.count, src.descriptions, interps, source=name)
    notes.extend(selection.warnings)
    kinds = {np.dtype(src.dtypes[i - 1]).kind for i in selection.indexes}
    if not kinds <= set(_SUPPORTED_KINDS):
        raise RasterError(
            f"{name} has pixel type {src.dtypes[0]}, which is not supported (use integer or float)"
        )

    win = _as_window(window, src.width, src.height, name, notes)
    out_h, out_w = out_shape if out_shape is not None else _overview_shape(win, overview_size)
    if out_h * out_w > max_pixels:
        what = f"{name} is {src.width:,} × {src.height:,} pixels"
        if window is not None:
            what += f"; the window is {int(win.width):,} × {int(win.height):,}"
        if out_shape is not None or overview_size is not None:
            what += f"; the requested read is {out_w:,} × {out_h:,}"
        raise RasterError(
            f"{what} ({out_w * out_h / 1e6:,.0f} Mpx), more than max_pixels={max_pixels:,}; "
            f"read it by windows (window=(col_off, row_off, width, height)) or as an overview (overview_size=2048)"
        )
    decimated = (out_h, out_w) != (int(win.height), int(win.width))
    if decimated and not src.overviews(1) and win.width * win.height > 16 * max_pixels:
        logger.warning("%s has no overviews: a decimated read scans the whole window", name)

    resampling = Resampling.average if decimated else Resampling.nearest
    arr = _read_bands(src, name, selection.indexes, win, (out_h, out_w), resampling)  # [C, H, W] masked
    data = np.asarray(arr.data, dtype=np.float32)  # [C, H, W]
    masked = np.ma.getmaskarray(arr)
    names = selection.names
    if selection.alpha_index is not None:
        # Nearest, even for overviews: an averaged alpha edge is not 0/255 and would look like data.
        alpha = np.asarray(_read_bands(src, name, [selection.alpha_index], win, (out_h, out_w)).data[0])
        if np.isin(alpha, (0, alpha.max())).all():  # a real alpha band: a mask, not data
            masked = masked | (alpha == 0)[None]
        else:
            extra = _read_bands(src, name, [selection.alpha_index], win, (out_h, out_w), resampling)
            indexes = [*selection.indexes, selection.alpha_index]
            order = np.argsort(indexes)
            data = np.concatenate([data, np.asarray(extra.data, np.float32)])[order]
            masked = np.concatenate([masked, np.ma.getmaskarray(extra)])[order]
            names = resolve_bands(None, src.count, source=name).names
            notes.append(
                f"{name}: band {selection.alpha_index} is marked alpha but holds data; read it as data"
            )
    valid = ~masked.any(axis=0) & np.isfinite(data).all(axis=0)  # [H, W]
    if palette:
        data, names = _apply_palette(src, data), ["red", "green", "blue"]
        selection.preset = None
    data[:, ~valid] = 0
    if not valid.any() and not allow_empty:
        where = (
            f"window {(int(win.col_off), int(win.row_off), int(win.width), int(win.height))} of "
            if window
            else ""
        )
        raise RasterError(f"every pixel in {where}{name} is nodata (nodata={src.nodata}); nothing to show")

    sx, sy = win.width / out_w, win.height / out_h
    if crs is not None:
        transform = src.transform @ Affine.translation(win.col_off, win.row_off) @ Affine.scale(sx, sy)
    else:
        transform = Affine.translation(win.col_off, win.row_off) @ Affine.scale(sx, sy)
        notes.append(f"{name} has no CRS: outputs stay in pixel coordinates (no GeoJSON geometry, no area)")
    image = GeoImage(
        data=data,
        valid=valid,
        band_names=list(names),
        crs=crs,
        transform=transform,
        path=str(path),
        window=(int(win.col_off), int(win.row_off), int(win.width), int(win.height)),
        source_shape=(src.height, src.width),
        scale=float((sx + sy) / 2),
        preset=selection.preset,
        nodata=src.nodata,
        warnings=notes,
    )
    for note in notes:
        logger.debug("%s", note)
    return image


def _read_bands(
    src: Any,
    name: str,
    indexes: list[int],
    win: Window,
    shape: tuple[int, int],
    resampling: Resampling = Resampling.nearest,
) -> np.ma.MaskedArray:
    """``src.read`` with every GDAL failure (truncated strips, corrupt tiles) turned into a ``RasterError``."""
    try:
        with _quiet():
            return src.read(
                indexes, window=win, out_shape=(len(indexes), *shape), resampling=resampling, masked=True
            )
    except (RasterioError, CPLE_BaseError, MemoryError) as e:
        raise RasterError(
            f"reading pixels of {name} failed; the file is truncated or corrupt ({_gdal_message(e)})"
        ) from e


def _apply_palette(src: Any, index: np.ndarray) -> np.ndarray:
    """A paletted band [1, H, W] -> RGB values [3, H, W] through the file's colour map."""
    try:
        cmap = src.colormap(1)
    except ValueError:
        return np.repeat(index, 3, axis=0)
    lut = np.zeros((256, 3), dtype=np.float32)
    for k, rgba in cmap.items():
        if 0 <= k < 256:
            lut[k] = rgba[:3]
    return np.moveaxis(lut[np.clip(index[0], 0, 255).astype(np.int64)], 2, 0)


# ----------------------------------------------------------------------------------------------------------------
# Two dates


def align_pair(
    first: GeoImage | str | os.PathLike,
    second_path: str | os.PathLike | GeoImage,
    bands: str | Sequence[int] | None = None,
    max_pixels: int | None = None,
) -> GeoImage:
    """Read the second date onto the first's pixel grid.

    Same CRS and pixel grid: a plain window read. Different CRS, resolution or origin: the second is read around
    the first's footprint and resampled with ``rasterio.warp.reproject`` (bilinear); pixels the second does not
    cover are invalid. Neither has a CRS: the second is resized onto the first (same footprint assumed). Raises
    ``RasterError`` when the footprints do not overlap. The result carries the first's ``crs``, ``transform``,
    ``window``, ``source_shape`` and ``scale`` (it lives on the first's grid); ``path`` is the second file.
    ``bands`` defaults to the first image's preset when the second has a fitting band count.

    The second may also be a ``GeoImage`` already read (its array is warped or rescaled as it is; reading from
    the file is better when the second was decimated more than the first).
    """
    if not isinstance(first, GeoImage):
        first = read_image(first, max_pixels=max_pixels)
    if isinstance(second_path, GeoImage):
        image = _align_in_memory(first, second_path)
        name = second_path._name
    else:
        image, name = _align_from_file(first, Path(second_path), bands, max_pixels), Path(second_path).name
    if image.band_names != first.band_names:
        image.warnings.append(
            f"band sets differ: {first._name} has {first.band_names}, {name} has {image.band_names}"
        )
    return image


def _align_from_file(first: GeoImage, second: Path, bands: Any, max_pixels: int | None) -> GeoImage:
    with _open_raster(second) as src:
        if bands is None and first.preset and get_preset(first.preset).accepts(src.count):
            bands = first.preset
        crs2 = _crs_of(src)
        if first.crs is None or crs2 is None:
            image = _align_by_resize(first, src, second, bands, max_pixels)
        else:
            image = _align_by_crs(first, src, second, crs2, bands, max_pixels)
    return image


def _align_by_resize(first: GeoImage, src: Any, path: Path, bands: Any, max_pixels: int | None) -> GeoImage:
    notes = []
    if (first.crs is None) != (_crs_of(src) is None):
        notes.append("only one of the two images has a CRS; assumed they cover the same ground")
    sh, sw = first.source_shape  # type: ignore[misc]
    if (src.height, src.width) != (sh, sw):
        notes.append(
            f"{path.name} is {src.width} × {src.height} and the first is {sw} × {sh}; resized, assuming the "
            f"same footprint"
        )
    fx, fy = src.width / sw, src.height / sh
    c, r, w, h = first.window  # type: ignore[misc]
    window = (c * fx, r * fy, w * fx, h * fy)
    image = _read(src, path, bands, window, max_pixels, None, (first.height, first.width), allow_empty=True)
    image.transform, image.crs = first.transform, first.crs
    image.window, image.source_shape, image.scale = first.window, first.source_shape, first.scale
    image.warnings.extend(notes)
    if not image.valid.any():
        raise RasterError(f"every pixel of {path.name} under the first image is nodata")
    return image


def _footprint_4326(bounds: Sequence[float], crs: CRS) -> str:
    w, s, e, n = rasterio.warp.transform_bounds(crs, WGS84, *bounds, densify_pts=21)
    return f"lon {w:.5f}..{e:.5f}, lat {s:.5f}..{n:.5f}"


def _check_overlap(first: GeoImage, crs2: CRS, bounds2: Sequence[float], name: str) -> None:
    """Raise when the first image's footprint and ``bounds2`` (in ``crs2``) do not intersect."""
    try:
        left, bottom, right, top = rasterio.warp.transform_bounds(
            first.crs, crs2, *first.bounds, densify_pts=21
        )
    except (RasterioError, CPLE_BaseError) as e:
        raise RasterError(
            f"cannot transform {first._name}'s footprint into {name}'s CRS ({_gdal_message(e)})"
        ) from e
    sl, sb, sr, st = bounds2
    if min(right, sr) <= max(left, sl) or min(top, st) <= max(bottom, sb):
        raise RasterError(
            f"{first._name} and {name} do not overlap: the first covers {_footprint_4326(first.bounds, first.crs)}, "
            f"the second {_footprint_4326(bounds2, crs2)}"
        )


def _align_by_crs(
    first: GeoImage, src: Any, path: Path, crs2: CRS, bands: Any, max_pixels: int | None
) -> GeoImage:
    name = path.name
    first_bounds = first.bounds
    try:
        left, bottom, right, top = rasterio.warp.transform_bounds(
            first.crs, crs2, *first_bounds, densify_pts=21
        )
    except (RasterioError, CPLE_BaseError) as e:
        raise RasterError(
            f"cannot transform {first._name}'s footprint into {name}'s CRS ({_gdal_message(e)})"
        ) from e
    _check_overlap(first, crs2, tuple(src.bounds), name)

    # Same grid: the first's array pixels are whole pixels (or a uniform decimation) of the second -> plain read.
    rel = ~src.transform @ first.transform
    if (
        crs2 == first.crs
        and abs(rel.b) < 1e-9
        and abs(rel.d) < 1e-9
        and rel.a > 0
        and rel.e > 0
        and abs(rel.c - round(rel.c)) < 1e-6
        and abs(rel.f - round(rel.f)) < 1e-6
        and abs(rel.a * first.width - round(rel.a * first.width)) < 1e-6
        and abs(rel.e * first.height - round(rel.e * first.height)) < 1e-6
    ):
        window = (round(rel.c), round(rel.f), round(rel.a * first.width), round(rel.e * first.height))
        inside = window[0] >= 0 and window[1] >= 0
        inside = inside and window[0] + window[2] <= src.width and window[1] + window[3] <= src.height
        if inside:
            image = _read(src, path, bands, window, max_pixels, None, (first.height, first.width), True)
            if not image.valid.any():
                raise RasterError(f"every pixel of {name} under {first._name} is nodata")
            # It lives on the first's grid: window, source shape and scale are the first's (the second may be
            # far larger, and its own window offsets would put boxes in the wrong file's pixels).
            return _on_first_grid(first, image, image.data, image.valid, image.warnings)

    # Different grid: read the second around the first's footprint (2-pixel margin), at most ~2× finer than the
    # first's grid, then warp it onto the first's grid.
    corners_x, corners_y = ~src.transform @ (
        np.array([left, right, left, right]),
        np.array([top, top, bottom, bottom]),
    )
    col0, row0 = math.floor(float(np.min(corners_x))) - 2, math.floor(float(np.min(corners_y))) - 2
    col1, row1 = math.ceil(float(np.max(corners_x))) + 2, math.ceil(float(np.max(corners_y))) + 2
    col0, row0, col1, row1 = max(col0, 0), max(row0, 0), min(col1, src.width), min(row1, src.height)
    w2, h2 = col1 - col0, row1 - row0
    factor = max(1.0, min(w2 / first.width, h2 / first.height) / 2)
    out_shape = (max(1, round(h2 / factor)), max(1, round(w2 / factor)))
    part = _read(src, path, bands, (col0, row0, w2, h2), max_pixels, None, out_shape, allow_empty=True)

    return _warp_onto(first, part, part.transform, crs2, first.transform, first.crs)


def _warp_onto(
    first: GeoImage,
    part: GeoImage,
    src_transform: Affine,
    src_crs: CRS,
    dst_transform: Affine,
    dst_crs: CRS,
) -> GeoImage:
    """Resample ``part`` (bilinear, nodata-aware) onto the first image's array grid."""
    name = part._name
    source = np.where(part.valid[None], part.data, np.nan).astype(np.float32)  # [C, h, w]
    dest = np.full((part.count, first.height, first.width), np.nan, dtype=np.float32)  # [C, H, W]
    try:
        rasterio.warp.reproject(
            source=source,
            destination=dest,
            src_transform=src_transform,
            src_crs=src_crs,
            dst_transform=dst_transform,
            dst_crs=dst_crs,
            resampling=Resampling.bilinear,
            src_nodata=np.nan,
            dst_nodata=np.nan,
        )
    except (RasterioError, CPLE_BaseError) as e:
        raise RasterError(f"resampling {name} onto {first._name}'s grid failed ({_gdal_message(e)})") from e
    valid = np.isfinite(dest).all(axis=0)  # [H, W]
    if not valid.any():
        raise RasterError(f"{first._name} and {name} do not overlap on any valid pixel")
    dest[:, ~valid] = 0
    notes = [*part.warnings, f"{name} resampled (bilinear) onto the grid of {first._name}"]
    coverage = valid.mean()
    if coverage < 0.99:
        notes.append(f"{name} covers {coverage:.0%} of {first._name}; the rest is marked invalid")
    return _on_first_grid(first, part, dest, valid, notes)


def _on_first_grid(
    first: GeoImage, part: GeoImage, data: np.ndarray, valid: np.ndarray, notes: list[str]
) -> GeoImage:
    return GeoImage(
        data=data,
        valid=valid,
        band_names=list(part.band_names),
        crs=first.crs,
        transform=first.transform,
        path=part.path,
        window=first.window,
        source_shape=first.source_shape,
        scale=first.scale,
        preset=part.preset,
        nodata=part.nodata,
        warnings=notes,
    )


# Both sides of a pixel-space warp get this CRS, so GDAL resamples without reprojecting.
_PIXEL_CRS = CRS.from_epsg(3857)


def _align_in_memory(first: GeoImage, second: GeoImage) -> GeoImage:
    """Align an already-read second image: warp its array (CRS known on both) or rescale it in source pixels."""
    name = second._name
    if first.crs is not None and second.crs is not None:
        _check_overlap(first, second.crs, second.bounds, name)
        if second.crs == first.crs and second.data.shape[1:] == first.data.shape[1:]:
            if second.transform.almost_equals(first.transform, precision=1e-9):
                return _on_first_grid(
                    first, second, second.data.copy(), second.valid.copy(), list(second.warnings)
                )
        return _warp_onto(first, second, second.transform, second.crs, first.transform, first.crs)
    notes = list(second.warnings)
    if (first.crs is None) != (second.crs is None):
        notes.append("only one of the two images has a CRS; assumed they cover the same ground")
    (fh, fw), (sh, sw) = first.source_shape, second.source_shape  # type: ignore[misc]
    if (fh, fw) != (sh, sw):
        notes.append(
            f"{name} is {sw} × {sh} and the first is {fw} × {fh}; resized, assuming the same footprint"
        )
    # Second's array -> its source pixels -> the first's source pixels (same footprint assumed).
    src_transform = Affine.scale(fw / sw, fh / sh) @ second.pixel_transform
    if second.data.shape[1:] == first.data.shape[1:] and src_transform.almost_equals(
        first.pixel_transform, precision=1e-9
    ):
        return _on_first_grid(first, second, second.data.copy(), second.valid.copy(), notes)
    image = _warp_onto(first, second, src_transform, _PIXEL_CRS, first.pixel_transform, _PIXEL_CRS)
    image.warnings[: len(second.warnings)] = []
    image.warnings = [*notes, *image.warnings]
    return image


# ----------------------------------------------------------------------------------------------------------------
# Pixels -> CRS -> EPSG:4326


@lru_cache(maxsize=64)
def _transformer(src_wkt: str, dst_wkt: str) -> Transformer:
    return Transformer.from_crs(ProjCRS.from_wkt(src_wkt), ProjCRS.from_wkt(dst_wkt), always_xy=True)


def _to_wgs84(crs: CRS) -> Transformer:
    return _transformer(crs.to_wkt(), WGS84.to_wkt())


def _from_wgs84(crs: CRS) -> Transformer:
    return _transformer(WGS84.to_wkt(), crs.to_wkt())


def _as_crs(crs: CRS | str | int | None) -> CRS | None:
    if crs is None or isinstance(crs, CRS):
        return crs
    try:
        return CRS.from_user_input(crs)
    except Exception as e:
        raise RasterError(f"not a CRS: {crs!r}") from e


def _as_affine(transform: Affine | Sequence[float]) -> Affine:
    if isinstance(transform, Affine):
        return transform
    values = list(transform)
    if len(values) not in (6, 9):
        raise RasterError(f"a transform needs 6 numbers (a, b, c, d, e, f), got {values!r}")
    return Affine(*values[:6])


def _map_coords(func: Any, geom: Any) -> Any:
    """Apply ``func(xs, ys) -> (xs, ys)`` (a pyproj ``Transformer.transform`` or an affine map) to every vertex."""
    return shapely.transform(geom, func, interleaved=False)


def _geojson(geom: Any) -> dict:
    """A shapely geometry -> a GeoJSON dict with lists (not tuples), so it equals its own JSON round trip."""
    return json.loads(json.dumps(mapping(geom)))


def pixel_polygon_to_geometry(
    points: Sequence[Sequence[float]] | np.ndarray, transform: Affine | Sequence[float], crs: CRS | str | None
) -> dict | None:
    """A pixel ring [(x, y), ...] in the frame of ``transform`` -> GeoJSON Polygon in EPSG:4326 (CCW exterior,
    RFC 7946). None when there is no CRS (the caller keeps the pixel polygon and warns)."""
    crs = _as_crs(crs)
    if crs is None:
        return None
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3 or not np.isfinite(pts).all():
        raise RasterError(f"a pixel polygon needs at least 3 finite (x, y) points, got shape {pts.shape}")
    xs, ys = _as_affine(transform) @ (pts[:, 0], pts[:, 1])
    lon, lat = _to_wgs84(crs).transform(np.asarray(xs), np.asarray(ys))
    poly = Polygon(np.stack([lon, lat], axis=1))
    if not poly.is_valid:
        poly = shapely.make_valid(poly)
    return _geojson(_orient(poly))


def pixel_box_to_geometry(
    box_xyxy: Sequence[float], transform: Affine | Sequence[float], crs: CRS | str | None
) -> dict | None:
    """A pixel box (x1, y1, x2, y2) in the frame of ``transform`` -> GeoJSON Polygon in EPSG:4326."""
    values = [float(v) for v in box_xyxy]
    if len(values) != 4:
        raise RasterError(f"a box needs 4 numbers (x1, y1, x2, y2), got {values!r}")
    x1, x2 = sorted(values[0::2])
    y1, y2 = sorted(values[1::2])
    return pixel_polygon_to_geometry([(x1, y1), (x2, y1), (x2, y2), (x1, y2)], transform, crs)


def _orient(geom: Any) -> Any:
    """Right-hand rule (exterior CCW, holes CW) for polygons and multipolygons; other types pass through."""
    if geom.geom_type == "Polygon":
        return orient(geom, 1.0)
    if geom.geom_type in ("MultiPolygon", "GeometryCollection"):
        return type(geom)([_orient(g) for g in geom.geoms])
    return geom


def _check_lonlat(geom: Any, what: str = "geometry") -> None:
    minx, miny, maxx, maxy = geom.bounds
    if not (-180.0001 <= minx and maxx <= 180.0001 and -90.0001 <= miny and maxy <= 90.0001):
        raise RasterError(
            f"{what} has coordinates outside lon/lat range ({minx:.1f}, {miny:.1f}, {maxx:.1f}, {maxy:.1f}); "
            "GeoJSON must be EPSG:4326 (pass crs= for projected coordinates)"
        )


def geometry_to_pixels(
    geometry: dict | Any, transform: Affine | Sequence[float], crs: CRS | str | None
) -> dict:
    """The inverse: a GeoJSON geometry in EPSG:4326 -> the same geometry type in pixel coordinates (x, y) of
    ``transform``."""
    crs = _as_crs(crs)
    if crs is None:
        raise RasterError("cannot map lon/lat to pixels for an image without a CRS")
    geom = shape(geometry) if isinstance(geometry, dict) else geometry
    _check_lonlat(geom)
    inverse = ~_as_affine(transform)
    to_crs = _from_wgs84(crs)

    def to_pixels(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cx, cy = to_crs.transform(np.asarray(x), np.asarray(y))
        px, py = inverse @ (np.asarray(cx), np.asarray(cy))
        return np.asarray(px), np.asarray(py)

    return _geojson(_map_coords(to_pixels, geom))


def _mask_shapes(mask: np.ndarray, transform: Affine) -> list[Any]:
    """Polygons (shapely, in ``transform``'s units) of the True pixels of a 2-D mask, 4-connected."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise RasterError(f"a mask must be 2-D [H, W], got shape {m.shape}")
    m = m.astype(bool)
    if not m.any():
        return []
    return [shape(g) for g, _ in rasterio.features.shapes(m.astype(np.uint8), mask=m, transform=transform)]


def _simplify_filter(
    polys: list[Any], transform: Affine, simplify_px: float, min_area_px: float
) -> list[Any]:
    pixel_area = abs(transform.determinant)
    tolerance = simplify_px * math.sqrt(pixel_area)
    out = []
    for poly in polys:
        if poly.area < min_area_px * pixel_area:
            continue
        if tolerance > 0:
            poly = poly.simplify(tolerance, preserve_topology=True)
        if not poly.is_empty and poly.area > 0:
            out.append(poly)
    out.sort(key=lambda p: -p.area)
    return out


def mask_to_polygons(
    mask: np.ndarray,
    transform: Affine | Sequence[float],
    crs: CRS | str | None,
    simplify_px: float = 0.5,
    min_area_px: float = 4,
) -> list[dict]:
    """A boolean mask [H, W] on the grid of ``transform`` -> GeoJSON Polygons in EPSG:4326, largest first.

    Polygons are traced on pixel edges (``rasterio.features.shapes``) in pixel coordinates, parts under
    ``min_area_px`` pixels are dropped, the rest simplified by ``simplify_px`` pixels (topology preserved, so
    never invalid or empty), then mapped through ``transform``, projected and oriented (right-hand rule).
    Without a CRS there is no geometry: an empty list (see ``mask_to_pixel_polygons``).
    """
    crs = _as_crs(crs)
    if crs is None:
        logger.warning("mask has no CRS: no GeoJSON polygons (use mask_to_pixel_polygons)")
        return []
    identity = Affine.identity()
    polys = _simplify_filter(_mask_shapes(mask, identity), identity, simplify_px, min_area_px)
    return pixel_shapes_to_geometries(polys, transform, crs)


def pixel_shapes_to_geometries(
    polygons: Iterable[Any], transform: Affine | Sequence[float], crs: CRS | str | None
) -> list[dict]:
    """Shapely polygons in pixel coordinates of ``transform`` -> GeoJSON Polygons in EPSG:4326 (RFC 7946:
    exterior CCW, holes CW). A part the projection bends invalid is repaired; nothing empty is returned."""
    crs = _as_crs(crs)
    if crs is None:
        return []
    affine = _as_affine(transform)
    to_wgs = _to_wgs84(crs)

    def to_lonlat(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cx, cy = affine @ (np.asarray(x), np.asarray(y))
        lon, lat = to_wgs.transform(np.asarray(cx), np.asarray(cy))
        return np.asarray(lon), np.asarray(lat)

    out = []
    for poly in polygons:
        mapped = _map_coords(to_lonlat, poly)
        for part in _polygonal_parts(mapped if mapped.is_valid else shapely.make_valid(mapped)):
            out.append(_geojson(_orient(part)))
    return out


def _polygonal_parts(geom: Any) -> list[Any]:
    """The non-empty Polygons of any geometry (make_valid and unions may add lines or points)."""
    if geom.is_empty:
        return []
    if geom.geom_type == "Polygon":
        return [geom] if geom.area > 0 else []
    if geom.geom_type in ("MultiPolygon", "GeometryCollection"):
        return [p for g in geom.geoms for p in _polygonal_parts(g)]
    return []


def union_geometries(geometries: Iterable[dict | Any]) -> dict | None:
    """The union of GeoJSON (EPSG:4326) polygons as one Polygon or MultiPolygon, oriented per RFC 7946.

    GEOS returns unions with clockwise shells; a reader that trusts the right-hand rule would take them for
    holes, so every union is re-oriented here. None when nothing polygonal is left.
    """
    shapes = [shape(g) if isinstance(g, dict) else g for g in geometries]
    parts = _polygonal_parts(unary_union(shapes)) if shapes else []
    if not parts:
        return None
    merged = parts[0] if len(parts) == 1 else MultiPolygon(parts)
    return _geojson(_orient(merged))


def mask_to_pixel_polygons(
    mask: np.ndarray, simplify_px: float = 0.5, min_area_px: float = 4
) -> list[list[tuple[float, float]]]:
    """Exterior rings [(x, y), ...] in pixel coordinates of a mask's parts, largest first (``Region.pixel_polygon``
    for images with or without a CRS)."""
    polys = _simplify_filter(
        _mask_shapes(mask, Affine.identity()), Affine.identity(), simplify_px, min_area_px
    )
    return [[(float(x), float(y)) for x, y in p.exterior.coords] for p in polys]


# ----------------------------------------------------------------------------------------------------------------
# Areas


def _equal_area_crs(lon: float, lat: float) -> ProjCRS:
    return ProjCRS.from_proj4(f"+proj=laea +lat_0={lat:.6f} +lon_0={lon:.6f} +ellps=WGS84 +units=m +no_defs")


def area_m2(geometry: dict | Any, crs: CRS | str | None = None) -> float:
    """Area in m² of a polygon geometry: GeoJSON/shapely in EPSG:4326, or shapely/GeoJSON in ``crs`` units.

    Computed in a Lambert azimuthal equal-area projection centred on the geometry (exact areas on the WGS84
    ellipsoid), after densifying edges so long ones follow the ground. Never from degrees or Mercator metres.
    """
    geom = shape(geometry) if isinstance(geometry, dict) else geometry
    if geom.is_empty:
        return 0.0
    crs = _as_crs(crs)
    if crs is not None and crs != WGS84:
        geom = _densify(geom)
        geom = _map_coords(_to_wgs84(crs).transform, geom)
    else:
        _check_lonlat(geom)
        geom = _densify(geom)
    centre = geom.envelope.centroid
    laea = _transformer(WGS84.to_wkt(), _equal_area_crs(centre.x, centre.y).to_wkt())
    return float(_map_coords(laea.transform, geom).area)


def _densify(geom: Any, pieces: int = 64) -> Any:
    minx, miny, maxx, maxy = geom.bounds
    extent = max(maxx - minx, maxy - miny)
    return shapely.segmentize(geom, extent / pieces) if extent > 0 else geom


def mask_area_m2(
    mask: np.ndarray, transform: Affine | Sequence[float], crs: CRS | str | None
) -> float | None:
    """Ground area in m² of the True pixels of a mask on the grid of ``transform`` (None without a CRS).

    Each row's pixel area is measured in an equal-area projection centred on the mask's grid, so geographic
    (degree) grids get the latitude right row by row.
    """
    crs = _as_crs(crs)
    if crs is None:
        return None
    m = np.asarray(mask).astype(bool)
    if m.ndim != 2:
        raise RasterError(f"a mask must be 2-D [H, W], got shape {m.shape}")
    per_row = m.sum(axis=1)
    rows = np.nonzero(per_row)[0]
    if rows.size == 0:
        return 0.0
    affine = _as_affine(transform)
    cx = float(np.nonzero(m.any(axis=0))[0].mean()) + 0.5
    corners_x = np.array([cx - 0.5, cx + 0.5, cx + 0.5, cx - 0.5])
    xs = np.tile(corners_x, (rows.size, 1))  # [R, 4]
    ys = rows[:, None] + np.array([0.0, 0.0, 1.0, 1.0])[None]  # [R, 4]
    wx, wy = affine @ (xs, ys)
    lon, lat = _to_wgs84(crs).transform(np.asarray(wx), np.asarray(wy))
    laea = _transformer(WGS84.to_wkt(), _equal_area_crs(float(np.mean(lon)), float(np.mean(lat))).to_wkt())
    ex, ey = laea.transform(lon, lat)
    ex, ey = np.asarray(ex), np.asarray(ey)
    areas = 0.5 * np.abs((ex * np.roll(ey, -1, axis=1) - np.roll(ex, -1, axis=1) * ey).sum(axis=1))  # [R]
    return float((areas * per_row[rows]).sum())


# ----------------------------------------------------------------------------------------------------------------
# Masks on large grids


class SparseMask:
    """A boolean mask on a raster grid of any size, held as the aligned ``block`` × ``block`` pieces that have
    any True pixel.

    Why: a large scene is answered window by window, and the mask of a merged region is the union of the masks
    of the windows that saw it. Allocating that union on the scene grid would cost the scene's size (100 Mpx for
    a 10,000² scene; 40 Gpx for a 200,000² one); kept as blocks it costs only what the windows read. Blocks are
    aligned to the tiling ``write_masks_geotiff`` writes, so an overlap of two windows is an OR in a block and
    the file is written block by block. Coordinates are source pixels of the grid: (col, row), (x, y).
    """

    def __init__(self, height: int, width: int, block: int = 256) -> None:
        if height <= 0 or width <= 0 or block <= 0:
            raise RasterError(f"a mask grid needs a positive size, got {width} × {height} (block {block})")
        self.height, self.width, self.block = int(height), int(width), int(block)
        self.blocks: dict[tuple[int, int], np.ndarray] = {}  # (block_row, block_col) -> bool [bh, bw]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @classmethod
    def from_dense(
        cls, mask: np.ndarray, col_off: int = 0, row_off: int = 0, shape: tuple[int, int] | None = None
    ) -> SparseMask:
        """A window's mask [h, w] placed at (col_off, row_off) of a grid of ``shape`` (default: the mask's)."""
        m = np.asarray(mask)
        if m.ndim != 2:
            raise RasterError(f"a mask must be 2-D [H, W], got shape {m.shape}")
        height, width = shape if shape is not None else m.shape
        return cls(height, width).add(m, col_off, row_off)

    def _block_window(self, key: tuple[int, int]) -> tuple[int, int, int, int]:
        """(col_off, row_off, width, height) of a block, clipped to the grid."""
        r0, c0 = key[0] * self.block, key[1] * self.block
        return c0, r0, min(self.block, self.width - c0), min(self.block, self.height - r0)

    def add(self, mask: np.ndarray, col_off: int = 0, row_off: int = 0) -> SparseMask:
        """OR a window's mask [h, w] into the grid at (col_off, row_off); the part outside the grid is dropped."""
        m = np.asarray(mask).astype(bool, copy=False)
        if m.ndim != 2:
            raise RasterError(f"a mask must be 2-D [H, W], got shape {m.shape}")
        col_off, row_off = int(col_off), int(row_off)
        c0, r0 = max(col_off, 0), max(row_off, 0)
        c1, r1 = min(col_off + m.shape[1], self.width), min(row_off + m.shape[0], self.height)
        if c1 <= c0 or r1 <= r0:
            return self
        b = self.block
        for br in range(r0 // b, (r1 - 1) // b + 1):
            for bc in range(c0 // b, (c1 - 1) // b + 1):
                bx, by, bw, bh = self._block_window((br, bc))
                x0, y0, x1, y1 = max(bx, c0), max(by, r0), min(bx + bw, c1), min(by + bh, r1)
                part = m[y0 - row_off : y1 - row_off, x0 - col_off : x1 - col_off]
                if not part.any():
                    continue
                target = self.blocks.get((br, bc))
                if target is None:
                    target = self.blocks[(br, bc)] = np.zeros((bh, bw), bool)
                target[y0 - by : y1 - by, x0 - bx : x1 - bx] |= part
        return self

    def union(self, other: SparseMask) -> SparseMask:
        """A new mask: this one OR ``other`` (same grid)."""
        if other.shape != self.shape or other.block != self.block:
            raise RasterError(f"cannot merge masks on different grids: {self.shape} and {other.shape}")
        out = SparseMask(self.height, self.width, self.block)
        for source in (self, other):
            for key, values in source.blocks.items():
                if key in out.blocks:
                    out.blocks[key] = out.blocks[key] | values
                else:
                    out.blocks[key] = values.copy()
        return out

    def any(self) -> bool:
        return any(v.any() for v in self.blocks.values())

    def count(self) -> int:
        """The number of True pixels (overlaps counted once)."""
        return int(sum(np.count_nonzero(v) for v in self.blocks.values()))

    @property
    def nbytes(self) -> int:
        return int(sum(v.nbytes for v in self.blocks.values()))

    def bbox(self) -> tuple[float, float, float, float] | None:
        """The pixel box (x1, y1, x2, y2) of the True pixels (x2, y2 exclusive), None when empty."""
        boxes = []
        for key, values in self.blocks.items():
            rows, cols = np.nonzero(values.any(axis=1))[0], np.nonzero(values.any(axis=0))[0]
            if rows.size:
                c0, r0, _, _ = self._block_window(key)
                boxes.append((c0 + cols[0], r0 + rows[0], c0 + cols[-1] + 1, r0 + rows[-1] + 1))
        if not boxes:
            return None
        return tuple(float(f(b[i] for b in boxes)) for i, f in enumerate((min, min, max, max)))  # type: ignore

    def read(self, window: tuple[int, int, int, int]) -> np.ndarray:
        """A dense bool [h, w] copy of a window (col_off, row_off, width, height) of the grid."""
        col, row, w, h = (int(v) for v in window)
        out = np.zeros((h, w), bool)
        for key, values in self.blocks.items():
            bx, by, bw, bh = self._block_window(key)
            x0, y0, x1, y1 = max(bx, col), max(by, row), min(bx + bw, col + w), min(by + bh, row + h)
            if x1 > x0 and y1 > y0:
                out[y0 - row : y1 - row, x0 - col : x1 - col] = values[y0 - by : y1 - by, x0 - bx : x1 - bx]
        return out

    def to_dense(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """The whole grid as bool [H, W]; refused past ``max_pixels`` (use ``read`` on windows instead)."""
        if self.height * self.width > max_pixels:
            raise RasterError(
                f"the mask grid is {self.width:,} × {self.height:,} pixels, more than max_pixels={max_pixels:,}; "
                "read it by windows (SparseMask.read) or write it with write_masks_geotiff"
            )
        return self.read((0, 0, self.width, self.height))

    def pixel_polygons(self, simplify_px: float = 0.5, min_area_px: float = 4) -> list[Any]:
        """Shapely polygons of the True pixels in grid pixel coordinates, largest first.

        Each block is traced on its own; the pieces share exact integer edges, so their union is seamless.
        """
        pieces = []
        for key, values in self.blocks.items():
            c0, r0, _, _ = self._block_window(key)
            pieces.extend(_mask_shapes(values, Affine.translation(c0, r0)))
        if not pieces:
            return []
        identity = Affine.identity()
        return _simplify_filter(_polygonal_parts(unary_union(pieces)), identity, simplify_px, min_area_px)

    def area_m2(self, transform: Affine | Sequence[float], crs: CRS | str | None) -> float | None:
        """Ground area in m² of the True pixels on the grid of ``transform`` (None without a CRS)."""
        if _as_crs(crs) is None:
            return None
        affine = _as_affine(transform)
        total = 0.0
        for key, values in self.blocks.items():
            c0, r0, _, _ = self._block_window(key)
            total += mask_area_m2(values, affine @ Affine.translation(c0, r0), crs) or 0.0
        return total


# ----------------------------------------------------------------------------------------------------------------
# Writing


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """``rsvlm.atomic.atomic_path`` with the user's mistakes as ``RasterError``: a missing folder (named, nothing
    is written), a folder given as the output, a folder we cannot write in."""
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise RasterError(f"output folder {folder} does not exist; create it first (nothing was written)")
    if target.is_dir():
        raise RasterError(f"output path {target} is a folder")
    if not os.access(folder, os.W_OK):
        raise RasterError(f"cannot write in {folder} (permission denied)")
    with atomic_path(target) as tmp:
        yield tmp


def _mask_profile(
    shape: tuple[int, int],
    transform: Affine | Sequence[float],
    crs: CRS | str | None,
    block: int = 256,
    **extra: Any,
) -> dict[str, Any]:
    """A single-band uint8 deflate GeoTIFF profile; tiled in ``block``² blocks when the grid holds one."""
    height, width = shape
    profile: dict[str, Any] = dict(
        driver="GTiff",
        height=height,
        width=width,
        count=1,
        dtype="uint8",
        crs=_as_crs(crs),
        transform=_as_affine(transform),
        compress="deflate",
        **extra,
    )
    if height >= block and width >= block and block % 16 == 0:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    return profile


def write_mask_geotiff(
    path: str | os.PathLike,
    mask: np.ndarray,
    transform: Affine | Sequence[float],
    crs: CRS | str | None,
    nodata: int | None = None,
) -> Path:
    """A mask [H, W] (bool, or integer labels 0-255) -> single-band uint8 deflate GeoTIFF with the given CRS and
    transform (pass the window's transform so it lands on the map where it was read). Atomic."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise RasterError(f"a mask must be 2-D [H, W], got shape {arr.shape}")
    if arr.dtype != bool and (
        arr.size and (arr.min() < 0 or arr.max() > 255 or not np.all(arr == np.round(arr)))
    ):
        raise RasterError("mask values must be booleans or integers in 0-255 to write a uint8 GeoTIFF")
    arr = arr.astype(np.uint8)
    profile = _mask_profile(arr.shape, transform, crs, nodata=nodata)
    with atomic_write(path) as tmp:
        try:
            with _quiet(), rasterio.open(tmp, "w", **profile) as dst:
                dst.write(arr, 1)
        except (RasterioError, CPLE_BaseError) as e:
            raise RasterError(f"writing {path} failed ({_gdal_message(e)})") from e
    return Path(path)


def write_masks_geotiff(
    path: str | os.PathLike,
    masks: Sequence[SparseMask | np.ndarray],
    transform: Affine | Sequence[float],
    crs: CRS | str | None,
) -> Path:
    """Masks on one grid -> one single-band uint8 GeoTIFF: value i+1 where the i-th mask is True (later masks
    win where they overlap, values stop at 255), 0 elsewhere.

    Written block by block as a tiled (256²), sparse, deflate GeoTIFF: blocks no mask touches are never written
    (GDAL reads them as 0), so a mask on a 10,000² or 200,000² scene costs the blocks it covers, in memory and
    on disk. Dense masks (small images) are accepted too. Atomic.
    """
    if not masks:
        raise RasterError("no masks to write")
    sparse = [m if isinstance(m, SparseMask) else SparseMask.from_dense(m) for m in masks]
    height, width = sparse[0].shape
    if any(m.shape != (height, width) or m.block != sparse[0].block for m in sparse):
        raise RasterError(f"masks are on different grids: {sorted({m.shape for m in sparse})}")
    profile = _mask_profile((height, width), transform, crs, block=sparse[0].block, sparse_ok=True)
    keys = sorted(set().union(*(m.blocks for m in sparse)))
    with atomic_write(path) as tmp:
        try:
            with _quiet(), rasterio.open(tmp, "w", **profile) as dst:
                for key in keys:
                    col, row, w, h = sparse[0]._block_window(key)
                    out = np.zeros((h, w), np.uint8)  # [bh, bw]
                    for value, mask in enumerate(sparse, start=1):
                        part = mask.blocks.get(key)
                        if part is not None:
                            out[part] = min(value, 255)
                    dst.write(out, 1, window=Window(col, row, w, h))
        except (RasterioError, CPLE_BaseError) as e:
            raise RasterError(f"writing {path} failed ({_gdal_message(e)})") from e
    return Path(path)


_GEOMETRY_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"}


def _as_feature(item: Any) -> dict:
    """A Feature dict, a bare geometry dict, a (geometry, properties) pair, or an object with ``geometry`` (such
    as ``rsvlm.grounding.Region``) -> a GeoJSON Feature."""
    if isinstance(item, dict) and item.get("type") == "Feature":
        feature = {
            "type": "Feature",
            "geometry": item.get("geometry"),
            "properties": item.get("properties") or {},
        }
    elif isinstance(item, dict) and item.get("type") in _GEOMETRY_TYPES | {"GeometryCollection"}:
        feature = {"type": "Feature", "geometry": item, "properties": {}}
    elif isinstance(item, tuple) and len(item) == 2:
        feature = {"type": "Feature", "geometry": item[0], "properties": dict(item[1] or {})}
    elif hasattr(item, "geometry"):
        props = {
            k: getattr(item, k) for k in ("label", "area_m2", "score") if getattr(item, k, None) is not None
        }
        feature = {"type": "Feature", "geometry": item.geometry, "properties": props}
    else:
        raise RasterError(f"cannot make a GeoJSON feature from {type(item).__name__}")
    if feature["geometry"] is not None:
        _check_lonlat(shape(feature["geometry"]), "a feature geometry")
    return feature


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_geojson(path: str | os.PathLike, features: Iterable[Any]) -> Path:
    """Write a GeoJSON FeatureCollection (RFC 7946: EPSG:4326 lon/lat, no ``crs`` member) atomically."""
    collection = {"type": "FeatureCollection", "features": [_as_feature(f) for f in features]}
    try:
        text = json.dumps(collection, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as e:
        raise RasterError(f"features cannot be written as GeoJSON ({e})") from e
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def preset_names() -> list[str]:
    """Band preset names accepted by ``read_image(bands=...)``."""
    return sorted(PRESETS)
