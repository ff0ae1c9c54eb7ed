"""Uploads: size-checked, moved into the session's own folder, read once; errors name the user's file.

paths, names = receive(files, chat, max_bytes)   # out of Gradio's shared cache, into the session folder
previews, sources = read_images(paths, bands)    # display reads + header facts (source GSD and CRS)
one_line(error, paths)                           # "broken.tif: not a raster ...", never a server path
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from demo import render
from demo.sessions import ChatSession
from rsvlm import geo

FILE_TYPES = [".tif", ".tiff", ".png", ".jpg", ".jpeg"]
AUTO_BANDS = "auto"
DEFAULT_MAX_FILE_SIZE = "1gb"  # a 10,000² 4-band uint8 GeoTIFF is 400 MB uncompressed
# Any absolute path left in a message (a library quoting the file it failed on): only its last part is shown.
_PATH = re.compile(r"(?:/[^\s/'\"():,]+)+/([^\s/'\"():,]+)")


class UploadError(ValueError):
    """A refused upload, in one line a user can act on."""


def parse_size(text: str | int) -> int:
    """'1gb', '500 MB', '200k' or bytes -> bytes (the ``--max-file-size`` flag)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*", str(text).lower())
    if not match:
        raise ValueError(f"not a file size: {text!r} (e.g. 500mb, 2gb)")
    number, unit = match.groups()
    return int(float(number) * 1024 ** " kmgt".index(unit or " "))


def format_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def receive(files, chat: ChatSession, max_bytes: int | None) -> tuple[list[str], list[str]]:
    """The uploaded files linked (or copied) into ``chat``'s folder -> (paths there, the names the user gave).

    Gradio's upload cache is content-addressed: two sessions uploading the same file get the same cache path, so
    the cache copy is not moved away at once (under the other session); it is unlinked when this session closes
    if it is still the file linked here (``ChatSession.close``), and otherwise left to Gradio's own sweep
    (``delete_cache``). Gradio already refuses a file over ``max_file_size`` at upload; this check is for files handed in
    another way (a test, a custom client)."""
    incoming = [_file_path(f) for f in (files if isinstance(files, list) else [files] if files else [])]
    names = [Path(p).name for p in incoming]
    if len(incoming) > 2:
        raise UploadError(f"give one image, or two dates for change questions (got {len(incoming)} files)")
    for path, name in zip(incoming, names):
        if Path(path).suffix.lower() not in FILE_TYPES:
            raise UploadError(f"{name}: not an image this chat reads ({', '.join(FILE_TYPES)})")
        size = Path(path).stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise UploadError(
                f"{name} is {format_size(size)}; the limit is {format_size(max_bytes)} (rsvlm serve --max-file-size)"
            )
    folder = chat.upload_folder() if incoming else None
    paths = []
    for path, name in zip(incoming, names):
        target = folder / name  # type: ignore[operator]
        try:
            os.link(path, target)  # same file system: no second copy on disk
            chat.cached.append((str(path), str(target)))  # the cache copy goes when the session does
        except OSError:
            shutil.copyfile(path, target)
        paths.append(str(target))
    return paths, names


def read_images(
    paths: list[str], bands: str | list[int] | None
) -> tuple[list[geo.GeoImage], list[geo.RasterInfo]]:
    """A display read and the header of each image (raises ``RasterError`` on a bad file)."""
    sources = [geo.inspect_raster(p) for p in paths]
    previews = [render.read_preview(p, bands) for p in paths]
    return previews, sources


def parse_bands(preset: str | None, indices: str | None) -> str | list[int] | None:
    """Band indices ("4,3,2", 1-based) win over the preset; "auto" guesses from the file."""
    text = (indices or "").strip()
    if text:
        try:
            return [int(v) for v in re.split(r"[\s,;]+", text) if v]
        except ValueError:
            raise UploadError(f"band indices are 1-based numbers like 4,3,2 (got {text!r})") from None
    return None if not preset or preset == AUTO_BANDS else preset


def one_line(error: BaseException, paths: list[str] = ()) -> str:
    """The first line of an error, each server path shown as its file name only."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    for path in sorted(paths, key=len, reverse=True):
        text = text.replace(str(path), Path(path).name)
    text = _PATH.sub(r"\1", text)
    # a name said twice once the paths are gone ("x.tif: x.tif is not…", "x.tif … ('x.tif' not recognized…)")
    text = re.sub(r"^([^\s:]+): \1\b", r"\1", text)
    first = re.match(r"^([^\s:]+\.\w+)\b", text)
    if first:
        text = text[: first.end()] + text[first.end() :].replace(f"'{first.group(1)}' ", "")
    return text


def describe_source(names: list[str], sources: list[geo.RasterInfo], bands: str | list[int] | None) -> str:
    """The status line's image part: size, bands, source GSD and CRS, georeferenced or not."""
    first = sources[0]
    what = " + ".join(names)
    band_text = f"{first.count} band{'s' if first.count > 1 else ''}"
    if isinstance(bands, list):
        band_text += f" (bands {','.join(map(str, bands))})"
    elif bands:
        band_text += f" ({bands})"
    parts = [what, f"{first.width:,} × {first.height:,} px", band_text]
    if first.crs is None:
        parts.append("not georeferenced: regions in pixels only")
    else:
        parts.append(first.crs.to_string())
        if first.gsd:
            parts.append(f"{first.gsd:.2f} m/pixel" if first.gsd < 100 else f"{first.gsd:,.0f} m/pixel")
        parts.append("georeferenced")
    return " · ".join(parts)


def _file_path(value) -> str:
    """gr.File hands a path (str) in Gradio 6; older clients a FileData-like object."""
    return value if isinstance(value, str) else str(getattr(value, "path", None) or value.name)
