"""The layer-source interface: a layer is a function of time (CONVENTIONS 3).

A source answers "your premultiplied RGBA (or nothing) at layer time t" for the content of
its box; the compositor places, transforms and blends it. Sources know nothing about the
canvas, blending or other layers, so a new layer type (``lottie``) only needs a factory here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from renderer.report import TextFit
    from renderer.template.model import Layer, LoadedTemplate

Rgba = npt.NDArray[np.uint8]
"""Premultiplied RGBA, shape (h, w, 4), uint8."""

Planes = tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]
"""yuv420p planes (Y h x w, U and V h/2 x w/2), BT.709 limited range."""

FrameMode = Literal["rgba", "yuv"]


@dataclass(frozen=True)
class SourceContext:
    """What a factory needs to build a source for one render.

    ``box_w``/``box_h`` are the layer's box in output pixels (the composition is rendered at
    the output size, so sources draw at that size). ``scale`` is output size over template
    size (the smaller of the two axes), for pixel quantities such as radii and font sizes.
    ``canvas_w``/``canvas_h`` let a video source tell whether it covers the whole frame.
    ``should_cancel`` is the render's cancel check (None for previews).
    """

    loaded: LoadedTemplate
    box_w: int
    box_h: int
    scale: float
    canvas_w: int
    canvas_h: int
    # Polled by sources that wait on another process (the Lottie sandbox), so cancel is
    # honoured while one frame is still being drawn.
    should_cancel: Callable[[], bool] | None = None


@runtime_checkable
class LayerSource(Protocol):
    """A layer's content as a function of layer time.

    ``width``/``height`` are the content's size in output pixels (at most the box; content
    smaller than its box is centred in it). ``static`` means ``frame`` returns the same image
    for every t, so the compositor asks once and caches whatever it derives from it.
    """

    width: int
    height: int
    static: bool

    def frame(self, t_s: float) -> Rgba | None:
        """Premultiplied RGBA (height, width, 4) at ``t_s`` seconds after the layer's ``in``
        point, or None when there is nothing to draw. Callers must not modify the array."""
        ...

    def close(self) -> None:
        """Release decoders, threads and files. Safe to call twice."""
        ...


@runtime_checkable
class YuvSource(Protocol):
    """Optional fast path for opaque full-frame video: planes that can become the canvas."""

    yuv_capable: bool

    def frame_yuv(self, t_s: float) -> Planes | None:
        """The content as yuv420p planes when it exactly covers the canvas."""
        ...


@runtime_checkable
class Prefetching(Protocol):
    """Optional: a source told up front which times it will be asked for (in order) can
    decode them ahead on its own thread, overlapping with compositing and encoding."""

    def schedule(self, times: Sequence[float], mode: FrameMode) -> None: ...

    def timings(self) -> dict[str, float]:
        """Seconds spent so far per stage (``decode``, ``convert``)."""
        ...


@runtime_checkable
class TextFitting(Protocol):
    """Optional: a source that reports how its text was fitted (for the RenderReport)."""

    text_fit: TextFit


SourceFactory = Callable[["Layer", SourceContext], LayerSource]

_FACTORIES: dict[str, SourceFactory] = {}


def register_source(layer_type: str, factory: SourceFactory) -> None:
    """Register (or replace) the factory building sources for ``layer_type``."""
    _FACTORIES[layer_type] = factory


def open_source(layer: Layer, ctx: SourceContext) -> LayerSource:
    """Build the source for ``layer``.

    Raises:
        UnsupportedMedia: no factory is registered for the layer's type, or its media cannot
            be read.
    """
    from renderer.errors import UnsupportedMedia

    factory = _FACTORIES.get(layer.type)
    if factory is None:
        raise UnsupportedMedia(
            f"layer '{layer.id}': layer type '{layer.type}' is not supported by this renderer"
        )
    return factory(layer, ctx)


def registered_types() -> list[str]:
    return sorted(_FACTORIES)
