"""Large scenes: the windows a scene is cut into, how regions found in windows merge, the answer's sentence.

``plan_windows`` cuts the scene into model-sized windows with overlap (``rsvlm.scene`` decodes masks on them);
``merge_regions`` merges regions of one label across windows (box NMS, masks stitched in a ``geo.SparseMask``);
``describe_large_scene`` says what was found and how much of the scene was read at full resolution.
"""

from __future__ import annotations

from rsvlm import geo
from rsvlm.grounding import Region


def plan_windows(width: int, height: int, size: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """Windows of ``size`` px covering the scene with the given overlap fraction; edge windows are shifted in."""
    step = max(1, int(size * (1 - overlap)))

    def starts(extent: int) -> list[int]:
        if extent <= size:
            return [0]
        values = list(range(0, extent - size, step)) + [extent - size]
        return sorted(set(values))

    return [
        (x, y, min(size, width - x), min(size, height - y)) for y in starts(height) for x in starts(width)
    ]


def _box_iou_area(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def box_iou(a, b) -> float:
    inter = _box_iou_area(a, b)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# Masks covering more 256² blocks than this (~4 Mpx) keep their outline unsimplified (see merge_regions).
SIMPLIFY_BLOCKS = 64


def _multipolygon(parts: list[dict]) -> dict | None:
    """Oriented GeoJSON polygons that are already disjoint (the parts of one union) as one geometry: no second
    union, which costs as much as the first on a scene-sized mask."""
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return {"type": "MultiPolygon", "coordinates": [p["coordinates"] for p in parts]}


def merge_regions(
    regions: list[Region],
    overview_regions: list[Region] = (),
    iou_threshold: float = 0.5,
    transform=None,
    crs=None,
) -> list[Region]:
    """Merge the regions of a scene's tiles: box NMS per label across tiles, and the masks of one label stitched
    into one region (``geo.SparseMask`` union) whose outline, box and area come from the stitched pixels.

    ``transform`` maps scene pixels to ``crs`` (geometry and area need both). ``overview_regions`` are returned
    when the tiles grounded nothing (kept for callers; the assistant handles that case itself).
    """
    kept: list[Region] = []
    by_label: dict[str, list[Region]] = {}
    for region in regions:
        if isinstance(region.mask, geo.SparseMask):
            by_label.setdefault(region.label, []).append(region)
            continue
        if region.pixel_box is None:
            continue
        if any(
            k.label == region.label and k.pixel_box and box_iou(k.pixel_box, region.pixel_box) > iou_threshold
            for k in kept
        ):
            continue
        kept.append(region)
    for label, group in by_label.items():
        mask = group[0].mask
        for other in group[1:]:
            mask = mask.union(other.mask)
        if not mask.any():
            continue
        # Simplifying (topology preserved) grows faster than linearly in a polygon's holes: a scene-sized region
        # with thousands of them took 83 s at 5,000². Past SIMPLIFY_BLOCKS blocks the outline stays on pixel edges.
        polygons = mask.pixel_polygons(simplify_px=0.5 if len(mask.blocks) <= SIMPLIFY_BLOCKS else 0.0)
        geometry = None
        area = None
        if crs is not None and transform is not None:
            geometry = _multipolygon(geo.pixel_shapes_to_geometries(polygons, transform, crs))
            area = mask.area_m2(transform, crs)
        ring = [(float(x), float(y)) for x, y in polygons[0].exterior.coords] if polygons else None
        kept.append(
            Region(
                label=label,
                mask=mask,
                pixel_box=mask.bbox(),
                pixel_polygon=ring,
                geometry=geometry,
                area_m2=area,
                score=max((r.score or 0.0) for r in group) or None,
            )
        )
    if not kept:
        kept = [r for r in overview_regions if r.pixel_box is not None or r.geometry is not None]
    return kept


_ARTICLES = {"a", "an", "the", "some", "all", "any"}


def _noun(label: str) -> str:
    """'A car' -> 'car', 'the buildings' -> 'buildings'; empty -> 'region'."""
    words = (label or "").strip().split()
    while words and words[0].lower() in _ARTICLES:
        words = words[1:]
    return " ".join(words).lower() or "region"


def _plural(noun: str) -> str:
    """English plural of a singular noun phrase's last word (enough for object classes)."""
    head, _, last = noun.rpartition(" ")
    if last.endswith("y") and last[-2:-1] not in ("a", "e", "i", "o", "u", ""):
        plural = last[:-1] + "ies"
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        plural = last + "es"
    else:
        plural = last + "s"
    return f"{head} {plural}".strip()


def _singular(noun: str) -> str:
    head, _, last = noun.rpartition(" ")
    if last.endswith("ies") and len(last) > 4:
        last = last[:-3] + "y"
    elif last.endswith(("ches", "shes", "sses", "xes")):
        last = last[:-2]
    elif last.endswith("s") and not last.endswith(("ss", "us", "is")):
        last = last[:-1]
    return f"{head} {last}".strip()


def count_phrase(n: int, label: str) -> str:
    """'12 buildings', '1 building', '3 cars' from a count and a region label."""
    noun = _noun(label)
    return f"{n:,} {_singular(noun) if n == 1 else _plural(_singular(noun))}"


def _object_count(region: Region) -> int:
    """Separate objects in a region: the parts of a stitched mask's outline, else one."""
    if region.geometry is not None and region.geometry.get("type") == "MultiPolygon":
        return len(region.geometry["coordinates"])
    if isinstance(region.mask, geo.SparseMask) and region.geometry is None:
        return max(1, len(region.mask.pixel_polygons()))
    return 1


def describe_large_scene(
    regions: list[Region],
    windows_with_hits: int,
    read: int,
    total: int,
    *,
    from_overview: bool = False,
    how: str | None = None,
) -> str:
    """One sentence for a large-scene answer: what was found, where, and how much of the scene was read.

    e.g. "Found 12 buildings across 9 of 1,521 windows (visual search read the 16 most promising)."
    """
    counts: dict[str, tuple[int, str]] = {}
    for region in regions:
        key = _singular(_noun(region.label))
        n, label = counts.get(key, (0, region.label))
        counts[key] = (n + _object_count(region), label)
    how = how or (
        f"all {total:,} read at full resolution"
        if read >= total
        else f"visual search read the {read:,} most promising"
    )
    if not counts:
        return f"Found nothing in the {read:,} of {total:,} windows read at full resolution."
    found = _join([count_phrase(n, label) for n, label in counts.values()])
    if from_overview:
        return f"Found {found} on the whole-scene overview; none in the {read:,} of {total:,} windows read ({how})."
    return f"Found {found} across {windows_with_hits:,} of {total:,} windows ({how})."


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
