"""What one data-generation run reads and writes: a dataclass filled from YAML or from `rsvlm gen` flags.

Sources plan tiles cheaply (``data_gen.sources.plan_tiles(cfg) -> list[TileRef]``) and load one on demand
(``data_gen.sources.load_tile(cfg, ref) -> Tile | None``), so the driver can shard, resume and run workers
that each re-open the files they need.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

ALL_TASKS = ("caption", "vqa", "grounding", "reasoning", "gcg", "change")


@dataclass
class GenConfig:
    image: str | None = None
    """Imagery: a GeoTIFF/PNG/JPEG path, a folder, or a glob (one scene per file)."""
    image2: str | None = None
    """Second date for change tasks (same form as ``image``; matched to ``image`` by sorted order or name)."""
    labels: str | None = None
    """Label raster(s) for ``image`` under ``taxonomy`` (path, folder or glob)."""
    labels2: str | None = None
    """Label raster(s) of the second date."""
    change_mask: str | None = None
    """Binary change mask(s) (0/255, 0/1, or OSCD's 1/2 with ``change_values``)."""
    change_values: tuple[int, ...] = ()
    """Values of ``change_mask`` that mean change (default: anything > 0)."""
    osm: str | None = None
    """An ``.osm.pbf`` / ``.osm`` / ``.osm.bz2`` extract."""
    vectors: str | None = None
    """Vector labels: GeoJSON, shapefile, VOC/DIOR .xml boxes, box .csv, xBD or GeoPixelD .json."""
    vector_label_field: str | None = None
    """Attribute holding each vector feature's class; else ``vector_label``."""
    vector_label: str = "building"
    taxonomy: str = "landcover.ai"
    """A preset name (landcover.ai, worldcover, dynamic-world, openearthmap, loveda, potsdam) or a YAML path."""
    tasks: tuple[str, ...] = ALL_TASKS
    tile_size: int = 512
    overlap: int = 0
    synthetic_change: bool = True
    """Make a synthetic second date by label-guided edits when only one date exists."""
    weak_labels: str = "auto"
    """'auto' (NDVI/NDWI weak labels for RGBN imagery without labels), 'on' or 'off'."""
    dates: tuple[str, str] = ("date 1", "date 2")
    block_size: int = 4
    """Spatial blocks are block_size × block_size tiles; splits are drawn per block so no place leaks."""
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    num_proc: int = 1
    shard_size: int = 256
    """Samples per parquet shard."""
    max_tiles: int | None = None
    paraphrase: bool = False
    """Optional paraphrase pass through the local LLM (slow; needs the model)."""
    source_name: str = ""
    license: str = ""
    out: str = "out/dataset"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> GenConfig:
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of options at the top level")
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(raw, where=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "config") -> GenConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(
                f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values = dict(raw)
        for key in ("tasks", "change_values", "dates", "split_fractions"):
            if isinstance(values.get(key), str):
                values[key] = tuple(x.strip() for x in values[key].split(",") if x.strip())
            elif values.get(key) is not None:
                values[key] = tuple(values[key])
        bad = sorted(set(values.get("tasks", ())) - set(ALL_TASKS))
        if bad:
            raise ValueError(f"{where}: unknown task(s) {', '.join(bad)}; known: {', '.join(ALL_TASKS)}")
        if "change_values" in values:
            values["change_values"] = tuple(int(v) for v in values["change_values"])
        if "split_fractions" in values:
            values["split_fractions"] = tuple(float(v) for v in values["split_fractions"])
        return cls(**values)


@dataclass
class TileRef:
    """A cheap handle on one tile: which scene, which window, which spatial block. Picklable."""

    id: str
    scene: int
    window: tuple[int, int, int, int]  # col_off, row_off, width, height in the scene's pixels
    block: str
    meta: dict[str, Any] = field(default_factory=dict)
