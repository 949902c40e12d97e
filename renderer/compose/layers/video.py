"""``video`` layers: frames chosen by presentation time, decoded ahead on their own thread.

For layer time t the source time is ``trim + t``; with ``loop`` it wraps over
``[trim, duration)``, without it the last frame holds. The frame shown at source time s is the
last one whose presentation time is <= s, so a 24, 25 or 60 fps source lines up with any
output rate. Sequential requests never seek: the decoder only runs forward, and seeks only
when time goes backwards (a loop) or jumps far ahead.

A display matrix (how phones record portrait video) is read from the first frame when the
file is opened and applied to every frame before fit and box layout: the source's size is
its displayed size, and decoded pictures are scaled at their stored shape, then turned.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import Interpolation

from renderer.compose.layers.base import FrameMode, Planes, Rgba, SourceContext
from renderer.compose.layers.fit import FitPlan, plan_fit
from renderer.errors import UnsupportedMedia
from renderer.media import orientation as orient
from renderer.template.model import Layer, VideoLayer

# Presentation times are rounded to ticks; a frame due within this much of s counts as due.
_EPS_S = 1e-4
# Jumping further ahead than this is cheaper as a seek than decoding every frame between.
_SEEK_AHEAD_S = 4.0
_PREFETCH_DEPTH = 6
_UNSPECIFIED_COLORSPACE = 2
# swscale's default scale+convert path tints greys by a couple of codes; accurate rounding
# with full chroma interpolation keeps colours true for about 1 ms more per 360p frame.
_RGB_SCALING = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
# The same flags for frames converted to the output's limited BT.709 planes: without accurate
# rounding a BT.601 or full-range source drifts by 3-4 codes from ffmpeg's own decode (greys
# by 2); with it alone, chroma bleeds a row further past a sharp edge; with both, within 2.
_YUV_SCALING = _RGB_SCALING
_BT709 = 1  # AVCOL_SPC_BT709
_HD_LINES = 720
_LIMITED_OR_UNTAGGED = (0, 1)  # AVCOL_RANGE_UNSPECIFIED, AVCOL_RANGE_MPEG


def _plane_array(plane: Any, width: int, height: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    # Planes are padded to line_size; view the visible part without copying.
    arr = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
    return arr[:height, :width]


class VideoSource:
    """A video file fitted into its box, sampled by presentation time.

    Random access (``frame``/``frame_yuv`` called directly) decodes on the caller's thread;
    after ``schedule`` a background thread decodes and converts the scheduled times in order
    and the calls return its results.
    """

    static = False

    def __init__(
        self,
        path: Path,
        box_w: int,
        box_h: int,
        *,
        fit: str = "cover",
        trim: float = 0.0,
        loop: bool = False,
        scale: float = 1.0,
        canvas: tuple[int, int] | None = None,
        layer_id: str = "?",
    ) -> None:
        """Args: the file; the box in output pixels; ``fit``; ``trim`` (source seconds skipped);
        ``loop``; ``scale`` output/template (fit ``none``); ``canvas`` size, to tell whether the
        video exactly covers the frame (then ``yuv_capable``).

        Raises:
            UnsupportedMedia: the file cannot be opened or has no video stream.
        """
        self._path = path
        self._layer_id = layer_id
        try:
            self._container = av.open(str(path))
        except (av.error.FFmpegError, OSError) as exc:
            raise UnsupportedMedia(
                f"layer '{layer_id}': cannot open video {path.name}: {exc}"
            ) from exc
        if not self._container.streams.video:
            self._container.close()
            raise UnsupportedMedia(f"layer '{layer_id}': {path.name} has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"  # frame + slice threads; the decoder releases the GIL
        tb = self._stream.time_base
        self._time_base = Fraction(tb) if tb is not None else Fraction(1, 90000)
        start = self._stream.start_time
        self._start_s = float(start * self._time_base) if start is not None else 0.0
        self.duration_s = self._probe_duration()
        ctx = self._stream.codec_context
        if not ctx.width or not ctx.height:
            self._container.close()
            raise UnsupportedMedia(f"layer '{layer_id}': {path.name} has no frame size")
        self.orientation = self._read_orientation()
        src_w, src_h = orient.displayed_size(ctx.width, ctx.height, self.orientation)
        self._fit: FitPlan = plan_fit(src_w, src_h, box_w, box_h, fit, scale)
        self.width, self.height = self._fit.out_w, self._fit.out_h
        self.trim = trim
        self.loop = loop
        self.yuv_capable = canvas is not None and (self.width, self.height) == canvas
        self._frames: Iterator[Any] | None = None
        self._cur: Any = None
        self._cur_t = -math.inf
        self._next: Any = None
        self._eof = False
        self._converted: tuple[int, FrameMode, Any] | None = None
        self._timings = {"decode": 0.0, "convert": 0.0, "wait": 0.0}
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue[tuple[float, Any] | BaseException | None] | None = None
        self._stop = threading.Event()
        self._closed = False

    def _read_orientation(self) -> int:
        """The display orientation, from the first frame's display-matrix side data (the
        container's matrix, which FFmpeg copies onto frames). Decoding stays where it was: the
        first real request seeks back to its time."""
        try:
            first = next(iter(self._container.decode(self._stream)), None)
        except av.error.FFmpegError:
            return orient.UPRIGHT  # the frame requests report the decode error with context
        if first is None:
            return orient.UPRIGHT
        return orient.video_orientation(first, self._stream)

    # --- time mapping ---------------------------------------------------------------------

    def _probe_duration(self) -> float:
        s = self._stream
        if s.duration is not None:
            return float(s.duration * self._time_base)
        if self._container.duration is not None:
            return float(self._container.duration / av.time_base) - self._start_s
        if s.frames and s.average_rate:
            return float(s.frames / s.average_rate)
        return 0.0

    def source_time(self, t_s: float) -> float:
        """Source seconds (from the file's first frame) shown at layer time ``t_s``."""
        local = max(0.0, t_s)
        span = self.duration_s - self.trim
        if self.loop and span > 0:
            local = math.fmod(local, span)
            # fmod can land a hair below span through rounding; treat that as the wrap.
            if span - local < _EPS_S:
                local = 0.0
        elif self.duration_s > 0:
            # Past the end the last frame holds; clamping keeps that from looking like a jump
            # ahead (which would seek).
            return min(self.trim + local, self.duration_s)
        return self.trim + local

    # --- decoding -------------------------------------------------------------------------

    def _restart(self, target_s: float) -> None:
        offset = int((target_s + self._start_s) / self._time_base)
        try:
            self._container.seek(max(0, offset), stream=self._stream, backward=True)
        except av.error.FFmpegError as exc:
            raise UnsupportedMedia(
                f"layer '{self._layer_id}': cannot seek in {self._path.name}: {exc}"
            ) from exc
        self._frames = self._container.decode(self._stream)
        self._cur, self._cur_t, self._next, self._eof = None, -math.inf, None, False

    def _pull(self) -> Any:
        if self._eof or self._frames is None:
            return None
        t0 = time.perf_counter()
        try:
            frame = next(self._frames)
        except StopIteration:
            self._eof = True
            frame = None
        except av.error.FFmpegError as exc:
            raise UnsupportedMedia(
                f"layer '{self._layer_id}': cannot decode {self._path.name}: {exc}"
            ) from exc
        finally:
            self._timings["decode"] += time.perf_counter() - t0
        return frame

    def _frame_time(self, frame: Any) -> float:
        if frame.pts is None:
            return self._cur_t + 1e-3
        return float(frame.pts * self._time_base) - self._start_s

    def _decoded_at(self, s: float) -> Any:
        """The decoded frame on screen at source time ``s`` (seconds from the first frame)."""
        holding = self._eof and self._cur is not None and s >= self._cur_t - _EPS_S
        if not holding and (
            self._frames is None or s < self._cur_t - _EPS_S or s - self._cur_t > _SEEK_AHEAD_S
        ):
            self._restart(s)
        while True:
            if self._next is None:
                self._next = self._pull()
                if self._next is None:
                    break
            next_t = self._frame_time(self._next)
            if self._cur is not None and next_t > s + _EPS_S:
                break
            # The first frame after a (re)start is taken even if it is due after s: before the
            # first frame we show the first frame.
            self._cur, self._cur_t, self._next = self._next, next_t, None
            if next_t > s + _EPS_S:
                break
        if self._cur is None:
            raise UnsupportedMedia(
                f"layer '{self._layer_id}': {self._path.name} has no decodable frames"
            )
        return self._cur

    # --- conversion -----------------------------------------------------------------------

    @staticmethod
    def _is_bt709(frame: Any) -> bool:
        # Untagged video follows the players' convention: BT.709 from 720 lines up (HD),
        # BT.601 below (SD; also what PyAV and swscale produce from RGB by default).
        colorspace = int(frame.colorspace)
        return colorspace == _BT709 or (
            colorspace == _UNSPECIFIED_COLORSPACE and frame.height >= _HD_LINES
        )

    def _colour_args(self, frame: Any) -> dict[str, Any]:
        if int(frame.colorspace) == _UNSPECIFIED_COLORSPACE:
            return {"src_colorspace": "ITU709" if self._is_bt709(frame) else "ITU601"}
        return {}

    def _planes_usable(self, frame: Any) -> bool:
        # Naming a destination colourspace makes swscale convert even when nothing changes
        # (about 14 ms a 1080p frame), so hand over decoded 8-bit 4:2:0 BT.709 (tagged or HD)
        # limited-range frames of the right size untouched.
        fp = self._fit
        return bool(
            self.orientation == orient.UPRIGHT
            and frame.format.name == "yuv420p"
            and (frame.width, frame.height) == (fp.scaled_w, fp.scaled_h)
            and self._is_bt709(frame)
            and int(frame.color_range) in _LIMITED_OR_UNTAGGED
        )

    def _convert(self, frame: Any, mode: FrameMode) -> Any:
        key = (id(frame), mode)
        if self._converted is not None and self._converted[:2] == key:
            return self._converted[2]
        t0 = time.perf_counter()
        fp = self._fit
        crop = (fp.crop_x, fp.crop_y, fp.out_w, fp.out_h) != (0, 0, fp.scaled_w, fp.scaled_h)
        turn = self.orientation
        # Scale at the stored shape; the turn then brings it to scaled_w x scaled_h.
        dec_w, dec_h = orient.displayed_size(fp.scaled_w, fp.scaled_h, turn)
        result: Any
        if mode == "yuv":
            if self._planes_usable(frame):
                out = frame  # the decoder's planes are already what the encoder wants
            else:
                out = frame.reformat(
                    width=dec_w,
                    height=dec_h,
                    format="yuv420p",
                    dst_colorspace="ITU709",
                    dst_color_range="MPEG",
                    interpolation=_YUV_SCALING,
                    **self._colour_args(frame),
                )
            y = orient.apply(_plane_array(out.planes[0], dec_w, dec_h), turn)
            u = orient.apply(_plane_array(out.planes[1], dec_w // 2, dec_h // 2), turn)
            v = orient.apply(_plane_array(out.planes[2], dec_w // 2, dec_h // 2), turn)
            if crop:
                # Even offsets keep the chroma grid aligned with the luma crop.
                cx, cy = fp.crop_x & ~1, fp.crop_y & ~1
                y = y[cy : cy + fp.out_h, cx : cx + fp.out_w]
                u = u[cy // 2 : (cy + fp.out_h) // 2, cx // 2 : (cx + fp.out_w) // 2]
                v = v[cy // 2 : (cy + fp.out_h) // 2, cx // 2 : (cx + fp.out_w) // 2]
            result = (y, u, v, out)  # keep the frame alive while its planes are viewed
        else:
            out = frame.reformat(
                width=dec_w,
                height=dec_h,
                format="rgba",
                interpolation=_RGB_SCALING,
                **self._colour_args(frame),
            )
            arr = orient.apply(out.to_ndarray(), turn)
            if crop:
                arr = arr[fp.crop_y : fp.crop_y + fp.out_h, fp.crop_x : fp.crop_x + fp.out_w]
            arr.flags.writeable = False
            result = arr
        self._timings["convert"] += time.perf_counter() - t0
        # Hold the source frame too, so its id cannot be reused by a later frame.
        self._converted = (key[0], mode, result)
        self._converted_frame = frame
        return result

    def _produce(self, t_s: float, mode: FrameMode) -> Any:
        return self._convert(self._decoded_at(self.source_time(t_s)), mode)

    # --- public API -----------------------------------------------------------------------

    def schedule(self, times: Sequence[float], mode: FrameMode) -> None:
        """Decode and convert ``times`` (layer seconds, in the order they will be asked for)
        ahead on a background thread. Later ``frame``/``frame_yuv`` calls must ask for exactly
        these times in this order."""
        if self._thread is not None:
            raise RuntimeError("VideoSource.schedule called twice")
        q: queue.Queue[tuple[float, Any] | BaseException | None] = queue.Queue(_PREFETCH_DEPTH)
        self._queue = q
        plan = list(times)

        def put(item: tuple[float, Any] | BaseException | None) -> bool:
            while not self._stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def run() -> None:
            try:
                for t in plan:
                    if not put((t, self._produce(t, mode))):
                        return
                put(None)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                put(exc)

        self._thread = threading.Thread(target=run, name=f"decode-{self._layer_id}", daemon=True)
        self._thread.start()

    def _take(self, t_s: float, mode: FrameMode) -> Any:
        if self._queue is None:
            return self._produce(t_s, mode)
        t0 = time.perf_counter()
        item = self._queue.get()
        self._timings["wait"] += time.perf_counter() - t0
        if isinstance(item, BaseException):
            self._queue = None
            raise item
        if item is None or abs(item[0] - t_s) > 1e-9:
            raise RuntimeError(f"layer '{self._layer_id}': asked for t={t_s} out of its schedule")
        return item[1]

    def frame(self, t_s: float) -> Rgba | None:
        result: Rgba = self._take(t_s, "rgba")
        return result

    def frame_yuv(self, t_s: float) -> Planes | None:
        y, u, v, _ = self._take(t_s, "yuv")
        return y, u, v

    def timings(self) -> dict[str, float]:
        return dict(self._timings)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._converted = None
        self._cur = self._next = None
        self._container.close()


def open_video(layer: Layer, ctx: SourceContext) -> VideoSource:
    assert isinstance(layer, VideoLayer)
    return VideoSource(
        ctx.loaded.path(layer.src),
        ctx.box_w,
        ctx.box_h,
        fit=layer.fit,
        trim=layer.trim,
        loop=layer.loop,
        scale=ctx.scale,
        canvas=(ctx.canvas_w, ctx.canvas_h),
        layer_id=layer.id,
    )
