"""Taxonomies: which label value means which class, with synonyms for phrasing and colours for rendering.

Presets live in ``data_gen/taxonomies/*.yaml``; a user's own YAML has the same form::

    name: my-labels            # optional, defaults to the file stem
    ignore: {0: no data}       # optional: values that carry no label (a list works too)
    classes:                   # or put the value -> class mapping at the top level
      1: {name: building, synonyms: [buildings, house], colour: [220, 40, 40], thing: true}
      2: water                 # a bare name is enough

Errors name the file and the line (from YAML node marks), because a taxonomy is usually hand-written.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from data_gen.tile import ClassInfo, Taxonomy

from .errors import TaxonomyError

PRESET_DIR = Path(__file__).resolve().parents[1] / "taxonomies"
ALIASES = {
    "landcoverai": "landcover.ai",
    "landcover-ai": "landcover.ai",
    "worldcover": "esa-worldcover",
    "esa_worldcover": "esa-worldcover",
    "dynamicworld": "dynamic-world",
    "dynamic_world": "dynamic-world",
    "oem": "openearthmap",
    "open-earth-map": "openearthmap",
    "isprs-potsdam": "potsdam",
    "isprs-vaihingen": "vaihingen",
    "weak": "weak-ndvi-ndwi",
}
_CLASS_KEYS = {"name", "synonyms", "colour", "color", "thing"}


def preset_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in PRESET_DIR.glob("*.yaml"))


def load_taxonomy(name_or_path: str | Path) -> Taxonomy:
    """A preset by name (``landcover.ai``, ``esa-worldcover``, ``loveda``...) or a taxonomy YAML file."""
    key = str(name_or_path)
    preset = ALIASES.get(key.lower(), key.lower())
    if (PRESET_DIR / f"{preset}.yaml").is_file() and not Path(key).is_file():
        return _load_file(str(PRESET_DIR / f"{preset}.yaml"))
    if Path(key).is_file():
        return _load_file(str(Path(key).resolve()))
    raise TaxonomyError(
        f"unknown taxonomy {key!r}: not a preset ({', '.join(preset_names())}) and not a YAML file"
    )


@lru_cache(maxsize=32)
def _load_file(path: str) -> Taxonomy:
    text = Path(path).read_text()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise TaxonomyError(f"{path}:{line}: invalid YAML: {e.problem or e}") from None
    return _parse(root, path)


def _err(path: str, node: yaml.Node, msg: str) -> TaxonomyError:
    return TaxonomyError(f"{path}: line {node.start_mark.line + 1}: {msg}")


def _mapping(node: yaml.Node, path: str, what: str) -> list[tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise _err(path, node, f"{what} must be a mapping")
    return node.value


def _int(node: yaml.Node, path: str, what: str) -> int:
    if not isinstance(node, yaml.ScalarNode):
        raise _err(path, node, f"{what} must be an integer, got a {node.id}")
    try:
        return int(node.value)
    except ValueError:
        raise _err(path, node, f"{what} must be an integer, got {node.value!r}") from None


def _str(node: yaml.Node, path: str, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or not node.value.strip():
        raise _err(path, node, f"{what} must be a non-empty string")
    return node.value.strip()


def _parse(root: yaml.Node | None, path: str) -> Taxonomy:
    if root is None:
        raise TaxonomyError(f"{path}: line 1: empty taxonomy file")
    top = _mapping(root, path, "the taxonomy")
    name, ignore_node, classes_node = Path(path).stem, None, None
    if any(k.value in ("classes", "name", "ignore") for k, _ in top):
        for k, v in top:
            if k.value == "name":
                name = _str(v, path, "name")
            elif k.value == "ignore":
                ignore_node = v
            elif k.value == "classes":
                classes_node = v
            else:
                raise _err(path, k, f"unknown key {k.value!r} (expected name, ignore, classes)")
        if classes_node is None:
            raise _err(path, root, "no 'classes' mapping")
    else:
        classes_node = root

    classes: dict[int, ClassInfo] = {}
    seen_words: dict[str, int] = {}
    for k, v in _mapping(classes_node, path, "classes"):
        value = _int(k, path, "a class value")
        if value < 0:
            raise _err(
                path, k, f"class value {value} is negative; classes must be >= 0 (labels are stored as PNG)"
            )
        if value in classes:
            raise _err(path, k, f"class value {value} is defined twice")
        info = _parse_class(value, v, path)
        for word in (info.name, *info.synonyms):
            other = seen_words.get(word.lower())
            if other is not None and other != value:
                raise _err(path, v, f"{word!r} names both class {other} and class {value}")
            seen_words[word.lower()] = value
        classes[value] = info
    if not classes:
        raise _err(path, classes_node, "no classes defined")

    ignore: list[int] = []
    if ignore_node is not None:
        if isinstance(ignore_node, yaml.MappingNode):
            items = [k for k, _ in ignore_node.value]
        elif isinstance(ignore_node, yaml.SequenceNode):
            items = list(ignore_node.value)
        else:
            items = [ignore_node]
        for item in items:
            value = _int(item, path, "an ignore value")
            if value in classes:
                raise _err(path, item, f"ignore value {value} is also a class")
            ignore.append(value)
    # The first ignore value fills "no label" (pixels off the label raster, unknown values) in an unsigned label
    # map (datasets store it as PNG): a negative one (-99999, as GIS exports write nodata) is matched in the
    # source raster but written as the first value >= 0, added when there is none.
    fills = [v for v in ignore if v >= 0]
    if not fills:
        fills = [next(v for v in (255, 65535, 2**31 - 1) if v not in classes)]
        ignore.append(fills[0])
    ignore.remove(fills[0])
    ignore.insert(0, fills[0])
    return Taxonomy(name=name, classes=classes, ignore_values=tuple(ignore))


def _parse_class(value: int, node: yaml.Node, path: str) -> ClassInfo:
    if isinstance(node, yaml.ScalarNode):
        return ClassInfo(value=value, name=_str(node, path, f"class {value}'s name"))
    fields = {}
    for k, v in _mapping(node, path, f"class {value}"):
        if k.value not in _CLASS_KEYS:
            raise _err(
                path, k, f"class {value}: unknown key {k.value!r} (expected name, synonyms, colour, thing)"
            )
        fields[k.value] = (k, v)
    if "name" not in fields:
        raise _err(path, node, f"class {value} has no name")
    name = _str(fields["name"][1], path, f"class {value}'s name")
    synonyms: tuple[str, ...] = ()
    if "synonyms" in fields:
        syn = fields["synonyms"][1]
        if isinstance(syn, yaml.SequenceNode):
            synonyms = tuple(_str(s, path, "a synonym") for s in syn.value)
        else:
            synonyms = (_str(syn, path, "a synonym"),)
    colour = (255, 255, 255)
    col_key = "colour" if "colour" in fields else "color" if "color" in fields else None
    if col_key:
        col = fields[col_key][1]
        if not isinstance(col, yaml.SequenceNode) or len(col.value) != 3:
            raise _err(path, col, f"class {value}: colour must be [r, g, b]")
        rgb = tuple(_int(c, path, "a colour component") for c in col.value)
        if not all(0 <= c <= 255 for c in rgb):
            raise _err(path, col, f"class {value}: colour components must be 0-255, got {list(rgb)}")
        colour = rgb  # type: ignore[assignment]
    thing = False
    if "thing" in fields:
        t = fields["thing"][1]
        if not isinstance(t, yaml.ScalarNode) or t.value.lower() not in ("true", "false", "yes", "no"):
            raise _err(path, t, f"class {value}: thing must be true or false")
        thing = t.value.lower() in ("true", "yes")
    return ClassInfo(value=value, name=name, synonyms=synonyms, colour=colour, thing=thing)


def find_class(taxonomy: Taxonomy, *names: str) -> ClassInfo | None:
    """The first class any of ``names`` refers to (by name or synonym, case-insensitive)."""
    for n in names:
        low = n.lower()
        for c in taxonomy.classes.values():
            if c.name.lower() == low or low in (s.lower() for s in c.synonyms):
                return c
    return None


def label_dtype(taxonomy: Taxonomy):
    """The smallest unsigned dtype holding every class and ignore value (uint8 for all presets)."""
    import numpy as np

    top = max([*taxonomy.classes, *taxonomy.ignore_values])
    return np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int64
