"""Velocity's renderer: a pure library that turns a template folder into an MP4.

Importing this package is cheap (no numpy or PyAV); ``render`` and ``load_template`` import
the media stack on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from renderer.errors import (
    EncoderUnavailable,
    InvalidCustomization,
    InvalidEncoderConfig,
    InvalidFrameRange,
    InvalidTemplate,
    RenderCancelled,
    RendererError,
    UnsupportedMedia,
)

if TYPE_CHECKING:
    from renderer.render import render
    from renderer.template.loader import load_template

__all__ = [
    "EncoderUnavailable",
    "InvalidCustomization",
    "InvalidEncoderConfig",
    "InvalidFrameRange",
    "InvalidTemplate",
    "RenderCancelled",
    "RendererError",
    "UnsupportedMedia",
    "load_template",
    "render",
]


def __getattr__(name: str) -> Any:
    if name == "render":
        from renderer.render import render

        return render
    if name == "load_template":
        from renderer.template.loader import load_template

        return load_template
    raise AttributeError(name)
