"""Template format v1 (SPEC §4) as pydantic models.

This module is pure data: it imports neither numpy nor PyAV, so the API process can validate
templates and customisations without loading the media stack. Field names on the wire are the
camelCase names of SPEC §4; attributes are snake_case.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from renderer.errors import InvalidTemplate

MAX_DIMENSION = 8192
MAX_FRAMES = 216_000  # two hours at 30 fps
# Ceilings on what a template may make the renderer allocate (issue 6). A layer's working
# buffer is its box in output pixels (premultiplied RGBA, 4 bytes a pixel, plus the
# compositor's float copies), so the box is bounded relative to the canvas, absolutely per
# side, and summed over the layers on screen at once and over the whole template.
MAX_BOX_FACTOR = 2  # a box side may be at most twice the canvas side
MAX_LAYER_SIDE = MAX_DIMENSION
MAX_FRAME_PIXELS = 64 * 1024 * 1024  # layers on screen at the same frame, summed
MAX_TEMPLATE_PIXELS = 256 * 1024 * 1024  # every layer of the template, summed
MAX_LAYERS = 1_000
# Any other number in a template: far beyond a sensible value, far below float overflow.
MAX_COORD = 1_000_000.0
MAX_SECONDS = 24 * 3600.0
MAX_TEXT_CHARS = 10_000  # as a customisation's text

_COLOR_RE = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def parse_color(value: str) -> tuple[int, int, int, int]:
    """``#rgb``, ``#rrggbb`` or ``#rrggbbaa`` to straight (not premultiplied) RGBA bytes.

    Raises:
        ValueError: the string is not one of those forms.
    """
    if not _COLOR_RE.match(value):
        raise ValueError(f"colour {value!r} is not #rgb, #rrggbb or #rrggbbaa")
    digits = value[1:]
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    if len(digits) == 6:
        digits += "ff"
    r, g, b, a = (int(digits[i : i + 2], 16) for i in range(0, 8, 2))
    return r, g, b, a


def _check_color(value: str) -> str:
    parse_color(value)
    return value


Color = Annotated[str, Field(examples=["#ffcc00", "#00000080"])]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        # 1e999 parses as inf; NaN and inf must never reach int(), round() or Fraction().
        allow_inf_nan=False,
    )


Coord = Annotated[float, Field(ge=-MAX_COORD, le=MAX_COORD)]
FrameTime = Annotated[float, Field(ge=-MAX_FRAMES, le=MAX_FRAMES)]


# --- easing and keyframes -------------------------------------------------------------------

EaseName = Literal["linear", "hold", "easeIn", "easeOut", "easeInOut", "easeOutBack"]
Ease = EaseName | Annotated[list[Coord], Field(min_length=4, max_length=4)]


class Keyframe(_Model):
    """A value ``v`` reached at frame ``t``; ``ease`` shapes the segment that starts here."""

    t: FrameTime
    v: Coord | Annotated[list[Coord], Field(min_length=2, max_length=2)]
    ease: Ease = "linear"

    @field_validator("ease")
    @classmethod
    def _bezier_x_in_range(cls, ease: Ease) -> Ease:
        if isinstance(ease, list) and not (0 <= ease[0] <= 1 and 0 <= ease[2] <= 1):
            raise ValueError("cubic-bezier x1 and x2 must lie in [0, 1]")
        return ease


Scalar = Coord | list[Keyframe]
Pair = Annotated[list[Coord], Field(min_length=2, max_length=2)]
PairOrKeys = Pair | list[Keyframe]


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, list) and value and isinstance(value[0], Keyframe):
        times = [k.t for k in value]
        if times != sorted(times):
            raise ValueError("keyframes must be in increasing order of t")
    return value


class Transform(_Model):
    """``position`` is where the anchor sits in composition pixels (default: box centre);
    ``anchor`` is in the layer's own pixels (default: its centre). ``scale`` is a factor (or
    ``[sx, sy]``), ``rotation`` degrees clockwise, ``opacity`` 0–1."""

    anchor: PairOrKeys | None = None
    position: PairOrKeys | None = None
    scale: Coord | Pair | list[Keyframe] = 1.0
    rotation: Scalar = 0.0
    opacity: Scalar = 1.0

    _order = field_validator("anchor", "position", "scale", "rotation", "opacity")(
        classmethod(lambda cls, v: _sorted_keys(v))
    )

    @property
    def is_static(self) -> bool:
        values = (self.anchor, self.position, self.scale, self.rotation, self.opacity)
        return not any(isinstance(v, list) and v and isinstance(v[0], Keyframe) for v in values)


class Box(_Model):
    """Where a layer sits, in template pixels. ``w``/``h`` are also bounded by the canvas
    (``check_layer_sizes``), which the template knows and the box does not."""

    x: Coord = 0
    y: Coord = 0
    w: float = Field(gt=0, le=MAX_LAYER_SIDE * MAX_BOX_FACTOR)
    h: float = Field(gt=0, le=MAX_LAYER_SIDE * MAX_BOX_FACTOR)


BlendMode = Literal["normal", "multiply", "screen", "add", "overlay"]
Fit = Literal["cover", "contain", "fill", "none"]


class _LayerBase(_Model):
    id: str
    in_: int = Field(default=0, alias="in", ge=0, le=MAX_FRAMES)
    out: int | None = Field(default=None, ge=1, le=MAX_FRAMES)
    box: Box | None = None
    transform: Transform = Transform()
    blend: BlendMode = "normal"
    visible: bool = True

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not _ID_RE.match(value):
            raise ValueError("layer id must be 1-64 characters of A-Z a-z 0-9 _ -")
        return value

    @model_validator(mode="after")
    def _in_before_out(self) -> _LayerBase:
        if self.out is not None and self.out <= self.in_:
            raise ValueError(f"'out' ({self.out}) must be greater than 'in' ({self.in_})")
        return self


class SolidLayer(_LayerBase):
    type: Literal["solid"]
    color: Color

    _color = field_validator("color")(classmethod(lambda cls, v: _check_color(v)))


class ImageLayer(_LayerBase):
    type: Literal["image"]
    src: str
    fit: Fit = "cover"
    radius: float = Field(default=0, ge=0, le=MAX_COORD)


class VideoLayer(_LayerBase):
    type: Literal["video"]
    src: str
    fit: Fit = "cover"
    trim: float = Field(default=0, ge=0, le=MAX_SECONDS)
    loop: bool = False
    volume: float = Field(default=1.0, ge=0, le=4)


class Stroke(_Model):
    color: Color
    width: float = Field(gt=0, le=100)

    _color = field_validator("color")(classmethod(lambda cls, v: _check_color(v)))


class Shadow(_Model):
    color: Color = "#00000080"
    x: Coord = 0
    y: Coord = 4
    blur: float = Field(default=0, ge=0, le=200)

    _color = field_validator("color")(classmethod(lambda cls, v: _check_color(v)))


class TextBackground(_Model):
    color: Color
    padding: float = Field(default=0, ge=0, le=MAX_COORD)
    radius: float = Field(default=0, ge=0, le=MAX_COORD)

    _color = field_validator("color")(classmethod(lambda cls, v: _check_color(v)))


class TextLayer(_LayerBase):
    type: Literal["text"]
    text: str = Field(max_length=MAX_TEXT_CHARS)
    font: str | None = Field(default=None, max_length=255)
    size: float = Field(default=48, gt=0, le=2000)
    color: Color = "#ffffff"
    align: Literal["left", "center", "right"] = "left"
    valign: Literal["top", "middle", "bottom"] = "top"
    line_height: float = Field(default=1.2, gt=0, le=10)
    letter_spacing: Coord = 0
    stroke: Stroke | None = None
    shadow: Shadow | None = None
    background: TextBackground | None = None
    uppercase: bool = False
    fit: Literal["none", "shrink", "wrap"] = "none"
    min_size: float | None = Field(default=None, gt=0, le=2000)
    max_lines: int | None = Field(default=None, ge=1, le=10_000)

    _color = field_validator("color")(classmethod(lambda cls, v: _check_color(v)))


class LottieLayer(_LayerBase):
    type: Literal["lottie"]
    src: str
    speed: float = Field(default=1.0, gt=0, le=1000)
    loop: bool = True


Layer = Annotated[
    SolidLayer | ImageLayer | VideoLayer | TextLayer | LottieLayer,
    Field(discriminator="type"),
]
MEDIA_LAYER_TYPES = ("image", "video", "lottie")


class AudioTrack(_Model):
    id: str | None = None
    src: str
    start: int = Field(
        default=0, ge=0, le=MAX_FRAMES, description="composition frame where the track begins"
    )
    trim: float = Field(
        default=0, ge=0, le=MAX_SECONDS, description="seconds skipped at the source's start"
    )
    volume: float = Field(default=1.0, ge=0, le=4)
    fade_in: int = Field(default=0, ge=0, le=MAX_FRAMES, description="frames")
    fade_out: int = Field(default=0, ge=0, le=MAX_FRAMES, description="frames")
    loop: bool = False
    replaceable: bool = False


FpsPair = Annotated[
    list[Annotated[int, Field(ge=1, le=240_000)]], Field(min_length=2, max_length=2)
]


class Template(_Model):
    """A whole ``data.json``."""

    version: Literal[1] = 1
    name: str = Field(default="Untitled", max_length=255)
    width: int = Field(ge=2, le=MAX_DIMENSION)
    height: int = Field(ge=2, le=MAX_DIMENSION)
    fps: float | FpsPair = 30
    frames: int = Field(ge=1, le=MAX_FRAMES)
    background: Color = "#000000"
    fonts: Annotated[dict[str, str], Field(max_length=MAX_LAYERS)] = {}
    layers: Annotated[list[Layer], Field(max_length=MAX_LAYERS)] = []
    audio: Annotated[list[AudioTrack], Field(max_length=MAX_LAYERS)] = []

    _color = field_validator("background")(classmethod(lambda cls, v: _check_color(v)))

    @field_validator("width", "height")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"must be even for 4:2:0 video, got {value}")
        return value

    @field_validator("fps")
    @classmethod
    def _fps_positive(cls, value: float | list[int]) -> float | list[int]:
        rate = Fraction(value[0], value[1]) if isinstance(value, list) and value[1] else None
        if isinstance(value, list) and (value[0] <= 0 or value[1] <= 0):
            raise ValueError("fps [num, den] must both be positive")
        if not isinstance(value, list):
            rate = Fraction(value).limit_denominator(1001)
        if rate is None or not (1 <= rate <= 240):
            raise ValueError("fps must lie between 1 and 240")
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> Template:
        seen: set[str] = set()
        for layer in self.layers:
            if layer.id in seen:
                raise ValueError(f"layer id '{layer.id}' is used twice")
            seen.add(layer.id)
        return self

    @model_validator(mode="after")
    def _layer_sizes(self) -> Template:
        check_layer_sizes(self, self.width, self.height)
        return self

    @property
    def fps_fraction(self) -> Fraction:
        if isinstance(self.fps, list):
            return Fraction(self.fps[0], self.fps[1])
        return Fraction(self.fps).limit_denominator(1001)

    @property
    def duration_s(self) -> float:
        return float(self.frames / self.fps_fraction)

    def layer(self, layer_id: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.id == layer_id), None)


class LayerTooLarge(InvalidTemplate):
    """A layer's box, or the layers together, would need more pixels than allowed (at the
    template's size when validated, or at a render's output size)."""


def layer_buffer_sizes(template: Template, width: int, height: int) -> list[tuple[int, int]]:
    """Each layer's working buffer (box) in pixels when rendered at ``width`` x ``height``:
    the one place this size is derived, so validation and rendering agree."""
    rx, ry = width / template.width, height / template.height
    sizes = []
    for layer in template.layers:
        bw = layer.box.w if layer.box else template.width
        bh = layer.box.h if layer.box else template.height
        sizes.append((max(1, round(bw * rx)), max(1, round(bh * ry))))
    return sizes


def check_layer_sizes(template: Template, width: int, height: int) -> None:
    """Refuse boxes that would make the renderer allocate without bound, before any work.

    Each layer's box (at ``width`` x ``height`` output) must be at most ``MAX_BOX_FACTOR``
    times the canvas and ``MAX_LAYER_SIDE`` a side; the boxes of the layers on screen at the
    same frame must total at most ``MAX_FRAME_PIXELS``, and all boxes ``MAX_TEMPLATE_PIXELS``.

    Raises:
        LayerTooLarge: naming the layer (or the frame) and the limit.
    """
    sizes = layer_buffer_sizes(template, width, height)
    side_w = min(MAX_LAYER_SIDE, MAX_BOX_FACTOR * width)
    side_h = min(MAX_LAYER_SIDE, MAX_BOX_FACTOR * height)
    for index, (layer, (bw, bh)) in enumerate(zip(template.layers, sizes, strict=True)):
        if bw > side_w or bh > side_h:
            raise LayerTooLarge(
                f"layer '{layer.id}' (layers[{index}]): box is {bw}x{bh} pixels at the "
                f"{width}x{height} output; the largest allowed is {side_w}x{side_h} "
                f"({MAX_BOX_FACTOR}x the canvas, at most {MAX_LAYER_SIDE} a side)"
            )
    total = sum(w * h for w, h in sizes)
    if total > MAX_TEMPLATE_PIXELS:
        raise LayerTooLarge(
            f"the layers' boxes total {total / 1e6:.0f} megapixels at the {width}x{height} "
            f"output; the limit for a template is {MAX_TEMPLATE_PIXELS / 1e6:.0f} megapixels"
        )
    # Sweep over in/out points: the most pixels on screen at any one frame.
    events: list[tuple[int, int]] = []
    for layer, (w, h) in zip(template.layers, sizes, strict=True):
        end = template.frames if layer.out is None else layer.out
        if layer.in_ < end:
            events += [(layer.in_, w * h), (end, -w * h)]
    on_screen = 0
    for frame, delta in sorted(events, key=lambda e: (e[0], e[1])):
        on_screen += delta
        if on_screen > MAX_FRAME_PIXELS:
            raise LayerTooLarge(
                f"at frame {frame} the visible layers' boxes total {on_screen / 1e6:.0f} "
                f"megapixels at the {width}x{height} output; the limit per frame is "
                f"{MAX_FRAME_PIXELS / 1e6:.0f} megapixels"
            )


@dataclass(frozen=True)
class LoadedTemplate:
    """A validated template and the folder its relative paths resolve against.

    ``lottie_text`` maps a lottie layer's id to its text replacements (Lottie text layer name
    -> text), set by ``apply_customizations``: they live in the layer's JSON file, not in the
    template model, so they travel beside it.
    """

    root: Path
    template: Template
    lottie_text: Mapping[str, Mapping[str, str]] = field(default_factory=dict, hash=False)

    def path(self, relative: str) -> Path:
        """Resolve a path from ``data.json`` (already checked to stay inside ``root``)."""
        return self.root / relative


# --- customisations (SPEC §5) ---------------------------------------------------------------


class CustomizationEntry(_Model):
    """One ``customizationMap`` entry. ``assetId`` is the service's handle for uploaded media;
    ``jobs`` resolves it to a local file and passes it to the renderer as ``src``."""

    layer_id: str
    text: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    color: Color | None = None
    asset_id: str | None = None
    src: str | None = None
    visible: bool | None = None
    lottie_text: dict[str, str] | None = None

    @field_validator("color")
    @classmethod
    def _color_shape(cls, value: str | None) -> str | None:
        return None if value is None else _check_color(value)


def template_json_schema() -> dict[str, Any]:
    """The published JSON Schema of ``data.json``."""
    return Template.model_json_schema(by_alias=True)
