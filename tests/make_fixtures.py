"""Write tiny georeferenced rasters (real EPSG codes, real Affine transforms) for the geo tests, torchgeo style.

    python tests/make_fixtures.py /tmp/geo_fixtures     # write them all to a folder to look at them

Every file is a few KB and is written by code, so nothing binary needs committing. ``write_all(root)`` returns a
dict name -> path; tests build it once per module in a tmp dir.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from pyproj import Transformer
from rasterio.enums import ColorInterp

UTM18 = "EPSG:32618"  # WGS 84 / UTM 18N; central meridian -75°, so easting 500000 is on it
ORIGIN_UTM = (500_000.0, 4_100_000.0)  # ~37° N, 75° W
GSD_UTM = 10.0
# The linear field written into the alignment fixtures: value = A * easting + B * northing + C (in UTM 18N).
FIELD = (0.5, -0.25, 1_000_000.0)


def from_origin(west: float, north: float, xsize: float, ysize: float) -> Affine:
    """North-up transform from the top-left corner (rasterio's helper, without its deprecated ``*``)."""
    return Affine(xsize, 0.0, west, 0.0, -ysize, north)


def _write(path: Path, data: np.ndarray, crs: str | None, transform: Affine, **kw) -> Path:
    count, height, width = data.shape
    profile = dict(driver="GTiff", height=height, width=width, count=count, dtype=data.dtype, **kw)
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    descriptions = profile.pop("descriptions", None)
    colorinterp = profile.pop("colorinterp", None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
        if colorinterp:
            dst.colorinterp = colorinterp
    return path


def utm_field(easting: np.ndarray, northing: np.ndarray) -> np.ndarray:
    a, b, c = FIELD
    return (a * easting + b * northing + c).astype(np.float32)


def _field_raster(transform: Affine, crs: str, height: int, width: int) -> np.ndarray:
    """The linear UTM field sampled at the pixel centres of a grid in any CRS. [1, H, W] float32."""
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    xs, ys = transform @ (cols, rows)
    if crs != UTM18:
        xs, ys = Transformer.from_crs(crs, UTM18, always_xy=True).transform(xs, ys)
    return utm_field(np.asarray(xs), np.asarray(ys))[None]


def write_all(root: str | Path) -> dict[str, Path]:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    utm = from_origin(*ORIGIN_UTM, GSD_UTM, GSD_UTM)
    out: dict[str, Path] = {}

    # Band counts and dtypes.
    out["rgb_uint8"] = _write(
        root / "rgb_uint8.tif", rng.integers(1, 255, (3, 48, 64), dtype=np.uint8), UTM18, utm
    )
    out["grey_3857"] = _write(
        root / "grey_3857.tif",
        rng.integers(0, 255, (1, 32, 32), dtype=np.uint8),
        "EPSG:3857",
        from_origin(-8_350_000.0, 4_450_000.0, 12.5, 12.5),
    )
    out["two_band_int16"] = _write(
        root / "two_band_int16.tif",
        rng.integers(-500, 3000, (2, 32, 32)).astype(np.int16),
        "EPSG:4326",
        from_origin(-75.0, 37.0, 0.0001, 0.0001),
    )
    # RGBN uint16 with a handful of saturated outliers: a min-max stretch would squash the bulk near 0.
    rgbn = rng.normal(1200, 150, (4, 64, 64)).clip(1, None).astype(np.uint16)
    rgbn[:, :2, :3] = 65535
    out["rgbn_uint16"] = _write(
        root / "rgbn_uint16.tif", rgbn, UTM18, utm, descriptions=["Red", "Green", "Blue", "NIR"]
    )
    s2 = rng.integers(100, 4000, (13, 24, 24)).astype(np.uint16)
    out["s2_l1c"] = _write(root / "s2_l1c.tif", s2, "EPSG:32632", from_origin(600_000.0, 5_000_000.0, 10, 10))
    out["s2_l2a"] = _write(
        root / "s2_l2a.tif", s2[:12], "EPSG:32632", from_origin(600_000.0, 5_000_000.0, 10, 10)
    )
    out["landsat_7"] = _write(root / "landsat_7.tif", s2[:7], UTM18, from_origin(*ORIGIN_UTM, 30, 30))
    out["five_band"] = _write(root / "five_band.tif", s2[:5], UTM18, utm)

    # NIR stored in a band tagged "alpha" with no descriptions (as some NAIP exports do): it holds data.
    fake_alpha = rng.integers(1, 255, (4, 16, 16), dtype=np.uint8)
    out["fake_alpha"] = _write(
        root / "fake_alpha.tif",
        fake_alpha,
        UTM18,
        utm,
        colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha],
    )

    # Float with NaN holes and a declared-nodata band set.
    flt = rng.random((3, 32, 32), dtype=np.float32)
    flt[:, 4:8, 4:8] = np.nan
    out["float_nan_4326"] = _write(
        root / "float_nan_4326.tif", flt, "EPSG:4326", from_origin(10.0, 50.0, 1e-4, 1e-4)
    )
    nod = rng.integers(1, 5000, (3, 32, 32)).astype(np.uint16)
    nod[:, :, :8] = 0
    out["nodata_edge"] = _write(root / "nodata_edge.tif", nod, UTM18, utm, nodata=0)
    out["all_nodata"] = _write(
        root / "all_nodata.tif", np.zeros((3, 16, 16), np.uint16), UTM18, utm, nodata=0
    )

    # A 512² raster with internal overviews.
    ramp = np.broadcast_to(np.arange(512, dtype=np.uint16)[None, None, :], (3, 512, 512)).copy()
    out["with_overviews"] = _write(
        root / "with_overviews.tif", ramp, UTM18, utm, tiled=True, compress="deflate"
    )
    with rasterio.open(out["with_overviews"], "r+") as dst:
        dst.build_overviews([2, 4, 8])

    # Paletted single band.
    pal = rng.integers(0, 3, (1, 16, 16)).astype(np.uint8)
    out["paletted"] = _write(root / "paletted.tif", pal, UTM18, utm)
    with rasterio.open(out["paletted"], "r+") as dst:
        dst.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255), 2: (0, 0, 255, 255)})
        dst.colorinterp = [ColorInterp.palette]

    # No-CRS images: PNG and JPEG as a phone or a paper figure would give them; RGBA with a transparent corner.
    rgb = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "plain.png")
    Image.fromarray(rgb).save(root / "plain.jpg", quality=90)
    Image.fromarray(np.roll(rgb, 3, axis=1)).save(root / "plain_later.png")
    rgba = np.concatenate([rgb, np.full((40, 50, 1), 255, np.uint8)], axis=2)
    rgba[:10, :10, 3] = 0
    Image.fromarray(rgba).save(root / "rgba.png")
    out.update(
        plain_png=root / "plain.png", plain_jpg=root / "plain.jpg", plain_png_later=root / "plain_later.png"
    )
    out["rgba_png"] = root / "rgba.png"

    # Bad inputs.
    out["empty"] = root / "empty.tif"
    out["empty"].write_bytes(b"")
    out["text_as_tif"] = root / "notes.tif"
    out["text_as_tif"].write_text("this is not a GeoTIFF, just a text file\n")
    full = _write(root / "full.tif", rng.integers(0, 4000, (3, 64, 64)).astype(np.uint16), UTM18, utm)
    blob = full.read_bytes()
    out["truncated"] = root / "truncated.tif"
    out["truncated"].write_bytes(blob[: len(blob) // 3])  # header and tag directory intact, pixels cut
    # A header that claims 200,000 × 200,000 pixels: tiled, sparse, no block ever written -> a few KB on disk.
    out["huge_header"] = root / "huge_header.tif"
    with rasterio.open(
        out["huge_header"],
        "w",
        driver="GTiff",
        width=200_000,
        height=200_000,
        count=1,
        dtype="uint8",
        crs=UTM18,
        transform=from_origin(*ORIGIN_UTM, 0.5, 0.5),
        tiled=True,
        blockxsize=8192,
        blockysize=8192,
        compress="deflate",
        sparse_ok=True,
    ):
        pass

    # Two dates. "pair_a" is the reference grid (UTM 10 m); the others hold the same linear field of UTM
    # coordinates on other grids, so a correct alignment reproduces pair_a's values.
    h, w = 40, 40
    out["pair_a"] = _write(root / "pair_a.tif", _field_raster(utm, UTM18, h, w), UTM18, utm)
    shifted = from_origin(ORIGIN_UTM[0] - 5 * GSD_UTM, ORIGIN_UTM[1] + 3 * GSD_UTM, GSD_UTM, GSD_UTM)
    out["pair_b_shifted"] = _write(
        root / "pair_b_shifted.tif", _field_raster(shifted, UTM18, 50, 50), UTM18, shifted
    )
    finer = from_origin(ORIGIN_UTM[0] - 13.7, ORIGIN_UTM[1] + 21.3, 7.0, 7.0)
    out["pair_b_finer"] = _write(root / "pair_b_finer.tif", _field_raster(finer, UTM18, 70, 70), UTM18, finer)
    lon, lat = Transformer.from_crs(UTM18, "EPSG:4326", always_xy=True).transform(*ORIGIN_UTM)
    geo = from_origin(lon - 0.001, lat + 0.001, 0.00008, 0.00008)
    out["pair_b_4326"] = _write(
        root / "pair_b_4326.tif", _field_raster(geo, "EPSG:4326", 80, 80), "EPSG:4326", geo
    )
    far = from_origin(ORIGIN_UTM[0] + 50_000, ORIGIN_UTM[1], GSD_UTM, GSD_UTM)
    out["pair_b_far"] = _write(root / "pair_b_far.tif", _field_raster(far, UTM18, h, w), UTM18, far)
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "geo_fixtures")
    for name, path in write_all(target).items():
        print(f"{name:16s} {path}  {path.stat().st_size:,} bytes")
