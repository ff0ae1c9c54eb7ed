"""Drawing for the chat app: an RGB preview of an upload and an answer's regions laid over it.

Only drawing lives here. Regions come from ``Session.ask`` in *source raster pixels*; the preview is a
(possibly decimated) read of the same raster, so drawing is one scale: preview pixel = source pixel / scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rsvlm import geo
from rsvlm.grounding import Region

# Long side of the preview read: enough to see a region, small enough to send to a browser quickly.
PREVIEW_SIZE = 768
PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
]
MASK_ALPHA = 110  # of 255: the ground stays visible under a mask


def read_preview(path: str, bands: str | list[int] | None = None) -> geo.GeoImage:
    """A decimated read of the whole raster for display (raises ``RasterError`` on a bad file)."""
    info = geo.inspect_raster(path)
    overview = PREVIEW_SIZE if max(info.width, info.height) > PREVIEW_SIZE else None
    return geo.read_image(path, bands=bands, overview_size=overview)


# Small images are shown enlarged (whole pixels repeated), so labels and thin outlines stay readable.
MIN_DISPLAY_SIZE = 512


def display_factor(image: geo.GeoImage) -> int:
    """Integer enlargement of a small preview: 256 px -> 2x, 100 px -> 5x, 768 px -> 1x."""
    return max(1, MIN_DISPLAY_SIZE // max(image.height, image.width))


def to_uint8(image: geo.GeoImage) -> np.ndarray:
    """[H*f, W*f, 3] uint8 of the image's default composite (true colour when the bands are known), enlarged by
    ``display_factor``."""
    rgb = image.rgb()  # [3, H, W] in [0, 1]
    array = (np.clip(np.moveaxis(rgb, 0, -1), 0, 1) * 255).round().astype(np.uint8)
    factor = display_factor(image)
    return array.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else array


def captioned(image: np.ndarray, caption: str, corner: str = "bottom-left") -> np.ndarray:
    """``image`` with ``caption`` (a date) in a bottom ``corner`` ("bottom-left" / "bottom-right"), large enough
    to read at the shown size ("upper-right": a fifth of the way down, for the examples strip). Bottom, because the page's component labels float over the top-left; in a
    before/after slider the later date's caption goes right, where the slider shows that image."""
    canvas = Image.fromarray(image).convert("RGBA")
    draw = ImageDraw.Draw(canvas)
    size = _font_size(canvas.size, 0.045)
    left, top, right, bottom = draw.textbbox((0, 0), caption, font=_font(size))
    x = canvas.width - (right - left) - 10 if corner.endswith("right") else 8
    y = round(0.22 * canvas.height) if corner == "upper-right" else canvas.height - (bottom - top) - 12
    _label(draw, (x, y), caption, (0, 0, 0), size=size)
    return np.asarray(canvas.convert("RGB"))


def same_size(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Two dates' previews on one size (an image slider needs it; an aligned pair differs by a pixel at most)."""
    height, width = images[0].shape[:2]
    return [
        a if a.shape[:2] == (height, width) else np.asarray(Image.fromarray(a).resize((width, height)))
        for a in images
    ]


def draw_regions(base: np.ndarray, regions: Sequence[Region], scale: float = 1.0) -> np.ndarray:
    """``base`` [H, W, 3] uint8 with masks as translucent fills, boxes, oriented boxes as polygons, labels.

    ``scale``: source pixels per displayed pixel (the preview read's ``scale`` / ``display_factor``).
    """
    canvas = Image.fromarray(base).convert("RGBA")
    fill = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    fill_draw = ImageDraw.Draw(fill)
    for index, region in enumerate(regions):
        colour = PALETTE[index % len(PALETTE)]
        _draw_mask(fill, fill_draw, region.mask, scale, (*colour, MASK_ALPHA))
    canvas = Image.alpha_composite(canvas, fill)
    draw = ImageDraw.Draw(canvas)
    size = _font_size(canvas.size, 0.028)
    width = max(2, round(size / 7))
    for index, region in enumerate(regions):
        colour = PALETTE[index % len(PALETTE)]
        anchor = None
        if region.mask is not None:
            pass  # a mask is its own fill (its box is only where its label goes)
        elif region.pixel_polygon:
            points = [(x / scale, y / scale) for x, y in region.pixel_polygon]
            draw.polygon(points, outline=(*colour, 255), width=width)
            anchor = min(points, key=lambda p: (p[1], p[0]))
        elif region.pixel_box:
            x1, y1, x2, y2 = (v / scale for v in region.pixel_box)
            draw.rectangle(
                (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)), outline=(*colour, 255), width=width
            )
            anchor = (min(x1, x2), min(y1, y2))
        if anchor is None and region.mask is not None:
            anchor = _mask_anchor(region.mask, scale)
        if anchor is not None:
            xy = (anchor[0] + 2, max(anchor[1] - size - 4, 0))
            _label(draw, xy, f"{index + 1}. {region.label}", colour, size=size)
    return np.asarray(canvas.convert("RGB"))


def _draw_mask(layer: Image.Image, draw: ImageDraw.ImageDraw, mask, scale: float, rgba) -> None:
    if mask is None:
        return
    width, height = layer.size
    if isinstance(mask, geo.SparseMask):  # a large scene's mask: draw its outlines, never the dense grid
        for polygon in mask.pixel_polygons():
            points = [(x / scale, y / scale) for x, y in polygon.exterior.coords]
            if len(points) >= 3:
                draw.polygon(points, fill=rgba)
        return
    mask = np.asarray(mask, bool)
    # nearest-neighbour resample of the source-grid mask onto the preview grid
    rows = np.minimum((np.arange(height) * scale).astype(int), mask.shape[0] - 1)
    cols = np.minimum((np.arange(width) * scale).astype(int), mask.shape[1] - 1)
    small = mask[rows][:, cols]
    solid = Image.new("RGBA", layer.size, rgba)
    layer.paste(solid, (0, 0), Image.fromarray(small.astype(np.uint8) * 255))


def _mask_anchor(mask, scale: float) -> tuple[float, float] | None:
    """Where a mask's label goes: the top-left of its bounding box, in displayed pixels."""
    if isinstance(mask, geo.SparseMask):
        polygons = mask.pixel_polygons()
        if not polygons:
            return None
        x0, y0, _, _ = polygons[0].bounds  # the largest part
        return x0 / scale, y0 / scale
    rows, cols = np.nonzero(np.asarray(mask, bool))
    if not len(rows):
        return None
    return cols.min() / scale, rows.min() / scale


def _font_size(canvas_size: tuple[int, int], share: float) -> int:
    """A font size as a share of the image's long side, never below 14 px (the preview is shown ~500 px wide)."""
    return max(14, round(max(canvas_size) * share))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled scalable font: no system font needed


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, colour, size: int = 16) -> None:
    x, y = xy
    font = _font(size)
    left, top, right, bottom = draw.textbbox((x, y), text, font=font)
    draw.rectangle((left - 3, top - 2, right + 3, bottom + 2), fill=(255, 255, 255, 215))
    draw.text((x, y), text, fill=(*colour[:3], 255), font=font)
