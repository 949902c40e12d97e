"""The one place that drives PyAV's video encoders (CONVENTIONS 4).

``VideoEncoder`` writes a video-only MP4 from yuv420p frames that the caller fills in place
(:func:`plane_arrays` gives writable numpy views without copies); ``renderer.encode.mux`` adds the
audio afterwards. Timestamps come from the frame index and the output rate, never the clock.

The SPEC §6 mapping lives in :func:`encoder_options`; each output setting is observable with
ffprobe (codec, profile, level, keyframe interval, bitrate, rate, size, duration).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Literal

import av
import numpy as np
from av.container import OutputContainer
from av.video.stream import VideoStream

from renderer.encode.config import (
    PROFILES,
    VBR_PEAK,
    Codec,
    EncoderConfig,
    RateControl,
    level_name,
)
from renderer.errors import (
    EncoderUnavailable,
    InvalidEncoderConfig,
    OutputTooLarge,
    RenderCancelled,
)

EncoderPreference = Literal["auto", "software", "nvenc"]

log = logging.getLogger(__name__)

SOFTWARE_ENCODERS: dict[Codec, str] = {
    Codec.H264: "libx264",
    Codec.H265: "libx265",
    Codec.AV1: "libsvtav1",
}
NVENC_ENCODERS: dict[Codec, str] = {
    Codec.H264: "h264_nvenc",
    Codec.H265: "hevc_nvenc",
    Codec.AV1: "av1_nvenc",
}

X26X_PRESETS = ("slower", "slow", "medium", "fast", "veryfast", "ultrafast")
SVT_PRESETS = (4, 6, 8, 10, 11, 12)
NVENC_PRESETS = ("p7", "p6", "p5", "p4", "p3", "p2")

# Buffers hold this many seconds at the target rate (VBR peaks at VBR_PEAK × the target).
CBR_BUFFER_S = 1.0
VBR_BUFFER_S = 2.0

# NVENC refuses tiny frames; the probe uses a size every generation accepts.
_PROBE_SIZE = (256, 144)


class _RefusedToOpen(Exception):
    """The codec would not open with these settings (internal: mapped by the caller)."""


@dataclass(frozen=True)
class EncoderInfo:
    """Which encoder ran: its FFmpeg name, whether it is hardware, frames written so far and
    the options it was opened with (for the render report and for debugging)."""

    name: str
    hardware: bool
    frames: int
    options: dict[str, str] = field(default_factory=dict)


def plane_arrays(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Writable ``uint8`` views ``(Y, U, V)`` of a yuv420p ``frame`` without copying: Y is
    ``(h, w)``, U and V ``(h/2, w/2)``. Each row's padding (``line_size > width``) is cut off
    by the view, so write whole planes freely.

    Raises:
        ValueError: ``frame`` is not yuv420p.
    """
    if frame.format.name != "yuv420p":
        raise ValueError(f"plane_arrays needs a yuv420p frame, got {frame.format.name}")
    views: list[np.ndarray] = []
    for index, plane in enumerate(frame.planes):
        w = frame.width if index == 0 else (frame.width + 1) // 2
        h = frame.height if index == 0 else (frame.height + 1) // 2
        flat = np.frombuffer(memoryview(plane), dtype=np.uint8)
        views.append(flat[: h * plane.line_size].reshape(h, plane.line_size)[:, :w])
    y, u, v = views
    return y, u, v


def encoder_options(
    config: EncoderConfig, width: int, height: int, fps: Fraction, *, nvenc: bool
) -> dict[str, str]:
    """The FFmpeg options (``avcodec_open2`` dictionary) that realise ``config`` for the
    software or NVENC encoder of ``config.codec`` at the given output size and rate."""
    codec = config.codec
    rc = config.rate_control
    bitrate = config.effective_bitrate(width, height, fps)
    gop = config.effective_gop(fps)
    opts: dict[str, str] = {"g": str(gop)}

    if rc == RateControl.CBR:
        opts |= {
            "b": str(bitrate),
            "maxrate": str(bitrate),
            "minrate": str(bitrate),
            "bufsize": str(int(bitrate * CBR_BUFFER_S)),
        }
    elif rc == RateControl.VBR:
        opts |= {
            "b": str(bitrate),
            "maxrate": str(int(bitrate * VBR_PEAK)),
            "bufsize": str(int(bitrate * VBR_BUFFER_S)),
        }

    if nvenc:
        opts |= _nvenc_options(config, rc, gop)
    elif codec == Codec.H264:
        opts |= _x264_options(config, rc, gop)
    elif codec == Codec.H265:
        opts |= _x265_options(config, rc, gop)
    else:
        opts |= _svt_options(config, rc, gop)
        if rc == RateControl.VBR:
            del opts["maxrate"]
    return opts


