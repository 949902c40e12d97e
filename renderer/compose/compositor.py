"""Folds layer sources into frames, bottom to top, with premultiplied alpha.

Where the frame is encoded, the canvas is the encoder's own yuv420p frame (BT.709, limited
range): ``normal`` layers are blended on its planes in fixed point (see
``renderer.compose.blend`` for
the maths of every mode); for the other modes only the touched rectangle is turned back into
RGB, blended and converted again. A full-frame opaque video's decoded planes become the
canvas directly. Every layer is drawn only over its bounding rectangle clipped to the canvas;
static content (and its warp and YUV conversion) is computed once and reused for every frame.
``composite_rgb`` draws the same layers on an RGB canvas in float, for previews.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from PIL import Image

from renderer.compose.blend import (
    U8,
    PreparedYuv,
    blend_float,
    blend_plane,
    block_mean,
    prepare_yuv,
    rgb_float_to_yuv,
    rgb_to_yuv,
    yuv_to_rgb_float,
)
from renderer.compose.layers.base import LayerSource, Planes, Rgba, YuvSource
from renderer.compose.timeline import SampledTransform, is_static, sample_transform
from renderer.template.model import BlendMode, Transform, parse_color


def _clip_rect(  # noqa: PLR0917 - a rectangle and a canvas, read in that order
    x: int, y: int, w: int, h: int, cw: int, ch: int
) -> tuple[int, int, int, int] | None:
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, cw), min(y + h, ch)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


# --- transforms --------------------------------------------------------------------------


def warp(
    rgba: Rgba, st: SampledTransform, canvas_w: int, canvas_h: int
) -> tuple[Rgba, int, int] | None:
    """Scale/rotate premultiplied ``rgba`` about ``st.anchor`` to ``st.position``.

    Returns the warped pixels covering the canvas-clipped bounding rectangle and its canvas
    top-left, or None when nothing lands on the canvas (or the scale is zero).
    """
    a, b, c, d = st.matrix()
    det = a * d - b * c
    if abs(det) < 1e-12:
        return None
    h, w = rgba.shape[:2]
    ax, ay = st.anchor
    px, py = st.position
    xs, ys = [], []
    for u, v in ((0, 0), (w, 0), (0, h), (w, h)):
        xs.append(px + a * (u - ax) + b * (v - ay))
        ys.append(py + c * (u - ax) + d * (v - ay))
    # The epsilon keeps exact quarter turns from growing a row of empty pixels.
    x0 = max(math.floor(min(xs) + 1e-6), 0)
    y0 = max(math.floor(min(ys) + 1e-6), 0)
    x1 = min(math.ceil(max(xs) - 1e-6), canvas_w)
    y1 = min(math.ceil(max(ys) - 1e-6), canvas_h)
    if x1 <= x0 or y1 <= y0:
        return None
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    # PIL maps each output pixel centre back into the input: Q = anchor + inv(M) (P - pos).
    coeffs = (
        ia,
        ib,
        ax + ia * (x0 - px) + ib * (y0 - py),
        ic,
        id_,
        ay + ic * (x0 - px) + id_ * (y0 - py),
    )
    src = Image.frombuffer("RGBa", (w, h), np.ascontiguousarray(rgba), "raw", "RGBa", 0, 1)
    out = src.transform(
        (x1 - x0, y1 - y0),
        Image.Transform.AFFINE,
        coeffs,
        resample=Image.Resampling.BILINEAR,
    )
    arr: Rgba = np.asarray(out)
    return arr, x0, y0


def _opaque_bbox(rgba: Rgba) -> tuple[int, int, int, int] | None:
    alpha = rgba[:, :, 3]
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(alpha.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# --- the compositor ----------------------------------------------------------------------


@dataclass(frozen=True)
class LayerPlan:
    """One layer ready to composite: its source, box (canvas pixels), timing and look.

    ``in_frame``/``out_frame`` are template frames (the layer shows for in <= t < out);
    ``rx``/``ry`` scale the transform's template-pixel anchors and positions to the canvas.
    """

    layer_id: str
    source: LayerSource
    box: tuple[float, float, float, float]
    transform: Transform = field(default_factory=Transform)
    blend: BlendMode = "normal"
    in_frame: float = 0.0
    out_frame: float = math.inf
    rx: float = 1.0
    ry: float = 1.0


@dataclass(frozen=True)
class Draw:
    """One layer to draw in one frame: which, its transform, its layer time, and whether it
    is the full-frame opaque video that becomes the canvas directly (``cover``)."""

    index: int
    transform: SampledTransform
    local_t: float
    cover: bool = False


@dataclass
class _State:
    static_sampled: SampledTransform | None = None
    content: Rgba | None = None
    empty: bool = False
    trimmed: tuple[Rgba, int, int] | None = None
    warp_src: Rgba | None = None
    warp_key: tuple[Any, ...] | None = None
    warp: tuple[Rgba, int, int] | None = None
    yuv_src: Rgba | None = None
    yuv: dict[tuple[int, int], PreparedYuv] = field(default_factory=dict)


class Compositor:
    """Composites a fixed list of layers at any time t onto a canvas of ``width`` x
    ``height``.

    Args:
        width, height: canvas size (even).
        background: the template's background colour (composited over black).
        layers: bottom to top.
        fps: the template's frame rate, turning seconds into keyframe frames.
    """

    def __init__(
        self,
        width: int,
        height: int,
        background: str,
        layers: Sequence[LayerPlan],
        fps: Fraction,
    ) -> None:
        self.width, self.height = width, height
        r, g, b, a = parse_color(background)
        self._bg_rgb = tuple(c * a / 255.0 for c in (r, g, b))
        self._bg_yuv = rgb_to_yuv(*self._bg_rgb)
        self._layers = list(layers)
        self._fps = float(fps)
        self._states = [_State() for _ in self._layers]
        # Protocol isinstance checks are slow; decide once which layers can offer planes.
        self._yuv_ok = [
            isinstance(p.source, YuvSource) and bool(p.source.yuv_capable) and p.blend == "normal"
            for p in self._layers
        ]
        self.timings = {"convert": 0.0}

    # --- planning ---------------------------------------------------------------------

    def _sample(self, i: int, t_frames: float) -> SampledTransform:
        plan, state = self._layers[i], self._states[i]
        if state.static_sampled is not None:
            return state.static_sampled
        bx, by, bw, bh = plan.box
        src = plan.source
        st = sample_transform(
            plan.transform,
            t_frames,
            bw,
            bh,
            bx,
            by,
            content_w=src.width,
            content_h=src.height,
            rx=plan.rx,
            ry=plan.ry,
        )
        if is_static(plan.transform):
            state.static_sampled = st
        return st

    def _covers(self, i: int, st: SampledTransform) -> bool:
        if not self._yuv_ok[i]:
            return False
        src = self._layers[i].source
        if not st.is_translation or st.opacity < 1.0:
            return False
        x = math.floor(st.position[0] - st.anchor[0] + 0.5)
        y = math.floor(st.position[1] - st.anchor[1] + 0.5)
        return (x, y, src.width, src.height) == (0, 0, self.width, self.height)

    def draws(self, t_s: float, *, yuv: bool = True) -> list[Draw]:
        """The layers drawn at composition time ``t_s``, bottom to top. With ``yuv``, a
        full-frame opaque video becomes the canvas and everything below it is skipped."""
        t_frames = t_s * self._fps
        out: list[Draw] = []
        for i, plan in enumerate(self._layers):
            if not plan.in_frame <= t_frames + 1e-9 < plan.out_frame:
                continue
            st = self._sample(i, t_frames)
            if st.opacity <= 0.0:
                continue
            local_t = t_s - plan.in_frame / self._fps
            if yuv and self._covers(i, st):
                out = [Draw(i, st, local_t, cover=True)]
            else:
                out.append(Draw(i, st, local_t))
        return out

    def schedule(self, times: Sequence[float]) -> dict[int, tuple[list[float], str]]:
        """For each non-static layer, the layer times it will be asked for when compositing
        ``times`` in YUV, in order, and the mode (``yuv`` or ``rgba``)."""
        plan: dict[int, tuple[list[float], str]] = {}
        for t in times:
            for d in self.draws(t):
                if self._layers[d.index].source.static:
                    continue
                mode = "yuv" if d.cover else "rgba"
                plan.setdefault(d.index, ([], mode))[0].append(d.local_t)
        return plan

    # --- content and placement ------------------------------------------------------------

    def _content(self, i: int, local_t: float) -> Rgba | None:
        src, state = self._layers[i].source, self._states[i]
        if not src.static:
            return src.frame(local_t)
        if state.content is None and not state.empty:
            content = src.frame(0.0)
            if content is None or (box := _opaque_bbox(content)) is None:
                state.empty = True
            else:
                state.content = content
                x0, y0, x1, y1 = box
                # Drawing only the non-transparent part saves blending empty text-box margins.
                state.trimmed = (content[y0:y1, x0:x1], x0, y0)
        return state.content

    def _placed(self, d: Draw) -> tuple[Rgba, int, int] | None:
        i, st = d.index, d.transform
        state = self._states[i]
        content = self._content(i, d.local_t)
        if content is None:
            return None
        if st.is_translation:
            x = math.floor(st.position[0] - st.anchor[0] + 0.5)
            y = math.floor(st.position[1] - st.anchor[1] + 0.5)
            if self._layers[i].source.static and state.trimmed is not None:
                arr, ox, oy = state.trimmed
                return arr, x + ox, y + oy
            return content, x, y
        key = (st.anchor, st.position, st.scale_x, st.scale_y, st.rotation)
        if state.warp_src is content and state.warp_key == key:
            return state.warp
        t0 = time.perf_counter()
        warped = warp(content, st, self.width, self.height)
        self.timings["convert"] += time.perf_counter() - t0
        state.warp_src, state.warp_key, state.warp = content, key, warped
        return warped

    def _prepared(self, i: int, rgba: Rgba, x: int, y: int) -> PreparedYuv:
        state = self._states[i]
        if state.yuv_src is not rgba:
            state.yuv_src, state.yuv = rgba, {}
        key = (x & 1, y & 1)
        prep = state.yuv.get(key)
        if prep is None:
            t0 = time.perf_counter()
            prep = prepare_yuv(rgba, *key)
            self.timings["convert"] += time.perf_counter() - t0
            state.yuv[key] = prep
        return prep

    # --- YUV canvas -------------------------------------------------------------------

    def composite_yuv(self, t_s: float, planes: Planes) -> None:
        """Draw the frame at composition time ``t_s`` into yuv420p ``planes`` (writable
        views of the encoder's frame, BT.709 limited range)."""
        y_pl, u_pl, v_pl = planes
        draws = self.draws(t_s)
        start = 0
        if draws and draws[0].cover:
            src = self._layers[draws[0].index].source
            assert isinstance(src, YuvSource)
            got = src.frame_yuv(draws[0].local_t)
            if got is not None:
                np.copyto(y_pl, got[0])
                np.copyto(u_pl, got[1])
                np.copyto(v_pl, got[2])
                start = 1
        if start == 0:
            by, bu, bv = self._bg_yuv
            y_pl.fill(by)
            u_pl.fill(bu)
            v_pl.fill(bv)
        for draw in draws[start:]:
            # A cover layer whose planes were unavailable is drawn through the general path.
            d = Draw(draw.index, draw.transform, draw.local_t) if draw.cover else draw
            placed = self._placed(d)
            if placed is None:
                continue
            rgba, x, y = placed
            opacity = round(d.transform.opacity * 256)
            blend = self._layers[d.index].blend
            if blend == "normal":
                self._blend_normal_yuv(planes, self._prepared(d.index, rgba, x, y), x, y, opacity)
            else:
                self._blend_other_yuv(planes, placed, blend, d.transform.opacity)

    def _blend_normal_yuv(
        self, planes: Planes, prep: PreparedYuv, x: int, y: int, opacity: int
    ) -> None:
        x -= prep.pad_x
        y -= prep.pad_y
        hp, wp = prep.py.shape
        rect = _clip_rect(x, y, wp, hp, self.width, self.height)
        if rect is None:
            return
        x0, y0, x1, y1 = rect  # all even: x, y, wp, hp and the canvas size are even
        sx, sy = x0 - x, y0 - y
        y_pl, u_pl, v_pl = planes
        blend_plane(
            y_pl[y0:y1, x0:x1],
            prep.py[sy : sy + y1 - y0, sx : sx + x1 - x0],
            prep.a[sy : sy + y1 - y0, sx : sx + x1 - x0],
            opacity,
        )
        cy0, cy1, cx0, cx1 = y0 // 2, y1 // 2, x0 // 2, x1 // 2
        csy, csx = sy // 2, sx // 2
        a2 = prep.a2[csy : csy + cy1 - cy0, csx : csx + cx1 - cx0]
        blend_plane(
            u_pl[cy0:cy1, cx0:cx1],
            prep.pu[csy : csy + cy1 - cy0, csx : csx + cx1 - cx0],
            a2,
            opacity,
        )
        blend_plane(
            v_pl[cy0:cy1, cx0:cx1],
            prep.pv[csy : csy + cy1 - cy0, csx : csx + cx1 - cx0],
            a2,
            opacity,
        )

    def _blend_other_yuv(
        self, planes: Planes, placed: tuple[Rgba, int, int], mode: BlendMode, opacity: float
    ) -> None:
        rgba, x, y = placed
        h, w = rgba.shape[:2]
        rect = _clip_rect(x, y, w, h, self.width, self.height)
        if rect is None:
            return
        x0, y0, x1, y1 = rect
        # Widen to the chroma grid so whole 2x2 blocks are converted and written back.
        x0, y0 = x0 & ~1, y0 & ~1
        x1, y1 = (x1 + 1) & ~1, (y1 + 1) & ~1
        t0 = time.perf_counter()
        src = np.zeros((y1 - y0, x1 - x0, 4), np.float32)
        sx0, sy0 = max(x0, x), max(y0, y)
        sx1, sy1 = min(x1, x + w), min(y1, y + h)
        src[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgba[sy0 - y : sy1 - y, sx0 - x : sx1 - x]
        src *= opacity
        y_pl, u_pl, v_pl = planes
        yy = y_pl[y0:y1, x0:x1].astype(np.float32)
        uu = np.repeat(np.repeat(u_pl[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2], 2, 0), 2, 1)
        vv = np.repeat(np.repeat(v_pl[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2], 2, 0), 2, 1)
        d = yuv_to_rgb_float(yy, uu.astype(np.float32), vv.astype(np.float32))
        out = blend_float(d, src[:, :, :3], src[:, :, 3:] / 255.0, mode)
        yuv = rgb_float_to_yuv(out)
        y_pl[y0:y1, x0:x1] = np.clip(np.rint(yuv[:, :, 0]), 0, 255).astype(np.uint8)
        chroma = block_mean(yuv[:, :, 1:])
        chroma = np.clip(np.rint(chroma), 0, 255).astype(np.uint8)
        u_pl[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = chroma[:, :, 0]
        v_pl[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = chroma[:, :, 1]
        self.timings["convert"] += time.perf_counter() - t0

    # --- RGB canvas (previews, reference) ---------------------------------------------

    def composite_rgb(self, t_s: float) -> U8:
        """The frame at composition time ``t_s`` as straight RGB (height, width, 3) uint8,
        blended in float: for previews and as the reference the YUV path is tested against."""
        canvas = np.empty((self.height, self.width, 3), np.float32)
        canvas[...] = np.array(self._bg_rgb, np.float32)
        for d in self.draws(t_s, yuv=False):
            placed = self._placed(d)
            if placed is None:
                continue
            rgba, x, y = placed
            h, w = rgba.shape[:2]
            rect = _clip_rect(x, y, w, h, self.width, self.height)
            if rect is None:
                continue
            x0, y0, x1, y1 = rect
            src = rgba[y0 - y : y1 - y, x0 - x : x1 - x].astype(np.float32)
            src *= d.transform.opacity
            dst = canvas[y0:y1, x0:x1]
            dst[...] = blend_float(
                dst, src[:, :, :3], src[:, :, 3:] / 255.0, self._layers[d.index].blend
            )
        out: U8 = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        return out

    def close(self) -> None:
        """Close every layer source."""
        for plan in self._layers:
            plan.source.close()
