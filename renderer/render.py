"""``render(...)``: a loaded template in, an MP4 and a report out (CONVENTIONS 2).

The frame pipeline runs on three kinds of thread joined by bounded queues: each video layer
decodes and converts ahead on its own thread, this thread composites straight into the
encoder's yuv420p frames, and an encode thread feeds the encoder. PyAV and numpy release the
GIL in their heavy loops, so the stages overlap. Audio is mixed on a further thread while the
frames are drawn, then muxed with the video at the end. Output is written under a temporary
name next to ``out`` and renamed into place only when complete; temporaries are removed on
success, error and cancellation alike.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from renderer.compose.compositor import Compositor, LayerPlan
from renderer.compose.layers import Prefetching, SourceContext, TextFitting, open_source
from renderer.errors import InvalidFrameRange, InvalidTemplate, OutputTooLarge, RenderCancelled
from renderer.report import RenderReport, TextFit
from renderer.template.customize import customized
from renderer.template.model import (
    Box,
    CustomizationEntry,
    LayerTooLarge,
    LoadedTemplate,
    check_layer_sizes,
    layer_buffer_sizes,
)

if TYPE_CHECKING:
    from renderer.encode.config import EncoderConfig

EncoderPreference = Literal["auto", "software", "nvenc"]

# Frames composited ahead of the encoder: enough to ride out x264's uneven per-frame cost,
# few enough that 1080p frames (3 MB each) stay cheap.
_ENCODE_QUEUE = 6
_BT709 = 1  # AVCOL_SPC_BT709
_LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG


def output_times(
    f_start: int, f_end: int, template_fps: Fraction, output_fps: Fraction
) -> tuple[int, list[float]]:
    """Composition times (seconds) of the output frames covering template frames
    ``[f_start, f_end)``, and the global index of the first.

    Output frame k sits at k / output_fps; a range takes the frames whose time falls in
    ``[f_start, f_end) / template_fps``. Ranges that tile the composition therefore tile the
    output frames exactly, whatever the two rates, which chunked renders rely on.
    """
    start = Fraction(f_start) / template_fps
    end = Fraction(f_end) / template_fps
    k0 = math.ceil(start * output_fps)
    k1 = math.ceil(end * output_fps)
    return k0, [float(Fraction(k) / output_fps) for k in range(k0, k1)]


def _stop_if(should_cancel: Callable[[], bool] | None, where: str) -> None:
    """Raise ``RenderCancelled`` when ``should_cancel`` answers True (set-up steps poll it
    too, so a stop request or a spent budget is honoured before the first frame)."""
    if should_cancel is not None and should_cancel():
        raise RenderCancelled(f"render cancelled {where}")


def _layer_plans(
    loaded: LoadedTemplate,
    size: tuple[int, int],
    f0: int,
    f1: int,
    should_cancel: Callable[[], bool] | None = None,
) -> list[LayerPlan]:
    width, height = size
    tpl = loaded.template
    rx, ry = width / tpl.width, height / tpl.height
    try:
        # Validation checked the template's own size; a larger ``res`` scales every box.
        check_layer_sizes(tpl, width, height)
    except LayerTooLarge as err:
        raise InvalidTemplate(str(err)) from err
    buffers = layer_buffer_sizes(tpl, width, height)
    plans: list[LayerPlan] = []
    try:
        for layer, (bw, bh) in zip(tpl.layers, buffers, strict=True):
            out_frame = tpl.frames if layer.out is None else layer.out
            if not layer.visible or layer.in_ >= f1 or out_frame <= f0:
                continue  # never on screen in this range: do not even open its media
            _stop_if(should_cancel, f"while opening layer '{layer.id}'")
            box = layer.box or Box(x=0, y=0, w=tpl.width, h=tpl.height)
            ctx = SourceContext(loaded, bw, bh, min(rx, ry), width, height, should_cancel)
            source = open_source(layer, ctx)
            plans.append(
                LayerPlan(
                    layer_id=layer.id,
                    source=source,
                    box=(box.x * rx, box.y * ry, float(bw), float(bh)),
                    transform=layer.transform,
                    blend=layer.blend,
                    in_frame=float(layer.in_),
                    out_frame=float(out_frame),
                    rx=rx,
                    ry=ry,
                )
            )
    except BaseException:
        for plan in plans:
            plan.source.close()
        raise
    return plans


class _EncodeThread:
    """Feeds frames to the encoder on its own thread; errors surface on the next put."""

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder
        self._queue: queue.Queue[Any] = queue.Queue(_ENCODE_QUEUE)
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.frames = 0
        self._thread = threading.Thread(target=self._run, name="encode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                frame = self._queue.get()
                if frame is None:
                    return
                t0 = time.perf_counter()
                self._encoder.encode(frame)
                self.seconds += time.perf_counter() - t0
                self.frames += 1
        except BaseException as exc:
            self.error = exc
            # Unblock a producer waiting on a full queue.
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()

    def put(self, frame: Any) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self._queue.put(frame, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Wait for every queued frame to be encoded (re-raising an encoder error)."""
        if self._thread.is_alive():
            self.put(None)
            self._thread.join()
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """Stop without encoding what is still queued."""
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join()


