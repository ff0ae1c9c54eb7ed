"""Large-scene plumbing of the assistant that needs no model: windows, visual search, merging, date labels."""

import numpy as np

from rsvlm.assistant import _date_label, box_iou, merge_regions, plan_windows
from rsvlm.grounding import Region


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


def test_masks_of_one_label_are_stitched_across_tiles():
    def square(x0, x1):
        ring = [[x0, 0.0], [x1, 0.0], [x1, 0.001], [x0, 0.001], [x0, 0.0]]
        return {"type": "Polygon", "coordinates": [ring]}

    left = Region(
        label="field", geometry=square(0.0, 0.002), mask=np.ones((2, 2), bool), pixel_box=(0, 0, 10, 10)
    )
    right = Region(
        label="field", geometry=square(0.001, 0.003), mask=np.ones((2, 2), bool), pixel_box=(5, 0, 15, 10)
    )
    merged = merge_regions([left, right])
    assert len(merged) == 1
    assert merged[0].geometry["type"] == "Polygon"
    assert merged[0].pixel_box == (0, 0, 15, 10)
    # the union is 0.003° × 0.001° at the equator: about 334 m × 111 m
    assert 35_000 < merged[0].area_m2 < 39_000


class _Named:
    def __init__(self, path):
        self.path = path


def test_date_labels_come_from_file_names():
    assert _date_label(_Named("m_4709963_se_14_1_20090818.tif"), 1) == "2009-08-18"
    assert _date_label(_Named("before_2015.tif"), 1) == "2015"
    assert _date_label(_Named("before.tif"), 2) == "date 2"
