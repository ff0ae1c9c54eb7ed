"""Band presets and composites: what each band of a raster is, and how to show any band set to an RGB tower.

Bands get canonical names (``red``, ``green``, ``blue``, ``nir``, ``swir1`` ...) so composites are defined once by
name and work for every sensor: a false-colour composite is (nir, red, green) whether the file is NAIP, Sentinel-2
or Landsat 8/9.

Composites (all float32 [3, H, W] in [0, 1], invalid pixels 0):

- ``true-colour`` (red, green, blue) and ``false-colour`` (nir, red, green), ``swir`` (swir2, nir, red): each band
  is stretched on its own between its 2nd and 98th percentile over the valid pixels, so 12/16-bit data and a few
  saturated outliers still fill [0, 1].
- ``ndvi`` = (nir - red) / (nir + red) and ``ndwi`` = (green - nir) / (green + nir) (McFeeters): the index in
  [-1, 1] goes through a fixed colour ramp (not a per-image stretch, so the same NDVI always looks the same).
  NDVI: water blue -> bare soil tan -> sparse vegetation yellow -> dense vegetation green. NDWI: dry brown ->
  white -> water blue. A colour ramp rather than 3 identical grey bands, because an RGB-trained tower (and a
  person in the demo) separates the classes by hue far better than by one grey level.
- ``grey``: the first band stretched and repeated 3 times (panchromatic, 1- and 2-band inputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


class RasterError(ValueError):
    """Bad raster input or output, with a one-line message a user can act on (re-exported by ``rsvlm.geo``)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


# ----------------------------------------------------------------------------------------------------------------
# Presets


@dataclass(frozen=True)
class BandPreset:
    """A sensor's band order. ``names`` are canonical names in file order; a file may hold the first
    ``min_count``..``len(names)`` of them (Landsat 8/9 products ship 7 to 11 bands)."""

    name: str
    names: tuple[str, ...]
    min_count: int = 0

    def accepts(self, count: int) -> bool:
        if self.min_count:
            return self.min_count <= count <= len(self.names)
        return count == len(self.names)


_S2_L1C = (
    "coastal",  # B01
    "blue",  # B02
    "green",  # B03
    "red",  # B04
    "rededge1",  # B05
    "rededge2",  # B06
    "rededge3",  # B07
    "nir",  # B08
    "nir08",  # B8A
    "water_vapour",  # B09
    "cirrus",  # B10
    "swir1",  # B11
    "swir2",  # B12
)
_S2_L2A = tuple(n for n in _S2_L1C if n != "cirrus")  # L2A drops B10
_LANDSAT_OLI = ("coastal", "blue", "green", "red", "nir", "swir1", "swir2", "pan", "cirrus", "tirs1", "tirs2")

PRESETS: dict[str, BandPreset] = {
    p.name: p
    for p in (
        BandPreset("grey", ("grey",)),
        BandPreset("rgb", ("red", "green", "blue")),
        BandPreset("rgbn", ("red", "green", "blue", "nir")),
        BandPreset("bgrn", ("blue", "green", "red", "nir")),
        BandPreset("sentinel2-l1c", _S2_L1C),
        BandPreset("sentinel2-l2a", _S2_L2A),
        BandPreset("landsat8", _LANDSAT_OLI, min_count=7),
    )
}
PRESET_ALIASES = {
    "gray": "grey",
    "naip": "rgbn",
    "planetscope": "bgrn",
    "s2": "sentinel2-l1c",
    "s2-l1c": "sentinel2-l1c",
    "s2-l2a": "sentinel2-l2a",
    "sentinel2": "sentinel2-l1c",
    "landsat9": "landsat8",
    "landsat8-9": "landsat8",
    "landsat-oli": "landsat8",
}

