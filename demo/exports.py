"""An answer's regions as a table and as files: GeoJSON (EPSG:4326), mask GeoTIFF (source grid) and CSV.

    rows = region_rows(answer)                        # the table: label, shape, area m² / ha, centroid lat / lon
    files = write_exports(answer, folder, turn=3)     # answer-3.geojson, answer-3-mask.tif, answer-3-regions.csv

Every file name is generated here (never taken from an upload), inside the session's own folder. The numbers are
the assistant's measured ones (``Region.area_m2``), the same as in the answer's text.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shapely.geometry import shape

from rsvlm import geo
from rsvlm.assistant import Answer
from rsvlm.atomic import atomic_path
from rsvlm.grounding import Region

TABLE_HEADERS = ["#", "label", "shape", "area m²", "area ha", "centroid lat", "centroid lon"]


@dataclass
class Exports:
    geojson: str | None = None
    mask: str | None = None
    csv: str | None = None


def shape_of(region: Region) -> str:
    return "mask" if region.mask is not None else "oriented box" if region.pixel_polygon else "box"


def region_rows(answer: Answer | None) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for index, region in enumerate(answer.regions if answer else []):
        area = region.area_m2
        lat, lon = _centroid(region)
        rows.append(
            [
                index + 1,
                region.label,
                shape_of(region),
                None if area is None else round(area, 1),
                None if area is None else round(area / 10_000, 4),
                lat,
                lon,
            ]
        )
    return rows


def regions_summary(answer: Answer | None) -> str:
    """The table's label: says "no regions" rather than showing an empty grid."""
    if answer is None:
        return "Regions"
    if not answer.regions:
        return "Regions: no regions in this answer"
    areas = [r.area_m2 for r in answer.regions if r.area_m2 is not None]
    total = f", {sum(areas) / 10_000:,.2f} ha in all" if areas else ""
    return f"Regions: {len(answer.regions)}{total}"


def write_exports(answer: Answer, folder: Path, turn: int) -> Exports:
    """The answer's files in ``folder``. A GeoJSON needs a CRS; a mask GeoTIFF a source grid with a CRS (a
    two-date answer always has one: the change mask, all zero when nothing changed); the CSV is always written."""
    exports = Exports()
    stem = f"answer-{turn}"
    features = answer.geojson_features()
    if answer.crs:
        exports.geojson = str(geo.write_geojson(folder / f"{stem}.geojson", features))
    if answer.crs and answer.image_shape is not None:
        path = folder / f"{stem}-mask.tif"
        answer.write_mask_geotiff(path)
        exports.mask = str(path)
    exports.csv = str(_write_csv(folder / f"{stem}-regions.csv", region_rows(answer)))
    return exports


def _write_csv(path: Path, rows: list[list[Any]]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([h.replace("²", "2") for h in TABLE_HEADERS])
        writer.writerows(rows)
    return path


def _centroid(region: Region) -> tuple[float | None, float | None]:
    """The centroid of the region's EPSG:4326 geometry; at region sizes the lon/lat plane is flat enough."""
    if region.geometry is None:
        return None, None
    point = shape(region.geometry).centroid
    return round(point.y, 6), round(point.x, 6)