class _AudioThread:
    def __init__(
        self,
        loaded: LoadedTemplate,
        extra: Path | None,
        start_s: float,
        duration_s: float,
        out: Path,
    ) -> None:
        self.result: bool = False
        self.error: BaseException | None = None
        self.seconds = 0.0
        self._args = (loaded, extra, start_s, duration_s, out)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="audio", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = time.perf_counter()
        try:
            from renderer.compose.audio import collect_clips, mix_to_file

            loaded, extra, start_s, duration_s, out = self._args
            clips = collect_clips(loaded, extra)
            self.result = bool(
                mix_to_file(clips, start_s, duration_s, out, should_cancel=lambda: self._stop)
            )
        except BaseException as exc:
            self.error = exc
        finally:
            self.seconds = time.perf_counter() - t0

    def wait(self) -> None:
        """Stop the mix and wait for it to end, ignoring its outcome (used on the way out of
        a failure, so the temporary folder is not removed under a file still being written)."""
        self._stop = True
        self._thread.join()

    def join(self, should_cancel: Callable[[], bool] | None = None) -> bool:
        """Wait for the mix, polling ``should_cancel`` (``RenderCancelled`` when it answers
        True), and return whether it wrote any sound."""
        while self._thread.is_alive():
            self._thread.join(timeout=0.05)
            _stop_if(should_cancel, "while mixing the audio")
        if self.error is not None:
            raise self.error
        return self.result


