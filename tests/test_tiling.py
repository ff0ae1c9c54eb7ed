"""Large scenes without a model: windows, visual search, merging, the answer sentence; date labels."""

import numpy as np
import pytest
from affine import Affine
from shapely.geometry import Polygon, shape

from rsvlm import geo
from rsvlm.assistant import _date_label
from rsvlm.grounding import Region
from rsvlm.tiling import box_iou, count_phrase, describe_large_scene, merge_regions, plan_windows


def test_windows_cover_the_scene_with_overlap_and_stay_inside():
    windows = plan_windows(1000, 700, 256, 0.125)
    covered = np.zeros((700, 1000), bool)
    for x, y, w, h in windows:
        assert 0 <= x and 0 <= y and x + w <= 1000 and y + h <= 700
        assert (w, h) == (256, 256)
        covered[y : y + h, x : x + w] = True
    assert covered.all()
    xs = sorted({x for x, *_ in windows})
    assert all(b - a <= 224 for a, b in zip(xs, xs[1:]))  # 12.5 % overlap


def test_small_scene_is_one_window():
    assert plan_windows(200, 100, 256, 0.125) == [(0, 0, 200, 100)]


def test_box_nms_across_tiles_keeps_one_per_object():
    a = Region(label="plane", pixel_box=(100, 100, 140, 130))
    b = Region(label="plane", pixel_box=(102, 101, 141, 131))  # the same plane seen from the next tile
    c = Region(label="plane", pixel_box=(400, 400, 440, 430))
    d = Region(label="ship", pixel_box=(101, 100, 140, 130))  # another label is never suppressed
    merged = merge_regions([a, b, c, d])
    assert len(merged) == 3
    assert box_iou(a.pixel_box, b.pixel_box) > 0.5


UTM = "EPSG:32633"
GRID = Affine(2.0, 0.0, 500_000.0, 0.0, -2.0, 5_000_000.0)  # 2 m pixels


def test_masks_of_one_label_are_stitched_across_tiles():
    """Two overlapping windows see parts of one field; the merged region is their pixel union on the scene grid."""
    shape_ = (700, 1000)
    left_tile = np.zeros((128, 128), bool)
    left_tile[30:90, 60:128] = True  # tile at (200, 250): scene cols 260-328, rows 280-340
    right_tile = np.zeros((128, 128), bool)
    right_tile[30:90, 0:100] = True  # tile at (312, 250): scene cols 312-412 (overlaps 312-328)
    left = Region(label="field", mask=geo.SparseMask.from_dense(left_tile, 200, 250, shape_))
    right = Region(label="field", mask=geo.SparseMask.from_dense(right_tile, 312, 250, shape_))
    other = Region(label="pond", mask=geo.SparseMask.from_dense(right_tile, 600, 500, shape_))
    merged = merge_regions([left, right, other], transform=GRID, crs=UTM)
    assert [r.label for r in merged] == ["field", "pond"]
    field = merged[0]
    assert field.pixel_box == (260.0, 280.0, 412.0, 340.0)  # source pixels, not tile pixels
    assert field.mask.count() == 152 * 60  # the 16-column overlap is counted once
    expected = np.zeros(shape_, bool)
    expected[280:340, 260:412] = True
    np.testing.assert_array_equal(field.mask.to_dense(), expected)
    # One polygon, right-hand rule, where the pixels are, with the area of the pixels (4 m² each).
    assert field.geometry["type"] == "Polygon" and Polygon(field.geometry["coordinates"][0]).exterior.is_ccw
    back = shape(geo.geometry_to_pixels(field.geometry, GRID, UTM)).bounds
    np.testing.assert_allclose(back, (260, 280, 412, 340), atol=0.5)
    assert field.area_m2 == pytest.approx(152 * 60 * 4.0, rel=0.003)  # UTM scale factor only
    assert Polygon(field.pixel_polygon).area == pytest.approx(152 * 60)


def test_stitched_masks_without_a_crs_keep_pixel_geometry():
    a = Region(label="roof", mask=geo.SparseMask.from_dense(np.ones((10, 10), bool), 500, 10, (600, 800)))
    b = Region(label="roof", mask=geo.SparseMask.from_dense(np.ones((10, 10), bool), 10, 500, (600, 800)))
    (roof,) = merge_regions([a, b])
    assert roof.geometry is None and roof.area_m2 is None
    assert roof.pixel_box == (10.0, 10.0, 510.0, 510.0) and roof.mask.count() == 200
    assert describe_large_scene([roof], 2, 4, 30) == (
        "Found 2 roofs across 2 of 30 windows (visual search read the 4 most promising)."
    )


def test_large_scene_text_counts_objects_and_says_how_much_was_read():
    buildings = [Region(label="A building", pixel_box=(i * 50, 0, i * 50 + 20, 20)) for i in range(12)]
    text = describe_large_scene(buildings, 9, 16, 1521)
    assert text == "Found 12 buildings across 9 of 1,521 windows (visual search read the 16 most promising)."
    mixed = [Region(label="the ship", pixel_box=(0, 0, 1, 1)), *buildings[:1]]
    assert describe_large_scene(mixed, 1, 9, 9) == (
        "Found 1 ship and 1 building across 1 of 9 windows (all 9 read at full resolution)."
    )
    assert (
        describe_large_scene([], 0, 16, 1521)
        == "Found nothing in the 16 of 1,521 windows read at full resolution."
    )
    assert [count_phrase(2, w) for w in ("bus", "city", "church", "buildings", "")] == [
        "2 buses",
        "2 cities",
        "2 churches",
        "2 buildings",
        "2 regions",
    ]
    assert count_phrase(1, "storage tanks") == "1 storage tank"


class _Named:
    def __init__(self, path):
        self.path = path


def test_date_labels_come_from_file_names():
    assert _date_label(_Named("m_4709963_se_14_1_20090818.tif"), 1) == "2009-08-18"
    assert _date_label(_Named("before_2015.tif"), 1) == "2015"
    assert _date_label(_Named("before.tif"), 2) == "date 2"
