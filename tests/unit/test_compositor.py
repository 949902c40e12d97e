"""Compositor maths on tiny frames: blend modes, opacity, transforms, clipping, caching."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from renderer.compose.compositor import Compositor, LayerPlan
from renderer.template.model import Keyframe, Transform

KR, KB = 0.2126, 0.0722
KG = 1 - KR - KB
FPS = Fraction(10)


class FakeSource:
    """A source returning one fixed premultiplied RGBA image, counting calls."""

    def __init__(self, rgba: np.ndarray, static: bool = True) -> None:
        self.rgba = rgba
        self.height, self.width = rgba.shape[:2]
        self.static = static
        self.calls = 0

    def frame(self, t_s: float) -> np.ndarray | None:
        self.calls += 1
        return self.rgba

    def close(self) -> None:
        pass


class FakeCover(FakeSource):
    """An opaque full-frame "video" offering yuv420p planes."""

    yuv_capable = True

    def __init__(self, w: int, h: int, yuv: tuple[int, int, int]) -> None:
        super().__init__(np.zeros((h, w, 4), np.uint8), static=False)
        self.planes = (
            np.full((h, w), yuv[0], np.uint8),
            np.full((h // 2, w // 2), yuv[1], np.uint8),
            np.full((h // 2, w // 2), yuv[2], np.uint8),
        )
        self.yuv_calls = 0

    def frame_yuv(self, t_s: float):  # type: ignore[no-untyped-def]
        self.yuv_calls += 1
        return self.planes


def straight(rgb: tuple[int, int, int], alpha: int, h: int = 2, w: int = 2) -> np.ndarray:
    """Premultiplied RGBA block from a straight colour."""
    px = [round(c * alpha / 255) for c in rgb] + [alpha]
    return np.tile(np.array(px, np.uint8), (h, w, 1))


def plan(source: FakeSource, x: float = 0, y: float = 0, **kw: object) -> LayerPlan:
    return LayerPlan(
        layer_id="l",
        source=source,
        box=(x, y, source.width, source.height),
        **kw,  # type: ignore[arg-type]
    )


def ref_blend(d: np.ndarray, rgba: np.ndarray, opacity: float, mode: str) -> np.ndarray:
    """W3C straight-colour reference over an opaque backdrop: (1 - sa) d + sa B(cs, d)."""
    d = d / 255.0
    sa = rgba[..., 3:] / 255.0 * opacity
    with np.errstate(invalid="ignore", divide="ignore"):
        cs = np.where(rgba[..., 3:] > 0, rgba[..., :3] / np.maximum(rgba[..., 3:], 1), 0.0)
    if mode == "add":
        out = np.minimum(d + sa * cs, 1.0)
    else:
        b = {
            "normal": cs,
            "multiply": cs * d,
            "screen": cs + d - cs * d,
            "overlay": np.where(d <= 0.5, 2 * cs * d, 1 - 2 * (1 - cs) * (1 - d)),
        }[mode]
        out = (1 - sa) * d + sa * b
    return out * 255.0


def to_yuv(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = KR * r + KG * g + KB * b
    return np.stack(
        [
            16 + 219 / 255 * y,
            128 + 224 / 255 * (b - y) / (2 * (1 - KB)),
            128 + 224 / 255 * (r - y) / (2 * (1 - KR)),
        ],
        axis=-1,
    )


def yuv_canvas(w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.zeros((h, w), np.uint8),
        np.zeros((h // 2, w // 2), np.uint8),
        np.zeros((h // 2, w // 2), np.uint8),
    )


BG = "#608040"
BG_RGB = np.array([0x60, 0x80, 0x40], np.float64)
MODES = ["normal", "multiply", "screen", "add", "overlay"]
# (straight colour, alpha) cases, each drawn as a 2x2 block so chroma is unambiguous.
CASES = [
    ((255, 0, 0), 255),
    ((10, 200, 250), 128),
    ((250, 250, 250), 64),
    ((0, 0, 0), 0),
    ((40, 40, 200), 1),
    ((200, 100, 0), 254),
]


def _layer_strip() -> np.ndarray:
    return np.concatenate([straight(c, a) for c, a in CASES], axis=1)  # 2 x 12


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("opacity", [1.0, 0.5])
def test_blend_modes_rgb_match_reference(mode: str, opacity: float) -> None:
    rgba = _layer_strip()
    comp = Compositor(
        12, 2, BG, [plan(FakeSource(rgba), blend=mode, transform=Transform(opacity=opacity))], FPS
    )
    got = comp.composite_rgb(0.0).astype(np.float64)
    want = ref_blend(np.broadcast_to(BG_RGB, (2, 12, 3)), rgba.astype(np.float64), opacity, mode)
    assert np.abs(got - want).max() <= 1.0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("opacity", [1.0, 0.5])
def test_blend_modes_yuv_match_reference(mode: str, opacity: float) -> None:
    rgba = _layer_strip()
    comp = Compositor(
        12, 2, BG, [plan(FakeSource(rgba), blend=mode, transform=Transform(opacity=opacity))], FPS
    )
    planes = yuv_canvas(12, 2)
    comp.composite_yuv(0.0, planes)
    want = to_yuv(
        ref_blend(np.broadcast_to(BG_RGB, (2, 12, 3)), rgba.astype(np.float64), opacity, mode)
    )
    assert np.abs(planes[0].astype(float) - want[..., 0]).max() <= 1.5
    want_chroma = want[::2, ::2, 1:]  # each 2x2 block is flat
    got_chroma = np.stack([planes[1], planes[2]], axis=-1).astype(float)
    assert np.abs(got_chroma - want_chroma).max() <= 1.5


def test_transparent_pixels_leave_the_canvas_untouched_in_every_mode() -> None:
    for mode in MODES:
        comp = Compositor(
            4, 4, BG, [plan(FakeSource(np.zeros((4, 4, 4), np.uint8)), blend=mode)], FPS
        )
        assert (comp.composite_rgb(0.0) == BG_RGB.astype(np.uint8)).all()


def test_opaque_layer_replaces_exactly_and_background_alpha_is_over_black() -> None:
    comp = Compositor(4, 2, "#ff000080", [plan(FakeSource(straight((1, 2, 3), 255, 2, 2)))], FPS)
    rgb = comp.composite_rgb(0.0)
    assert rgb[0, 0].tolist() == [1, 2, 3]
    assert rgb[0, 3].tolist() == [128, 0, 0]  # #ff000080 over black


def test_translation_and_anchor_place_content() -> None:
    src = FakeSource(straight((255, 255, 255), 255, 2, 2))
    comp = Compositor(
        8, 8, "#000000", [plan(src, transform=Transform(anchor=[0, 0], position=[5, 3]))], FPS
    )
    rgb = comp.composite_rgb(0.0)
    lit = np.argwhere(rgb[..., 0] > 0)
    assert lit.min(axis=0).tolist() == [3, 5] and lit.max(axis=0).tolist() == [4, 6]
    # Default anchor (centre) at an explicit position: the centre lands there.
    comp2 = Compositor(8, 8, "#000000", [plan(src, transform=Transform(position=[2, 2]))], FPS)
    lit2 = np.argwhere(comp2.composite_rgb(0.0)[..., 0] > 0)
    assert lit2.min(axis=0).tolist() == [1, 1] and lit2.max(axis=0).tolist() == [2, 2]


def test_scale_about_anchor() -> None:
    src = FakeSource(straight((255, 255, 255), 255, 2, 2))
    comp = Compositor(8, 8, "#000000", [plan(src, x=2, y=2, transform=Transform(scale=2))], FPS)
    rgb = comp.composite_rgb(0.0)
    # A 2x2 box at (2, 2) has its centre at (3, 3); scaled 2x about it, it covers 1..4.
    assert (rgb[1:5, 1:5, 0] == 255).all()
    assert rgb[0, :, 0].max() == 0 and rgb[5:, :, 0].max() == 0
    assert rgb[:, 0, 0].max() == 0 and rgb[:, 5:, 0].max() == 0


def test_rotation_by_90_degrees_is_pixel_exact() -> None:
    rgba = np.zeros((2, 4, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0, :3] = (255, 0, 0)  # top-left red
    rgba[1, 3, :3] = (0, 0, 255)  # bottom-right blue
    src = FakeSource(rgba)
    comp = Compositor(
        8,
        8,
        "#00ff00",
        [plan(src, transform=Transform(anchor=[0, 0], position=[4, 2], rotation=90))],
        FPS,
    )
    rgb = comp.composite_rgb(0.0)
    # Clockwise quarter turn about the content's top-left, which sits at (4, 2): the 4x2
    # content becomes 2 wide x 4 tall, occupying x 2..3, y 2..5.
    drawn = rgb[2:6, 2:4]
    assert drawn[0, 1].tolist() == [255, 0, 0]  # old top-left -> top-right
    assert drawn[3, 0].tolist() == [0, 0, 255]  # old bottom-right -> bottom-left
    assert (drawn[1:3, :, 1] == 0).all()  # black interior, no green bleeding
    assert rgb[1, 2].tolist() == [0, 255, 0] and rgb[2, 4].tolist() == [0, 255, 0]


@pytest.mark.parametrize("pos", [(-1, -1), (7, 5), (-3, 6), (3, -1)])
def test_clipping_at_canvas_edges_in_both_paths(pos: tuple[int, int]) -> None:
    src = FakeSource(straight((255, 255, 255), 255, 3, 3))
    x, y = pos
    comp = Compositor(8, 6, "#000000", [plan(src, x=x, y=y)], FPS)
    rgb = comp.composite_rgb(0.0)
    want = np.zeros((6, 8), bool)
    want[max(y, 0) : max(y + 3, 0), max(x, 0) : max(x + 3, 0)] = True
    assert ((rgb[..., 0] == 255) == want).all()
    planes = yuv_canvas(8, 6)
    comp.composite_yuv(0.0, planes)
    assert ((planes[0] == 235) == want).all()
    assert ((planes[0] == 16) == ~want).all()


def test_static_layer_is_fetched_once_even_when_it_moves() -> None:
    still = FakeSource(straight((255, 0, 0), 200, 2, 2))
    moving = FakeSource(straight((0, 0, 255), 128, 2, 2))
    dynamic = FakeSource(straight((0, 255, 0), 255, 2, 2), static=False)
    keys = [Keyframe(t=0, v=[1, 1]), Keyframe(t=9, v=[6, 6])]
    comp = Compositor(
        8,
        8,
        "#000000",
        [
            plan(still),
            plan(
                moving,
                transform=Transform(
                    position=keys, rotation=[Keyframe(t=0, v=0), Keyframe(t=9, v=30)]
                ),
            ),
            plan(dynamic, x=6, y=0),
        ],
        FPS,
    )
    for i in range(10):
        comp.composite_yuv(i / 10, yuv_canvas(8, 8))
    assert still.calls == 1
    assert moving.calls == 1
    assert dynamic.calls == 10


def test_layer_timing_in_and_out() -> None:
    src = FakeSource(straight((255, 255, 255), 255, 2, 2))
    comp = Compositor(2, 2, "#000000", [plan(src, in_frame=3, out_frame=5)], FPS)
    lit = [int(comp.composite_rgb(i / 10)[0, 0, 0]) for i in range(7)]
    assert lit == [0, 0, 0, 255, 255, 0, 0]


def test_opaque_full_frame_video_becomes_the_canvas() -> None:
    below = FakeSource(straight((255, 0, 0), 255, 4, 4))
    cover = FakeCover(4, 4, (100, 110, 120))
    above = FakeSource(straight((255, 255, 255), 255, 2, 2))
    comp = Compositor(4, 4, "#000000", [plan(below), plan(cover), plan(above)], FPS)
    planes = yuv_canvas(4, 4)
    comp.composite_yuv(0.0, planes)
    assert below.calls == 0 and cover.yuv_calls == 1 and cover.calls == 0
    assert planes[0][0, 0] == 235  # white layer on top, centred: rows/cols 1..2
    assert planes[0][1, 1] == 235 and planes[0][0, 3] == 100
    assert (planes[1] == 110).sum() == 3  # three chroma blocks untouched
    sched = comp.schedule([0.0, 0.1])
    assert sched == {1: ([0.0, 0.1], "yuv")}
    # A half-transparent "video" is not a cover: the general path draws it.
    comp2 = Compositor(4, 4, "#000000", [plan(cover, transform=Transform(opacity=0.5))], FPS)
    assert not comp2.draws(0.0)[0].cover


@pytest.mark.parametrize("moving", [False, True])
def test_trimmed_static_content_lands_where_the_untrimmed_would(moving: bool) -> None:
    """A static layer is kept trimmed to its opaque pixels; the trimmed block must be placed
    at its offset inside the layer, in both paths and whether the layer moves or not."""
    rgba = np.zeros((12, 16, 4), np.uint8)
    rgba[4:8, 10:14] = straight((255, 255, 255), 255, 4, 4)  # opaque block off-centre
    src = FakeSource(rgba)
    position: object = [4, 2]
    if moving:
        position = [Keyframe(t=0, v=[4, 2]), Keyframe(t=10, v=[14, 2])]
    comp = Compositor(
        32, 16, "#000000", [plan(src, transform=Transform(anchor=[0, 0], position=position))], FPS
    )
    # The layer's top-left sits at (4, 2): the block covers x 14..17, y 6..9.
    lit = np.argwhere(comp.composite_rgb(0.0)[..., 0] > 0)
    assert lit.min(axis=0).tolist() == [6, 14] and lit.max(axis=0).tolist() == [9, 17]
    planes = yuv_canvas(32, 16)
    comp.composite_yuv(0.0, planes)
    lit_y = np.argwhere(planes[0] > 16)
    assert lit_y.min(axis=0).tolist() == [6, 14] and lit_y.max(axis=0).tolist() == [9, 17]
    if moving:  # one template frame later the block moved by 1 px
        lit2 = np.argwhere(comp.composite_rgb(0.1)[..., 0] > 0)
        assert lit2.min(axis=0).tolist() == [6, 15]
