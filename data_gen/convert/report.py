"""What one conversion did: rows read, written and skipped by reason, and the images it could not find.

Nothing is dropped silently: every row a reader yields is either written or counted under one reason, so
``read == written + sum(skipped.values())`` always holds (``Report.check`` asserts it before the report is saved).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MISSING_LISTED = 10  # missing images named in the report (the rest are only counted)

# Skip reasons shared by the readers, so reports of different formats add up under the same words.
MISSING_IMAGE = "missing image"
UNREADABLE_IMAGE = "unreadable image"
BOX_OUT_OF_RANGE = "box out of range"
BAD_POLYGON = "bad polygon"
UNKNOWN_TAG = "unknown tag"
MALFORMED = "malformed entry"


class FormatError(ValueError):
    """A source file that is not the format it was named as; the message lists the keys it lacks."""


def require_keys(obj: Any, keys: tuple[str, ...], fmt: str, where: str) -> None:
    """Raise ``FormatError`` naming every key of ``keys`` that the mapping ``obj`` lacks."""
    if not isinstance(obj, dict):
        raise FormatError(f"{where}: not {fmt}: expected a JSON object with keys {', '.join(keys)}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise FormatError(
            f"{where}: not {fmt}: missing key(s) {', '.join(missing)} (has {', '.join(sorted(obj)) or 'none'})"
        )


@dataclass
class Report:
    fmt: str
    source: str
    read: int = 0
    written: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    missing_images: list[str] = field(default_factory=list)
    missing_image_count: int = 0
    splits: Counter[str] = field(default_factory=Counter)
    tasks: Counter[str] = field(default_factory=Counter)
    _seen_missing: set[str] = field(default_factory=set, repr=False)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def missing(self, name: str) -> None:
        """Count an image file not found (once per file, however many rows use it)."""
        if name in self._seen_missing:
            return
        self._seen_missing.add(name)
        self.missing_image_count += 1
        if len(self.missing_images) < MISSING_LISTED:
            self.missing_images.append(name)

    def wrote(self, split: str, task: str) -> None:
        self.written += 1
        self.splits[split] += 1
        self.tasks[task] += 1

    def check(self) -> None:
        if self.read != self.written + sum(self.skipped.values()):
            raise AssertionError(f"conversion lost rows: {self.to_dict()}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.fmt,
            "source": self.source,
            "read": self.read,
            "written": self.written,
            "skipped": dict(sorted(self.skipped.items())),
            "missing_images": {"count": self.missing_image_count, "first": self.missing_images},
            "splits": dict(self.splits),
            "tasks": dict(self.tasks),
        }

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [f"{self.fmt}: {self.read} rows read, {self.written} written"]
        lines += [f"  skipped {n} x {reason}" for reason, n in sorted(self.skipped.items())]
        if self.missing_image_count:
            more = self.missing_image_count - len(self.missing_images)
            lines.append(
                f"  images not found ({self.missing_image_count}): {', '.join(self.missing_images)}"
                + (f" and {more} more" if more > 0 else "")
            )
        if self.splits:
            lines.append("  splits: " + ", ".join(f"{s} {n}" for s, n in sorted(self.splits.items())))
        return "\n".join(lines)