# Band descriptions that name a band unambiguously (lower-case). Sentinel-2 style names need the leading zero:
# a bare "B4" is red on Sentinel-2 and Landsat 8 but NIR on Landsat 7, so it is not trusted.
_ALIASES = {
    "red": "red",
    "r": "red",
    "green": "green",
    "g": "green",
    "blue": "blue",
    "b": "blue",
    "nir": "nir",
    "n": "nir",
    "near infrared": "nir",
    "near-infrared": "nir",
    "nir08": "nir08",
    "swir1": "swir1",
    "swir 1": "swir1",
    "swir16": "swir1",
    "swir2": "swir2",
    "swir 2": "swir2",
    "swir22": "swir2",
    "coastal": "coastal",
    "pan": "pan",
    "panchromatic": "pan",
    "grey": "grey",
    "gray": "grey",
    "cirrus": "cirrus",
    "rededge": "rededge1",
    "red edge": "rededge1",
    "rededge1": "rededge1",
    "rededge2": "rededge2",
    "rededge3": "rededge3",
}
_S2_CODES = ["b01", "b02", "b03", "b04", "b05", "b06", "b07", "b08", "b8a", "b09", "b10", "b11", "b12"]
_ALIASES.update(dict(zip(_S2_CODES, _S2_L1C)))


def canonical_band_name(description: str | None) -> str | None:
    """A band description (``"Red"``, ``"B08"``, ``"near infrared"``) -> its canonical name, or None."""
    if not description:
        return None
    return _ALIASES.get(" ".join(description.strip().lower().replace("_", " ").split()))


