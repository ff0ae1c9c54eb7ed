"""The unit every task works on: one image tile (or a pair) with its labels on the same pixel grid.

Sources (``data_gen/sources/``) produce tiles; tasks (``data_gen/tasks/``) are pure functions
``tile -> list[Sample]``; the driver (``data_gen/driver.py``) does I/O, sharding and parallelism.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ClassInfo:
    """One class of a taxonomy: the label value, a human name, synonyms for phrasing, a display colour."""

    value: int
    name: str
    synonyms: tuple[str, ...] = ()
    colour: tuple[int, int, int] = (255, 255, 255)
    # A "stuff" class (forest, water) is described by area; a "thing" class (building, tree) by instances too.
    thing: bool = False


@dataclass
class Taxonomy:
    name: str
    classes: dict[int, ClassInfo]
    ignore_values: tuple[int, ...] = ()

    def by_name(self, name: str) -> ClassInfo | None:
        for c in self.classes.values():
            if c.name == name or name in c.synonyms:
                return c
        return None


@dataclass
class Instance:
    """One labelled object on the tile grid: a boolean mask, its class name, and free attributes (OSM tags...)."""

    mask: np.ndarray  # [H, W] bool
    label: str
    name: str | None = None  # a proper name ("Rhine canal") when the source has one
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Tile:
    """Image pixels and labels on one grid.

    ``image`` is uint8 RGB [H, W, 3] (the composite the model sees); ``image2`` the second date when there is one.
    ``labels`` is an integer class map [H, W] under ``taxonomy`` (or None); ``labels2`` the second date's.
    ``change`` is a boolean change mask [H, W] when the source gives one. ``instances`` are objects (from vectors,
    OSM or connected components). ``gsd`` is metres per pixel (None when the image has no CRS); ``crs`` a WKT or
    EPSG string; ``transform`` the tile window's affine as 6 numbers (rasterio order a, b, c, d, e, f).
    """

    id: str
    image: np.ndarray
    image2: np.ndarray | None = None
    labels: np.ndarray | None = None
    labels2: np.ndarray | None = None
    change: np.ndarray | None = None
    taxonomy: Taxonomy | None = None
    instances: list[Instance] = field(default_factory=list)
    instances2: list[Instance] = field(default_factory=list)
    gsd: float | None = None
    crs: str | None = None
    transform: tuple[float, ...] | None = None
    dates: tuple[str, str] | None = None
    source: str = ""
    license: str = ""
    weak: bool = False
    # Spatial block the tile belongs to (for train/val/test splits that do not leak places).
    block: str = ""
    # Label values the taxonomy does not know, {value: pixels} on this tile (both dates), before they were mapped
    # to the ignore value: the dataset card reports them so a wrong --taxonomy is visible.
    unknown_values: dict[int, int] = field(default_factory=dict)
    # The class values whose absence the labels speak for (None: every class of the taxonomy). Building outlines
    # burnt onto a land-cover taxonomy say where buildings are, not that there is no water or woodland.
    known_values: frozenset[int] | None = None

    def labels_say_absent(self, value: int) -> bool:
        """Whether the labels would show class ``value`` where it is there, so its absence is a fact."""
        return self.known_values is None or value in self.known_values

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class Sample:
    """One instruction sample. ``conversations`` use the text protocol (``rsvlm.grounding``); ``masks`` are
    boolean [H, W] arrays in ``[SEG]`` order; ``meta`` holds facts ``validate`` re-checks (areas, counts)."""

    id: str
    task: str
    conversations: list[dict[str, str]]
    masks: list[np.ndarray] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
