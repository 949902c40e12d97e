"""``solid`` layers: a flat colour filling the box."""

from __future__ import annotations

import numpy as np

from renderer.compose.layers.base import Rgba, SourceContext
from renderer.template.model import Layer, SolidLayer, parse_color


class SolidSource:
    """A box of one premultiplied colour; static, drawn once."""

    static = True

    def __init__(self, color: str, width: int, height: int) -> None:
        """Args: color ``#rgb``/``#rrggbb``/``#rrggbbaa``; width/height in output pixels.

        Raises:
            ValueError: a malformed colour.
        """
        r, g, b, a = parse_color(color)
        self.width, self.height = width, height
        # Round-half-up premultiply, the same rounding the compositor's reference uses.
        px = [(c * a + 127) // 255 for c in (r, g, b)] + [a]
        self._rgba: Rgba = np.empty((height, width, 4), np.uint8)
        self._rgba[...] = np.array(px, np.uint8)
        self._rgba.flags.writeable = False

    def frame(self, t_s: float) -> Rgba | None:
        return self._rgba

    def close(self) -> None:
        pass


def open_solid(layer: Layer, ctx: SourceContext) -> SolidSource:
    assert isinstance(layer, SolidLayer)
    return SolidSource(layer.color, ctx.box_w, ctx.box_h)
