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
from renderer.errors import InvalidFrameRange, OutputTooLarge, RenderCancelled
from renderer.plan import OutputPlan
from renderer.report import STAGES, RenderReport, TextFit
from renderer.template.customize import customized
from renderer.template.model import (
    Box,
    CustomizationEntry,
    LoadedTemplate,
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
    # The output plan checked the boxes at this size (a larger ``res`` scales every box).
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
    plan: OutputPlan | None = None,
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
        frames: template frame range ``(start, end)``, half-open; None for all.
        plan: the output plan when the caller has one (a chunk or span of a larger render);
            it replaces ``encoder`` and ``frames``, which must then be None.
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
        UnsupportedMedia / InvalidTemplate: a layer's media cannot be read, or a layer is
            too large at the output size.
        RenderCancelled: ``should_cancel`` answered True; nothing is left at ``out``.
        OutputTooLarge: the output would pass ``max_output_bytes``; nothing is left at
            ``out``.
    """
    wall0 = time.perf_counter()
    _stop_if(should_cancel, "before it started")
    loaded = customized(template, customizations)
    plan = _output_plan(loaded, encoder, frames, plan)
    with _Job(loaded, plan, Path(out), should_cancel) as job:
        job.open_layers()
        if audio:
            job.start_audio_mix(extra_audio)
        _stop_if(should_cancel, "before the first frame")
        video = job.encode_video(encoder_preference, max_output_bytes, on_progress)
        has_audio = job.write_output(max_output_bytes, video.frames)
        return job.report(video, has_audio, time.perf_counter() - wall0)


def _output_plan(
    loaded: LoadedTemplate,
    encoder: EncoderConfig | None,
    frames: tuple[int, int] | None,
    plan: OutputPlan | None,
) -> OutputPlan:
    if plan is not None:
        if encoder is not None or frames is not None:
            raise TypeError("render() takes a plan or encoder/frames, not both")
        return plan
    return OutputPlan.of(loaded.template, encoder, frames)


class _Job:
    """One render's working state: its scratch folder, the opened layers, the compositor and
    the audio mix, all released on the way out whatever happened."""

    def __init__(
        self,
        loaded: LoadedTemplate,
        plan: OutputPlan,
        out: Path,
        should_cancel: Callable[[], bool] | None,
    ) -> None:
        self.loaded, self.plan, self.out, self.should_cancel = loaded, plan, out, should_cancel
        self.stages = dict.fromkeys(STAGES, 0.0)
        self.plans: list[LayerPlan] = []
        self.compositor: Compositor | None = None
        self.mixer: _AudioThread | None = None
        self.text_fits: list[TextFit] = []
        out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))

    def __enter__(self) -> _Job:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.mixer is not None:
            self.mixer.wait()
        if self.compositor is not None:
            self.compositor.close()
        else:
            for plan in self.plans:
                plan.source.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def open_layers(self) -> None:
        """Open the layers on screen in the range and tell each video layer which frames
        to decode ahead."""
        plan, tpl = self.plan, self.loaded.template
        self.plans = _layer_plans(
            self.loaded, plan.size, plan.f_start, plan.f_end, self.should_cancel
        )
        self.compositor = Compositor(
            plan.width, plan.height, tpl.background, self.plans, plan.template_fps
        )
        for index, (layer_times, mode) in self.compositor.schedule(plan.times()).items():
            source = self.plans[index].source
            if isinstance(source, Prefetching):
                source.schedule(layer_times, "yuv" if mode == "yuv" else "rgba")
        self.text_fits = [
            p.source.text_fit for p in self.plans if isinstance(p.source, TextFitting)
        ]

    def start_audio_mix(self, extra_audio: Path | None) -> None:
        """Mix the range's sound on its own thread while the frames are drawn."""
        plan = self.plan
        self.mixer = _AudioThread(
            self.loaded, extra_audio, plan.start_s, plan.duration_s, self.tmp / "audio.m4a"
        )

    def encode_video(
        self,
        preference: EncoderPreference,
        max_bytes: int | None,
        on_progress: Callable[[int, int], None] | None,
    ) -> Any:
        """Composite every output frame into the encoder; returns the encoder's info."""
        from renderer.encode.encoder import VideoEncoder, plane_arrays

        plan, compositor = self.plan, self.compositor
        assert compositor is not None
        total, composite_s = plan.frames, 0.0
        with VideoEncoder(
            self.tmp / "video.mp4",
            plan.width,
            plan.height,
            plan.fps,
            plan.encoder,
            preference,
            max_bytes=max_bytes,
        ) as video:
            feeder = _EncodeThread(video)
            try:
                for n, t in enumerate(plan.times()):
                    if self.should_cancel is not None and self.should_cancel():
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
            self.stages["encode"] = feeder.seconds + time.perf_counter() - t0
        self._add_source_timings(compositor, composite_s)
        return video.info

    def _add_source_timings(self, compositor: Compositor, composite_s: float) -> None:
        # Time spent waiting on a layer's decoder is inside composite_s but is not compositing.
        source_wait = 0.0
        for plan in self.plans:
            if isinstance(plan.source, Prefetching):
                timings = plan.source.timings()
                self.stages["decode"] += timings.get("decode", 0.0)
                self.stages["convert"] += timings.get("convert", 0.0)
                source_wait += timings.get("wait", 0.0)
        convert_s = compositor.timings["convert"]
        self.stages["convert"] += convert_s
        self.stages["composite"] = max(0.0, composite_s - convert_s - source_wait)

    def write_output(self, max_bytes: int | None, frames: int) -> bool:
        """Mux the video with the mixed sound (if any) and move the result to ``out``;
        returns whether it has an audio stream."""
        video_path = self.tmp / "video.mp4"
        if self.mixer is None:
            # A chunk: the encoder's file is already the video-only MP4 the joiner wants.
            check_output_size(video_path, max_bytes, frames)
            os.replace(video_path, self.out)
            return False
        has_audio = self.mixer.join(self.should_cancel)
        self.stages["audio"] = self.mixer.seconds

        from renderer.encode.mux import mux

        t0 = time.perf_counter()
        muxed = self.tmp / "muxed.mp4"
        mux(video_path, self.tmp / "audio.m4a" if has_audio else None, muxed)
        check_output_size(muxed, max_bytes, frames)
        os.replace(muxed, self.out)
        self.stages["mux"] = time.perf_counter() - t0
        return has_audio

    def report(self, video: Any, has_audio: bool, wall_s: float) -> RenderReport:
        return RenderReport(
            frames=video.frames,
            width=self.plan.width,
            height=self.plan.height,
            fps=self.plan.fps,
            encoder=video.name,
            hardware=video.hardware,
            wall_s=wall_s,
            output_bytes=self.out.stat().st_size,
            stages_s=self.stages,
            text_fits=self.text_fits,
            has_audio=has_audio,
        )


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
