"""``lottie`` layers: a Bodymovin/Lottie JSON drawn frame by frame by ThorVG (SPEC §4).

The engine is ThorVG's software rasteriser, reached through the shared library that the
``thorvg-python`` package ships. We bind the few C functions we need with our own ctypes
prototypes rather than through the package's wrapper classes: those re-set ``argtypes`` on
the shared function objects at every call and mis-declare some arguments, and per-call
prototypes cannot race between threads.

The animation is fitted into its box like ``fit: contain`` (ThorVG keeps the aspect ratio);
the source is the fitted size, so the compositor centres it in the box. Layer time maps to a
Lottie frame as ``t * fr * speed`` from ``ip``, wrapping over ``[ip, op)`` when ``loop`` and
otherwise holding the last frame.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from renderer.errors import InvalidCustomization, UnsupportedMedia
from renderer.layers.base import Rgba, SourceContext
from renderer.model import Layer, LottieLayer
from renderer.probe import LottieInfo, lottie_layer_lists, read_lottie

ENGINE_PACKAGE = "thorvg-python"
_SUCCESS = 0
_INSUFFICIENT_CONDITION = 2  # set_frame's answer when the frame did not change
_ABGR8888 = 0  # premultiplied; as a native uint32: a << 24 | b << 16 | g << 8 | r
_LOTTIE_TEXT = 5
# Frame numbers from k / fps land a hair off integers; a hold keyframe at an integer frame
# must not show its predecessor for that.
_EPS_FRAME = 1e-6

# ThorVG's loader and font caches are process-wide and not documented as thread-safe, so
# every engine call goes through this lock. Frames take milliseconds, so the serialisation
# of several lottie layers costs little next to decoding and encoding.
_LOCK = threading.RLock()


@dataclass
class _State:
    """The process's engine: bound once, never terminated (sources come and go)."""

    engine: _Engine | None = None
    error: str | None = None
    font_refs: dict[str, int] = field(default_factory=dict)
    default_font_loaded: bool = False


_STATE = _State()

_P = ctypes.c_void_p
_R = ctypes.c_int


class _Engine:
    """The ThorVG C functions used here, bound once with their real signatures."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        def bind(name: str, restype: Any, *argtypes: Any) -> Any:
            return ctypes.CFUNCTYPE(restype, *argtypes)((name, lib))

        fptr = ctypes.POINTER(ctypes.c_float)
        self.init = bind("tvg_engine_init", _R, ctypes.c_uint32)
        self.swcanvas_create = bind("tvg_swcanvas_create", _P, ctypes.c_uint8)
        self.swcanvas_set_target = bind(
            "tvg_swcanvas_set_target",
            _R,
            _P,
            _P,
            ctypes.c_uint32,
            ctypes.c_uint32,
            ctypes.c_uint32,
            ctypes.c_uint8,
        )
        self.canvas_add = bind("tvg_canvas_add", _R, _P, _P)
        self.canvas_update = bind("tvg_canvas_update", _R, _P)
        self.canvas_draw = bind("tvg_canvas_draw", _R, _P, ctypes.c_bool)
        self.canvas_sync = bind("tvg_canvas_sync", _R, _P)
        self.canvas_destroy = bind("tvg_canvas_destroy", _R, _P)
        self.animation_new = bind("tvg_lottie_animation_new", _P)
        self.animation_del = bind("tvg_animation_del", _R, _P)
        self.animation_get_picture = bind("tvg_animation_get_picture", _P, _P)
        self.animation_set_frame = bind("tvg_animation_set_frame", _R, _P, ctypes.c_float)
        self.animation_get_total_frame = bind("tvg_animation_get_total_frame", _R, _P, fptr)
        self.picture_load_data = bind(
            "tvg_picture_load_data",
            _R,
            _P,
            ctypes.c_char_p,
            ctypes.c_uint32,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_bool,
        )
        self.picture_set_size = bind("tvg_picture_set_size", _R, _P, ctypes.c_float, ctypes.c_float)
        self.font_load = bind("tvg_font_load", _R, ctypes.c_char_p)
        self.font_unload = bind("tvg_font_unload", _R, ctypes.c_char_p)

    def load(self, data: bytes, folder: Path | None) -> int:
        """A new Lottie animation holding ``data`` (its pointer), or raise ValueError with
        ThorVG's result code. ``folder`` is where relative image paths resolve."""
        anim = self.animation_new()
        if not anim:
            raise ValueError("the engine could not allocate an animation")
        picture = self.animation_get_picture(anim)
        rpath = None if folder is None else (str(folder) + "/").encode()
        # copy=True: ThorVG keeps its own copy, so ``data`` may be freed after the call.
        result = self.picture_load_data(picture, data, len(data), b"lottie", rpath, True)
        if result != _SUCCESS:
            self.animation_del(anim)
            raise ValueError(f"the engine refused it (ThorVG result {result})")
        return int(anim)


