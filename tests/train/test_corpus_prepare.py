"""train.corpus's xBD prepare step and data_gen's folder of per-image xBD labels, on code-written scenes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from data_gen.sources import SourceError, load_tile, plan_tiles, read_vectors
from train.corpus import prepare_xbd_pairs, source_config


def square(x0: int, y0: int, x1: int, y1: int) -> str:
    return f"POLYGON (({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))"


def write_xbd(folder, scene: str, buildings: list[tuple[str, str]]) -> None:
    """One xBD pair: 64 wide, 48 high; ``buildings`` as (wkt, post-event subtype)."""
    for when in ("pre", "post"):
        name = f"{scene}_{when}_disaster"
        grey = 90 if when == "pre" else 160
        Image.fromarray(np.full((48, 64, 3), grey, np.uint8)).save(folder / f"{name}.png")
        feats = []
        for wkt, subtype in buildings:
            props = {"feature_type": "building", "uid": wkt}
            if when == "post":
                props["subtype"] = subtype
            feats.append({"properties": props, "wkt": wkt})
        meta = {"img_name": f"{name}.png", "width": 64, "height": 48}
        (folder / f"{name}.json").write_text(json.dumps({"metadata": meta, "features": {"xy": feats}}))


@pytest.fixture()
def xbd(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    # Scene a: one intact house (x 2..12, y 2..12) and one destroyed (x 30..40, y 20..26: 10 x 6 = 60 px).
    write_xbd(raw, "storm_a", [(square(2, 2, 12, 12), "no-damage"), (square(30, 20, 40, 26), "destroyed")])
    # Scene b: intact houses only, though its two dates differ in every pixel.
    write_xbd(raw, "storm_b", [(square(5, 5, 15, 9), "no-damage"), (square(40, 30, 44, 40), "un-classified")])
    prepared = tmp_path / "prepared" / "xbd"
    prepare_xbd_pairs({"folder": "raw"}, tmp_path, prepared)
    return tmp_path, prepared


def test_change_is_the_damaged_buildings_and_intact_pairs_are_unchanged(xbd) -> None:
    _root, prepared = xbd
    a = np.asarray(Image.open(prepared / "change" / "storm_a_pre_disaster.png"))
    b = np.asarray(Image.open(prepared / "change" / "storm_b_pre_disaster.png"))
    expect = np.zeros((48, 64), np.uint8)
    expect[20:26, 30:40] = 255
    np.testing.assert_array_equal(a, expect)
    assert not b.any()
    assert sorted(p.name for p in (prepared / "post").iterdir()) == [
        "storm_a_post_disaster.png",
        "storm_b_post_disaster.png",
    ]


def test_a_folder_of_xbd_labels_gives_each_scene_its_own_outlines(xbd) -> None:
    root, prepared = xbd
    layer = read_vectors(str(prepared / "outlines"))
    assert layer.pixel and len(layer.features) == 4
    source = {
        "gen": {"image": "{prepared}/pre", "image2": "{prepared}/post", "change_mask": "{prepared}/change",
                "vectors": "{prepared}/outlines", "vector_label": "building", "dates": ["2018-04-06", "2018-09-20"]}
    }  # fmt: skip
    cfg = source_config("xbd", source, {"tile_size": 64}, root, root)
    tiles = {ref.id.split(":")[0]: load_tile(cfg, ref) for ref in plan_tiles(cfg)}
    areas = {name.split("_")[1]: sorted(int(i.mask.sum()) for i in t.instances) for name, t in tiles.items()}
    assert areas == {"a": [60, 100], "b": [40, 40]}
    changed = {name.split("_")[1]: int(t.change.sum()) for name, t in tiles.items()}
    assert changed == {"a": 60, "b": 0}
    assert next(iter(tiles.values())).dates == ("2018-04-06", "2018-09-20")


def test_an_xbd_folder_without_pairs_is_one_line_error(tmp_path) -> None:
    (tmp_path / "raw").mkdir()
    with pytest.raises(ValueError, match="no \\*_pre_disaster.png"):
        prepare_xbd_pairs({"folder": "raw"}, tmp_path, tmp_path / "out")
    write_xbd(tmp_path / "raw", "storm_c", [])
    (tmp_path / "raw" / "storm_c_post_disaster.json").unlink()
    with pytest.raises(ValueError, match="storm_c: missing storm_c_post_disaster.json"):
        prepare_xbd_pairs({"folder": "raw"}, tmp_path, tmp_path / "out")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.json").write_text(json.dumps({"metadata": {}, "features": {"xy": []}}))
    gp = {"gcg_description": "A <p> pond </p> [SEG].", "polygons": [[[[1, 1], [4, 1], [4, 4], [1, 4]]]]}
    (mixed / "b.json").write_text(json.dumps(gp))
    with pytest.raises(SourceError, match="mixes GeoPixelD and xBD"):
        read_vectors(str(mixed))