def _x264_options(config: EncoderConfig, rc: RateControl, gop: int) -> dict[str, str]:
    # Fixed keyframe spacing (no scene cuts) so every `gop` frames is an IDR frame and chunks
    # can start on any multiple of it; `idr` is then honoured because it is a multiple.
    params = ["scenecut=0", "open-gop=0"]
    opts = {
        "preset": X26X_PRESETS[config.preset],
        # x264 caps the minimum at keyint/2 + 1; scene cuts are off, so it never applies.
        "keyint_min": str(min(gop, gop // 2 + 1)),
        "forced-idr": "1",
        "flags": "+cgop",
    }
    if rc == RateControl.CBR:
        opts["nal-hrd"] = "cbr"
        params.append("filler=1")
    elif rc == RateControl.VBR:
        opts["nal-hrd"] = "vbr"
    elif rc == RateControl.CQP:
        opts["qp"] = str(config.effective_qp)
    else:
        opts["crf"] = str(config.effective_crf)
    if config.profile is not None:
        opts["profile"] = PROFILES[config.codec][config.profile]
    if config.level is not None:
        opts["level"] = level_name(config.level)
    opts["x264-params"] = ":".join(params)
    return opts


def _x265_options(config: EncoderConfig, rc: RateControl, gop: int) -> dict[str, str]:
    params = [
        f"keyint={gop}",
        f"min-keyint={gop}",
        "scenecut=0",
        "open-gop=0",
        "log-level=error",
    ]
    opts = {"preset": X26X_PRESETS[config.preset], "keyint_min": str(gop), "forced-idr": "1"}
    if rc == RateControl.CBR:
        params += ["strict-cbr=1", "hrd=1"]
    elif rc == RateControl.VBR:
        params.append("hrd=1")
    elif rc == RateControl.CQP:
        opts["qp"] = str(config.effective_qp)
    else:
        opts["crf"] = str(config.effective_crf)
    if config.profile is not None:
        opts["profile"] = PROFILES[config.codec][config.profile]
    if config.level is not None:
        params.append(f"level-idc={level_name(config.level)}")
    opts["x265-params"] = ":".join(params)
    return opts


def _svt_options(config: EncoderConfig, rc: RateControl, gop: int) -> dict[str, str]:
    # irefresh-type 2 makes every keyframe a closed-GOP key frame (AV1's IDR); scene-change
    # detection off keeps the spacing fixed.
    params = ["irefresh-type=2", "scd=0"]
    opts = {"preset": str(SVT_PRESETS[config.preset])}
    if rc == RateControl.CBR:
        params += ["rc=2", "pred-struct=1"]
    elif rc == RateControl.VBR:
        # SVT refuses a max bitrate outside CRF; its overshoot bound caps peaks at VBR_PEAK×.
        params += ["rc=1", f"overshoot-pct={round((VBR_PEAK - 1) * 100)}"]
    elif rc == RateControl.CQP:
        opts["qp"] = str(config.effective_qp)
        params += ["rc=0", "aq-mode=0"]
    else:
        opts["crf"] = str(config.effective_crf)
    if config.profile is not None:
        opts["profile"] = PROFILES[config.codec][config.profile]
    if config.level is not None:
        opts["level"] = level_name(config.level)
    opts["svtav1-params"] = ":".join(params)
    return opts


def _nvenc_options(config: EncoderConfig, rc: RateControl, gop: int) -> dict[str, str]:
    opts = {
        "preset": NVENC_PRESETS[config.preset],
        "forced-idr": "1",
        "strict_gop": "1",
        "no-scenecut": "1",
    }
    if rc == RateControl.CBR:
        opts["rc"] = "cbr"
    elif rc == RateControl.VBR:
        opts["rc"] = "vbr"
    elif rc == RateControl.CQP:
        opts["rc"] = "constqp"
        opts["qp"] = str(config.effective_qp)
    else:
        # NVENC's constant quality is VBR with a quality target and no bitrate cap.
        opts |= {"rc": "vbr", "cq": str(config.effective_crf), "b": "0"}
    if config.profile is not None:
        opts["profile"] = PROFILES[config.codec][config.profile]
    if config.level is not None:
        opts["level"] = level_name(config.level)
    return opts


_BT709 = 1  # AVCOL_PRI_BT709 = AVCOL_TRC_BT709 = AVCOL_SPC_BT709
_LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG


@functools.cache
def nvenc_opens(codec_name: str) -> bool:
    """Whether ``codec_name`` (an NVENC encoder) opens on this machine; probed once per
    process, because a failed open costs CUDA initialisation time on every try."""
    try:
        ctx = av.CodecContext.create(codec_name, "w")
        assert isinstance(ctx, av.VideoCodecContext)
        ctx.width, ctx.height = _PROBE_SIZE
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 30)
        ctx.framerate = Fraction(30)
        ctx.open()
    except (av.FFmpegError, ValueError, OSError) as exc:
        log.info("%s is unavailable: %s", codec_name, exc)
        return False
    return True


def available_encoders() -> dict[str, bool]:
    """Every encoder name Velocity may use, mapped to whether it opens here (for /health)."""
    result: dict[str, bool] = {}
    for name in SOFTWARE_ENCODERS.values():
        result[name] = name in av.codecs_available
    for name in NVENC_ENCODERS.values():
        result[name] = name in av.codecs_available and nvenc_opens(name)
    return result


class VideoEncoder:
    """Encode yuv420p frames into a video-only MP4 at ``path``.

    Args:
        path: output file (the caller owns it: nothing is deleted here, even on errors).
        width, height: output size in pixels (even).
        fps: output frame rate; frame ``i`` gets pts ``i`` in time base ``1/fps``.
        config: a validated :class:`EncoderConfig`.
        preference: ``auto`` tries NVENC and falls back to software; ``software`` never tries
            NVENC; ``nvenc`` insists on it.
        max_bytes: the most bytes of packets the file may hold; :meth:`encode` and
            :meth:`close` raise ``OutputTooLarge`` as soon as one more packet would pass it
            (None: no limit). The caller owns the file and removes it.

    Raises:
        EncoderUnavailable: ``preference='nvenc'`` and NVENC cannot be opened, or the software
            encoder is missing from this PyAV build.
        InvalidEncoderConfig: the size, rate or level do not fit together, or the encoder
            refuses the options.

    Use as a context manager; ``close()`` flushes the encoder and finishes the file. Frames
    from :meth:`new_frame` are fresh each time: fill one, pass it to :meth:`encode`, and do not
    touch it afterwards (the encoder may still hold a reference).
    """

    def __init__(  # noqa: PLR0917 - the positional signature is the renderer's contract
        self,
        path: Path,
        width: int,
        height: int,
        fps: Fraction,
        config: EncoderConfig,
        preference: EncoderPreference = "auto",
        *,
        max_bytes: int | None = None,
    ) -> None:
        config.validate_combination(width, height, fps)
        self.max_bytes = max_bytes
        self.bytes_written = 0
        self.path = Path(path)
        self.width = width
        self.height = height
        self.fps = Fraction(fps)
        self.config = config
        self._time_base = 1 / self.fps
        self._frames = 0
        self._closed = False
        self._opened_options: dict[str, str] = {}
        self._container, self._stream, self._name, self._hardware = self._open_stream(preference)
        self._options = dict(self._opened_options)

    # --- opening ------------------------------------------------------------------------

    def _open_stream(
        self, preference: EncoderPreference
    ) -> tuple[OutputContainer, VideoStream, str, bool]:
        codec = self.config.codec
        if preference != "software":
            name = NVENC_ENCODERS[codec]
            if name in av.codecs_available and nvenc_opens(name):
                try:
                    return *self._try_open(name, hardware=True), name, True
                except _RefusedToOpen as exc:
                    if preference == "nvenc":
                        raise EncoderUnavailable(
                            f"{name} (NVENC) was found but refused to open for "
                            f"{self.width}x{self.height}: {exc}"
                        ) from exc
                    log.warning("%s failed to open, using software: %s", name, exc)
            elif preference == "nvenc":
                raise EncoderUnavailable(
                    f"encoder=nvenc was requested but {name} cannot be opened on this machine "
                    f"(no NVIDIA GPU with NVENC, or its driver is missing); use encoder=auto "
                    f"to fall back to software"
                )
        name = SOFTWARE_ENCODERS[codec]
        if name not in av.codecs_available:
            raise EncoderUnavailable(f"this PyAV build has no {name} encoder")
        try:
            return *self._try_open(name, hardware=False), name, False
        except _RefusedToOpen as exc:
            raise InvalidEncoderConfig(
                f"{name} refused the encoder settings for {self.width}x{self.height} at "
                f"{float(self.fps):.3f} fps: {exc}"
            ) from exc

    def _try_open(self, name: str, *, hardware: bool) -> tuple[OutputContainer, VideoStream]:
        # A stream cannot be removed from a container once added, so each attempt (NVENC,
        # then software) gets its own container; the file is truncated on each open.
        # Failing to create the file is not the encoder's refusal: let that error through.
        if name == "libsvtav1":
            # SVT-AV1 writes a ~20-line banner to stderr at its default log level (info),
            # burying the one error line of `velocity render`; keep its errors only.
            os.environ.setdefault("SVT_LOG", "1")
        container = av.open(str(self.path), "w", format="mp4")
        try:
            stream = self._add_stream(container, name, hardware=hardware)
        except (av.FFmpegError, ValueError) as exc:
            container.close()
            raise _RefusedToOpen(str(exc)) from exc
        except BaseException:
            container.close()
            raise
        try:
            # Write the header now so an unwritable path fails here, not at the first frame.
            container.start_encoding()
        except BaseException:
            container.close()
            raise
        return container, stream

    def _add_stream(self, container: OutputContainer, name: str, *, hardware: bool) -> VideoStream:
        options = encoder_options(self.config, self.width, self.height, self.fps, nvenc=hardware)
        stream = container.add_stream(name, rate=self.fps, options=dict(options))
        if not isinstance(stream, VideoStream):  # pragma: no cover - names are video codecs
            raise TypeError(f"{name} is not a video encoder")
        ctx = stream.codec_context
        ctx.width = self.width
        ctx.height = self.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = self._time_base
        # The compositor writes BT.709 limited-range YUV; say so in the stream, or players
        # (and ffmpeg) assume BT.601 for untagged video and shift saturated colours.
        ctx.color_primaries = _BT709
        ctx.color_trc = _BT709
        ctx.colorspace = _BT709
        ctx.color_range = _LIMITED_RANGE
        if not hardware:
            # Frame threads let encode() hand the frame over and return; PyAV's default
            # slice threading makes each call wait for the whole frame to be encoded. A
            # thread count of 0 lets the encoder size its pool (x264: 1.5 × cores).
            ctx.thread_type = "FRAME"
            ctx.thread_count = 0
        # Open now, not lazily at the first frame, so a refusal surfaces here and 'auto' can
        # fall back before any frame has been drawn.
        ctx.open()
        unused = dict(ctx.options)
        if unused:
            log.warning("%s ignored options %s", name, unused)
        self._opened_options = {k: v for k, v in options.items() if k not in unused}
        if not hardware:
            self._opened_options |= {"thread_type": "FRAME", "threads": "auto"}
        return stream

    # --- frames -------------------------------------------------------------------------

    def new_frame(self) -> av.VideoFrame:
        """A fresh yuv420p frame of the output size (contents undefined: fill every plane)."""
        return av.VideoFrame(self.width, self.height, "yuv420p")

    def encode(self, frame: av.VideoFrame) -> None:
        """Encode the next frame; its pts is the running frame index in time base 1/fps.

        Raises:
            ValueError: the encoder is closed or the frame has the wrong size or format.
        """
        if self._closed:
            raise ValueError(f"encoder for {self.path.name} is closed")
        if (frame.width, frame.height) != (self.width, self.height):
            raise ValueError(
                f"frame is {frame.width}x{frame.height}, encoder expects {self.width}x{self.height}"
            )
        frame.pts = self._frames
        frame.time_base = self._time_base
        frame.duration = 1
        for packet in self._stream.encode(frame):
            self._mux(packet)
        self._frames += 1

    def _mux(self, packet: av.Packet[VideoStream]) -> None:
        # Checked before the packet is written: the file never holds more than max_bytes
        # of packets (the container's index adds a few bytes per frame at close).
        size = packet.size
        if self.max_bytes is not None and self.bytes_written + size > self.max_bytes:
            raise OutputTooLarge(
                f"the video passed its size limit of {self.max_bytes} bytes after "
                f"{self._frames} frames",
                limit=self.max_bytes,
                written=self.bytes_written + size,
            )
        self._container.mux(packet)
        self.bytes_written += size

    def close(self) -> None:
        """Flush the encoder and finish the file. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._frames:
                for packet in self._stream.encode(None):
                    self._mux(packet)
        finally:
            self._container.close()

    @property
    def info(self) -> EncoderInfo:
        """The encoder that runs, whether it is hardware, frames encoded and its options."""
        return EncoderInfo(self._name, self._hardware, self._frames, dict(self._options))

    def __enter__(self) -> VideoEncoder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        if issubclass(exc_type, (RenderCancelled, OutputTooLarge)):
            # The output is thrown away: flushing x264's lookahead (tens of frames at slow
            # presets) would only delay the cancellation the user is waiting for.
            self._closed = True
            try:
                self._container.close()
            except (av.FFmpegError, ValueError, OSError) as close_exc:
                log.warning("closing %s after cancelling failed: %s", self.path.name, close_exc)
            return
        # Keep the original error: a failing flush after a failed frame would hide it.
        try:
            self.close()
        except (av.FFmpegError, ValueError, OSError) as close_exc:
            log.warning("closing %s after an error failed: %s", self.path.name, close_exc)
