"""Geometry and numbers every task family shares, and that ``validate`` recomputes the same way.

Connected components, the 3x3 grid and corner windows, positions and directions, tight and minimum-area boxes on
the 0-1000 grid, and the quoted strings for shares ("about a third (34 %)"), areas and counts. Keeping the
quoting functions here means a dataset's numbers can be re-derived from its masks and label rasters exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import shapely
from scipy import ndimage

from data_gen.tasks.phrasing import join_words
from data_gen.tile import ClassInfo, Instance, Tile
from rsvlm.answer_facts import percent_text, proportion_word
from rsvlm.grounding import Box, OrientedBox, normalize_obb, pixel_box_to_grid

EIGHT = np.ones((3, 3), dtype=bool)

CELL_NAMES = (
    ("top left", "top", "top right"),
    ("left", "centre", "right"),
    ("bottom left", "bottom", "bottom right"),
)
# How a cell reads after a noun: "forest in the top left", "water along the bottom".
CELL_PHRASE = {
    "top left": "in the top left",
    "top": "along the top",
    "top right": "in the top right",
    "left": "on the left",
    "centre": "in the centre",
    "right": "on the right",
    "bottom left": "in the bottom left",
    "bottom": "along the bottom",
    "bottom right": "in the bottom right",
    "whole scene": "spread across the whole scene",
}
WHOLE_SCENE = "whole scene"  # what cells_covering says of a mask spread over most cells
CORNER_NAMES = ("top left", "top right", "bottom left", "bottom right", "centre")

# ------------------------------------------------------------------------------------------------ quoting


def share_quote(pixels: int, total: int) -> str:
    """'about a third (34 %)': the word and the number it stands for."""
    return f"{proportion_word(pixels / max(total, 1))} ({percent_text(pixels, total)})"


def area_quote(pixels: int, gsd: float | None) -> str:
    """An area in the unit a surveyor would use: '3,072 m²' under a hectare, '1.8 ha (18,037 m²)' up to 10 ha,
    '180 ha' up to a km², '1.80 km² (180 ha)' above; '1,234 pixels' when the GSD is unknown.

    Seven-digit square metres ('1,803,725 m²') read as false precision at 5 m pixels, and '0.01 ha' hides a
    120 m² patch, so the unit follows the size."""
    if gsd is None:
        return f"{pixels:,} pixels"
    m2 = pixels * gsd * gsd
    ha = m2 / 10_000
    if ha < 1:
        return f"{m2:,.0f} m²"
    if ha < 10:
        return f"{ha:.1f} ha ({m2:,.0f} m²)"
    if ha < 100:
        return f"{ha:.0f} ha"
    return f"{ha / 100:.2f} km² ({ha:,.0f} ha)"


def count_quote(n: int) -> str:
    return str(n)


# ------------------------------------------------------------------------------------------------ geometry


def components(mask: np.ndarray, min_pixels: int = 1) -> tuple[np.ndarray, list[int], list[int]]:
    """8-connected components of ``mask``: (label image [H, W] int32, ids largest first, pixel counts)."""
    lab, n = ndimage.label(mask, structure=EIGHT)
    if n == 0:
        return lab, [], []
    counts = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-counts, kind="stable")
    ids = [int(i) + 1 for i in order if counts[i] >= min_pixels]
    return lab, ids, [int(counts[i - 1]) for i in ids]


def count_components(mask: np.ndarray, min_pixels: int) -> int:
    return len(components(mask, min_pixels)[1])


def min_component_pixels(height: int, width: int) -> int:
    """Specks below this size are not counted as objects (about 0.02 % of the tile, at least 4 pixels)."""
    return max(4, int(round(0.0002 * height * width)))


def tight_pixel_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) pixel edges of the mask's tight box (x2, y2 exclusive)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("tight box of an empty mask")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def grid_box(mask: np.ndarray) -> Box:
    h, w = mask.shape
    return pixel_box_to_grid(tight_pixel_box(mask), w, h)


def _corner_points(mask: np.ndarray) -> np.ndarray:
    """Pixel-corner coordinates [N, 2] (x, y) whose convex hull is the hull of the mask's pixel squares: the
    outer corners of the first and last pixel of every row (at most 4 points per row)."""
    rows = np.flatnonzero(mask.any(axis=1))
    sub = mask[rows]
    first = np.argmax(sub, axis=1)
    last = sub.shape[1] - 1 - np.argmax(sub[:, ::-1], axis=1)
    ys = rows.astype(float)
    xs0, xs1 = first.astype(float), last.astype(float) + 1
    return np.concatenate([np.stack(p, axis=1) for p in ((xs0, ys), (xs0, ys + 1), (xs1, ys), (xs1, ys + 1))])


def grid_obb(mask: np.ndarray) -> OrientedBox:
    """Minimum-area rectangle of the mask in 0-1000 grid coordinates, long-side convention."""
    h, w = mask.shape
    pts = _corner_points(mask) * np.array([1000.0 / w, 1000.0 / h])
    hull = shapely.convex_hull(shapely.multipoints(pts))
    rect = np.asarray(shapely.minimum_rotated_rectangle(hull).exterior.coords)[:4]
    e0, e1 = rect[1] - rect[0], rect[2] - rect[1]
    cx, cy = rect.mean(axis=0)
    angle = math.degrees(math.atan2(e0[1], e0[0]))
    return normalize_obb(float(cx), float(cy), float(np.hypot(*e0)), float(np.hypot(*e1)), angle)


def centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()) + 0.5, float(ys.mean()) + 0.5


def cell_of(x: float, y: float, width: int, height: int) -> str:
    col = min(2, int(3 * x / width))
    row = min(2, int(3 * y / height))
    return CELL_NAMES[row][col]


def position_name(mask: np.ndarray) -> str:
    h, w = mask.shape
    return cell_of(*centroid(mask), w, h)


def grid_windows(height: int, width: int) -> list[tuple[str, tuple[int, int, int, int]]]:
    """The 3x3 grid cells as (name, (row0, row1, col0, col1))."""
    rs = [round(height * i / 3) for i in range(4)]
    cs = [round(width * i / 3) for i in range(4)]
    return [(CELL_NAMES[r][c], (rs[r], rs[r + 1], cs[c], cs[c + 1])) for r in range(3) for c in range(3)]


def corner_windows(height: int, width: int) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Four quadrants and a centre window half the tile's size, as (name, (row0, row1, col0, col1))."""
    h2, w2 = height // 2, width // 2
    return [
        ("top left", (0, h2, 0, w2)),
        ("top right", (0, h2, w2, width)),
        ("bottom left", (h2, height, 0, w2)),
        ("bottom right", (h2, height, w2, width)),
        ("centre", (height // 4, height // 4 + h2, width // 4, width // 4 + w2)),
    ]


def cells_covering(mask: np.ndarray, min_share: float = 0.25) -> list[str]:
    """3x3 cells holding at least ``min_share`` of the mask's pixels; when none does, the cells holding at
    least 8 % each, or ``[WHOLE_SCENE]`` when five or more do (a class covering 87 % of the tile is not "mostly
    in the top left" just because that cell holds 12 % of it)."""
    h, w = mask.shape
    total = int(mask.sum())
    if total == 0:
        return []
    counts = [(name, int(mask[r0:r1, c0:c1].sum())) for name, (r0, r1, c0, c1) in grid_windows(h, w)]
    chosen = [name for name, n in counts if n >= min_share * total]
    if chosen:
        return chosen
    spread = [name for name, n in counts if n >= 0.08 * total]
    if len(spread) >= 5:
        return [WHOLE_SCENE]
    return spread or [max(counts, key=lambda t: t[1])[0]]


def where_text(cells: list[str]) -> str:
    """'mostly in the top left and on the right', or 'spread across the whole scene'."""
    if cells == [WHOLE_SCENE]:
        return CELL_PHRASE[WHOLE_SCENE]
    return "mostly " + join_words([CELL_PHRASE[c] for c in cells])


def direction(a: tuple[float, float], b: tuple[float, float], compass: bool) -> str:
    """Where point ``a`` lies seen from ``b``: 'north-east of' (north-up imagery) or 'above and to the right of'."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    angle = math.degrees(math.atan2(-dy, dx)) % 360  # 0 = right/east, 90 = up/north
    sector = int(((angle + 22.5) % 360) // 45)
    if compass:
        names = ("east", "north-east", "north", "north-west", "west", "south-west", "south", "south-east")
        return f"{names[sector]} of"
    names = (
        "to the right of",
        "above and to the right of",
        "above",
        "above and to the left of",
        "to the left of",
        "below and to the left of",
        "below",
        "below and to the right of",
    )
    return names[sector]


def is_north_up(tile: Tile) -> bool:
    t = tile.transform
    return bool(tile.crs) and t is not None and abs(t[1]) < 1e-12 and abs(t[3]) < 1e-12 and t[4] < 0


# ------------------------------------------------------------------------------------------------ analysis


@dataclass
class Component:
    """One object: a connected component of a class, or a source instance (OSM, vectors).

    A component's mask is built from the label image only when a task asks for it (most are only ranked)."""

    label: str
    value: int | None
    pixels: int
    _mask: np.ndarray | None = None  # [H, W] bool
    name: str | None = None
    attributes: dict = field(default_factory=dict)
    _lab: np.ndarray | None = None
    _id: int = 0

    @property
    def mask(self) -> np.ndarray:
        if self._mask is None:
            assert self._lab is not None
            self._mask = self._lab == self._id
        return self._mask

    @cached_property
    def centre(self) -> tuple[float, float]:
        return centroid(self.mask)


@dataclass
class ClassCover:
    info: ClassInfo
    pixels: int


class Analysis:
    """Per-tile facts computed once and shared by the task families (class cover, components, instances)."""

    def __init__(self, tile: Tile) -> None:
        self.tile = tile
        self.height, self.width = tile.height, tile.width
        self.min_pixels = min_component_pixels(self.height, self.width)
        self.unknown: dict[int, int] = {}
        self.ignored = 0  # pixels under an ignore value (nodata, off the label raster, unknown values)
        self.cover: list[ClassCover] = []
        self.absent: list[ClassInfo] = []
        self.valid_values: list[int] = []
        self.total = 0
        self._components: dict[int, list[Component]] = {}
        tax = tile.taxonomy
        if tile.labels is not None and tax is not None:
            labels = np.asarray(tile.labels)
            if labels.dtype.kind in "ui" and labels.size and 0 <= labels.min() and labels.max() < 65536:
                counts = np.bincount(labels.ravel())  # much faster than np.unique's sort
                present = {v: int(n) for v, n in enumerate(counts.tolist()) if n}
            else:
                values, counts = np.unique(labels, return_counts=True)
                present = dict(zip(values.tolist(), counts.tolist()))
            # Only the classes the labels speak for: building outlines say nothing of water (Tile.known_values).
            self.valid_values = sorted(
                v for v in tax.classes if v not in tax.ignore_values and tile.labels_say_absent(v)
            )
            for v, n in present.items():
                if v not in tax.classes and v not in tax.ignore_values:
                    self.unknown[int(v)] = int(n)
            self.cover = sorted(
                (
                    ClassCover(tax.classes[v], int(present[v]))
                    for v in self.valid_values
                    if present.get(v, 0) > 0
                ),
                key=lambda c: (-c.pixels, c.info.value),
            )
            self.absent = [tax.classes[v] for v in self.valid_values if present.get(v, 0) == 0]
            self.total = sum(c.pixels for c in self.cover)
            self.ignored = sum(present.get(v, 0) for v in tax.ignore_values)

    @property
    def has_labels(self) -> bool:
        return self.total > 0

    def class_mask(self, value: int, which: int = 1) -> np.ndarray:
        labels = self.tile.labels if which == 1 else self.tile.labels2
        assert labels is not None
        return labels == value

    def components(self, value: int) -> list[Component]:
        """Connected components of a class (largest first), specks below ``min_pixels`` dropped."""
        if value not in self._components:
            info = self.tile.taxonomy.classes[value]  # type: ignore[union-attr]
            lab, ids, counts = components(self.class_mask(value), self.min_pixels)
            self._components[value] = [
                Component(info.name, value, n, _lab=lab, _id=i) for i, n in zip(ids[:64], counts[:64])
            ]
        return self._components[value]

    @cached_property
    def instances(self) -> dict[str, list[Component]]:
        """Source instances by label, largest first (empty masks dropped)."""
        out: dict[str, list[Component]] = {}
        for inst in self.tile.instances:
            comp = _instance_component(inst)
            if comp is not None:
                out.setdefault(inst.label, []).append(comp)
        for comps in out.values():
            comps.sort(key=lambda c: -c.pixels)
        return out

    def share(self, info: ClassInfo) -> int:
        for c in self.cover:
            if c.info.value == info.value:
                return c.pixels
        return 0


def _instance_component(inst: Instance) -> Component | None:
    mask = np.asarray(inst.mask, dtype=bool)
    n = int(mask.sum())
    if n == 0:
        return None
    return Component(inst.label, None, n, mask, name=inst.name, attributes=dict(inst.attributes))


def analyse(tile: Tile) -> Analysis:
    """The tile's analysis, computed once per tile object and cached on it."""
    cached = getattr(tile, "_analysis", None)
    if cached is None:
        cached = Analysis(tile)
        tile._analysis = cached  # type: ignore[attr-defined]
    return cached
