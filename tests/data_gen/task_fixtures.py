"""Tiles for the data_gen task tests: code-written label maps with known geometry, and real LoveDA / LEVIR-CD tiles.

The synthetic tile uses the LoveDA taxonomy (0 nodata, 1 background, 2 building, 3 road, 4 water, 5 barren,
6 forest, 7 agriculture) and puts every class where a test can compute the answer by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_gen.tile import ClassInfo, Instance, Taxonomy, Tile

SHARED = Path(__file__).resolve().parents[2] / "../shared/data"
LOVEDA = SHARED / "landcover_seg/loveda"
LEVIRCD = SHARED / "change/levircd"

LOVEDA_TAXONOMY = Taxonomy(
    name="loveda",
    classes={
        1: ClassInfo(1, "background", ("other land",), (255, 255, 255)),
        2: ClassInfo(2, "building", ("house",), (255, 0, 0), thing=True),
        3: ClassInfo(3, "road", ("street",), (255, 255, 0)),
        4: ClassInfo(4, "water", ("river",), (0, 0, 255)),
        5: ClassInfo(5, "barren", ("bare soil",), (159, 129, 183)),
        6: ClassInfo(6, "forest", ("woodland",), (0, 255, 0)),
        7: ClassInfo(7, "agriculture", ("farmland",), (255, 195, 128)),
    },
    ignore_values=(0,),
)

# Buildings of distinct sizes (row0, row1, col0, col1) so the size ranks are unambiguous.
BUILDINGS = ((20, 40, 20, 50), (20, 35, 70, 90), (60, 70, 20, 30))


def synthetic_labels(size: int = 256) -> np.ndarray:
    s = size / 256
    lab = np.ones((size, size), dtype=np.uint8)  # background
    lab[: int(128 * s), int(160 * s) :] = 6  # forest, top right
    lab[int(150 * s) :, : int(120 * s)] = 7  # agriculture, bottom left
    lab[int(150 * s) :, int(120 * s) : int(140 * s)] = 4  # a river running north-south next to the fields
    lab[int(130 * s) : int(140 * s), :] = 3  # a road running east-west across the tile
    lab[int(200 * s) : int(212 * s), int(150 * s) : int(250 * s)] = 5  # a long straight barren strip
    for r0, r1, c0, c1 in BUILDINGS:
        lab[int(r0 * s) : int(r1 * s), int(c0 * s) : int(c1 * s)] = 2
    return lab


def synthetic_tile(size: int = 256, change: bool = True, named: bool = True, gsd: float | None = 0.5) -> Tile:
    labels = synthetic_labels(size)
    rng = np.random.default_rng(0)
    palette = np.array(
        [c.colour for c in [LOVEDA_TAXONOMY.classes.get(v, LOVEDA_TAXONOMY.classes[1]) for v in range(8)]]
    )
    image = (palette[labels] * 0.8 + rng.integers(0, 50, (size, size, 3))).astype(np.uint8)
    tile = Tile(
        id=f"synthetic-{size}",
        image=image,
        labels=labels,
        taxonomy=LOVEDA_TAXONOMY,
        gsd=gsd,
        crs="EPSG:32633" if gsd else None,
        transform=(gsd, 0.0, 500000.0, 0.0, -gsd, 5000000.0) if gsd else None,
        source="synthetic",
        license="CC0-1.0",
        block="0_0",
    )
    if named:
        canal = labels == 4
        tile.instances = [Instance(canal, "canal", name="Test Canal", attributes={"waterway": "canal"})]
    if change:
        labels2 = labels.copy()
        s = size / 256
        labels2[int(170 * s) : int(190 * s), int(20 * s) : int(50 * s)] = 2  # new buildings on farmland
        labels2[int(220 * s) : int(240 * s), int(60 * s) : int(100 * s)] = 2
        labels2[int(20 * s) : int(60 * s), int(200 * s) : int(240 * s)] = 5  # forest cleared
        tile.labels2 = labels2
        tile.image2 = (palette[labels2] * 0.8 + rng.integers(0, 50, (size, size, 3))).astype(np.uint8)
        tile.dates = ("2019", "2023")
    return tile


def loveda_tile(index: int = 1, size: int = 512) -> Tile:
    """A real LoveDA tile (crop of the 1024² image); skips the test if the shared data is absent."""
    from PIL import Image

    img, ann = LOVEDA / f"img/{index}.png", LOVEDA / f"ann/{index}.png"
    if not img.exists() or not ann.exists():
        pytest.skip("../shared/data LoveDA sample not available")
    image = np.asarray(Image.open(img).convert("RGB"))[:size, :size]
    labels = np.asarray(Image.open(ann))[:size, :size]
    return Tile(
        id=f"loveda-{index}",
        image=image,
        labels=labels,
        taxonomy=LOVEDA_TAXONOMY,
        gsd=0.3,
        source="LoveDA",
        license="CC BY-NC-SA 4.0",
        block=f"loveda-{index}",
    )


def levircd_tile(name: str = "test_2_0000_0000") -> Tile:
    """A real LEVIR-CD pair with its binary change mask (no labels)."""
    from PIL import Image

    a, b, lab = LEVIRCD / f"A/{name}.png", LEVIRCD / f"B/{name}.png", LEVIRCD / f"label/{name}.png"
    if not a.exists():
        pytest.skip("../shared/data LEVIR-CD sample not available")
    return Tile(
        id=f"levircd-{name}",
        image=np.asarray(Image.open(a).convert("RGB")),
        image2=np.asarray(Image.open(b).convert("RGB")),
        change=np.asarray(Image.open(lab).convert("L")) > 127,
        gsd=0.5,
        dates=("2012", "2016"),
        source="LEVIR-CD",
        license="academic",
        block=name,
    )


# ------------------------------------------------------------------------------------------------ driver fixtures
def fixture_planner(cfg) -> list:
    """A 4 x 4 grid of tiles in 2 x 2-tile blocks; tile 'r0c3' is empty (loader returns None)."""
    from data_gen.config import TileRef

    n = int(cfg.extra.get("grid", 4))
    size = int(cfg.tile_size)
    return [
        TileRef(id=f"r{r}c{c}", scene=0, window=(c * size, r * size, size, size), block=f"{r // 2}_{c // 2}")
        for r in range(n)
        for c in range(n)
    ]


def fixture_loader(cfg, ref):
    """A synthetic tile, varied per tile (flips / a shifted building), or None for the empty one."""
    if ref.id == "r0c3":
        return None
    tile = synthetic_tile(int(cfg.tile_size), change=True, named=False)
    k = sum(map(ord, ref.id))
    tile.labels = np.rot90(tile.labels, k % 4).copy()
    tile.labels2 = np.rot90(tile.labels2, k % 4).copy()
    tile.image = np.rot90(tile.image, k % 4).copy()
    tile.image2 = np.rot90(tile.image2, k % 4).copy()
    tile.id = ref.id
    tile.block = ref.block
    return tile