def get_preset(name: str) -> BandPreset:
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    key = PRESET_ALIASES.get(key, key)
    if key not in PRESETS:
        raise RasterError(f"unknown band preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[key]


@dataclass
class BandSelection:
    """Which bands to read (1-based ``indexes``), what they are (``names``), and any alpha band to use as a mask."""

    indexes: list[int]
    names: list[str]
    preset: str | None = None
    alpha_index: int | None = None
    warnings: list[str] = field(default_factory=list)


def resolve_bands(
    spec: str | Sequence[int] | None,
    count: int,
    descriptions: Sequence[str | None] = (),
    colorinterp: Sequence[str] = (),
    source: str = "raster",
) -> BandSelection:
    """Decide which bands of a ``count``-band raster to read and what they are.

    ``spec`` is a preset name (the file must hold that preset's band count), a list of 1-based band indexes, or
    None to guess from band descriptions, colour interpretation and finally the band count.
    """
    descriptions = list(descriptions) + [None] * (count - len(descriptions))
    colorinterp = [c.lower() for c in colorinterp] + ["undefined"] * (count - len(colorinterp))
    alpha = next((i + 1 for i, c in enumerate(colorinterp) if c == "alpha"), None)

    if isinstance(spec, str):
        preset = get_preset(spec)
        if not preset.accepts(count):
            want = f"{preset.min_count}-{len(preset.names)}" if preset.min_count else str(len(preset.names))
            raise RasterError(
                f"band preset {preset.name!r} needs {want} bands but {source} has {count}; "
                f"pass bands=[...] (1-based indexes) or another preset"
            )
        return BandSelection(list(range(1, count + 1)), list(preset.names[:count]), preset.name)

    if spec is not None:
        indexes = [int(i) for i in spec]
        bad = [i for i in indexes if not 1 <= i <= count]
        if not indexes or bad:
            raise RasterError(f"band indexes {list(spec)} are not all in 1..{count} for {source}")
        names = [canonical_band_name(descriptions[i - 1]) or f"band{i}" for i in indexes]
        return BandSelection(indexes, _dedupe(names), None)

    # Guess. Band descriptions that name every band win (NAIP files often mark NIR as "alpha").
    named = [canonical_band_name(d) for d in descriptions[:count]]
    if all(named) and len(set(named)) == len(named):
        return BandSelection(list(range(1, count + 1)), list(named), None)  # type: ignore[arg-type]
    # An alpha band is a validity mask, not data (the reader checks it really is 0/255 and keeps it otherwise).
    data_bands = [i for i in range(1, count + 1) if i != alpha]

    interp_names = {"red": "red", "green": "green", "blue": "blue", "gray": "grey"}
    ci = [interp_names.get(colorinterp[i - 1]) for i in data_bands]
    n = len(data_bands)
    if n == 3 and ci == ["red", "green", "blue"]:
        return BandSelection(data_bands, ["red", "green", "blue"], "rgb", alpha)
    if n == 4 and ci[:3] == ["red", "green", "blue"] and ci[3] is None:
        return BandSelection(data_bands, ["red", "green", "blue", "nir"], "rgbn", alpha)

    by_count = {1: "grey", 3: "rgb", 4: "rgbn", 12: "sentinel2-l2a", 13: "sentinel2-l1c"}
    warnings: list[str] = []
    if n == 2:
        warnings.append(
            f"{source} has 2 unnamed bands; showing band {data_bands[0]} as grey (pass bands=[...] to choose)"
        )
        return BandSelection(data_bands, ["grey", f"band{data_bands[1]}"], None, alpha, warnings)
    if n in by_count:
        preset = PRESETS[by_count[n]]
        if n > 3:
            warnings.append(
                f"{source} has {n} unnamed bands; assumed {preset.name} order {list(preset.names)}"
            )
        return BandSelection(data_bands, list(preset.names), preset.name, alpha, warnings)
    if 7 <= n <= 11:
        warnings.append(f"{source} has {n} unnamed bands; assumed Landsat 8/9 OLI order")
        return BandSelection(data_bands, list(_LANDSAT_OLI[:n]), "landsat8", alpha, warnings)
    warnings.append(
        f"{source} has {n} unnamed bands and no preset fits; bands 1-3 are shown as RGB (pass bands=...)"
    )
    return BandSelection(data_bands, [f"band{i}" for i in data_bands], None, alpha, warnings)


def _dedupe(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


# ----------------------------------------------------------------------------------------------------------------
# Stretch and composites (pure numpy)

COMPOSITES: dict[str, tuple[str, str, str]] = {
    "true-colour": ("red", "green", "blue"),
    "false-colour": ("nir", "red", "green"),
    "swir": ("swir2", "nir", "red"),
}
INDICES: dict[str, tuple[str, str]] = {"ndvi": ("nir", "red"), "ndwi": ("green", "nir")}
COMPOSITE_ALIASES = {
    "true-color": "true-colour",
    "truecolour": "true-colour",
    "truecolor": "true-colour",
    "rgb": "true-colour",
    "false-color": "false-colour",
    "falsecolour": "false-colour",
    "falsecolor": "false-colour",
    "cir": "false-colour",
    "color-infrared": "false-colour",
    "gray": "grey",
}

# Colour ramps over index values in [-1, 1]: (stop, (r, g, b)).
_RAMPS = {
    "ndvi": [
        (-1.0, (0.05, 0.25, 0.65)),
        (0.0, (0.80, 0.70, 0.50)),
        (0.25, (0.93, 0.88, 0.40)),
        (0.5, (0.45, 0.70, 0.20)),
        (1.0, (0.00, 0.35, 0.05)),
    ],
    "ndwi": [(-1.0, (0.45, 0.30, 0.15)), (0.0, (0.95, 0.95, 0.95)), (1.0, (0.05, 0.20, 0.75))],
}


def composite_names() -> list[str]:
    return [*COMPOSITES, *INDICES, "grey"]


def canonical_composite(name: str) -> str:
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    key = COMPOSITE_ALIASES.get(key, key)
    if key not in COMPOSITES and key not in INDICES and key != "grey":
        raise RasterError(f"unknown composite {name!r}; known: {', '.join(composite_names())}")
    return key


def stretch_limits(
    band: np.ndarray, valid: np.ndarray, low: float = 2.0, high: float = 98.0, max_samples: int = 1_000_000
) -> tuple[float, float] | None:
    """The ``low``/``high`` percentiles of a band's valid pixels (None when it has none).

    Percentiles come from at most ``max_samples`` evenly strided valid pixels, so a 64 Mpx band costs the same as
    a 1 Mpx one. A band whose percentiles meet falls back to its min and max.
    """
    values = band[valid]
    if values.size == 0:
        return None
    if values.size > max_samples:
        values = values[:: values.size // max_samples + 1]
    lo, hi = np.percentile(values, [low, high])
    if not hi > lo:
        lo, hi = float(values.min()), float(values.max())
    return float(lo), float(hi)


def stretch(
    band: np.ndarray,
    valid: np.ndarray,
    low: float = 2.0,
    high: float = 98.0,
    max_samples: int = 1_000_000,
    limits: tuple[float, float] | None = None,
) -> np.ndarray:
    """One band [H, W] -> [0, 1] between its ``low`` and ``high`` percentiles over valid pixels; invalid -> 0.

    ``limits`` (lo, hi) replaces the band's own percentiles: windows of one scene are stretched with the scene's
    limits so that they look alike (and like the overview) to the model. A constant band maps to 0.5 (there is
    nothing to stretch, but it is not black).
    """
    out = np.zeros(band.shape, dtype=np.float32)
    if limits is None:
        limits = stretch_limits(band, valid, low, high, max_samples)
    if limits is None:
        return out
    lo, hi = limits
    if not hi > lo:
        out[valid] = 0.5
        return out
    scaled = (band.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)
    np.clip(scaled, 0.0, 1.0, out=scaled)
    out[valid] = scaled[valid]
    return out


def band_index(names: Sequence[str], wanted: str) -> int | None:
    """Position of a canonical band in ``names`` (``nir`` falls back to Sentinel-2's narrow ``nir08``)."""
    if wanted in names:
        return list(names).index(wanted)
    if wanted == "nir" and "nir08" in names:
        return list(names).index("nir08")
    return None


def spectral_index(data: np.ndarray, valid: np.ndarray, names: Sequence[str], name: str) -> np.ndarray:
    """A normalised difference index [H, W] in [-1, 1]; NaN where invalid or where both bands are 0."""
    a_name, b_name = INDICES[name]
    ia, ib = band_index(names, a_name), band_index(names, b_name)
    if ia is None or ib is None:
        raise RasterError(f"{name.upper()} needs {a_name} and {b_name} bands; this image has {list(names)}")
    a = data[ia].astype(np.float32)
    b = data[ib].astype(np.float32)
    total = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        index = (a - b) / total
    index[~valid | (total == 0)] = np.nan
    return np.clip(index, -1.0, 1.0)


def colour_ramp(index: np.ndarray, name: str) -> np.ndarray:
    """Index [H, W] in [-1, 1] (NaN = invalid) -> RGB [3, H, W] in [0, 1] through the fixed ramp; NaN -> 0."""
    stops = _RAMPS[name]
    xs = [s for s, _ in stops]
    finite = np.isfinite(index)
    safe = np.where(finite, index, 0.0)
    rgb = np.stack([np.interp(safe, xs, [c[k] for _, c in stops]) for k in range(3)]).astype(np.float32)
    rgb[:, ~finite] = 0.0
    return rgb  # [3, H, W]


def render_composite(
    data: np.ndarray,
    valid: np.ndarray,
    names: Sequence[str],
    name: str,
    limits: Sequence[tuple[float, float] | None] | None = None,
) -> np.ndarray:
    """``data`` [C, H, W] raw values -> composite ``name`` as float32 [3, H, W] in [0, 1]; ``limits`` per band
    (see ``stretch``) replace each band's own percentiles."""
    key = canonical_composite(name)
    if key in INDICES:
        return colour_ramp(spectral_index(data, valid, names, key), key)
    band_limits = list(limits) if limits is not None else [None] * data.shape[0]
    if key == "grey":
        grey = stretch(data[0], valid, limits=band_limits[0])
        return np.stack([grey, grey, grey])
    picks = [band_index(names, n) for n in COMPOSITES[key]]
    if any(p is None for p in picks):
        raise RasterError(
            f"the {key} composite needs bands {list(COMPOSITES[key])}; this image has {list(names)}"
        )
    return np.stack([stretch(data[p], valid, limits=band_limits[p]) for p in picks])  # type: ignore[index]


def default_composite(names: Sequence[str]) -> str | None:
    """The composite to show when none is asked for: true colour when possible, else grey (None = first three
    bands as they are, for unnamed band sets)."""
    if all(band_index(names, n) is not None for n in COMPOSITES["true-colour"]):
        return "true-colour"
    if len(names) < 3 or names[0] in ("grey", "pan"):
        return "grey"
    return None
