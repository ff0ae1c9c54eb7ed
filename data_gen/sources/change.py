"""Change labels: from two label maps, from a binary change mask, or synthesised by label-guided edits.

:func:`synthesize_second_date` follows HySCDG's idea (change pairs whose labels are exact because the edit is
made from the labels): it removes buildings (inpainted with the surrounding ground), adds buildings (roof-like
rectangles with a shadow on open ground), clears vegetation (woodland -> bare soil) and floods land next to
water, updating ``labels2`` and the change mask pixel for pixel with every edit.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from scipy import ndimage

from data_gen.tile import Taxonomy, Tile

from .taxonomy import find_class

log = logging.getLogger(__name__)

BUILDING = ("building", "buildings", "built-up", "built area")
GROUND = ("background", "barren", "bareland", "bare ground", "agriculture", "farmland", "cropland", "crops",
          "grassland", "grass", "low vegetation", "rangeland", "other", "clutter", "bare / sparse vegetation",
          "agriculture land")  # fmt: skip
BARE = ("barren", "bareland", "bare ground", "bare / sparse vegetation", "background", "other", "agriculture",
        "farmland", "cropland")  # fmt: skip
VEGETATION = ("woodland", "forest", "tree cover", "trees", "tree", "vegetation")
WATER = ("water", "permanent water bodies")
ROOF_COLOURS = np.array(
    [[150, 150, 150], [175, 90, 70], [215, 215, 210], [110, 105, 100], [190, 120, 80]], float
)
SOIL_COLOUR = np.array([150, 120, 90], float)


def change_from_labels(labels: np.ndarray, labels2: np.ndarray, taxonomy: Taxonomy | None) -> np.ndarray:
    """[H, W] bool: the class differs and neither date is an ignore value."""
    ignore = list(taxonomy.ignore_values) if taxonomy else []
    valid = ~np.isin(labels, ignore) & ~np.isin(labels2, ignore)
    return (labels != labels2) & valid


def change_from_mask(mask: np.ndarray, change_values: tuple[int, ...]) -> np.ndarray:
    """[H, W] bool from a raw mask: ``change_values`` if given (OSCD: (2,)), else anything > 0 (0/1, 0/255)."""
    if change_values:
        return np.isin(mask, change_values)
    return mask > 0


def _values(tax: Taxonomy, names: tuple[str, ...]) -> list[int]:
    out = []
    for n in names:
        c = find_class(tax, n)
        if c is not None and c.value not in out:
            out.append(c.value)
    return out


def _texture(rng: np.random.Generator, shape: tuple[int, int], colour: np.ndarray, std: float) -> np.ndarray:
    noise = ndimage.uniform_filter(rng.normal(0, std, shape), 3)
    return np.clip(colour[None, None, :] + noise[..., None], 0, 255)


def synthesize_second_date(tile: Tile, rng: np.random.Generator, max_edits: int = 3) -> Tile:
    """A copy of ``tile`` with a synthetic second date: ``image2``, ``labels2`` and an exact ``change`` mask.

    Needs ``tile.labels`` and a taxonomy; edits the taxonomy cannot express (no building class, no water...)
    are skipped. Returns the tile unchanged when no edit applies, when it already has a second date, or when
    its labels are weak (spectral guesses are not exact labels). Applying it twice is therefore harmless.
    """
    if tile.labels is None or tile.taxonomy is None or tile.image2 is not None or tile.weak:
        return tile  # nothing to edit from, or a real second date already exists; weak labels are not exact
    tax = tile.taxonomy
    img = tile.image.astype(np.float32)  # [H, W, 3]
    lab2 = tile.labels.copy()
    ignore = np.isin(tile.labels, list(tax.ignore_values))
    gsd = tile.gsd or 0.5
    building, ground = _values(tax, BUILDING), _values(tax, GROUND)
    veg, water, bare = _values(tax, VEGETATION), _values(tax, WATER), _values(tax, BARE)
    edits = []
    if building and ground and np.isin(tile.labels, building[:1]).any():
        edits.append("remove buildings")
    if building and ground and np.isin(tile.labels, ground).mean() > 0.05:
        edits.append("add buildings")
    if veg and bare and np.isin(tile.labels, veg).mean() > 0.02:
        edits.append("clear vegetation")
    if water and np.isin(tile.labels, water).mean() > 0.005:
        edits.append("flood")
    if not edits:
        return tile
    chosen = rng.permutation(edits)[: int(rng.integers(1, min(max_edits, len(edits)) + 1))]
    done = []
    for edit in chosen:
        if edit == "remove buildings":
            ok = _remove_buildings(img, lab2, building[0], ground, ignore, rng)
        elif edit == "add buildings":
            ok = _add_buildings(img, lab2, building[0], ground, rng, gsd)
        elif edit == "clear vegetation":
            ok = _clear_vegetation(img, lab2, veg, bare[0], rng)
        else:
            ok = _flood(img, lab2, water[0], building, ignore, rng, gsd)
        if ok:
            done.append(str(edit))
    if not done:
        return tile
    change = change_from_labels(tile.labels, lab2, tax)
    dates = tile.dates or ("date 1", "date 2 (synthetic)")
    return dataclasses.replace(
        tile,
        image2=np.clip(img, 0, 255).astype(np.uint8),
        labels2=lab2,
        change=change,
        dates=dates,
        source=(tile.source + "+synthetic-change") if tile.source else "synthetic-change",
        instances2=[],
    )


def _ring(mask: np.ndarray, width: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, iterations=width) & ~mask


def _remove_buildings(img, lab2, b, ground, ignore, rng) -> bool:
    comps, n = ndimage.label(lab2 == b)
    if n == 0:
        return False
    picks = rng.choice(np.arange(1, n + 1), size=min(n, int(rng.integers(1, 4))), replace=False)
    done = False
    for k in picks:
        m = comps == k
        ring = _ring(m, 3) & ~ignore & np.isin(lab2, ground)
        if ring.sum() < 4:
            continue
        vals, counts = np.unique(lab2[ring], return_counts=True)
        lab2[m] = vals[np.argmax(counts)]
        ring_px = img[ring]  # [N, 3]
        # Inpaint by sampling ring pixels (keeps ground colour and texture), then smooth a little.
        fill = ring_px[rng.integers(0, len(ring_px), int(m.sum()))]
        img[m] = fill
        for c in range(3):
            sm = ndimage.uniform_filter(img[..., c], 3)
            img[..., c][m] = sm[m]
        done = True
    return done


def _add_buildings(img, lab2, b, ground, rng, gsd) -> bool:
    h, w = lab2.shape
    allowed = np.isin(lab2, ground)
    done = 0
    for _ in range(40):
        if done >= int(rng.integers(1, 5)):
            break
        bh = int(np.clip(rng.uniform(8, 25) / gsd, 4, h // 4))
        bw = int(np.clip(rng.uniform(8, 25) / gsd, 4, w // 4))
        sh = max(1, bh // 4)  # shadow length
        if h - bh - sh - 2 <= 2 or w - bw - sh - 2 <= 2:
            return done > 0
        r, c = int(rng.integers(1, h - bh - sh - 1)), int(rng.integers(1, w - bw - sh - 1))
        if not allowed[r - 1 : r + bh + sh + 1, c - 1 : c + bw + sh + 1].all():
            continue
        roof = ROOF_COLOURS[int(rng.integers(len(ROOF_COLOURS)))]
        grad = np.linspace(0.92, 1.08, bw)[None, :, None]
        img[r : r + bh, c : c + bw] = np.clip(_texture(rng, (bh, bw), roof, 4) * grad, 0, 255)
        # Shadow: ground darkened along the bottom and right edges (sun from the upper left); stays ground.
        img[r + bh : r + bh + sh, c + sh : c + bw + sh] *= 0.55
        img[r + sh : r + bh, c + bw : c + bw + sh] *= 0.55
        lab2[r : r + bh, c : c + bw] = b
        allowed[r - 1 : r + bh + sh + 1, c - 1 : c + bw + sh + 1] = False
        done += 1
    return done > 0


def _clear_vegetation(img, lab2, veg, bare_value, rng) -> bool:
    comps, n = ndimage.label(np.isin(lab2, veg))
    if n == 0:
        return False
    sizes = ndimage.sum(np.ones_like(comps), comps, index=np.arange(1, n + 1))
    k = int(np.argmax(sizes)) + 1 if rng.random() < 0.5 else int(rng.integers(1, n + 1))
    m = comps == k
    # Clear a compact part of a large patch (a felling), all of a small one.
    if m.sum() > 4000:
        rows, cols = np.nonzero(m)
        i = int(rng.integers(len(rows)))
        yy, xx = np.ogrid[: m.shape[0], : m.shape[1]]
        radius = np.sqrt(m.sum() / np.pi) * rng.uniform(0.4, 0.8)
        m &= (yy - rows[i]) ** 2 + (xx - cols[i]) ** 2 <= radius**2
    if m.sum() == 0:
        return False
    lab2[m] = bare_value
    img[m] = _texture(rng, m.shape, SOIL_COLOUR * rng.uniform(0.85, 1.15), 8)[m]
    return True


def _flood(img, lab2, water_value, building, ignore, rng, gsd) -> bool:
    water = lab2 == water_value
    reach = max(2, int(rng.uniform(5, 20) / gsd))
    flood = ndimage.binary_dilation(water, iterations=min(reach, 40)) & ~water & ~ignore
    flood &= ~np.isin(lab2, building)  # buildings stand in the water; their footprint does not change
    if flood.sum() == 0:
        return False
    colour = img[water].mean(axis=0) if water.sum() > 20 else np.array([60, 80, 90], float)
    lab2[flood] = water_value
    img[flood] = 0.3 * img[flood] + 0.7 * _texture(rng, flood.shape, colour, 3)[flood]
    return True
