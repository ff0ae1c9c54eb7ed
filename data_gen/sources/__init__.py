"""Data sources for instruction generation: imagery with label rasters, OpenStreetMap, vector labels, change
pairs (real or synthetic) and spectral weak labels, all aligned to the image's pixel grid through the CRS.

The driver calls two functions: :func:`plan_tiles` (cheap: headers only) and :func:`load_tile` (one window).
``synthesize_second_date`` makes a label-guided second date for change tasks when only one date exists;
``load_tile`` applies it when ``cfg.synthetic_change`` and "change" is among ``cfg.tasks`` and the tile has
labels but no second date (rng seeded by ``cfg.seed`` and the tile id). It is a no-op on a tile that already
has ``image2``, so calling it again elsewhere is harmless.
"""

from .change import change_from_labels, change_from_mask, synthesize_second_date
from .errors import SourceError, TaxonomyError
from .load import load_tile
from .osm import read_osm
from .scene import Scene, build_scenes, plan_tiles, tile_windows
from .taxonomy import find_class, load_taxonomy, preset_names
from .vectors import read_vectors
from .weak import weak_labels, weak_taxonomy

__all__ = [
    "Scene",
    "SourceError",
    "TaxonomyError",
    "build_scenes",
    "change_from_labels",
    "change_from_mask",
    "find_class",
    "load_taxonomy",
    "load_tile",
    "plan_tiles",
    "preset_names",
    "read_osm",
    "read_vectors",
    "synthesize_second_date",
    "tile_windows",
    "weak_labels",
    "weak_taxonomy",
]
