"""Easing curves, keyframe interpolation and transform sampling."""

from __future__ import annotations

import math

import pytest

from renderer.compose.timeline import (
    cubic_bezier,
    ease_function,
    interpolate_keys,
    is_static,
    sample_transform,
)
from renderer.template.model import Keyframe, Transform


def _dense_bezier(x1: float, y1: float, x2: float, y2: float, u: float) -> float:
    """Reference: sample the parametric curve densely and interpolate y at x = u."""
    n = 200_000
    prev_x, prev_y = 0.0, 0.0
    for i in range(1, n + 1):
        s = i / n
        inv = 1 - s
        x = 3 * inv * inv * s * x1 + 3 * inv * s * s * x2 + s**3
        y = 3 * inv * inv * s * y1 + 3 * inv * s * s * y2 + s**3
        if x >= u:
            f = 0.0 if x == prev_x else (u - prev_x) / (x - prev_x)
            return prev_y + f * (y - prev_y)
        prev_x, prev_y = x, y
    return 1.0


@pytest.mark.parametrize("name", ["linear", "easeIn", "easeOut", "easeInOut", "easeOutBack"])
def test_named_easings_hit_their_endpoints(name: str) -> None:
    f = ease_function(name)
    assert f(0.0) == pytest.approx(0.0, abs=1e-9)
    assert f(1.0) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("name", ["linear", "easeIn", "easeOut", "easeInOut"])
def test_named_easings_are_monotonic(name: str) -> None:
    f = ease_function(name)
    values = [f(i / 100) for i in range(101)]
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:], strict=False))


def test_named_easings_follow_their_css_curves() -> None:
    # CSS keywords: ease-in (0.42,0,1,1), ease-out (0,0,0.58,1), ease-in-out (0.42,0,0.58,1).
    for u in (0.1, 0.3, 0.5, 0.8):
        assert ease_function("easeIn")(u) == pytest.approx(
            _dense_bezier(0.42, 0, 1, 1, u), abs=1e-4
        )
        assert ease_function("easeOut")(u) == pytest.approx(
            _dense_bezier(0, 0, 0.58, 1, u), abs=1e-4
        )
    assert ease_function("easeInOut")(0.5) == pytest.approx(0.5, abs=1e-6)
    assert ease_function("easeIn")(0.5) < 0.5 < ease_function("easeOut")(0.5)
    assert ease_function("linear")(0.37) == pytest.approx(0.37)


def test_ease_out_back_overshoots_then_settles() -> None:
    f = ease_function("easeOutBack")
    # 1 + 2.70158 (u - 1)^3 + 1.70158 (u - 1)^2 at u = 0.5
    assert f(0.5) == pytest.approx(1.0876975, abs=1e-6)
    assert max(f(i / 100) for i in range(101)) > 1.09
    assert f(0.99) > 1.0


def test_hold_keeps_the_start_value() -> None:
    assert ease_function("hold")(0.99) == 0.0
    keys = [Keyframe(t=0, v=3, ease="hold"), Keyframe(t=10, v=7)]
    assert interpolate_keys(keys, 9.9) == (3.0,)
    assert interpolate_keys(keys, 10) == (7.0,)


@pytest.mark.parametrize(
    "curve",
    [
        (0.25, 0.1, 0.25, 1.0),
        (0.0, 0.0, 1.0, 1.0),
        (1.0, 0.0, 0.0, 1.0),
        (0.0, 1.0, 1.0, 0.0),
        (0.68, -0.55, 0.27, 1.55),
    ],
)
def test_cubic_bezier_matches_a_dense_reference(curve: tuple[float, float, float, float]) -> None:
    f = cubic_bezier(*curve)
    assert f(0.0) == 0.0
    assert f(1.0) == 1.0
    for u in (0.05, 0.2, 0.5, 0.7, 0.95):
        assert f(u) == pytest.approx(_dense_bezier(*curve, u), abs=2e-4)