def _engine() -> _Engine:
    """The initialised engine. Call with ``_LOCK`` held.

    Raises:
        UnsupportedMedia: the package or its library cannot be loaded or initialised.
    """
    state = _STATE
    if state.engine is not None:
        return state.engine
    if state.error is None:
        try:
            from thorvg_python import engine as tvg_engine

            lib = tvg_engine.THORVG_LIB
            if lib is None:
                raise OSError("its shared library libthorvg could not be loaded")
            engine = _Engine(lib)
            # Zero worker threads: ThorVG draws on the calling thread, which the render's own
            # thread pipeline already keeps busy; its pool would only compete for cores.
            result = engine.init(0)
            if result != _SUCCESS:
                raise OSError(f"engine initialisation failed (ThorVG result {result})")
            state.engine = engine
            return engine
        except ImportError:
            state.error = f"the Lottie engine (Python package {ENGINE_PACKAGE}) is not installed"
        except (OSError, AttributeError) as exc:
            state.error = f"the Lottie engine ({ENGINE_PACKAGE}) cannot start: {exc}"
    raise UnsupportedMedia(state.error)


def engine_unavailable_reason() -> str | None:
    """Why lottie layers cannot be rendered in this process, or None when they can."""
    with _LOCK:
        try:
            _engine()
        except UnsupportedMedia as exc:
            return str(exc)
    return None


def check_engine_loads(doc: Mapping[str, Any], label: str, folder: Path | None = None) -> None:
    """Load ``doc`` into the engine once and drop it again.

    Raises:
        UnsupportedMedia: naming ``label``, when the engine is unavailable or refuses it.
    """
    import json

    data = json.dumps(doc).encode()
    with _LOCK:
        engine = _engine()
        try:
            anim = engine.load(data, folder)
        except ValueError as exc:
            raise UnsupportedMedia(
                f"{label}: not a Lottie animation the engine can draw: {exc}"
            ) from exc
        engine.animation_del(anim)


# --- fonts ------------------------------------------------------------------------------------


def _acquire_fonts(engine: _Engine, paths: Sequence[Path]) -> list[str]:
    """Make fonts known to ThorVG for Lottie text layers. Call with ``_LOCK`` held.

    ThorVG matches a Lottie font (``fName``) to a loaded font file by the file's name without
    extension, and falls back to the first font loaded. DejaVu Sans is loaded first, once,
    and stays: it is that fallback. Template fonts are counted per path and unloaded when the
    last source using them closes. Returns the paths to release."""
    from renderer.text import default_font_path

    state = _STATE
    if not state.default_font_loaded:
        default = default_font_path()
        if default is not None:
            engine.font_load(str(default).encode())
        state.default_font_loaded = True
    held: list[str] = []
    for path in paths:
        key = str(path.resolve())
        if key not in state.font_refs:
            if engine.font_load(key.encode()) != _SUCCESS:
                continue  # the loader already checked the font with FreeType; skip, not fail
            state.font_refs[key] = 0
        state.font_refs[key] += 1
        held.append(key)
    return held


