"""`rsvlm ask` end to end on a tiny checkpoint: outputs on disk, and bad input as one line, exit 2, nothing written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from rsvlm.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from make_fixtures import write_all  # noqa: E402

NAIP_2020 = Path(__file__).parent / "data" / "naip_2020_256.tif"


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint) -> str:
    return str(tiny_checkpoint)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, Path]:
    return write_all(tmp_path_factory.mktemp("cli_rasters"))


def ask(checkpoint: str, *args: str) -> list[str]:
    return ["ask", *args, "--model", checkpoint, "--max-new-tokens", "4"]


def test_ask_prints_json_and_writes_the_answer_atomically(checkpoint, tmp_path, capsys):
    out = tmp_path / "answer.json"
    assert main(ask(checkpoint, str(NAIP_2020), "-q", "Describe this image.", "--out", str(out))) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["crs"] == "EPSG:26914"
    assert [p.name for p in tmp_path.iterdir()] == ["answer.json"]  # no temp files left behind


@pytest.mark.parametrize("name", ["grey_3857", "two_band_int16", "rgbn_uint16", "s2_l1c", "float_nan_4326"])
def test_odd_band_counts_nan_and_outliers_are_answered(checkpoint, fixtures, name, capsys):
    assert main(ask(checkpoint, str(fixtures[name]), "-q", "Describe this image.")) == 0
    assert "text" in json.loads(capsys.readouterr().out)


BAD_INPUT = {
    "empty": "empty",
    "text_as_tif": "not a",
    "truncated": "",
    "huge_header": "200000",
    "all_nodata": "nodata",
}


@pytest.mark.parametrize("name", sorted(BAD_INPUT))
def test_bad_rasters_give_one_line_exit_2_and_write_nothing(checkpoint, fixtures, name, tmp_path, capsys):
    out, geojson = tmp_path / "a.json", tmp_path / "a.geojson"
    code = main(
        ask(checkpoint, str(fixtures[name]), "-q", "Describe.", "--out", str(out), "--geojson", str(geojson))
    )
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rsvlm ask: error:"), captured.err
    assert BAD_INPUT[name].lower() in lines[0].lower()
    assert "Traceback" not in captured.err and captured.out == ""
    assert list(tmp_path.iterdir()) == []


def test_dates_that_do_not_overlap_are_refused(checkpoint, fixtures, capsys):
    code = main(ask(checkpoint, str(fixtures["pair_a"]), str(fixtures["pair_b_far"]), "-q", "What changed?"))
    assert code == 2
    assert "overlap" in capsys.readouterr().err


def test_output_in_a_missing_folder_is_refused_before_any_work(checkpoint, tmp_path, capsys):
    missing = tmp_path / "nope" / "answer.json"
    assert main(ask(checkpoint, str(NAIP_2020), "-q", "Describe.", "--out", str(missing))) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and str(missing.parent) in err
    assert not missing.parent.exists()


def test_missing_file_and_bad_checkpoint(checkpoint, tmp_path, capsys):
    assert main(ask(checkpoint, str(tmp_path / "absent.tif"), "-q", "Describe.")) == 2
    assert "absent.tif" in capsys.readouterr().err
    assert main(["ask", str(NAIP_2020), "-q", "Describe.", "--model", str(tmp_path)]) == 2
    assert "not an rsvlm checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("large", [False, True])
def test_nothing_found_writes_empty_outputs_on_the_source_grid_and_exits_0(
    checkpoint, tmp_path, capsys, monkeypatch, large
):
    """Scripted pipelines over many scenes go on: an all-zero mask GeoTIFF on the source grid, an empty
    FeatureCollection, a warning in the answer, exit 0 (small image and large scene alike)."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    from rsvlm.modeling_rsvlm import GenerationResult, RSVLMForConditionalGeneration

    def nothing(self, **kwargs):  # the model answers without any region
        ids = self.get_processor().tokenizer("There are no buildings here.")["input_ids"]
        return GenerationResult(sequences=torch.tensor([ids]), masks=[torch.zeros(0, 128, 128)], timings={})

    monkeypatch.setattr(RSVLMForConditionalGeneration, "generate", nothing)
    image = NAIP_2020
    if large:
        image = tmp_path / "scene.tif"
        with rasterio.open(image, "w", driver="GTiff", width=900, height=600, count=1, dtype="uint8",
                           crs="EPSG:32633", transform=from_origin(500000, 5000000, 0.5, 0.5)) as dst:  # fmt: skip
            dst.write(np.random.default_rng(0).integers(1, 255, (1, 600, 900), dtype=np.uint8))
    out, mask, vectors = tmp_path / "answer.json", tmp_path / "mask.tif", tmp_path / "found.geojson"
    argv = ask(checkpoint, str(image), "-q", "Outline the buildings.", "--out", str(out), "--mask-tif", str(mask),
               "--geojson", str(vectors))  # fmt: skip
    assert main(argv) == 0
    answer = json.loads(out.read_text())
    assert answer["regions"] == [] and any("nothing was found" in w for w in answer["warnings"])
    with rasterio.open(mask) as src, rasterio.open(image) as ref:
        assert src.shape == ref.shape and src.transform == ref.transform and src.crs == ref.crs
        assert src.read(1).max() == 0
    collection = json.loads(vectors.read_text())
    assert collection["type"] == "FeatureCollection" and collection["features"] == []


def test_delegated_subcommands_get_their_own_flags(capsys):
    assert main(["gen", "--help"]) == 0
    assert "--tile-size" in capsys.readouterr().out


