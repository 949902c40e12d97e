"""Layer sources and their registry: layer type -> factory (see ``base``)."""

from __future__ import annotations

from renderer.compose.layers.base import (
    FrameMode,
    LayerSource,
    Planes,
    Prefetching,
    Rgba,
    SourceContext,
    SourceFactory,
    TextFitting,
    YuvSource,
    open_source,
    register_source,
    registered_types,
)
from renderer.compose.layers.image import open_image
from renderer.compose.layers.lottie import open_lottie
from renderer.compose.layers.solid import open_solid
from renderer.compose.layers.text import open_text
from renderer.compose.layers.video import open_video

register_source("solid", open_solid)
register_source("image", open_image)
register_source("video", open_video)
register_source("text", open_text)
register_source("lottie", open_lottie)

__all__ = [
    "FrameMode",
    "LayerSource",
    "Planes",
    "Prefetching",
    "Rgba",
    "SourceContext",
    "SourceFactory",
    "TextFitting",
    "YuvSource",
    "open_source",
    "register_source",
    "registered_types",
]
