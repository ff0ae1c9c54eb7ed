"""Foreign box notations in conversation text -> rsvlm's ``<box>`` / ``<obb>`` on the 0-1000 grid (pure functions).

Each preset names one convention (``BoxConvention``); what it assumes is stated here, because the files do not say:

| preset | notation | scale |
|---|---|---|
| ``geochat`` | ``{<x1><y1><x2><y2>|<θ>}`` (the ``|<θ>`` part optional), several in a row allowed | 0-100 per axis; θ in degrees |
| ``unit`` | ``[x1, y1, x2, y2]`` | 0-1 per axis (floats) |
| ``1000`` | ``[x1, y1, x2, y2]`` | 0-1000 per axis (Qwen-VL style) |

GeoChat's θ is read as the rotation of the axis-aligned rectangle ``x1..x2 × y1..y2`` about its centre, in the
direction of rsvlm's angle (from the x axis towards y, i.e. clockwise on screen); θ = 0 gives a ``<box>``, any
other θ an ``<obb>`` (brought to the long-side convention by ``rsvlm.grounding.format_obb``). A coordinate outside
the preset's range, inverted corners or a non-finite angle raise ``BoxRangeError``: the row is skipped, never
clipped into a wrong box.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from rsvlm.grounding import GRID, format_box, format_obb

_NUM = r"-?\d+(?:\.\d+)?"
GEOCHAT_BOX = re.compile(
    rf"\{{\s*<\s*({_NUM})\s*>\s*<\s*({_NUM})\s*>\s*<\s*({_NUM})\s*>\s*<\s*({_NUM})\s*>\s*(?:\|\s*<\s*({_NUM})\s*>\s*)?\}}"
)
# A bracketed 4-tuple that is not already inside an rsvlm <box> tag.
LIST_BOX = re.compile(rf"(?<!<box>)\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]")


class BoxRangeError(ValueError):
    """A box whose numbers do not fit its convention's range."""


@dataclass(frozen=True)
class BoxConvention:
    name: str
    pattern: re.Pattern
    scale: float  # source units per full image side

    def rewrite(self, text: str) -> tuple[str, int]:
        """``text`` with every box of this convention on rsvlm's protocol, and how many were rewritten."""
        count = 0

        def one(match: re.Match) -> str:
            nonlocal count
            count += 1
            values = [float(v) for v in match.groups()[:4]]
            angle = match.groups()[4] if len(match.groups()) > 4 else None
            return to_protocol(values, float(angle) if angle is not None else 0.0, self.scale)

        return self.pattern.sub(one, text), count


def to_protocol(xyxy: list[float], angle: float, scale: float) -> str:
    """Corners on a ``0..scale`` grid (+ a rotation in degrees) -> ``<box>`` or ``<obb>`` on the 0-1000 grid."""
    x1, y1, x2, y2 = xyxy
    if not all(0 <= v <= scale for v in xyxy):
        raise BoxRangeError(f"{xyxy} outside 0-{scale:g}")
    if x2 < x1 or y2 < y1:
        raise BoxRangeError(f"{xyxy} has inverted corners")
    if not math.isfinite(angle) or abs(angle) > 360:
        raise BoxRangeError(f"angle {angle} is not a rotation in degrees")
    k = GRID / scale
    if angle % 180 == 0:  # 0 or 180: the same axis-aligned rectangle
        return format_box([x1 * k, y1 * k, x2 * k, y2 * k])
    return format_obb([(x1 + x2) / 2 * k, (y1 + y2) / 2 * k, (x2 - x1) * k, (y2 - y1) * k, angle])


PRESETS = {
    "geochat": BoxConvention("geochat", GEOCHAT_BOX, 100.0),
    "unit": BoxConvention("unit", LIST_BOX, 1.0),
    "1000": BoxConvention("1000", LIST_BOX, 1000.0),
}
