"""Taxonomy presets and custom YAML, including errors that name the line."""

from __future__ import annotations

import pytest

from data_gen.sources import TaxonomyError, find_class, load_taxonomy, preset_names


def test_presets_have_the_documented_values():
    lc = load_taxonomy("landcover.ai")
    assert {v: c.name for v, c in lc.classes.items()} == {0: "background", 1: "building", 2: "woodland",
                                                           3: "water", 4: "road"}  # fmt: skip
    assert lc.by_name("forest").name == "woodland"  # synonyms
    wc = load_taxonomy("esa-worldcover")
    assert sorted(wc.classes) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100]
    assert wc.classes[10].name == "tree cover" and wc.classes[100].name == "moss and lichen"
    assert load_taxonomy("worldcover").name == "esa-worldcover"  # alias used by GenConfig's docstring
    dw = load_taxonomy("dynamic-world")
    assert dw.classes[0].name == "water" and dw.classes[8].name == "snow and ice"
    assert len(load_taxonomy("openearthmap").classes) == 8
    lv = load_taxonomy("loveda")
    assert lv.ignore_values == (0,) and lv.classes[7].name == "agriculture" and lv.classes[2].thing
    for name in ("potsdam", "vaihingen"):
        t = load_taxonomy(name)
        assert t.ignore_values == (0,) and t.classes[5].name == "car" and t.classes[5].thing
    assert {"landcover.ai", "esa-worldcover", "dynamic-world", "openearthmap", "loveda", "osm"} <= set(
        preset_names()
    )


def test_every_class_has_a_colour_and_synonyms_are_unique():
    for name in preset_names():
        t = load_taxonomy(name)
        words = [w.lower() for c in t.classes.values() for w in (c.name, *c.synonyms)]
        assert len(words) == len(set(words)), name
        assert all(len(c.colour) == 3 for c in t.classes.values())
        assert t.ignore_values and not set(t.ignore_values) & set(t.classes)


def test_custom_yaml_both_forms(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("1: building\n2: {name: water, synonyms: [lake], colour: [0, 0, 255]}\n")
    t = load_taxonomy(flat)
    assert t.name == "flat" and t.classes[1].name == "building" and t.classes[2].colour == (0, 0, 255)
    assert t.ignore_values == (255,)  # a default "no label" value is always there
    full = tmp_path / "full.yaml"
    full.write_text("name: mine\nignore: [0]\nclasses:\n  7: {name: solar panel, thing: true}\n")
    t = load_taxonomy(full)
    assert t.name == "mine" and t.ignore_values == (0,) and t.classes[7].thing
    assert find_class(t, "Solar Panel").value == 7


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("classes:\n  1: {name: building\n  2: water\n", 3, "invalid YAML"),
        ("classes:\n  1: building\n  x: water\n", 3, "integer"),
        ("classes:\n  1: building\n  2: {name: water, colour: [0, 0]}\n", 3, "colour"),
        ("classes:\n  1: building\n  2: {name: lake, synonyms: [building]}\n", 3, "names both"),
        ("classes:\n  1: building\n  2: {synonyms: [lake]}\n", 3, "no name"),
        ("name: t\nclasses:\n  1: building\nignore: [1]\n", 4, "also a class"),
        ("name: t\nclases:\n  1: building\n", 2, "unknown key"),
        ("classes:\n  1: {name: a, thing: maybe}\n", 2, "true or false"),
    ],
)
def test_yaml_errors_name_file_and_line(tmp_path, text, line, words):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(TaxonomyError) as e:
        load_taxonomy(p)
    msg = str(e.value)
    assert str(p) in msg and f"line {line}" in msg and words in msg, msg
    assert isinstance(e.value, ValueError)


def test_unknown_taxonomy_name():
    with pytest.raises(TaxonomyError, match="not a preset"):
        load_taxonomy("no-such-taxonomy")
