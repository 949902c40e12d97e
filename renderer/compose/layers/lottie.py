"""``lottie`` layers: a Bodymovin/Lottie JSON drawn frame by frame by ThorVG (SPEC §4).

The engine is ThorVG's software rasteriser from the ``thorvg-python`` package. It parses
hostile JSON in native code, so it never runs in this process: every source draws through a
``renderer.media.sandbox.LottieProcess``, a child process of its own with memory and CPU rlimits,
a wall-time limit per frame, and cancel polled while it draws. A crash or a hang costs that
source (``LottieCrashed`` / ``LottieTimedOut``, naming the file and frame), never the worker or
the API. The document reaching the engine has been made self-contained by ``read_lottie``.

The animation is fitted into its box like ``fit: contain`` (ThorVG keeps the aspect ratio);
the source is the fitted size, so the compositor centres it in the box. Layer time maps to a
Lottie frame as ``t * fr * speed`` from ``ip``, wrapping over ``[ip, op)`` when ``loop`` and
otherwise holding the last frame.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from renderer.compose.layers.base import Rgba, SourceContext
from renderer.errors import InvalidCustomization
from renderer.media.probe import LottieInfo, lottie_layer_lists, read_lottie
from renderer.media.sandbox import ENGINE_PACKAGE, LottieProcess, engine_unavailable_reason
from renderer.template.model import Layer, LoadedTemplate, LottieLayer

__all__ = [
    "ENGINE_PACKAGE",
    "LottieSource",
    "check_lottie_draws",
    "check_lottie_loads",
    "check_template_lotties",
    "engine_unavailable_reason",
    "probe_lottie",
]

_LOTTIE_TEXT = 5
# Frame numbers from k / fps land a hair off integers; a hold keyframe at an integer frame
# must not show its predecessor for that.
_EPS_FRAME = 1e-6
# Validation draws the animation no larger than this a side: enough to exercise every path
# of the engine, cheap enough to run at every upload.
_CHECK_SIDE = 256
_CHECK_FRAMES = 8


def check_lottie_loads(doc: Mapping[str, Any], info: LottieInfo, label: str) -> None:
    """Load ``doc`` into the engine in the sandbox and stop it again (every template load).

    Raises:
        UnsupportedMedia: the engine is unavailable or refuses the animation.
        LottieCrashed / LottieTimedOut: loading it crashed the engine or overran.
    """
    LottieSource(doc, info, _CHECK_SIDE, _CHECK_SIDE, label=label).close()


def probe_lottie(path: Path, name: str | None = None, root: Path | None = None) -> LottieInfo:
    """Check that ``path`` is a Lottie animation the renderer can draw: ``read_lottie``'s
    checks, then the engine must load it in the sandbox (here, beside the engine, so that
    ``renderer.media.probe`` never imports the layers). (Template uploads also draw sample
    frames: ``check_template_lotties``.)

    Raises:
        UnsupportedMedia: as ``read_lottie``, or the engine refuses the animation or is not
            installed.
        LottieCrashed / LottieTimedOut: loading it crashed the sandboxed engine or overran.
    """
    doc, info = read_lottie(path, name, root)
    check_lottie_loads(doc, info, name if name is not None else path.name)
    return info


def check_lottie_draws(doc: Mapping[str, Any], info: LottieInfo, label: str) -> None:
    """Draw sample frames of ``doc`` in the sandbox: the first, the last, the middle and a few
    spread between, so that a file which crashes or hangs the engine is refused at upload.

    Raises:
        UnsupportedMedia: the engine is unavailable or refuses the animation.
        LottieCrashed / LottieTimedOut: a sample frame crashed the engine or overran.
    """
    source = LottieSource(doc, info, _CHECK_SIDE, _CHECK_SIDE, label=label)
    try:
        total = source.total_frames
        count = max(1, min(_CHECK_FRAMES, math.ceil(total)))
        last = max(0.0, total - 1)
        numbers = {last * i / max(1, count - 1) for i in range(count)} | {last / 2}
        for number in sorted(numbers):
            source.draw(number)
    finally:
        source.close()


def check_template_lotties(loaded: LoadedTemplate) -> None:
    """Draw sample frames of every lottie layer's animation in the sandbox (the template
    upload's last check, so what is accepted renders).

    Raises:
        UnsupportedMedia: naming the file, as ``check_lottie_draws``.
        LottieCrashed / LottieTimedOut: a sample frame crashed the engine or overran.
    """
    seen: set[str] = set()
    for layer in loaded.template.layers:
        if isinstance(layer, LottieLayer) and layer.src not in seen:
            seen.add(layer.src)
            doc, info = read_lottie(loaded.path(layer.src), layer.src, loaded.root)
            check_lottie_draws(doc, info, layer.src)


def _fonts_for(doc: Mapping[str, Any], fonts: Sequence[Path]) -> list[Path]:
    """Fonts to offer the engine: none for an animation without text; else DejaVu Sans (the
    engine's fallback: it takes the first font loaded) and then the template's fonts."""
    if not _has_text(doc):
        return []
    from renderer.text.fonts import default_font_path

    default = default_font_path()
    return ([default] if default is not None else []) + [Path(f).resolve() for f in fonts]


# --- text replacement ---------------------------------------------------------------------------


def replace_text(doc: Mapping[str, Any], replacements: Mapping[str, str]) -> dict[str, Any]:
    """A copy of a parsed Lottie document whose text layers named in ``replacements`` (by
    ``nm``) show the given text in every text keyframe. ``doc`` is not modified; names not
    present are ignored (callers validate them against ``LottieInfo.text_layers``)."""
    import copy

    out: dict[str, Any] = copy.deepcopy(dict(doc))
    if not replacements:
        return out
    for layers in lottie_layer_lists(out):
        for layer in layers:
            if not isinstance(layer, dict) or layer.get("ty") != _LOTTIE_TEXT:
                continue
            text = replacements.get(str(layer.get("nm")))
            if text is None:
                continue
            keyframes = layer.get("t", {}).get("d", {}).get("k", [])
            for keyframe in keyframes if isinstance(keyframes, list) else []:
                document = keyframe.get("s") if isinstance(keyframe, dict) else None
                if isinstance(document, dict):
                    # Bodymovin separates lines with a carriage return.
                    document["t"] = text.replace("\r\n", "\r").replace("\n", "\r")
    return out


def _has_text(doc: Mapping[str, Any]) -> bool:
    return any(
        isinstance(layer, dict) and layer.get("ty") == _LOTTIE_TEXT
        for layers in lottie_layer_lists(dict(doc))
        for layer in layers
    )


# --- the source -------------------------------------------------------------------------------


class LottieSource:
    """A Lottie animation drawn into (at most) its box, one engine frame per distinct time."""

    def __init__(
        self,
        doc: Mapping[str, Any],
        info: LottieInfo,
        box_w: int,
        box_h: int,
        *,
        speed: float = 1.0,
        loop: bool = True,
        fonts: Sequence[Path] = (),
        label: str = "?",
        should_cancel: Callable[[], bool] | None = None,
    ) -> None:
        """Args: the parsed, sanitised (and customised) document and its ``LottieInfo``; the
        box in output pixels; ``speed`` and ``loop`` of the layer; the template's ``fonts`` to
        offer its text layers (after DejaVu Sans, the fallback); ``label`` for messages;
        ``should_cancel``, polled while the sandbox draws.

        Raises:
            UnsupportedMedia: the engine is unavailable or refuses the animation.
            LottieCrashed / LottieTimedOut: the sandbox died or overran while loading.
            RenderCancelled: ``should_cancel`` answered True.
        """
        scale = min(box_w / info.width, box_h / info.height)
        self.width = max(1, min(box_w, round(info.width * scale)))
        self.height = max(1, min(box_h, round(info.height * scale)))
        self._fps = info.fps
        self._speed = speed
        self._loop = loop
        self._last: tuple[float, Rgba] | None = None
        self._process: LottieProcess | None = LottieProcess(
            json.dumps(doc).encode(),
            self.width,
            self.height,
            fonts=_fonts_for(doc, fonts),
            label=label,
            should_cancel=should_cancel,
        )
        total = self._process.total
        self._total = total if total > 0 else info.frame_count
        self.static = self._total <= 1

    @property
    def total_frames(self) -> float:
        """Frames in the animation (``op - ip``)."""
        return self._total

    def lottie_frame(self, t_s: float) -> float:
        """The animation frame (from ``ip``) shown ``t_s`` seconds after the layer's ``in``."""
        if self.static:
            return 0.0
        position = max(0.0, t_s) * self._fps * self._speed
        nearest = round(position)
        if abs(position - nearest) < _EPS_FRAME:
            position = float(nearest)
        if self._loop:
            position = math.fmod(position, self._total)
            return 0.0 if self._total - position < _EPS_FRAME else position
        return min(position, self._total - 1)

    def draw(self, number: float) -> Rgba:
        """Animation frame ``number`` as premultiplied RGBA (a new array).

        Raises:
            LottieCrashed / LottieTimedOut / UnsupportedMedia / RenderCancelled: see
                ``LottieProcess.frame``.
        """
        process = self._process
        if process is None:
            raise ValueError("the source is closed")
        pixels = np.empty((self.height, self.width, 4), dtype=np.uint8)
        process.frame(number, pixels)
        if sys.byteorder == "big":  # the engine wrote native ABGR words
            pixels = pixels[..., ::-1].copy()
        return pixels

    def frame(self, t_s: float) -> Rgba | None:
        number = self.lottie_frame(t_s)
        last = self._last
        # ThorVG ignores frame changes under 0.001, so such times share one image.
        if last is not None and abs(last[0] - number) < 1e-3:
            return last[1]
        if self._process is None:
            return None
        rgba = self.draw(number)
        rgba.flags.writeable = False
        self._last = (number, rgba)
        return rgba

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.close()
        self._last = None


def open_lottie(layer: Layer, ctx: SourceContext) -> LottieSource:
    """Build the source for a ``lottie`` layer, applying its ``lottieText`` replacements.

    Raises:
        UnsupportedMedia: the file is not a drawable Lottie animation or the engine is missing.
        LottieCrashed / LottieTimedOut: the sandbox died or overran while loading it.
        InvalidCustomization: a replacement names a text layer the animation does not have.
    """
    assert isinstance(layer, LottieLayer)
    loaded = ctx.loaded
    path = loaded.path(layer.src)
    doc, info = read_lottie(path, layer.src, loaded.root)
    replacements = loaded.lottie_text.get(layer.id, {})
    unknown = [name for name in replacements if name not in info.text_layers]
    if unknown:
        raise InvalidCustomization(
            f"layer '{layer.id}': lottieText: {layer.src} has no text layer "
            f"'{unknown[0]}' (text layers: {_names(info.text_layers)})"
        )
    if replacements:
        doc = replace_text(doc, replacements)
    fonts = [loaded.path(relative) for relative in loaded.template.fonts.values()]
    return LottieSource(
        doc,
        info,
        ctx.box_w,
        ctx.box_h,
        speed=layer.speed,
        loop=layer.loop,
        fonts=fonts,
        label=f"layer '{layer.id}' ({layer.src})",
        should_cancel=ctx.should_cancel,
    )


def _names(names: Sequence[str]) -> str:
    return ", ".join(f"'{name}'" for name in names) or "none"
