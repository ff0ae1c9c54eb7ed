"""rsvlm.geo.write: mask GeoTIFFs and GeoJSON, written atomically, with user mistakes as RasterError."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import rasterio.warp
from affine import Affine
from make_fixtures import from_origin
from shapely.geometry import shape

from rsvlm import geo
from rsvlm.geo import RasterError
from rsvlm.grounding import Region
from tests.geo.helpers import GRIDS, NAIP_2020, one_line


def test_mask_geotiff_from_a_window_has_the_window_transform(fx, tmp_path):
    part = geo.read_image(fx["rgb_uint8"], window=(16, 8, 32, 24))
    mask = part.data[0] > 128
    out = geo.write_mask_geotiff(tmp_path / "mask.tif", mask, part.transform, part.crs)
    with rasterio.open(out) as src:
        assert src.count == 1 and src.dtypes == ("uint8",) and src.shape == (24, 32)
        assert src.transform == part.transform and src.crs == part.crs
        assert src.compression.value.lower() == "deflate"
        np.testing.assert_array_equal(src.read(1), mask.astype(np.uint8))
    with rasterio.open(fx["rgb_uint8"]) as full:
        assert part.transform == full.transform @ Affine.translation(16, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif"]  # no temp file left behind
    # Overwrite in place, atomically.
    geo.write_mask_geotiff(out, ~mask, part.transform, part.crs)
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1), (~mask).astype(np.uint8))


def test_write_geojson_feature_collection(tmp_path):
    crs, transform = GRIDS["utm"]
    geometry = geo.pixel_box_to_geometry((0, 0, 10, 10), transform, crs)
    region = Region(
        label="field", geometry=geometry, area_m2=float(geo.area_m2(geometry)), score=np.float32(0.9)
    )
    features = [
        region,
        geometry,
        (geometry, {"label": "pond", "pixels": np.int64(4)}),
        {"type": "Feature", "geometry": None, "properties": {"label": "no crs"}},
    ]
    path = geo.write_geojson(tmp_path / "out.geojson", features)
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection" and "crs" not in data and len(data["features"]) == 4
    assert data["features"][0]["properties"]["label"] == "field"
    assert data["features"][0]["properties"]["area_m2"] == pytest.approx(10_000, rel=0.005)
    assert data["features"][2]["properties"]["pixels"] == 4
    assert data["features"][1]["geometry"] == geometry
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.geojson"]


def test_naip_geojson_falls_inside_its_footprint(tmp_path):
    image = geo.read_image(NAIP_2020)
    assert image.crs.to_epsg() == 26914 and image.gsd == pytest.approx(5.0)
    west, south, east, north = rasterio.warp.transform_bounds(image.crs, "EPSG:4326", *image.bounds)
    ndvi = image.index("ndvi")
    vegetation = np.nan_to_num(ndvi, nan=-1) > np.nanpercentile(ndvi, 80)
    polygons = image.mask_to_polygons(vegetation)
    geometries = [image.box_to_geometry((10, 20, 200, 250)), *polygons[:20]]
    assert len(geometries) > 5
    for geometry in geometries:
        minx, miny, maxx, maxy = shape(geometry).bounds
        assert west - 1e-9 <= minx and maxx <= east + 1e-9 and south - 1e-9 <= miny and maxy <= north + 1e-9
    # North Dakota, roughly 99.2° W 47.0° N.
    assert -99.3 < west < east < -99.1 and 46.9 < south < north < 47.1
    # Whole-image box area: 256 × 256 px of 5 m.
    assert geo.area_m2(image.box_to_geometry((0, 0, 256, 256))) == pytest.approx(256 * 256 * 25, rel=0.005)
    geo.write_geojson(tmp_path / "veg.geojson", [(g, {"class": "vegetation"}) for g in polygons])
    assert len(json.loads((tmp_path / "veg.geojson").read_text())["features"]) == len(polygons)


def test_write_masks_geotiff_refuses_mixed_grids_and_nothing(tmp_path):
    crs, transform = GRIDS["utm"]
    with pytest.raises(geo.RasterError, match="no masks"):
        geo.write_masks_geotiff(tmp_path / "m.tif", [], transform, crs)
    with pytest.raises(geo.RasterError, match="different grids"):
        geo.write_masks_geotiff(tmp_path / "m.tif", [np.ones((4, 4)), np.ones((5, 4))], transform, crs)
    assert list(tmp_path.iterdir()) == []


def test_output_folder_missing_writes_nothing(tmp_path):
    missing = tmp_path / "no_such_dir"
    transform = from_origin(500_000, 4_100_000, 10, 10)
    with pytest.raises(RasterError) as e:
        geo.write_mask_geotiff(missing / "mask.tif", np.ones((4, 4), bool), transform, "EPSG:32618")
    assert str(missing) in one_line(e) and "does not exist" in str(e.value)
    with pytest.raises(RasterError, match="does not exist"):
        geo.write_geojson(missing / "out.geojson", [])
    assert not missing.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_temp_file(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), geo.atomic_write(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_geojson_rejects_projected_coordinates(tmp_path):
    utm_square = {
        "type": "Polygon",
        "coordinates": [[[500000, 4100000], [500100, 4100000], [500100, 4100100]]],
    }
    with pytest.raises(RasterError, match="EPSG:4326"):
        geo.write_geojson(tmp_path / "x.geojson", [utm_square])
    with pytest.raises(RasterError, match="lon/lat"):
        geo.area_m2(utm_square)
    assert not (tmp_path / "x.geojson").exists()
