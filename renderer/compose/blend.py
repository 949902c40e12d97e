"""Blend maths and BT.709 conversions on premultiplied pixels (used by the compositor).

Colours are premultiplied: a layer pixel is (s, sa) with s = straight colour x sa, both
scaled to [0, 1] here; layer opacity o multiplies both. The canvas is always opaque (the
background is composited over black), so with destination colour d the result is

    normal    s + d (1 - sa)
    multiply  s d + d (1 - sa)
    screen    s + d - s d
    add       min(1, s + d)
    overlay   d (1 - sa) + (2 s d                        where d <= 1/2
                           sa - 2 (sa - s) (1 - d)       elsewhere)

which are the W3C compositing formulas (source-over with the separable blend B(cs, cd)) for
an opaque backdrop. A pixel with sa = 0 leaves the canvas unchanged under every mode.

On the encoder's yuv420p frame (BT.709, limited range) ``normal`` blending commutes with the
affine RGB -> YUV transform, so a layer is converted once into premultiplied Y/U/V
contributions plus alpha (chroma and alpha averaged over each 2x2 block) and blended in 8-bit
fixed point directly on the planes: out = p + round(dst x (255 - a) / 255).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from renderer.compose.layers.base import Rgba
from renderer.template.model import BlendMode

U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]
F32 = npt.NDArray[np.float32]

# --- BT.709 limited range ----------------------------------------------------------------

_KR, _KB = 0.2126, 0.0722
_KG = 1.0 - _KR - _KB
# Straight RGB (0..255) -> limited-range YUV minus the (16, 128, 128) offsets.
_M3 = np.array(
    [
        [_KR, _KG, _KB],
        [-_KR / (2 * (1 - _KB)), -_KG / (2 * (1 - _KB)), 0.5],
        [0.5, -_KG / (2 * (1 - _KR)), -_KB / (2 * (1 - _KR))],
    ]
) * np.array([[219.0 / 255.0], [224.0 / 255.0], [224.0 / 255.0]])
_OFFSETS = np.array([16.0, 128.0, 128.0])
_M3_INV = np.linalg.inv(_M3)
# Premultiplied RGBA (0..255) -> premultiplied YUV: the offsets scale with alpha.
_RGBA_TO_PYUV = np.vstack([_M3.T, _OFFSETS / 255.0]).astype(np.float32)  # (4, 3)


def rgb_to_yuv(r: float, g: float, b: float) -> tuple[int, int, int]:
    """One straight RGB colour (0..255) as BT.709 limited-range Y, U, V codes."""
    y, u, v = _M3 @ np.array([r, g, b], dtype=np.float64) + _OFFSETS
    return int(round(y)), int(round(u)), int(round(v))


def yuv_to_rgb_float(y: F32, u: F32, v: F32) -> F32:
    """Full-resolution Y, U, V (float) to RGB (h, w, 3) float in 0..255, unclipped."""
    yuv = np.stack([y - 16.0, u - 128.0, v - 128.0], axis=-1)
    rgb: F32 = np.einsum("hwk,jk->hwj", yuv, _M3_INV.astype(np.float32))
    return rgb


def rgb_float_to_yuv(rgb: F32) -> F32:
    out: F32 = np.einsum("hwk,jk->hwj", rgb, _M3.astype(np.float32)) + _OFFSETS.astype(np.float32)
    return out


# --- blend maths (float, premultiplied) --------------------------------------------------


def blend_float(d: F32, s: F32, sa: F32, mode: BlendMode) -> F32:
    """Blend premultiplied source ``s`` (0..255, alpha ``sa`` in 0..1, shape (..., 1)) over
    the opaque canvas colour ``d`` (0..255). See the module docstring for the formulas.

    Raises:
        ValueError: an unknown blend mode.
    """
    if mode == "normal":
        return s + d * (1.0 - sa)
    if mode == "multiply":
        return s * d / 255.0 + d * (1.0 - sa)
    if mode == "screen":
        return s + d - s * d / 255.0
    if mode == "add":
        added: F32 = np.minimum(s + d, np.float32(255.0))
        return added
    if mode == "overlay":
        low = 2.0 * s * d / 255.0
        high = sa * 255.0 - 2.0 * (sa * 255.0 - s) * (255.0 - d) / 255.0
        result: F32 = d * (1.0 - sa) + np.where(d <= 127.5, low, high)
        return result
    raise ValueError(f"unknown blend mode {mode!r}")


# --- YUV preparation and fixed-point blending ---------------------------------------------


@dataclass(frozen=True)
class PreparedYuv:
    """A premultiplied layer converted for blending on yuv420p planes.

    The content is padded by (``pad_x``, ``pad_y``) so that, placed at an odd canvas position,
    its padded origin still falls on the even chroma grid; sizes are even.
    """

    pad_x: int
    pad_y: int
    py: U8
    a: U8
    pu: U8
    pv: U8
    a2: U8


def block_mean(a: F32) -> F32:
    out: F32 = (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]) * np.float32(0.25)
    return out


def prepare_yuv(rgba: Rgba, pad_x: int, pad_y: int) -> PreparedYuv:
    """Convert premultiplied ``rgba`` into premultiplied Y/U/V + alpha for a placement whose
    x/y parity is (``pad_x``, ``pad_y``)."""
    h, w = rgba.shape[:2]
    hp = (h + pad_y + 1) & ~1
    wp = (w + pad_x + 1) & ~1
    if (pad_x, pad_y, hp, wp) == (0, 0, h, w):
        padded = rgba
    else:
        padded = np.zeros((hp, wp, 4), np.uint8)
        padded[pad_y : pad_y + h, pad_x : pad_x + w] = rgba
    # einsum, not matmul: BLAS is slow for a 4x3 right-hand side over many rows.
    f = np.einsum("hwk,kj->hwj", padded.astype(np.float32), _RGBA_TO_PYUV)
    py = np.rint(f[:, :, 0]).astype(np.uint8)
    alpha = padded[:, :, 3]
    # 2x2 block means: a block's chroma is the mean of its pixels' premultiplied chroma.
    blocks = block_mean(f[:, :, 1:])
    pu = np.rint(blocks[:, :, 0]).astype(np.uint8)
    pv = np.rint(blocks[:, :, 1]).astype(np.uint8)
    a2 = np.rint(block_mean(alpha.astype(np.float32))).astype(np.uint8)
    return PreparedYuv(pad_x, pad_y, py, np.ascontiguousarray(alpha), pu, pv, a2)


def blend_plane(dst: U8, p: U8, a: U8, opacity: int) -> None:
    """dst = p + dst x (255 - a) / 255 in uint16 fixed point (exact rounding of x / 255 via
    (x + 128 + ((x + 128) >> 8)) >> 8). ``opacity`` is 0..256, scaling p and a first."""
    if opacity < 256:
        a16: U16 = a.astype(np.uint16)
        a16 *= opacity
        a16 += 128
        a16 >>= 8
        p16: U16 = p.astype(np.uint16)
        p16 *= opacity
        p16 += 128
        p16 >>= 8
        inv: U16 = np.subtract(255, a16, dtype=np.uint16)
    else:
        inv = np.subtract(255, a, dtype=np.uint16)
        p16 = p.astype(np.uint16)
    t: U16 = dst.astype(np.uint16)
    t *= inv
    t += 128
    t += t >> 8
    t >>= 8
    t += p16
    np.copyto(dst, t, casting="unsafe")
