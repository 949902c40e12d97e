"""``image`` layers: PNG, JPEG, TGA and (animated) GIF, fitted into the box once.

Pictures are turned upright by their EXIF orientation before they are fitted (see
``renderer.media.orientation``), and every pixel layout Pillow decodes (greyscale and 16-bit
included) is brought to 8-bit RGBA the way ffmpeg reads it.
"""

from __future__ import annotations

import bisect
import math
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from renderer.compose.layers.base import Rgba, SourceContext
from renderer.compose.layers.fit import plan_fit, round_corners
from renderer.errors import UnsupportedMedia
from renderer.media import orientation as orient
from renderer.media.probe import check_animation_size
from renderer.template.model import ImageLayer, Layer

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
        return Image.fromarray(_GREY_16_TO_8[wide]).convert("RGBA")
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
    """An image fitted into its box. A still image is fitted once. An animated GIF is
    streamed: only the durations are read up front, and the frame a time needs is decoded
    at its source size and fitted when asked for, so memory holds one source frame and one
    fitted frame whatever the frame count (playing forward, as renders do, each GIF frame is
    decoded once per loop)."""

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
            UnsupportedMedia: the file cannot be decoded as an image, or an animation has
                more than ``MAX_ANIMATION_PIXELS`` pixels in all its frames.
        """
        self._path = path
        self._box = (box_w, box_h)
        self._fit = fit
        self._radius = radius
        self._scale = scale
        self._layer_id = layer_id
        self._img: Image.Image | None = None
        self._orientation = orient.UPRIGHT
        self._ends_s: list[float] = []
        self._cached: tuple[int, Rgba] | None = None
        try:
            img = Image.open(path)
            try:
                # The first frame's tag holds for all: an animation turns as one picture.
                self._orientation = orient.exif_orientation(img)
                frames = int(getattr(img, "n_frames", 1))
                if frames > 1:
                    check_animation_size(img.width, img.height, frames, path.name)
                total_ms = 0
                for index in range(frames):
                    img.seek(index)
                    delay = img.info.get("duration", 0) if img.format == "GIF" else 0
                    if img.format == "GIF" and delay < _MIN_GIF_DELAY_MS:
                        delay = _DEFAULT_GIF_DELAY_MS
                    total_ms += int(delay)
                    self._ends_s.append(total_ms / 1000.0)
                self._img = img
                first = self._fitted(0)
            except BaseException:
                img.close()
                self._img = None
                raise
        except UnsupportedMedia as exc:
            raise UnsupportedMedia(f"layer '{layer_id}': {exc}") from exc
        except (OSError, UnidentifiedImageError, ValueError, EOFError) as exc:
            raise UnsupportedMedia(
                f"layer '{layer_id}': cannot decode image {path.name}: {exc}"
            ) from exc
        if not self._ends_s:
            raise UnsupportedMedia(f"layer '{layer_id}': image {path.name} has no frames")
        self.height, self.width = first.shape[:2]
        self.static = len(self._ends_s) == 1 or self._ends_s[-1] <= 0
        if self.static:
            # Nothing more will be decoded: keep the fitted frame, not the file.
            self._img.close()
            self._img = None

    def _fitted(self, index: int) -> Rgba:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        if self._img is None:
            assert self._cached is not None
            return self._cached[1]
        # Pillow replays a GIF from its start when asked for an earlier frame.
        self._img.seek(index)
        arr = _fit_premultiplied(
            self._img, self._box, self._fit, self._scale, self._radius, self._orientation
        )
        self._cached = (index, arr)
        return arr

    @property
    def frame_count(self) -> int:
        return len(self._ends_s)

    def frame(self, t_s: float) -> Rgba | None:
        if self.static:
            return self._fitted(0)
        total = self._ends_s[-1]
        t = math.fmod(max(0.0, t_s), total)
        if total - t < _EPS_S:
            t = 0.0
        # The frame shown at t is the first whose end lies after t.
        index = bisect.bisect_right(self._ends_s, t + _EPS_S)
        try:
            return self._fitted(min(index, len(self._ends_s) - 1))
        except (OSError, ValueError, EOFError) as exc:
            raise UnsupportedMedia(
                f"layer '{self._layer_id}': cannot decode image {self._path.name}: {exc}"
            ) from exc

    def close(self) -> None:
        if self._img is not None:
            self._img.close()
            self._img = None
        self._cached = None


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
