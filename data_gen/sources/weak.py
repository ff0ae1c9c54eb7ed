"""Weak labels from spectral indices, for RGBN / multispectral imagery that has no labels.

NDVI = (NIR - R) / (NIR + R) above a threshold -> vegetation; NDWI (McFeeters) = (G - NIR) / (G + NIR) above a
threshold -> water (water wins where both hold, which is rare); everything else -> other. Fixed thresholds
(NDVI 0.3, NDWI 0.1) are the default: standard for reflectance, and the small NDWI margin keeps grey roofs
and dark soil (whose NIR is close to green) out of the water class on 8-bit NAIP DNs.
``method="otsu"`` picks each threshold by Otsu on the tile's index histogram, clamped to a sane range
(NDVI 0.1-0.6, NDWI 0.1-0.5) so that a tile with no water does not get half its pixels called water.
Tiles labelled this way carry ``Tile.weak = True`` and the ``weak-ndvi-ndwi`` taxonomy.
"""

from __future__ import annotations

import numpy as np

from data_gen.tile import Taxonomy

from .taxonomy import load_taxonomy

OTHER, VEGETATION, WATER, NODATA = 0, 1, 2, 255
NDVI_T, NDWI_T = 0.3, 0.1


def weak_taxonomy() -> Taxonomy:
    return load_taxonomy("weak-ndvi-ndwi")


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    den = a + b
    return np.divide(a - b, den, out=np.zeros_like(den), where=den != 0)


def otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold over ``values`` (1-D): maximises the between-class variance of the histogram."""
    if values.size == 0:
        return 0.0
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    # Between two separated modes the variance is flat across the gap: take the middle of that plateau.
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float((centres[best[0]] + centres[best[-1]]) / 2)


def weak_labels(
    red: np.ndarray,
    green: np.ndarray,
    nir: np.ndarray,
    valid: np.ndarray | None = None,
    method: str = "fixed",
    ndvi_t: float = NDVI_T,
    ndwi_t: float = NDWI_T,
) -> tuple[np.ndarray, dict[str, float]]:
    """[H, W] uint8 labels (0 other, 1 vegetation, 2 water, 255 nodata) and the thresholds used."""
    ndvi = normalized_difference(nir, red)  # [H, W]
    ndwi = normalized_difference(green, nir)
    valid = np.ones(ndvi.shape, bool) if valid is None else valid
    if method == "otsu":
        ndvi_t = float(np.clip(otsu_threshold(ndvi[valid]), 0.1, 0.6))
        ndwi_t = float(np.clip(otsu_threshold(ndwi[valid]), 0.1, 0.5))
    elif method != "fixed":
        raise ValueError(f"weak label method must be 'fixed' or 'otsu', got {method!r}")
    labels = np.full(ndvi.shape, OTHER, dtype=np.uint8)
    labels[ndvi > ndvi_t] = VEGETATION
    labels[ndwi > ndwi_t] = WATER
    labels[~valid] = NODATA
    return labels, {"ndvi": ndvi_t, "ndwi": ndwi_t}
