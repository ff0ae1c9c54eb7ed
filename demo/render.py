"""Drawing for the chat app: an RGB preview of an upload and an answer's regions laid over it.

Only drawing lives here. Regions come from ``Session.ask`` in *source raster pixels*; the preview is a
(possibly decimated) read of the same raster, so drawing is one scale: preview pixel = source pixel / scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

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


def side_by_side(images: Sequence[np.ndarray], labels: Sequence[str], gap: int = 8) -> np.ndarray:
    """Two dates next to each other, each with its label, for a change question's preview."""
    height = max(a.shape[0] for a in images)
    width = sum(a.shape[1] for a in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for array, label in zip(images, labels):
        canvas.paste(Image.fromarray(array), (x, 0))
        _label(draw, (x + 4, 4), label, (0, 0, 0))
        x += array.shape[1] + gap
    return np.asarray(canvas)


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
    for index, region in enumerate(regions):
        colour = PALETTE[index % len(PALETTE)]
        anchor = None
        if region.pixel_polygon:
            points = [(x / scale, y / scale) for x, y in region.pixel_polygon]
            draw.polygon(points, outline=(*colour, 255), width=2)
            anchor = min(points, key=lambda p: (p[1], p[0]))
        elif region.pixel_box:
            x1, y1, x2, y2 = (v / scale for v in region.pixel_box)
            draw.rectangle(
                (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)), outline=(*colour, 255), width=2
            )
            anchor = (min(x1, x2), min(y1, y2))
        if anchor is not None:
            _label(draw, (anchor[0] + 2, max(anchor[1] - 14, 0)), f"{index + 1}. {region.label}", colour)
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


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, colour) -> None:
    x, y = xy
    left, top, right, bottom = draw.textbbox((x, y), text)
    draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=(255, 255, 255, 200))
    draw.text((x, y), text, fill=(*colour[:3], 255) if len(colour) >= 3 else colour)
