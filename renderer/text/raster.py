"""Text layers (SPEC §4 ``text``): rasterisation of laid-out lines into the layer box.

The raster is exactly the layer box, so nothing is ever drawn outside it. ``renderer.text.layout``
breaks and fits the lines; ``renderer.text.draw`` draws their coverage with Pillow; this module
composites background, shadow, stroke, fill and colour glyphs (bottom to top) as premultiplied
RGBA.

Each character is drawn with the first font of the layer's chain that has it (the layer's
font, the template's other fonts, the system fallbacks: see ``renderer.text.fonts``), and each run
of one font is shaped through Pillow's raqm layout (HarfBuzz + FriBiDi) when available, so
Arabic joins and Hebrew runs right to left. Alignment is physical (``left`` means the left edge
for every script).

Letter spacing: Pillow exposes no per-glyph advances, so spacing is applied by drawing one
grapheme cluster at a time, each advance measured on the pair it starts (which keeps kerning).
Drawing clusters apart would break cursive joining and reordering, so paragraphs that are
right-to-left or contain complex-script characters (Arabic, Syriac, Indic, South-East Asian,
Mongolian...) are drawn shaped and unspaced, as CSS recommends for cursive scripts.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter

from renderer.errors import InvalidTemplate
from renderer.report import TextFit
from renderer.template.model import TextLayer, parse_color
from renderer.text.draw import draw_lines
from renderer.text.fonts import text_chain, uncovered
from renderer.text.layout import (
    Layout,
    LayoutJob,
    choose_size,
    lay_out,
    open_font,
    paragraphs,
    place,
)

Masks = NDArray[np.float32]
Region = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, end exclusive
_FONT_LOCK = threading.Lock()


@dataclass(frozen=True, eq=False)
class TextRaster:
    """A rendered text layer: ``rgba`` is (height, width, 4) uint8, premultiplied alpha,
    read-only; ``fit`` says which size and how many lines were used."""

    rgba: NDArray[np.uint8]
    fit: TextFit


# --- painting ---------------------------------------------------------------------------------


def _over(acc: Masks, color: tuple[int, int, int, int], coverage: Masks) -> None:
    """Premultiplied source-over of a flat colour through ``coverage`` onto ``acc`` in place."""
    alpha = coverage * np.float32(color[3] / 255.0)
    acc *= (1.0 - alpha)[..., None]
    acc += alpha[..., None] * (np.array([*color[:3], 255], dtype=np.float32) / 255.0)


def _rounded_rect(region: Region, box: tuple[float, float, float, float], radius: float) -> Masks:
    """Anti-aliased coverage of a rounded rectangle over ``region``, from its signed distance
    to each pixel centre."""
    x0, y0, x1, y1 = box
    radius = max(0.0, min(radius, (x1 - x0) / 2, (y1 - y0) / 2))
    xs = np.arange(region[0], region[2], dtype=np.float32) + 0.5
    ys = np.arange(region[1], region[3], dtype=np.float32)[:, None] + 0.5
    qx = np.abs(xs - (x0 + x1) / 2) - ((x1 - x0) / 2 - radius)
    qy = np.abs(ys - (y0 + y1) / 2) - ((y1 - y0) / 2 - radius)
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    inside = np.minimum(np.maximum(qx, qy), 0)
    distance = outside + inside - radius
    coverage: Masks = np.clip(0.5 - distance, 0.0, 1.0).astype(np.float32)
    return coverage


def _shift(mask: Masks, dx: int, dy: int) -> Masks:
    out = np.zeros_like(mask)
    h, w = mask.shape
    if abs(dx) >= w or abs(dy) >= h:
        return out
    src = mask[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


def _blur(mask: Masks, sigma: float) -> Masks:
    if sigma <= 0:
        return mask
    image = Image.fromarray(np.round(mask * 255).astype(np.uint8))
    blurred: Masks = np.asarray(image.filter(ImageFilter.GaussianBlur(sigma)), np.float32) / 255.0
    return blurred


def _union(a: Region, b: Region) -> Region:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _clip(region: tuple[float, float, float, float], width: int, height: int) -> Region | None:
    x0, y0 = max(0, math.floor(region[0])), max(0, math.floor(region[1]))
    x1, y1 = min(width, math.ceil(region[2])), min(height, math.ceil(region[3]))
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


@dataclass(frozen=True, eq=False)
class _Typeset:
    """Lines placed in the box and their coverage masks (``outline`` includes the stroke)."""

    layout: Layout
    origins: list[tuple[float, float]]
    widths: list[float]
    fill: Image.Image
    outline: Image.Image
    color: Masks | None  # premultiplied RGBA of colour-font glyphs (emoji), when any

    @property
    def has_text(self) -> bool:
        return any(line.text for line in self.layout.lines)


def _typeset(job: LayoutJob) -> _Typeset:
    with _FONT_LOCK:
        # Cached FreeType faces are shared, and FreeType faces are not safe across threads.
        layout = lay_out(job, choose_size(job))
        origins, widths = place(job, layout)
        size = (job.width, job.height)
        color: Masks | None = None
        shaper = layout.shaper
        if any(
            shaper.chain[run.font].color
            for line in layout.lines
            for run in shaper.runs(line.text, line.para.direction == "rtl")
        ):
            color = np.zeros((job.height, job.width, 4), dtype=np.float32)
        fill = draw_lines(layout, origins, size, 0.0, color)
        outline = draw_lines(layout, origins, size, job.stroke) if job.stroke else fill
    if color is not None and not color[..., 3].any():
        color = None
    return _Typeset(layout, origins, widths, fill, outline, color)


def _paint(job: LayoutJob, typeset: _Typeset, fill: tuple[int, int, int, int]) -> NDArray[np.uint8]:
    """Composite background, shadow, stroke and fill (bottom to top), premultiplied. Only the
    rectangle that can hold paint is computed: text usually covers a fraction of its box."""
    layer, width, height = job.layer, job.width, job.height
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    if not typeset.has_text:
        return rgba
    layout, origins, widths = typeset.layout, typeset.origins, typeset.widths
    fill_mask, outline_mask = typeset.fill, typeset.outline
    parts: list[Region | None] = [fill_mask.getbbox(), outline_mask.getbbox()]
    color = typeset.color
    if color is not None:
        ys, xs = np.nonzero(color[..., 3] > 0)
        color_box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        parts.append(color_box)
        # Emoji cast shadows like the glyphs around them.
        outline_box = parts[1]
        parts[1] = color_box if outline_box is None else _union(outline_box, color_box)
    rect = (
        min(x for x, _ in origins) - job.padding,
        origins[0][1] - layout.shaper.ascent - job.padding,
        max(x + w for (x, _), w in zip(origins, widths, strict=True)) + job.padding,
        origins[-1][1] + layout.shaper.descent + job.padding,
    )
    if layer.background is not None:
        parts.append(_clip(rect, width, height))
    shadow = layer.shadow
    dx, dy = (round(shadow.x), round(shadow.y)) if shadow is not None else (0, 0)
    outline_box = parts[1]
    if shadow is not None and outline_box is not None:
        spread = math.ceil(1.5 * shadow.blur) + 1  # 3 sigma, sigma = blur / 2 as in CSS
        x0, y0, x1, y1 = outline_box
        shadow_box = (x0 + dx - spread, y0 + dy - spread, x1 + dx + spread, y1 + dy + spread)
        parts.append(_clip(shadow_box, width, height))
    boxes = [p for p in parts if p is not None]
    if not boxes:
        return rgba
    region = (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )

    def crop(mask: Image.Image) -> Masks:
        cropped: Masks = np.asarray(mask.crop(region), dtype=np.float32) / 255.0
        return cropped

    acc = np.zeros((region[3] - region[1], region[2] - region[0], 4), dtype=np.float32)
    if layer.background is not None:
        coverage = _rounded_rect(region, rect, layer.background.radius)
        _over(acc, parse_color(layer.background.color), coverage)
    outline = crop(outline_mask)
    emoji = None if color is None else color[region[1] : region[3], region[0] : region[2]]
    if shadow is not None:
        caster = outline if emoji is None else np.maximum(outline, emoji[..., 3])
        moved = _blur(_shift(caster, dx, dy), shadow.blur / 2)
        _over(acc, parse_color(shadow.color), moved)
    if layer.stroke is not None:
        _over(acc, parse_color(layer.stroke.color), outline)
    _over(acc, fill, crop(fill_mask) if outline_mask is not fill_mask else outline)
    if emoji is not None:
        # Colour glyphs keep their colours; the layer colour's alpha still fades them.
        alpha = np.float32(fill[3] / 255.0)
        acc *= 1.0 - emoji[..., 3:4] * alpha
        acc += emoji * alpha

    painted = np.round(np.clip(acc, 0.0, 1.0) * 255.0).astype(np.uint8)
    np.minimum(painted[..., :3], painted[..., 3:4], out=painted[..., :3])
    rgba[region[1] : region[3], region[0] : region[2]] = painted
    return rgba


def render_text(
    layer: TextLayer,
    font_path: Path | None,
    width: int,
    height: int,
    *,
    text: str | None = None,
    color: str | None = None,
    fallbacks: tuple[Path, ...] = (),
) -> TextRaster:
    """Lay out and rasterise a text layer into its box.

    Args:
        layer: the text layer (size, colours, alignment, fit, effects).
        font_path: the font file (see ``resolve_font``); None uses the default font.
        width: the layer box width in pixels.
        height: the layer box height in pixels.
        text: a customised text replacing ``layer.text``.
        color: a customised colour replacing ``layer.color``.
        fallbacks: the template's other fonts, tried before the system fallbacks for
            characters ``font_path`` lacks (see ``renderer.text.fonts``).

    Returns:
        The premultiplied RGBA raster of exactly ``width`` x ``height`` and the fit chosen,
        which lists the characters no font could draw (drawn as the first font's missing-glyph
        box).

    Raises:
        InvalidTemplate: the font file cannot be opened, or the box is empty.
        ValueError: ``color`` is not a colour.
    """
    if width < 1 or height < 1:
        raise InvalidTemplate(f"text layer '{layer.id}': box is {width}x{height} pixels")
    chain = text_chain(font_path, fallbacks)
    for face in chain[: 1 + len(fallbacks)]:
        try:
            open_font(face.path, layer.size, face.index, face.strike)
        except OSError as exc:
            raise InvalidTemplate(
                f"text layer '{layer.id}': font file '{face.path}' cannot be opened ({exc})"
            ) from exc

    fill = parse_color(layer.color if color is None else color)
    stroke = layer.stroke.width if layer.stroke is not None else 0.0
    padding = layer.background.padding if layer.background is not None else 0.0

    paras = paragraphs(layer.text if text is None else text, layer)
    job = LayoutJob(layer, paras, chain, width, height, stroke, padding)
    typeset = _typeset(job)
    rgba = _paint(job, typeset, fill)
    rgba.setflags(write=False)
    fit = TextFit(
        layer_id=layer.id,
        requested_size=layer.size,
        used_size=typeset.layout.size,
        lines=len(typeset.layout.lines) if typeset.has_text else 0,
        truncated=typeset.layout.truncated,
        uncovered="".join(uncovered("\n".join(p.text for p in paras), chain)),
    )
    return TextRaster(rgba=rgba, fit=fit)