def _release_fonts(engine: _Engine, keys: Sequence[str]) -> None:
    refs = _STATE.font_refs
    for key in keys:
        refs[key] -= 1
        if refs[key] <= 0:
            del refs[key]
            engine.font_unload(key.encode())


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
        folder: Path | None = None,
        fonts: Sequence[Path] = (),
        label: str = "?",
    ) -> None:
        """Args: the parsed (and already customised) document and its ``LottieInfo``; the box
        in output pixels; ``speed`` and ``loop`` of the layer; ``folder`` where its relative
        image paths resolve; ``fonts`` to offer its text layers; ``label`` for messages.

        Raises:
            UnsupportedMedia: the engine is unavailable or refuses the animation.
        """
        import json

        scale = min(box_w / info.width, box_h / info.height)
        self.width = max(1, min(box_w, round(info.width * scale)))
        self.height = max(1, min(box_h, round(info.height * scale)))
        self._fps = info.fps
        self._speed = speed
        self._loop = loop
        self._label = label
        self._engine: _Engine | None = None
        self._canvas = 0
        self._anim = 0
        self._fonts: list[str] = []
        self._last: tuple[float, Rgba] | None = None
        self._buffer = np.zeros((self.height, self.width), dtype=np.uint32)
        data = json.dumps(doc).encode()
        with _LOCK:
            engine = _engine()
            self._engine = engine
            try:
                if _has_text(doc):
                    self._fonts = _acquire_fonts(engine, fonts)
                try:
                    self._anim = engine.load(data, folder)
                except ValueError as exc:
                    raise UnsupportedMedia(
                        f"{label}: not a Lottie animation the engine can draw: {exc}"
                    ) from exc
                total = ctypes.c_float()
                engine.animation_get_total_frame(self._anim, ctypes.byref(total))
                self._total = float(total.value) if total.value > 0 else info.frame_count
                picture = engine.animation_get_picture(self._anim)
                engine.picture_set_size(picture, float(self.width), float(self.height))
                self._canvas = int(engine.swcanvas_create(0) or 0)
                if not self._canvas:
                    raise UnsupportedMedia(f"{label}: the Lottie engine could not make a canvas")
                result = engine.swcanvas_set_target(
                    self._canvas,
                    self._buffer.ctypes.data,
                    self.width,
                    self.width,
                    self.height,
                    _ABGR8888,
                )
                if result == _SUCCESS:
                    result = engine.canvas_add(self._canvas, picture)
                if result != _SUCCESS:
                    raise UnsupportedMedia(
                        f"{label}: the Lottie engine cannot draw into a {self.width}x"
                        f"{self.height} canvas (ThorVG result {result})"
                    )
            except BaseException:
                self._close_locked()
                raise
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

    def frame(self, t_s: float) -> Rgba | None:
        number = self.lottie_frame(t_s)
        last = self._last
        # ThorVG ignores frame changes under 0.001, so such times share one image.
        if last is not None and abs(last[0] - number) < 1e-3:
            return last[1]
        with _LOCK:
            if not self._canvas:
                return None
            engine = self._engine
            assert engine is not None
            result = engine.animation_set_frame(self._anim, number)
            if result not in (_SUCCESS, _INSUFFICIENT_CONDITION):
                raise UnsupportedMedia(
                    f"{self._label}: the Lottie engine cannot show frame {number:g} "
                    f"(ThorVG result {result})"
                )
            engine.canvas_update(self._canvas)
            engine.canvas_draw(self._canvas, True)
            engine.canvas_sync(self._canvas)
            # A little-endian copy of the words is R, G, B, A bytes on every host.
            rgba = self._buffer.astype("<u4").view(np.uint8).reshape(self.height, self.width, 4)
        rgba.flags.writeable = False
        self._last = (number, rgba)
        return rgba

    def _close_locked(self) -> None:
        engine = self._engine
        if engine is None:
            return
        if self._canvas:
            engine.canvas_destroy(self._canvas)  # releases its reference to the picture
            self._canvas = 0
        if self._anim:
            engine.animation_del(self._anim)
            self._anim = 0
        if self._fonts:
            _release_fonts(engine, self._fonts)
            self._fonts = []

    def close(self) -> None:
        with _LOCK:
            self._close_locked()
        self._last = None

    def __del__(self) -> None:
        # Sources are closed explicitly; this only keeps a forgotten one from leaking engine
        # memory for the life of a worker process.
        if getattr(self, "_canvas", 0) or getattr(self, "_anim", 0):
            with contextlib.suppress(Exception):
                self.close()


def open_lottie(layer: Layer, ctx: SourceContext) -> LottieSource:
    """Build the source for a ``lottie`` layer, applying its ``lottieText`` replacements.

    Raises:
        UnsupportedMedia: the file is not a drawable Lottie animation or the engine is missing.
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
        folder=path.parent,
        fonts=fonts,
        label=f"layer '{layer.id}' ({layer.src})",
    )


def _names(names: Sequence[str]) -> str:
    return ", ".join(f"'{name}'" for name in names) or "none"
