"""Readers on the real files in ../shared/data (skipped when absent) and on small written fixtures."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from eval.readers import BenchmarkError, Record, read_benchmark, read_voc

DATA = Path(__file__).resolve().parents[2] / "../shared/data"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path


def test_dior_obb_xml_is_an_oriented_box_record():
    (record,) = read_benchmark("dior-rsvg", need(DATA / "grounding/dior"))
    assert record.task == "obb" and Path(record.images[0]).name == "00001.jpg"
    assert Path(record.images[0]).exists()
    assert record.obb == [[133, 237], [684, 237], [684, 672], [133, 672]]
    assert "golffield" in record.question


def test_dior_rsvg_bndbox_with_expression(tmp_path):
    (tmp_path / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><object><name>airport</name>"
        "<bndbox><xmin>10</xmin><ymin>20</ymin><xmax>110</xmax><ymax>220</ymax></bndbox>"
        "<description>the airport on the left</description></object></annotation>"
    )
    (record,) = read_voc(tmp_path)
    assert record.task == "grounding" and record.box == [10, 20, 110, 220]
    assert "the airport on the left" in record.question
    (tmp_path / "b.xml").write_text("<annotation><object>")
    with pytest.raises(BenchmarkError, match="not valid xml"):
        read_voc(tmp_path / "b.xml")


def test_geopixeld_gives_a_gcg_record_with_one_mask_per_phrase():
    (record,) = read_benchmark("geopixeld", need(DATA / "grounding/GeoPixelD.json"))
    assert record.task == "gcg" and Path(record.images[0]).exists()
    assert record.num_masks() == 4 == record.texts[0].count("[SEG]")
    masks = record.target_masks((800, 800))
    assert all(m.shape == (800, 800) and m.sum() > 500 for m in masks)
    assert not np.logical_and(masks[0], masks[1]).any()  # four different courts


def test_reasoning_annotations_rasterise_on_a_stand_in_image(tmp_path):
    folder = need(DATA / "reasoning_annotations")
    records = read_benchmark("lisa", folder, images=tmp_path)
    assert len(records) == 10 and {r.task for r in records} == {"refseg"}
    first = records[0]
    assert "crane" in first.question and Path(first.images[0]).parent == tmp_path
    Image.new("RGB", (640, 480)).save(
        first.images[0]
    )  # images are not distributed: a stand-in of a fitting size
    mask = first.target_mask((480, 640))
    ys, xs = np.nonzero(mask)
    assert 400 <= xs.min() and xs.max() <= 434 and ys.min() == 0 and ys.max() <= 33


def test_levircc_pairs_resolve_both_dates_and_five_captions():
    records = read_benchmark("levircc", need(DATA / "change_captions/levircc_pairs_captions.json"))
    assert len(records) == 4
    for r in records:
        assert r.task == "change_caption" and len(r.texts) == 5
        assert all(Path(p).exists() for p in r.images), r.images


@pytest.mark.parametrize("name", ["levircd", "dsifn"])
def test_change_mask_folders(name):
    records = read_benchmark(name, need(DATA / f"change/{name}"))
    assert records and all(r.task == "change_mask" and len(r.images) == 2 for r in records)
    mask = records[0].target_mask((256, 256))
    assert mask.dtype == bool and 0 < mask.sum() < mask.size or mask.sum() == 0


def test_unknown_benchmark_and_missing_paths_are_clear_errors(tmp_path):
    with pytest.raises(BenchmarkError, match="unknown benchmark"):
        read_benchmark("imagenet", tmp_path)
    with pytest.raises(BenchmarkError, match="does not exist"):
        read_benchmark("dior-rsvg", tmp_path / "nope")
    with pytest.raises(BenchmarkError, match="A/, B/ and label/"):
        read_benchmark("levircd", tmp_path)


def test_record_round_trips_through_json():
    r = Record("x", "grounding", ["a.png"], "q?", box=[1, 2, 3, 4])
    assert Record(**r.to_json()) == r


def test_gen_parquet_rows_become_records_by_what_their_answer_holds(tmp_path):
    datasets = pytest.importorskip("datasets")
    from data_gen.driver import encode_png, features

    image = np.zeros((64, 32, 3), np.uint8)  # H 64, W 32: grid -> pixels scales x and y differently
    mask = np.zeros((64, 32), bool)
    mask[:10, :10] = True

    def row(rid, task, question, answer, images=1, masks=()):
        return {
            "id": rid,
            "images": [{"bytes": encode_png(image), "path": None}] * images,
            "conversations": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ],
            "masks": [{"bytes": encode_png(m), "path": None} for m in masks],
            "ref_masks": [],
            "rasters": [],
            "raster_names": [],
            "task": task,
            "source": "unit",
            "license": "none",
            "weak": False,
            "crs": "",
            "transform": None,
            "gsd": None,
            "split": "test",
            "block": "",
            "tile_id": "t",
            "meta": "{}",
        }

    rows = [
        row("g/1", "grounding", "<image>\nWhere is the pond?", "<box>[0, 500, 500, 1000]</box>"),
        row("s", "grounding", "<image>\nSegment the field.", "<p>field</p> [SEG]", masks=[mask]),
        row("v", "vqa", "<image>\nIs there water?", "Yes."),
        row("n", "count", "<image>\nHow many buildings?", "7"),
        row("c", "caption", "<image>\nDescribe the image.", "Fields and a road."),
        row(
            "b", "change", "Image 1 (2009): <image>\nImage 2 (2020): <image>\nDid it change?", "No.", images=2
        ),
        row(
            "m",
            "change",
            "Image 1 (a): <image>\nImage 2 (b): <image>\nOutline changes.",
            "<p>x</p> [SEG]",
            2,
            [mask],
        ),
    ]
    later = row("y", "vqa", "<image>\nIs there a field?", "Yes.", masks=[mask])  # the mask is a later turn's
    later["conversations"] += [
        {"role": "user", "content": "Outline it."},
        {"role": "assistant", "content": "<p>field</p> [SEG]"},
    ]
    rows.append(later)
    georeferenced = row("geo", "vqa", "<image>\nIs there water?", "No.")  # a user's file would be a GeoTIFF
    georeferenced.update(crs="EPSG:32633", transform=[0.5, 0.0, 500000.0, 0.0, -0.5, 4000000.0], gsd=0.5)
    rows.append(georeferenced)
    out = tmp_path / "data"
    out.mkdir()
    datasets.Dataset.from_list(rows, features=features()).to_parquet(str(out / "test-0.parquet"))
    records = {r.id: r for r in read_benchmark("gen", tmp_path, images=tmp_path / "inputs")}
    assert {k: r.task for k, r in records.items()} == {
        "g/1": "grounding",
        "s": "refseg",
        "v": "vqa",
        "n": "count",
        "c": "caption",
        "b": "change_binary",
        "m": "change_mask",
        "y": "vqa",
        "geo": "vqa",
    }
    assert records["v"].images[0].endswith(".png")
    with rasterio.open(records["geo"].images[0]) as tif:
        assert tif.crs.to_epsg() == 32633 and tif.transform.a == 0.5 and tif.transform.c == 500000.0
        np.testing.assert_array_equal(tif.read().transpose(1, 2, 0), image)
    assert records["g/1"].box == [0, 32, 16, 64] and records["g/1"].question == "Where is the pond?"
    assert records["b"].answer is False and len(records["b"].images) == 2
    assert records["b"].question == "Did it change?"
    assert records["n"].number == 7 and records["v"].texts == ["Yes."]
    np.testing.assert_array_equal(records["s"].target_mask((64, 32)), mask)
    assert Image.open(records["m"].images[1]).size == (32, 64)


def test_dota_label_txt_gives_class_questions_with_boxes_and_counts(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labelTxt").mkdir()
    Image.new("RGB", (100, 100)).save(tmp_path / "images/P0001.png")
    (tmp_path / "labelTxt/P0001.txt").write_text(
        "imagesource:GoogleEarth\ngsd:0.25\n"
        "10 10 20 10 20 20 10 20 ship 0\n"
        "30 10 40 10 40 20 30 20 ship 0\n"
        "50 50 60 50 60 60 50 60 ship 1\n"  # difficult: left out, counted
        "0 0 5 5 9 9 0 0 large-vehicle 0\n"  # no area
        "70 70 90 70 90 90 70 90 harbor 0\n"
        "1 2 3 ship\n"
    )
    records = read_benchmark("dota", tmp_path)
    by_id = {r.id: r for r in records}
    ships = by_id["P0001#ship"]
    assert ships.task == "obb_multi" and ships.question == "Give the oriented boxes of all the ships."
    assert ships.obbs == [[[10, 10], [20, 10], [20, 20], [10, 20]], [[30, 10], [40, 10], [40, 20], [30, 20]]]
    assert by_id["P0001#ship#count"].number == 2 and by_id["P0001#ship#count"].task == "count"
    assert by_id["P0001#harbor"].task == "obb" and by_id["P0001#harbor#count"].number == 1
    assert Path(ships.images[0]) == tmp_path / "images/P0001.png"
    assert dict(records.skipped) == {
        "difficult object (ignored, as the DOTA devkit does)": 1,
        "broken geometry": 1,
        "malformed label line": 1,
    }
    with pytest.raises(BenchmarkError, match="has no val/ folder"):
        read_benchmark("dota", tmp_path, split="val")


def test_dota_real_harbour_and_parking_lot():
    records = read_benchmark("dota", need(DATA / "grounding/dota"))
    counts = {r.id.removesuffix("#count"): r.number for r in records if r.task == "count"}
    assert counts["P0706#ship"] == 525 and counts["P1888#large-vehicle"] == 50
    assert records.skipped["difficult object (ignored, as the DOTA devkit does)"] == 6
    assert all(Path(r.images[0]).exists() for r in records)
    assert {r.task for r in records} == {"obb_multi", "count"}