def _copy_as(src_path: Path, dst_path: Path, driver: str, **options) -> Path:
    import rasterio

    with rasterio.open(src_path) as src:
        profile = {**src.profile, "driver": driver, **options}
        for key in ("tiled", "blockxsize", "blockysize", "interleave", "compress"):
            profile.pop(key, None)
        profile.update(options)
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(src.read())
    return dst_path


@pytest.mark.parametrize("driver, suffix", [("COG", ".tif"), ("JP2OpenJPEG", ".jp2")])
def test_cog_and_jpeg2000_are_read_and_answered(checkpoint, tmp_path, driver, suffix, capsys):
    import rasterio

    path = _copy_as(NAIP_2020, tmp_path / f"naip{suffix}", driver)
    with rasterio.open(path) as src:
        assert src.driver == ("GTiff" if driver == "COG" else driver)  # a COG is a GeoTIFF to readers
    geojson = tmp_path / "a.geojson"
    code = main(ask(checkpoint, str(path), "-q", "Describe this image.", "--geojson", str(geojson)))
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["crs"] == "EPSG:26914" and printed["image_shape"] == [256, 256]
    with rasterio.open(NAIP_2020) as src:
        assert printed["transform"] == pytest.approx(list(src.transform)[:6])
    assert json.loads(geojson.read_text())["type"] == "FeatureCollection"


def test_bands_flag_takes_a_preset_or_band_indexes(checkpoint, fixtures, capsys):
    from rsvlm.cli import _parse_bands

    assert _parse_bands("4,3,2") == [4, 3, 2] and _parse_bands(" 4, 3 ,2") == [4, 3, 2]
    assert _parse_bands("rgbn") == "rgbn" and _parse_bands(None) is None
    rgbn = str(fixtures["rgbn_uint16"])
    assert main(ask(checkpoint, rgbn, "-q", "Describe.", "--bands", "4,1,2")) == 0  # false colour by index
    assert main(ask(checkpoint, rgbn, "-q", "Describe.", "--bands", "rgbn")) == 0
    capsys.readouterr()
    assert main(ask(checkpoint, rgbn, "-q", "Describe.", "--bands", "s2-l1c")) == 2
    assert "needs 13 bands" in capsys.readouterr().err
    assert main(ask(checkpoint, rgbn, "-q", "Describe.", "--bands", "4,3,9")) == 2
    assert "1..4" in capsys.readouterr().err


def test_chat_answers_each_line_until_an_empty_one(checkpoint, monkeypatch, capsys):
    import io

    from rsvlm.assistant import Session

    sessions: list[Session] = []
    original = Session.__init__

    def remember(self, *args, **kwargs):
        original(self, *args, **kwargs)
        sessions.append(self)

    monkeypatch.setattr(Session, "__init__", remember)
    monkeypatch.setattr("sys.stdin", io.StringIO("Describe this image.\nAnd the roads?\n\nnever asked\n"))
    code = main(["chat", str(NAIP_2020), "--model", checkpoint, "--max-new-tokens", "4"])
    out = capsys.readouterr()
    assert code == 0 and out.out.count("rsvlm> ") == 2
    (session,) = sessions
    assert [m["role"] for m in session.history] == ["user", "assistant"] * 2
    assert session.encode_count == 1  # the second turn reuses the encoded image
    assert "never asked" not in str(session.history)


def test_chat_ends_on_end_of_input_and_bad_images_are_one_line(checkpoint, fixtures, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("Describe.\n"))  # no empty line: EOF ends it
    assert main(["chat", str(NAIP_2020), "--model", checkpoint, "--max-new-tokens", "2"]) == 0
    assert capsys.readouterr().out.count("rsvlm> ") == 1
    monkeypatch.setattr("sys.stdin", io.StringIO("Describe.\n"))
    assert main(["chat", str(fixtures["empty"]), "--model", checkpoint]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rsvlm chat: error:") and "0 bytes" in err[-1]


def test_large_scene_mask_geotiff_is_written_on_the_source_grid(checkpoint, tmp_path, monkeypatch, capsys):
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from test_assistant import scripted

    from rsvlm.assistant import Assistant

    scene = tmp_path / "big.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=900, height=600, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 5000000, 1, 1)) as dst:  # fmt: skip
        dst.write(np.random.default_rng(0).integers(1, 255, (3, 600, 900), dtype=np.uint8))
    model_mask = np.zeros((128, 128), bool)
    model_mask[30:50, 20:60] = True
    real = Assistant.from_pretrained.__func__

    def from_pretrained(cls, *args, **kwargs):
        assistant = real(cls, *args, **kwargs)
        scripted(assistant, "The <p>field</p> [SEG].", masks=[model_mask])
        return assistant

    monkeypatch.setattr(Assistant, "from_pretrained", classmethod(from_pretrained))
    out, mask = tmp_path / "a.json", tmp_path / "mask.tif"
    assert (
        main(
            ask(
                checkpoint,
                str(scene),
                "-q",
                "Outline the fields.",
                "--out",
                str(out),
                "--mask-tif",
                str(mask),
            )
        )
        == 0
    )
    answer = json.loads(out.read_text())
    # 10 x 6 windows of 128 px, 96 px apart.
    assert answer["image_shape"] == [600, 900] and answer["tiles"] == answer["windows"] == 60
    with rasterio.open(mask) as src, rasterio.open(scene) as ref:
        assert src.shape == ref.shape and src.transform == ref.transform and src.crs == ref.crs
        written = src.read(1)
    assert written.max() == 1 and written.sum() == answer["regions"][0]["mask_pixels"]
    x1, y1, x2, y2 = answer["regions"][0]["pixel_box"]
    rows, cols = np.nonzero(written)
    assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x1, y1, x2, y2)