def render(
    template: LoadedTemplate,
    out: Path,
    *,
    customizations: Sequence[CustomizationEntry] = (),
    encoder: EncoderConfig | None = None,
    frames: tuple[int, int] | None = None,
    extra_audio: Path | None = None,
    encoder_preference: EncoderPreference = "auto",
    on_progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    audio: bool = True,
    max_output_bytes: int | None = None,
) -> RenderReport:
    """Render ``template`` to the MP4 ``out``.

    Args:
        template: a loaded, validated template.
        out: the output file; written under a temporary name and renamed when complete.
        customizations: ``customizationMap`` entries (replacement media already resolved to
            local ``src`` paths).
        encoder: output codec, rate control, size (``res``: the composition is rendered at
            that size) and frame rate (the template is sampled at the output times).
        frames: template frame range ``(fStart, fEnd)``, half-open; None for all.
        extra_audio: a further track (the API's ``audioId``), mixed with the template's.
        encoder_preference: ``auto`` uses NVENC when it opens, else software.
        on_progress: called as ``(frames_done, frames_total)`` from this thread.
        should_cancel: polled between frames and between set-up steps (opening each layer,
            waiting for the audio mix); True stops the render.
        audio: False writes the video stream alone (a chunk of a longer render, whose
            sound ``renderer.encode.concat.finalize`` mixes once for the whole range).
        max_output_bytes: the most bytes the output may take. The encoder checks every
            packet against it and the finished file is checked again; passing it stops
            the render with ``OutputTooLarge`` (None: no limit).

    Returns:
        What was rendered: frames, size, rate, the encoder that ran, seconds per stage, text
        fit decisions.

    Raises:
        InvalidCustomization: a customisation does not fit the template.
        InvalidEncoderConfig: the config does not fit the output size/rate.
        InvalidFrameRange: ``frames`` is empty or outside the composition.
        EncoderUnavailable: ``nvenc`` was demanded and cannot be opened.
        UnsupportedMedia / InvalidTemplate: a layer's media cannot be read.
        RenderCancelled: ``should_cancel`` answered True; nothing is left at ``out``.
        OutputTooLarge: the output would pass ``max_output_bytes``; nothing is left at
            ``out``.
    """
    from renderer.encode.config import EncoderConfig, resolve_frame_range
    from renderer.encode.encoder import VideoEncoder, plane_arrays

    wall0 = time.perf_counter()
    _stop_if(should_cancel, "before it started")
    loaded = customized(template, customizations)
    tpl = loaded.template
    config = encoder if encoder is not None else EncoderConfig()
    width, height = config.output_size(tpl.width, tpl.height)
    fps_t = tpl.fps_fraction
    fps_out = config.output_fps(fps_t)
    config.validate_combination(width, height, fps_out)
    if frames is None:
        f0, f1 = 0, tpl.frames
    else:
        f0, f1 = resolve_frame_range(frames[0], frames[1], tpl.frames)
    k0, times = output_times(f0, f1, fps_t, fps_out)
    if not times:
        raise InvalidFrameRange(
            f"frames [{f0}, {f1}) contain no output frame at {float(fps_out):.3f} fps"
        )
    total = len(times)
    start_s = float(Fraction(k0) / fps_out)
    duration_s = float(Fraction(total) / fps_out)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    stages = {
        "decode": 0.0,
        "composite": 0.0,
        "convert": 0.0,
        "encode": 0.0,
        "audio": 0.0,
        "mux": 0.0,
    }
    plans: list[LayerPlan] = []
    compositor: Compositor | None = None
    mixer: _AudioThread | None = None
    try:
        plans = _layer_plans(loaded, (width, height), f0, f1, should_cancel)
        compositor = Compositor(width, height, tpl.background, plans, fps_t)
        for index, (layer_times, mode) in compositor.schedule(times).items():
            source = plans[index].source
            if isinstance(source, Prefetching):
                source.schedule(layer_times, "yuv" if mode == "yuv" else "rgba")
        text_fits: list[TextFit] = [
            p.source.text_fit for p in plans if isinstance(p.source, TextFitting)
        ]
        if audio:
            mixer = _AudioThread(loaded, extra_audio, start_s, duration_s, tmp / "audio.m4a")
        video_path = tmp / "video.mp4"
        composite_s = 0.0
        _stop_if(should_cancel, "before the first frame")
        with VideoEncoder(
            video_path,
            width,
            height,
            fps_out,
            config,
            encoder_preference,
            max_bytes=max_output_bytes,
        ) as video:
            feeder = _EncodeThread(video)
            try:
                for n, t in enumerate(times):
                    if should_cancel is not None and should_cancel():
                        raise RenderCancelled(f"render cancelled after {n} of {total} frames")
                    frame = video.new_frame()
                    # What the compositor writes (the stream's VUI tags are the encoder's).
                    frame.colorspace = _BT709
                    frame.color_range = _LIMITED_RANGE
                    t0 = time.perf_counter()
                    compositor.composite_yuv(t, plane_arrays(frame))
                    composite_s += time.perf_counter() - t0
                    feeder.put(frame)
                    if on_progress is not None:
                        on_progress(n + 1, total)
                feeder.finish()
            except BaseException:
                feeder.abandon()
                raise
            t0 = time.perf_counter()
            video.close()  # flush: x264 still holds its lookahead frames
            flush_s = time.perf_counter() - t0
        info = video.info
        stages["encode"] = feeder.seconds + flush_s
        source_wait = 0.0
        for plan in plans:
            if isinstance(plan.source, Prefetching):
                timings = plan.source.timings()
                stages["decode"] += timings.get("decode", 0.0)
                stages["convert"] += timings.get("convert", 0.0)
                source_wait += timings.get("wait", 0.0)
        stages["convert"] += compositor.timings["convert"]
        stages["composite"] = max(0.0, composite_s - compositor.timings["convert"] - source_wait)
        if mixer is None:
            # A chunk: the encoder's file is already the video-only MP4 the joiner wants.
            has_audio = False
            check_output_size(video_path, max_output_bytes, info.frames)
            os.replace(video_path, out)
        else:
            has_audio = mixer.join(should_cancel)
            stages["audio"] = mixer.seconds

            from renderer.encode.mux import mux

            t0 = time.perf_counter()
            muxed = tmp / "muxed.mp4"
            mux(video_path, tmp / "audio.m4a" if has_audio else None, muxed)
            check_output_size(muxed, max_output_bytes, info.frames)
            os.replace(muxed, out)
            stages["mux"] = time.perf_counter() - t0
        return RenderReport(
            frames=info.frames,
            width=width,
            height=height,
            fps=fps_out,
            encoder=info.name,
            hardware=info.hardware,
            wall_s=time.perf_counter() - wall0,
            output_bytes=out.stat().st_size,
            stages_s=stages,
            text_fits=text_fits,
            has_audio=has_audio,
        )
    finally:
        if mixer is not None:
            mixer.wait()
        if compositor is not None:
            compositor.close()
        else:
            for plan in plans:
                plan.source.close()
        shutil.rmtree(tmp, ignore_errors=True)