def test_cubic_bezier_is_monotonic_when_its_y_controls_are_in_range() -> None:
    f = cubic_bezier(0.1, 0.9, 0.2, 1.0)
    values = [f(i / 500) for i in range(501)]
    assert all(b >= a - 1e-9 for a, b in zip(values, values[1:], strict=False))


def test_cubic_bezier_list_form_and_bad_x() -> None:
    assert ease_function([0.42, 0, 1, 1])(0.5) == pytest.approx(ease_function("easeIn")(0.5))
    with pytest.raises(ValueError, match="x1 and x2"):
        cubic_bezier(1.5, 0, 0.5, 1)
    with pytest.raises(ValueError, match="unknown easing"):
        ease_function("bounce")


def test_keyframes_clamp_outside_and_interpolate_inside() -> None:
    keys = [Keyframe(t=10, v=100), Keyframe(t=20, v=200), Keyframe(t=40, v=0)]
    assert interpolate_keys(keys, 0) == (100.0,)
    assert interpolate_keys(keys, 10) == (100.0,)
    assert interpolate_keys(keys, 15) == (150.0,)
    assert interpolate_keys(keys, 30) == (100.0,)
    assert interpolate_keys(keys, 40) == (0.0,)
    assert interpolate_keys(keys, 1000) == (0.0,)


def test_ease_shapes_the_segment_that_starts_at_its_key() -> None:
    keys = [Keyframe(t=0, v=0, ease="easeIn"), Keyframe(t=10, v=10), Keyframe(t=20, v=0)]
    assert interpolate_keys(keys, 5) == pytest.approx((10 * ease_function("easeIn")(0.5),))
    # The second segment starts at a linear key.
    assert interpolate_keys(keys, 15) == pytest.approx((5.0,))


def test_pairs_interpolate_per_axis() -> None:
    keys = [Keyframe(t=0, v=[0, 100]), Keyframe(t=4, v=[40, 0])]
    assert interpolate_keys(keys, 1) == pytest.approx((10.0, 75.0))


def test_sample_transform_defaults_to_centres() -> None:
    st = sample_transform(Transform(), 0, 100, 50, 10, 20)
    assert st.anchor == (50, 25)
    assert st.position == (60, 45)
    assert (st.scale_x, st.scale_y, st.rotation, st.opacity) == (1, 1, 0, 1)
    assert st.is_translation
    smaller = sample_transform(Transform(), 0, 100, 50, 10, 20, content_w=40, content_h=50)
    assert smaller.anchor == (20, 25)
    assert smaller.position == (60, 45)


def test_sample_transform_keyframes_and_scaling() -> None:
    tr = Transform(
        anchor=[0, 0],
        position=[Keyframe(t=0, v=[0, 0]), Keyframe(t=10, v=[100, 50])],
        scale=[2, 3],
        rotation=[Keyframe(t=0, v=0), Keyframe(t=10, v=90)],
        opacity=[Keyframe(t=0, v=-1), Keyframe(t=10, v=2)],
    )
    st = sample_transform(tr, 5, 10, 10, 0, 0, rx=2.0, ry=0.5)
    assert st.position == pytest.approx((100.0, 12.5))
    assert st.anchor == (0.0, 0.0)
    assert (st.scale_x, st.scale_y) == (2.0, 3.0)
    assert st.rotation == pytest.approx(45.0)
    assert st.opacity == pytest.approx(0.5)
    assert not st.is_translation
    assert sample_transform(tr, 0, 10, 10, 0, 0).opacity == 0.0  # clamped
    a, b, c, d = sample_transform(Transform(rotation=90), 0, 1, 1, 0, 0).matrix()
    assert (a, b, c, d) == (0.0, -1.0, 1.0, 0.0)
    assert math.isclose(sample_transform(Transform(scale=0.5), 0, 1, 1, 0, 0).scale_y, 0.5)


def test_is_static() -> None:
    assert is_static(Transform(position=[5, 5], opacity=0.5))
    assert not is_static(Transform(opacity=[Keyframe(t=0, v=0), Keyframe(t=5, v=1)]))
