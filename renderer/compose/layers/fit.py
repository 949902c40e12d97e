"""Fit geometry shared by image and video sources (SPEC §4 ``fit``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from renderer.compose.layers.base import Rgba


@dataclass(frozen=True)
class FitPlan:
    """Scale the source to ``scaled_w`` x ``scaled_h``, then crop ``out_w`` x ``out_h`` at
    (``crop_x``, ``crop_y``). The result is at most the box and is centred in it."""

    scaled_w: int
    scaled_h: int
    crop_x: int
    crop_y: int
    out_w: int
    out_h: int


def plan_fit(  # noqa: PLR0917 - source size, box size, fit: the natural reading order
    src_w: int, src_h: int, box_w: int, box_h: int, fit: str, scale: float = 1.0
) -> FitPlan:
    """Geometry of ``fit`` (cover, contain, fill, none) for a source in a box.

    Args:
        src_w, src_h: the source's natural size.
        box_w, box_h: the box in output pixels.
        fit: ``cover`` fills the box and crops the overflow; ``contain`` fits inside it;
            ``fill`` stretches; ``none`` keeps the natural size (times ``scale``, the render's
            output/template ratio) and crops what overflows the box.
        scale: output size over template size.

    Raises:
        ValueError: an unknown fit.
    """
    if fit == "fill":
        return FitPlan(box_w, box_h, 0, 0, box_w, box_h)
    if fit == "contain":
        s = min(box_w / src_w, box_h / src_h)
        w, h = max(1, min(box_w, round(src_w * s))), max(1, min(box_h, round(src_h * s)))
        return FitPlan(w, h, 0, 0, w, h)
    if fit == "cover":
        s = max(box_w / src_w, box_h / src_h)
        w, h = max(box_w, round(src_w * s)), max(box_h, round(src_h * s))
        return FitPlan(w, h, (w - box_w) // 2, (h - box_h) // 2, box_w, box_h)
    if fit == "none":
        w, h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
        ow, oh = min(w, box_w), min(h, box_h)
        return FitPlan(w, h, (w - ow) // 2, (h - oh) // 2, ow, oh)
    raise ValueError(f"unknown fit {fit!r}")


def round_corners(rgba: Rgba, radius: float) -> Rgba:
    """A copy of premultiplied ``rgba`` with anti-aliased rounded corners of ``radius`` px.

    Coverage is the distance from each pixel centre to the corner circle, clamped to one
    pixel of ramp, so edges are smooth rather than stair-stepped. Premultiplied data is
    scaled as a whole (colour and alpha together), which keeps it premultiplied.
    """
    h, w = rgba.shape[:2]
    r = min(radius, w / 2.0, h / 2.0)
    if r <= 0:
        return rgba
    # Distance from each pixel centre to the nearest corner circle's centre, zero outside the
    # corner squares, so one formula covers edges, corners and tiny images alike.
    xc = np.arange(w, dtype=np.float32) + 0.5
    yc = np.arange(h, dtype=np.float32) + 0.5
    dx = np.maximum(np.maximum(r - xc, xc - (w - r)), 0.0)
    dy = np.maximum(np.maximum(r - yc, yc - (h - r)), 0.0)
    dist = np.sqrt(dx[None, :] ** 2 + dy[:, None] ** 2)
    cover = np.clip(r - dist + 0.5, 0.0, 1.0)
    out: Rgba = np.rint(rgba.astype(np.float32) * cover[:, :, None]).astype(np.uint8)
    return out