def check_output_size(path: Path, limit: int | None, frames: int) -> None:
    """The finished file (index, audio and all) must fit ``limit`` too.

    Raises:
        OutputTooLarge: it does not (None: no limit).
    """
    if limit is None:
        return
    size = path.stat().st_size
    if size > limit:
        raise OutputTooLarge(
            f"the finished video of {frames} frames takes {size} bytes, over its size limit "
            f"of {limit} bytes",
            limit=limit,
            written=size,
        )


def render_frame_png(
    loaded: LoadedTemplate,
    customizations: Sequence[CustomizationEntry],
    frame_index: int,
    out_png: Path,
) -> None:
    """Write template frame ``frame_index`` (with ``customizations``) as a PNG at the
    template's size: a preview without spending a render.

    Raises:
        InvalidCustomization: a customisation does not fit the template.
        InvalidFrameRange: ``frame_index`` lies outside ``[0, frames)``.
        UnsupportedMedia / InvalidTemplate: a layer's media cannot be read.
    """
    from PIL import Image

    prepared = customized(loaded, customizations)
    tpl = prepared.template
    if not 0 <= frame_index < tpl.frames:
        raise InvalidFrameRange(
            f"preview frame {frame_index} lies outside the template's frames 0..{tpl.frames - 1}"
        )
    plans = _layer_plans(prepared, (tpl.width, tpl.height), frame_index, frame_index + 1)
    compositor = Compositor(tpl.width, tpl.height, tpl.background, plans, tpl.fps_fraction)
    try:
        rgb = compositor.composite_rgb(float(Fraction(frame_index) / tpl.fps_fraction))
    finally:
        compositor.close()
    out_png = Path(out_png)
    tmp = out_png.with_name(f".{out_png.name}.tmp")
    try:
        Image.fromarray(rgb).save(tmp, format="PNG")
        os.replace(tmp, out_png)
    finally:
        tmp.unlink(missing_ok=True)
