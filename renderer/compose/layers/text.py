"""``text`` layers: rasterised once by ``renderer.text.raster`` and reused every frame."""

from __future__ import annotations

from renderer.compose.layers.base import Rgba, SourceContext
from renderer.report import TextFit
from renderer.template.model import Layer, TextLayer


def scale_text_layer(layer: TextLayer, scale: float) -> TextLayer:
    """The same layer with every pixel quantity multiplied by ``scale``, so a render at a
    different output size lays text out at that size instead of resampling a raster."""
    if scale == 1.0:
        return layer
    update: dict[str, object] = {
        "size": layer.size * scale,
        "letter_spacing": layer.letter_spacing * scale,
    }
    if layer.min_size is not None:
        update["min_size"] = layer.min_size * scale
    if layer.stroke is not None:
        update["stroke"] = layer.stroke.model_copy(update={"width": layer.stroke.width * scale})
    if layer.shadow is not None:
        s = layer.shadow
        update["shadow"] = s.model_copy(
            update={"x": s.x * scale, "y": s.y * scale, "blur": s.blur * scale}
        )
    if layer.background is not None:
        b = layer.background
        update["background"] = b.model_copy(
            update={"padding": b.padding * scale, "radius": b.radius * scale}
        )
    return layer.model_copy(update=update)


class TextSource:
    """A text raster of the box size; static."""

    static = True

    def __init__(self, layer: TextLayer, ctx: SourceContext) -> None:
        """Rasterise ``layer`` into its box (output pixels).

        Raises:
            InvalidTemplate: the layer's font cannot be resolved or loaded (from
                ``renderer.text.raster``).
        """
        from renderer.text.fonts import resolve_fallbacks, resolve_font
        from renderer.text.raster import render_text

        font_path = resolve_font(ctx.loaded, layer.font)
        fallbacks = resolve_fallbacks(ctx.loaded, layer.font)
        scaled = scale_text_layer(layer, ctx.scale)
        raster = render_text(scaled, font_path, ctx.box_w, ctx.box_h, fallbacks=fallbacks)
        rgba = raster.rgba
        self.height, self.width = rgba.shape[:2]
        self._rgba: Rgba = rgba
        fit = raster.fit
        # Report sizes in template units whatever the output size.
        if ctx.scale != 1.0:
            fit = TextFit(
                layer_id=fit.layer_id,
                requested_size=layer.size,
                used_size=fit.used_size / ctx.scale,
                lines=fit.lines,
                truncated=fit.truncated,
                uncovered=fit.uncovered,
            )
        self.text_fit: TextFit = fit

    def frame(self, t_s: float) -> Rgba | None:
        return self._rgba

    def close(self) -> None:
        pass


def open_text(layer: Layer, ctx: SourceContext) -> TextSource:
    assert isinstance(layer, TextLayer)
    return TextSource(layer, ctx)
