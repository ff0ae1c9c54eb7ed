"""Label rasters of any dtype, as GIS exports write them: int8..int32, uint8/uint16, float32/64 with NaN or a
negative nodata (-99999), the raster's own nodata tag, and an ignore value the dtype cannot hold. Rasters are
written by code on the base scene's grid; what cannot be read is a one-line error."""

from __future__ import annotations

import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_gen.cli import main
from data_gen.config import GenConfig
from data_gen.sources import SourceError, load_tile, plan_tiles
from data_gen.sources.taxonomy import label_dtype, load_taxonomy
from tests.data_gen.source_fixtures import base_labels, write_raster, write_scene

NODATA = -99999
FILL = 255  # what the label map holds for every ignore value (the taxonomy adds it: -99999 fits no PNG)
TAXONOMY = """name: gis-export
ignore: [-99999]
classes:
  0: background
  1: {name: building, thing: true}
  2: woodland
  3: water
  4: road
"""


def _labels_with_holes(dtype: str, hole) -> np.ndarray:
    """The base labels as ``dtype`` with the top 8 rows set to ``hole`` (nodata, NaN or an ignore value)."""
    lab = base_labels().astype(dtype)
    lab[:8] = hole
    return lab


def _tiles(tmp_path, labels_path, taxonomy="gis-export") -> list:
    paths = write_scene(tmp_path)
    if taxonomy == "gis-export":
        taxonomy = tmp_path / "gis-export.yaml"
        taxonomy.write_text(TAXONOMY)
    cfg = GenConfig(image=str(paths["image"]), labels=str(labels_path), taxonomy=str(taxonomy), tile_size=32,
                    weak_labels="off")  # fmt: skip
    return [(ref, load_tile(cfg, ref)) for ref in plan_tiles(cfg)]


def _mosaic(tiles) -> np.ndarray:
    """The tiles' label maps put back on the 96 x 80 scene grid."""
    out = np.zeros((80, 96), np.int64)
    for ref, tile in tiles:
        c, r, w, h = ref.window
        out[r : r + h, c : c + w] = tile.labels
    return out


