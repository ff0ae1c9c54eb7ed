"""Scene imagery: one multi-band file or a folder of single-band files (Sentinel-2 / Landsat), read as an RGB
uint8 composite plus the raw bands weak labels need (red, green, NIR)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from .errors import SourceError
from .raster import S2_BAND, Grid, grid_of, open_raster, plan_bands, read_onto, stretch_limits, to_uint8

# Band-file names -> roles, by sensor family (files named ..._B04.tif, LC08_..._B4.TIF).
_LANDSAT_OLI = {"red": "B4", "green": "B3", "blue": "B2", "nir": "B5"}
_LANDSAT_TM = {"red": "B3", "green": "B2", "blue": "B1", "nir": "B4"}
_SENTINEL2 = {"red": "B4", "green": "B3", "blue": "B2", "nir": "B8"}


def band_key(filename: str) -> str | None:
    """``..._B04.tif`` -> ``B4``; ``..._B8A.jp2`` -> ``B8A``; None when the name is not a band file."""
    m = S2_BAND.match(Path(filename).name)
    if not m:
        return None
    b = m.group("band").upper()
    return "B8A" if b == "B8A" else f"B{int(b[1:])}"


def stack_roles(files: tuple[str, ...]) -> dict[str, str]:
    """Role (red, green, blue, nir) -> file for a band-file stack, by the sensor its names suggest."""
    by_band = {band_key(f): f for f in files}
    prefix = Path(files[0]).name.upper()
    table = _LANDSAT_OLI if prefix.startswith(("LC08", "LC09", "LO08")) else _SENTINEL2
    if prefix.startswith(("LE07", "LT05", "LT04")):
        table = _LANDSAT_TM
    roles = {role: by_band[b] for role, b in table.items() if b in by_band}
    if "nir" not in roles and "B8A" in by_band and table is _SENTINEL2:
        roles["nir"] = by_band["B8A"]
    missing = [r for r in ("red", "green", "blue") if r not in roles]
    if missing:
        raise SourceError(f"band files in {Path(files[0]).parent} lack the {', '.join(missing)} band(s)")
    return roles


@dataclass
class ImageReader:
    """Reads one scene's imagery onto tile grids. Not picklable (open datasets); build one per process."""

    files: tuple[str, ...]
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # role -> (dataset, band index)
        self._src: dict[str, tuple[rasterio.io.DatasetReader, int]] = {}
        if len(self.files) == 1:
            ds = open_raster(self.files[0])
            plan = plan_bands(ds.count, tuple(ds.descriptions), self.extra)
            bad = [b for b in (*plan.rgb, plan.nir or 1) if not 1 <= b <= ds.count]
            if bad:
                raise SourceError(f"{self.files[0]} has {ds.count} band(s); band(s) {bad} do not exist")
            for role, b in zip(("red", "green", "blue"), plan.rgb):
                self._src[role] = (ds, b)
            if plan.nir:
                self._src["nir"] = (ds, plan.nir)
            self.sensor = plan.sensor
            ref = ds
        else:
            opened: dict[str, rasterio.io.DatasetReader] = {}
            for role, f in stack_roles(self.files).items():
                opened.setdefault(f, open_raster(f))
                self._src[role] = (opened[f], 1)
            self.sensor = "band-files"
            ref = self._src["red"][0]
        self.grid: Grid = grid_of(ref)
        self.dtype = np.dtype(ref.dtypes[0])
        self._limits: dict[str, tuple[float, float]] = {}

    @property
    def has_nir(self) -> bool:
        return "nir" in self._src

    def _limit(self, role: str) -> tuple[float, float]:
        if role not in self._limits:
            ds, b = self._src[role]
            self._limits[role] = stretch_limits(ds, [b])[0]
        return self._limits[role]

    def read(self, dst: Grid, scene_grid: Grid, roles: tuple[str, ...] = ("red", "green", "blue", "nir")):
        """Raw bands ``{role: [H, W] float32}`` on ``dst`` and a validity mask [H, W] (not all bands nodata)."""
        raw: dict[str, np.ndarray] = {}
        invalid = np.ones((dst.height, dst.width), dtype=bool)
        # One read per dataset for all the roles it holds (a 4-band file is read once, not four times).
        groups: dict[int, list[str]] = {}
        for role in roles:
            if role in self._src:
                groups.setdefault(id(self._src[role][0]), []).append(role)
        for group in groups.values():
            ds = self._src[group[0]][0]
            fill = ds.nodata if ds.nodata is not None else 0
            same = ds.width == scene_grid.width and ds.height == scene_grid.height
            resampling = Resampling.nearest if same else Resampling.bilinear
            bands = [self._src[r][1] for r in group]
            arr = read_onto(ds, bands, dst, scene_grid, resampling=resampling, fill=fill)  # [C, H, W]
            for role, band in zip(group, arr):
                raw[role] = band.astype(np.float32)
                bad = band == fill if ds.nodata is not None or not same else np.zeros(band.shape, bool)
                if band.dtype.kind == "f":
                    bad |= ~np.isfinite(band)
                invalid &= bad
        return raw, ~invalid

    def rgb(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        """[H, W, 3] uint8 composite: uint8 data as is, anything else stretched to the scene's 2-98 %."""
        bands = np.stack([raw["red"], raw["green"], raw["blue"]])  # [3, H, W]
        if self.dtype == np.uint8:
            return np.ascontiguousarray(np.moveaxis(bands.astype(np.uint8), 0, -1))
        return to_uint8(bands, [self._limit(r) for r in ("red", "green", "blue")])
