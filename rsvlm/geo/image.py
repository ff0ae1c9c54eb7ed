"""``GeoImage``: the pixels of one read plus everything needed to put them back on the map.

What a model sees (``rgb``, ``composite``, ``bands_for_model``) and what goes back on the map (boxes, mask
polygons, areas on this image's grid) are methods here; reading a file into one is ``rsvlm.geo.read``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from rsvlm.bands import (
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
from rsvlm.geo.measure import ground_sample_distance, mask_area_m2
from rsvlm.geo.vector import mask_to_polygons, pixel_box_to_geometry


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
        return ground_sample_distance(self.transform, self.crs, self.width, self.height)

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