@pytest.mark.parametrize(
    "dtype, nodata",
    [
        ("int8", -128),
        ("int16", NODATA // 10),
        ("int32", NODATA),
        ("uint8", 255),
        ("uint16", 65535),
        ("float32", NODATA),
        ("float64", NODATA),
        ("float32", float("nan")),
        ("float64", float("nan")),
    ],
)
def test_every_dtype_reads_maps_and_ignores_its_nodata(tmp_path, dtype, nodata) -> None:
    path = write_raster(tmp_path / f"labels_{dtype}.tif", _labels_with_holes(dtype, nodata), nodata=nodata)
    tiles = _tiles(tmp_path, path)
    assert all(tile.labels.dtype == np.uint8 for _, tile in tiles)
    assert all(tile.unknown_values == {} for _, tile in tiles)  # nodata is not an unknown class
    labels = _mosaic(tiles)
    assert (labels[:8] == FILL).all()
    np.testing.assert_array_equal(labels[8:], base_labels()[8:])


def test_float_labels_with_minus_99999_under_a_uint8_taxonomy_fill_with_its_ignore(tmp_path) -> None:
    """The crash of the issue: ``OverflowError: Python integer -99999 out of bounds for uint8``."""
    path = write_raster(tmp_path / "lc.tif", _labels_with_holes("float32", NODATA), nodata=NODATA)
    tiles = _tiles(tmp_path, path, taxonomy="landcover.ai")  # ignore 255, classes 0-4: uint8 labels
    labels = _mosaic(tiles)
    assert (labels[:8] == 255).all()
    np.testing.assert_array_equal(labels[8:], base_labels()[8:])


def test_an_ignore_value_the_raster_dtype_cannot_hold_still_fills_off_raster_pixels(tmp_path) -> None:
    lab = base_labels()  # uint8: it can never hold -99999
    small = write_raster(tmp_path / "small.tif", lab[:, :80])  # the right 16 columns are off the raster
    labels = _mosaic(_tiles(tmp_path, small))
    assert (labels[:, 80:] == FILL).all()
    np.testing.assert_array_equal(labels[:, :80], lab[:, :80])


def test_the_rasters_own_nodata_tag_is_ignored_without_an_unknown_warning(tmp_path) -> None:
    path = write_raster(tmp_path / "tagged.tif", _labels_with_holes("uint8", 200), nodata=200)
    tiles = _tiles(tmp_path, path)
    assert all(tile.unknown_values == {} for _, tile in tiles)
    assert (_mosaic(tiles)[:8] == FILL).all()


def test_unknown_and_fractional_float_values_are_ignored_and_counted(tmp_path) -> None:
    lab = base_labels().astype("float32")
    lab[0:2, 0:4] = 9.0  # a whole number the taxonomy does not have
    lab[2:3, 0:4] = 2.5  # not a whole number: never a label
    tiles = _tiles(tmp_path, write_raster(tmp_path / "odd.tif", lab, nodata=NODATA))
    first = next(tile for ref, tile in tiles if ref.window[:2] == (0, 0))
    assert first.unknown_values == {9: 8, 2.5: 4}
    assert (first.labels[0:3, 0:4] == FILL).all()


def test_a_negative_ignore_value_gets_a_fill_value_that_fits_the_label_map(tmp_path) -> None:
    (tmp_path / "a.yaml").write_text(TAXONOMY)
    taxonomy = load_taxonomy(tmp_path / "a.yaml")
    assert taxonomy.ignore_values == (FILL, NODATA) and label_dtype(taxonomy) == np.uint8
    (tmp_path / "b.yaml").write_text(
        TAXONOMY.replace("[-99999]", "[-99999, 0]").replace("  0: background\n", "")
    )
    assert load_taxonomy(tmp_path / "b.yaml").ignore_values == (0, NODATA)
    (tmp_path / "c.yaml").write_text(TAXONOMY.replace("  0: background", "  -1: background"))
    with pytest.raises(SourceError, match="class value -1 is negative"):
        load_taxonomy(tmp_path / "c.yaml")


def test_complex_labels_are_a_one_line_error(tmp_path) -> None:
    path = write_raster(tmp_path / "complex.tif", base_labels().astype("complex64"))
    with pytest.raises(SourceError, match="complex64; labels must be integers or floats") as e:
        _tiles(tmp_path, path)
    assert "\n" not in str(e.value)


def test_truncated_labels_are_a_one_line_error_through_the_cli(tmp_path, capsys) -> None:
    paths = write_scene(tmp_path)
    good = write_raster(tmp_path / "full.tif", base_labels().astype("int32"))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    argv = ["--image", str(paths["image"]), "--labels", str(cut), "--taxonomy", "landcover.ai"]
    assert main(["gen", *argv, "--tile-size", "32", "--out", str(tmp_path / "out")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "rsvlm gen: error:" in line]  # not tqdm
    assert len(err) == 1 and "cannot read labels from" in err[0] and "cut.tif" in err[0], err
    assert "Traceback" not in err[0]


def test_gen_and_validate_a_float32_minus_99999_label_raster(tmp_path, capsys) -> None:
    """``rsvlm gen`` then ``rsvlm gen validate`` on the issue's raster; the card counts the nodata as ignored."""
    paths = write_scene(tmp_path)
    labels = write_raster(tmp_path / "lc.tif", _labels_with_holes("float32", NODATA), nodata=NODATA)
    (tmp_path / "gis-export.yaml").write_text(TAXONOMY)
    out = tmp_path / "ds"
    argv = [
        "--image",
        str(paths["image"]),
        "--labels",
        str(labels),
        "--taxonomy",
        str(tmp_path / "gis-export.yaml"),
    ]
    assert main(["gen", *argv, "--tile-size", "32", "--out", str(out)]) == 0
    assert main(["validate", str(out)]) == 0
    assert "0 samples failed" in capsys.readouterr().out
    assert sum(1 for f in (out / "data").glob("*.parquet") for _ in pq.read_table(f).to_pylist()) > 0
    card = (out / "README.md").read_text()
    ignored = int(re.search(r"Ignored label pixels \([^)]*\): (\d+)", card).group(1))
    assert ignored == 8 * 96  # the top 8 rows of the 96 x 80 scene, counted once per tile that covers them
    assert "Unknown label values (not in the taxonomy): none" in card
