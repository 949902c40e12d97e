"""Easing curves, keyframe interpolation and transform sampling (SPEC §4).

Keyframe times are template frames (floats allowed, so an output frame rate that differs from
the template's samples between keys). ``ease`` on a keyframe shapes the segment that starts at
it; before the first key a property holds the first value, after the last key the last value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from renderer.template.model import Keyframe, Transform

EaseFn = Callable[[float], float]

_BACK_OVERSHOOT = 1.70158  # the customary "back" overshoot (about 10 %)


def _cubic(p1: float, p2: float, s: float) -> float:
    # One coordinate of a cubic Bézier from 0 through p1, p2 to 1.
    inv = 1.0 - s
    return 3.0 * inv * inv * s * p1 + 3.0 * inv * s * s * p2 + s * s * s


def _cubic_slope(p1: float, p2: float, s: float) -> float:
    inv = 1.0 - s
    return 3.0 * inv * inv * p1 + 6.0 * inv * s * (p2 - p1) + 3.0 * s * s * (1.0 - p2)


@lru_cache(maxsize=256)
def cubic_bezier(x1: float, y1: float, x2: float, y2: float) -> EaseFn:
    """The CSS ``cubic-bezier(x1, y1, x2, y2)`` timing function.

    Args:
        x1, y1, x2, y2: the two control points; ``x1`` and ``x2`` must lie in [0, 1] so that
            x(s) is monotonic and the curve is a function of time.

    Returns:
        ``f(u)`` giving progress for time fraction ``u`` in [0, 1] (y may leave [0, 1]).

    Raises:
        ValueError: ``x1`` or ``x2`` outside [0, 1].
    """
    if not (0.0 <= x1 <= 1.0 and 0.0 <= x2 <= 1.0):
        raise ValueError(f"cubic-bezier x1 and x2 must lie in [0, 1], got {x1}, {x2}")

    def ease(u: float) -> float:
        if u <= 0.0:
            return 0.0
        if u >= 1.0:
            return 1.0
        # Solve x(s) = u. Newton converges in a few steps where the slope is healthy; where it
        # is flat (x1 or x2 near 0 or 1) fall back to bisection, which always converges
        # because x(s) is monotonic on [0, 1].
        s = u
        for _ in range(8):
            err = _cubic(x1, x2, s) - u
            if abs(err) < 1e-7:
                return _cubic(y1, y2, s)
            slope = _cubic_slope(x1, x2, s)
            if abs(slope) < 1e-6:
                break
            s -= err / slope
            if not 0.0 <= s <= 1.0:
                break
        lo, hi = 0.0, 1.0
        s = u
        for _ in range(60):
            x = _cubic(x1, x2, s)
            if abs(x - u) < 1e-9:
                break
            if x < u:
                lo = s
            else:
                hi = s
            s = (lo + hi) / 2.0
        return _cubic(y1, y2, s)

    return ease


def _linear(u: float) -> float:
    return u


def _hold(u: float) -> float:
    return 0.0


def _ease_out_back(u: float) -> float:
    c1 = _BACK_OVERSHOOT
    c3 = c1 + 1.0
    v = u - 1.0
    return 1.0 + c3 * v * v * v + c1 * v * v


# The named curves use the CSS keyword definitions so designers get what browsers show.
_NAMED: dict[str, EaseFn] = {
    "linear": _linear,
    "hold": _hold,
    "easeIn": cubic_bezier(0.42, 0.0, 1.0, 1.0),
    "easeOut": cubic_bezier(0.0, 0.0, 0.58, 1.0),
    "easeInOut": cubic_bezier(0.42, 0.0, 0.58, 1.0),
    "easeOutBack": _ease_out_back,
}


def ease_function(ease: str | Sequence[float]) -> EaseFn:
    """The easing curve for a keyframe's ``ease`` value.

    Args:
        ease: one of ``linear``, ``hold``, ``easeIn``, ``easeOut``, ``easeInOut``,
            ``easeOutBack``, or a cubic-bezier ``[x1, y1, x2, y2]``.

    Raises:
        ValueError: an unknown name or a malformed bezier.
    """
    if isinstance(ease, str):
        try:
            return _NAMED[ease]
        except KeyError:
            raise ValueError(f"unknown easing {ease!r}") from None
    if len(ease) != 4:
        raise ValueError(f"cubic-bezier easing needs 4 numbers, got {list(ease)}")
    x1, y1, x2, y2 = (float(v) for v in ease)
    return cubic_bezier(x1, y1, x2, y2)


def _is_keys(value: object) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], Keyframe)


def _key_value(key: Keyframe) -> tuple[float, ...]:
    v = key.v
    return tuple(float(x) for x in v) if isinstance(v, list) else (float(v),)


def interpolate_keys(keys: Sequence[Keyframe], t: float) -> tuple[float, ...]:
    """Value of a keyframed property at frame ``t`` as a tuple (1 item for scalars, 2 for pairs).

    Raises:
        ValueError: ``keys`` is empty or mixes scalar and pair values.
    """
    if not keys:
        raise ValueError("a keyframe list must not be empty")
    if t <= keys[0].t:
        return _key_value(keys[0])
    if t >= keys[-1].t:
        return _key_value(keys[-1])
    # Keys are few (validated increasing), so a linear scan is cheaper than bisect's set-up.
    for start, end in zip(keys, keys[1:], strict=False):
        if start.t <= t < end.t:
            a, b = _key_value(start), _key_value(end)
            if len(a) != len(b):
                raise ValueError(f"keyframes at t={start.t} and t={end.t} mix scalar and pair")
            span = end.t - start.t
            u = (t - start.t) / span if span > 0 else 1.0
            p = ease_function(start.ease)(u)
            return tuple(x + (y - x) * p for x, y in zip(a, b, strict=True))
    return _key_value(keys[-1])


def value_at(value: float | Sequence[float] | Sequence[Keyframe], t: float) -> tuple[float, ...]:
    """A constant, a pair or a keyframe list, sampled at frame ``t`` as a tuple."""
    if isinstance(value, int | float):
        return (float(value),)
    keys = [k for k in value if isinstance(k, Keyframe)]
    if keys:
        return interpolate_keys(keys, t)
    return tuple(float(v) for v in value if isinstance(v, int | float))


@dataclass(frozen=True)
class SampledTransform:
    """A layer's transform at one instant, in composition pixels.

    ``anchor`` is in the layer's own pixels; ``position`` is where that anchor lands on the
    canvas; scale and rotation (degrees, clockwise on screen) turn about the anchor.
    """

    anchor: tuple[float, float]
    position: tuple[float, float]
    scale_x: float
    scale_y: float
    rotation: float
    opacity: float

    @property
    def is_translation(self) -> bool:
        """True when only ``position - anchor`` matters (no scale, no rotation)."""
        return self.scale_x == 1.0 and self.scale_y == 1.0 and self.rotation % 360.0 == 0.0

    def matrix(self) -> tuple[float, float, float, float]:
        """The 2x2 linear part (row-major a, b, c, d) mapping layer offsets to canvas offsets."""
        rad = math.radians(self.rotation)
        cos, sin = math.cos(rad), math.sin(rad)
        # Snap the quarter turns so a 90-degree rotation is pixel exact.
        cos, sin = round(cos, 12), round(sin, 12)
        return (
            cos * self.scale_x,
            -sin * self.scale_y,
            sin * self.scale_x,
            cos * self.scale_y,
        )


def sample_transform(  # noqa: PLR0917 - the positional order is the documented contract
    transform: Transform,
    t_frames: float,
    box_w: float,
    box_h: float,
    box_x: float,
    box_y: float,
    *,
    content_w: float | None = None,
    content_h: float | None = None,
    rx: float = 1.0,
    ry: float = 1.0,
) -> SampledTransform:
    """Sample every transform property at template frame ``t_frames``.

    Args:
        transform: the layer's transform (constants or keyframe lists, template pixels).
        t_frames: composition time in template frames (may be fractional).
        box_w, box_h, box_x, box_y: the layer's box in canvas pixels; the default position is
            its centre.
        content_w, content_h: size of the layer's content in its own pixels (default: the
            box size); the default anchor is its centre. Content smaller than the box (fit
            ``contain``) is centred in it, so the two defaults line up.
        rx, ry: canvas size over template size; explicit anchors and positions are template
            pixels and are scaled by these (the composition is rendered at the output size).

    Raises:
        ValueError: an anchor or position keyframe holds a scalar instead of ``[x, y]``.
    """
    cw = box_w if content_w is None else content_w
    ch = box_h if content_h is None else content_h
    if transform.anchor is None:
        anchor = (cw / 2.0, ch / 2.0)
    else:
        ax, ay = _pair(value_at(transform.anchor, t_frames), "anchor")
        anchor = (ax * rx, ay * ry)
    if transform.position is None:
        position = (box_x + box_w / 2.0, box_y + box_h / 2.0)
    else:
        px, py = _pair(value_at(transform.position, t_frames), "position")
        position = (px * rx, py * ry)
    scale = value_at(transform.scale, t_frames)
    sx, sy = (scale[0], scale[0]) if len(scale) == 1 else (scale[0], scale[1])
    rotation = value_at(transform.rotation, t_frames)[0]
    opacity = min(1.0, max(0.0, value_at(transform.opacity, t_frames)[0]))
    return SampledTransform(anchor, position, sx, sy, rotation, opacity)


def _pair(value: tuple[float, ...], name: str) -> tuple[float, float]:
    if len(value) != 2:
        raise ValueError(f"transform {name} needs [x, y] values, got {list(value)}")
    return value[0], value[1]


def is_static(transform: Transform) -> bool:
    """True when no transform property is keyframed (the layer never moves or fades)."""
    return not any(
        _is_keys(v)
        for v in (
            transform.anchor,
            transform.position,
            transform.scale,
            transform.rotation,
            transform.opacity,
        )
    )
