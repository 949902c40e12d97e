"""Drawing laid-out lines of a text layer: coverage masks for ordinary glyphs, and colour
glyphs (CBDT bitmaps, COLR layers) in their own colours. Internal to ``renderer.text.raster``.

Each run is drawn with its own font at its pen position, left to right in visual order. Letter
spacing draws one grapheme cluster at a time (spaced paragraphs are left to right and not of a
complex script, see ``renderer.text.raster``).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from renderer.text.layout import Layout
from renderer.text.runs import Run, Shaper, cluster_starts, visual_order

Masks = NDArray[np.float32]


def draw_color(canvas: Masks, shaper: Shaper, run: Run, pen: float, baseline: float) -> None:
    """Composite a run of a colour font (CBDT bitmaps, COLR layers) in its own colours onto
    the premultiplied float ``canvas``. A bitmap strike is drawn at its size and resampled to
    the layer's: the glyphs are premultiplied, so filtering does not fringe."""
    font, scale = shaper.font(run.font), shaper.scale(run.font)
    direction = shaper.direction(run)
    box = font.getbbox(run.text, anchor="ls", direction=direction)
    left, top = math.floor(box[0]), math.floor(box[1])
    right, bottom = math.ceil(box[2]), math.ceil(box[3])
    if right <= left or bottom <= top:
        return
    glyphs = Image.new("RGBA", (right - left, bottom - top), (0, 0, 0, 0))
    ImageDraw.Draw(glyphs).text(
        (-left, -top), run.text, fill=(255, 255, 255, 255), font=font, anchor="ls",
        direction=direction, embedded_color=True,
    )  # fmt: skip
    # Drawn onto transparent black, Pillow's masked paste leaves colour * coverage: premultiplied.
    x0, y0 = pen + left * scale, baseline + top * scale
    w = max(1, round((right - left) * scale))
    h = max(1, round((bottom - top) * scale))
    if (w, h) != glyphs.size:
        glyphs = glyphs.resize(
            (w, h), Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
        )
    src = np.clip(np.asarray(glyphs, dtype=np.float32) / 255.0, 0.0, 1.0)
    src[..., :3] = np.minimum(src[..., :3], src[..., 3:4])
    ix, iy = round(x0), round(y0)
    height, width = canvas.shape[:2]
    cx0, cy0, cx1, cy1 = max(ix, 0), max(iy, 0), min(ix + w, width), min(iy + h, height)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    part = src[cy0 - iy : cy1 - iy, cx0 - ix : cx1 - ix]
    region = canvas[cy0:cy1, cx0:cx1]
    region *= 1.0 - part[..., 3:4]
    region += part


def draw_lines(
    layout: Layout,
    origins: list[tuple[float, float]],
    size: tuple[int, int],
    stroke: float,
    color: Masks | None = None,
) -> Image.Image:
    """Coverage of the laid-out lines (with a stroke of ``stroke`` px, when positive). Runs of
    colour fonts go to ``color`` (premultiplied RGBA floats) when given, else nowhere."""
    image = Image.new("L", size, 0)
    draw = ImageDraw.Draw(image)
    shaper = layout.shaper
    for line, (x, baseline) in zip(layout.lines, origins, strict=True):
        if not line.text:
            continue
        rtl = line.para.direction == "rtl"
        runs = visual_order(shaper.runs(line.text, rtl), rtl)
        if not line.para.spaced:
            pen = x
            for run in runs:
                _draw_run(draw, shaper, run, pen, baseline, stroke=stroke, color=color)
                pen += shaper.run_width(run)
            continue
        # Letter spacing: one cluster at a time (spaced paragraphs are left to right), each
        # advance measured on the pair it starts within its run, which keeps the kerning.
        pen = x
        for run in runs:
            starts = cluster_starts(run.text)
            bounds = [*starts[1:], len(run.text)]
            clusters = [run.text[i:j] for i, j in zip(starts, bounds, strict=True)]
            for k, cluster in enumerate(clusters):
                piece = Run(cluster, run.start + starts[k], run.font, run.rtl)
                _draw_run(draw, shaper, piece, pen, baseline, stroke=stroke, color=color)
                advance = shaper.run_width(piece)
                if k + 1 < len(clusters):
                    pair = Run(cluster + clusters[k + 1], 0, run.font, run.rtl)
                    following = Run(clusters[k + 1], 0, run.font, run.rtl)
                    advance = shaper.run_width(pair) - shaper.run_width(following)
                pen += advance + shaper.spacing
    return image


def _draw_run(
    draw: ImageDraw.ImageDraw,
    shaper: Shaper,
    run: Run,
    pen: float,
    baseline: float,
    *,
    stroke: float,
    color: Masks | None,
) -> None:
    if shaper.chain[run.font].color:
        if color is not None:
            draw_color(color, shaper, run, pen, baseline)
        return
    draw.text(
        (pen, baseline), run.text, fill=255, font=shaper.font(run.font), anchor="ls",
        direction=shaper.direction(run), stroke_width=stroke, stroke_fill=255,
    )  # fmt: skip
