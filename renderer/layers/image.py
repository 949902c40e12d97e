"""``image`` layers: PNG, JPEG, TGA and (animated) GIF, fitted into the box once.

Pictures are turned upright by their EXIF orientation before they are fitted (see
``renderer.orientation``), and every pixel layout Pillow decodes (greyscale and 16-bit
included) is brought to 8-bit RGBA the way ffmpeg reads it.
"""

from __future__ import annotations

import bisect
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from renderer import orientation as orient
from renderer.errors import UnsupportedMedia
from renderer.layers.base import Rgba, SourceContext
from renderer.layers.fit import plan_fit, round_corners
from renderer.model import ImageLayer, Layer

# Browsers treat GIF delays of 0-10 ms as 100 ms (such files were authored for that), and so
# do we, so an animation plays at the speed its author saw.
_MIN_GIF_DELAY_MS = 20
_DEFAULT_GIF_DELAY_MS = 100
# Frame times like k / 25 s and the wrap (a float fmod) land a hair short of a GIF frame's
# boundary; without this slack the frame that starts exactly then shows one frame late.
_EPS_S = 1e-6
# Pillow's 32-bit and 16-bit integer greys (from 16-bit greyscale PNGs); convert("RGBA") clips
# them at 255, which turns all but the darkest 1/256 of the range pure white.
_WIDE_GREY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_MAX_16 = 65535
_GREY_16_TO_8 = ((np.arange(_MAX_16 + 1, dtype=np.uint32) * 255 + _MAX_16 // 2) // _MAX_16).astype(
    np.uint8
)


def _to_rgba(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGBA: 16-bit greys scaled (v * 255 / 65535, rounded, as ffmpeg's
    gray16 to RGB does), every other mode through Pillow's own conversion (palette with
    transparency, greyscale with alpha, CMYK with or without Adobe inversion)."""
    if img.mode in _WIDE_GREY_MODES:
        wide = np.asarray(img)
        if wide.dtype != np.uint16:  # mode "I": 32-bit, holding 16-bit samples
            wide = np.clip(wide, 0, _MAX_16).astype(np.uint16)
        # A table lookup: one byte a pixel out, no wide temporaries for a large picture.
        return Image.fromarray(_GREY_16_TO_8[wide], "L").convert("RGBA")
    return img.convert("RGBA")


def _fit_premultiplied(  # noqa: PLR0917 - the picture, its box and fit, and its turn
    img: Image.Image,
    box: tuple[int, int],
    fit: str,
    scale: float,
    radius: float,
    orientation: int = orient.UPRIGHT,
) -> Rgba:
    box_w, box_h = box
    rgba = _to_rgba(img)
    method = orient.pil_transpose(orientation)
    if method is not None:
        rgba = rgba.transpose(method)  # upright before fitting, so fit sees the shown size
    # Resample premultiplied data so transparent pixels' colour never bleeds into edges.
    rgba = rgba.convert("RGBa")
    plan = plan_fit(rgba.width, rgba.height, box_w, box_h, fit, scale)
    if (plan.scaled_w, plan.scaled_h) != rgba.size:
        rgba = rgba.resize((plan.scaled_w, plan.scaled_h), Image.Resampling.LANCZOS)
    if (plan.crop_x, plan.crop_y, plan.out_w, plan.out_h) != (0, 0, *rgba.size):
        rgba = rgba.crop(
            (plan.crop_x, plan.crop_y, plan.crop_x + plan.out_w, plan.crop_y + plan.out_h)
        )
    arr = np.array(rgba, dtype=np.uint8)  # a private, writable copy
    if radius > 0:
        arr = round_corners(arr, radius)
    arr.flags.writeable = False
    return arr


class ImageSource:
    """An image fitted into its box. Animated GIFs hold all frames (fitted once) and pick one
    by layer time, looping over the total duration."""

    def __init__(
        self,
        path: Path,
        box_w: int,
        box_h: int,
        *,
        fit: str = "cover",
        radius: float = 0.0,
        scale: float = 1.0,
        layer_id: str = "?",
    ) -> None:
        """Args: path to the image; box size in output pixels; ``fit``; ``radius`` of the
        rounded corners in output pixels; ``scale`` output/template (for fit ``none``).

        Raises:
            UnsupportedMedia: the file cannot be decoded as an image.
        """
        self._frames: list[Rgba] = []
        self._ends_s: list[float] = []
        try:
            with Image.open(path) as img:
                # The first frame's tag holds for all: an animation turns as one picture.
                orientation = orient.exif_orientation(img)
                total_ms = 0
                for frame in ImageSequence.Iterator(img):
                    delay = frame.info.get("duration", 0) if img.format == "GIF" else 0
                    if img.format == "GIF" and delay < _MIN_GIF_DELAY_MS:
                        delay = _DEFAULT_GIF_DELAY_MS
                    self._frames.append(
                        _fit_premultiplied(frame, (box_w, box_h), fit, scale, radius, orientation)
                    )
                    total_ms += int(delay)
                    self._ends_s.append(total_ms / 1000.0)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise UnsupportedMedia(
                f"layer '{layer_id}': cannot decode image {path.name}: {exc}"
            ) from exc
        if not self._frames:
            raise UnsupportedMedia(f"layer '{layer_id}': image {path.name} has no frames")
        self.height, self.width = self._frames[0].shape[:2]
        self.static = len(self._frames) == 1 or self._ends_s[-1] <= 0

    @property
    def frame_count(self) -> int:
        return len(self._frames)

    def frame(self, t_s: float) -> Rgba | None:
        if self.static:
            return self._frames[0]
        total = self._ends_s[-1]
        t = math.fmod(max(0.0, t_s), total)
        if total - t < _EPS_S:
            t = 0.0
        # The frame shown at t is the first whose end lies after t.
        index = bisect.bisect_right(self._ends_s, t + _EPS_S)
        return self._frames[min(index, len(self._frames) - 1)]

    def close(self) -> None:
        self._frames = []


def open_image(layer: Layer, ctx: SourceContext) -> ImageSource:
    assert isinstance(layer, ImageLayer)
    return ImageSource(
        ctx.loaded.path(layer.src),
        ctx.box_w,
        ctx.box_h,
        fit=layer.fit,
        radius=layer.radius * ctx.scale,
        scale=ctx.scale,
        layer_id=layer.id,
    )
