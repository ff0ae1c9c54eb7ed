"""The numbers an answer states, measured on the regions it returns; never the language model's own.

A 135M-parameter LLM that writes "about a third (34 %)" or "3,072 m²" is guessing. So the assistant removes such
quantities from the model's text (``strip_model_quantities``) and states what it measured on the returned geometry
instead (``measured_facts``): area in m² / ha / km² from the CRS (the same ``Region.area_m2`` the regions table and
GeoJSON carry), share of the image's valid pixels, and the number of separate patches of each mask.
"""

from __future__ import annotations

import re

import numpy as np

from rsvlm.grounding import Region

_UNIT = (
    r"(?:m²|m2|sq\.? ?m|square met(?:re|er)s?|ha|hectares?|km²|km2|square kilomet(?:re|er)s?|pixels?|px"
    r"|km|kilomet(?:re|er)s?|met(?:re|er)s?|m)"
)
_NUMBER = r"\d[\d,]*(?:\.\d+)?"
_QUANTITY = re.compile(
    rf"\s*\(\s*{_NUMBER}\s?%\s*\)"  # "(34 %)"
    rf"|\s*\(\s*{_NUMBER}\s?{_UNIT}\)"  # "(0.31 ha)"
    rf"|\b{_NUMBER}\s?%"  # "34 %"
    rf"|\b{_NUMBER}\s?{_UNIT}(?![A-Za-z])",  # "3,072 m²", "11,213 pixels"
    re.IGNORECASE,
)
# A count or other bare number the model wrote ("about 100 in this image", "There are 11 buildings"), with its hedge;
# kept: years ("between 2009 and 2020"), "image 2" / "date 1", ordinals ("1st") and numbers inside words.
_BARE_NUMBER = re.compile(
    rf"(?:\b(?:about|around|approximately|roughly|nearly|almost|over|some)\s+|~\s*)?"
    rf"(?<![\w.,])(?<!image )(?<!date )(?!(?:18|19|20|21)\d\d\b){_NUMBER}(?![\w%]|[.,]\d)",
    re.IGNORECASE,
)


def strip_model_quantities(text: str) -> tuple[str, list[str]]:
    """``text`` without the areas, shares, pixel counts and counts the model wrote; returns the dropped pieces."""
    dropped = [m.group(0).strip() for m in _QUANTITY.finditer(text)]
    cleaned = _QUANTITY.sub("", text)
    dropped += [m.group(0).strip() for m in _BARE_NUMBER.finditer(cleaned)]
    if not dropped:
        return text, []
    cleaned = _BARE_NUMBER.sub("", cleaned)
    cleaned = re.sub(r"[ \t]+", " ", cleaned)
    cleaned = re.sub(r" ([.,;:!?])", r"\1", cleaned)
    cleaned = re.sub(r"\(\s*\)", "", cleaned)
    cleaned = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", cleaned).strip()  # "tile, , or" -> "tile, or"
    return cleaned, dropped


# Proportion words tied to the fraction they stand for; the nearest one is used (data_gen's answers use the same).
_PROPORTIONS = (
    (0.10, "about a tenth"),
    (0.20, "about a fifth"),
    (0.25, "about a quarter"),
    (1 / 3, "about a third"),
    (0.40, "about two fifths"),
    (0.50, "about half"),
    (0.60, "about three fifths"),
    (2 / 3, "about two thirds"),
    (0.75, "about three quarters"),
    (0.80, "about four fifths"),
    (0.90, "about nine tenths"),
)


def proportion_word(fraction: float) -> str:
    if fraction >= 0.995:
        return "all"
    if fraction >= 0.95:
        return "nearly all"
    if fraction < 0.075:  # a 5-7 % share is not "about a tenth"
        return "a small part"
    return min(_PROPORTIONS, key=lambda p: abs(p[0] - fraction))[1]


def percent_text(pixels: int, total: int) -> str:
    """'34 %', or one decimal under 1 % so a sliver never reads as 0 %."""
    pct = 100.0 * pixels / max(total, 1)
    if 0 < pct < 1:
        return f"{pct:.1f} %"
    return f"{round(pct)} %"


def format_area(area_m2: float) -> str:
    """Square metres under a hectare, hectares under a square kilometre, then km² (with ha)."""
    if area_m2 < 10_000:
        return f"{area_m2:,.0f} m²"
    if area_m2 < 1_000_000:
        return f"{area_m2 / 10_000:,.2f} ha"
    return f"{area_m2 / 1_000_000:,.2f} km² ({area_m2 / 10_000:,.0f} ha)"


def mask_pixels(mask) -> int:
    """True pixels of a dense mask or a ``geo.SparseMask``."""
    from rsvlm import geo

    return mask.count() if isinstance(mask, geo.SparseMask) else int(np.count_nonzero(mask))


def speck_pixels(shape: tuple[int, ...]) -> int:
    """The size under which a patch is a speck, not counted: about 0.02 % of the image, at least 4 pixels, as
    data_gen's counts leave them out (``data_gen.tasks.regions.min_component_pixels``)."""
    return max(4, int(round(0.0002 * shape[0] * shape[1])))


def count_patches(mask) -> int:
    """Separate 8-connected patches of a mask (a dense array; a ``SparseMask`` is not counted), specks
    (``speck_pixels``) left out. Counting answers and the stated facts use this one count."""
    from scipy import ndimage

    if not isinstance(mask, np.ndarray):
        return 0
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return 0
    return int((np.bincount(labels.ravel())[1:] >= speck_pixels(mask.shape)).sum())


def measured_facts(regions: list[Region], valid_pixels: int | None) -> str:
    """One sentence per measured region: "buildings: 0.31 ha (12 % of the image), 4 patches."."""

    lines = []
    by_label: dict[str, list[Region]] = {}
    for region in regions:
        by_label.setdefault(region.label or "region", []).append(region)
    boxes = {
        label for label, group in by_label.items() if len(group) > 1 and all(r.mask is None for r in group)
    }
    for label in boxes:  # "all the ponds: 7 boxes, 92.3 ha in all; the largest 69.9 ha."
        areas = sorted((r.area_m2 for r in by_label[label] if r.area_m2 is not None), reverse=True)
        text = f"{label}: {len(by_label[label])} boxes"
        if areas:
            text += f", {format_area(sum(areas))} in all; the largest {format_area(areas[0])}"
        lines.append(text + ".")
    for region in regions:
        label = region.label or "region"
        if label in boxes:
            continue
        parts = []
        pixels = None
        if region.mask is not None:
            pixels = mask_pixels(region.mask)
            if pixels == 0:
                lines.append(f"{label}: none found.")
                continue
        if region.area_m2 is not None:
            parts.append(format_area(region.area_m2))
        elif pixels is not None:
            parts.append(f"{pixels:,} pixels")
        if pixels is not None and valid_pixels:
            share = 100 * pixels / valid_pixels
            parts.append(f"{share:.0f} % of the image" if share >= 1 else "under 1 % of the image")
        if not parts:
            continue
        text = f"{label}: {parts[0]}" + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")
        patches = count_patches(region.mask) if region.mask is not None else 0
        if patches > 1:
            text += f", {patches:,} patches"
        lines.append(text + ".")
    return " ".join(lines)
