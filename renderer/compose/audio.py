"""The audio mix (SPEC §4 ``audio``): template tracks, video layers' own sound and the
render's extra track, mixed to AAC 48 kHz stereo and cut to the video's length.

The mix streams in blocks of a few seconds, so a two-hour composition never holds its whole
soundtrack in memory: each clip keeps its decoder open and reads forward, with just enough
look-ahead to place a fade-out before a source that runs out on its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from renderer.errors import RenderCancelled, UnsupportedMedia
from renderer.template.model import LoadedTemplate, VideoLayer

SAMPLE_RATE = 48_000
CHANNELS = 2
AAC_FRAME = 1024
AAC_BITRATE = 192_000
_BLOCK = SAMPLE_RATE * 5  # samples mixed at a time

Samples = np.ndarray  # float32, shape (2, n)


@dataclass(frozen=True)
class AudioClip:
    """One sound placed on the composition timeline.

    ``start_s`` is where it begins; ``trim_s`` seconds of the source are skipped; ``volume`` is
    a linear gain; fades are linear ramps from/to silence over the clip's first/last seconds;
    ``loop`` repeats the source from ``trim_s`` to its end; ``end_s`` (timeline seconds) stops
    it, e.g. at a video layer's ``out``. ``label`` names the clip in error messages.
    """

    path: Path
    start_s: float
    trim_s: float = 0
    volume: float = 1
    fade_in_s: float = 0
    fade_out_s: float = 0
    loop: bool = False
    end_s: float | None = None
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.path.name


def collect_clips(loaded: LoadedTemplate, extra_audio: Path | None = None) -> list[AudioClip]:
    """Every sound of a (customised) template, in mix order.

    Args:
        loaded: the template, with customisations already applied (replacement ``src``,
            ``visible``).
        extra_audio: the render's own track (the API's ``audioId``): it replaces the first
            track marked ``replaceable`` — keeping that track's start, volume, fades and loop
            but not its trim — or is added from frame 0 when none is.

    Raises:
        UnsupportedMedia: a video layer's file cannot be opened to look for sound.
    """
    tpl = loaded.template
    fps = tpl.fps_fraction
    end = float(Fraction(tpl.frames) / fps)

    def seconds(frames: int) -> float:
        return float(Fraction(frames) / fps)

    clips: list[AudioClip] = []
    replaced = False
    for index, track in enumerate(tpl.audio):
        name = f"audio track '{track.id}'" if track.id else f"audio track #{index + 1}"
        path, trim, label = loaded.path(track.src), track.trim, f"{track.src} ({name})"
        if track.replaceable and extra_audio is not None and not replaced:
            replaced = True
            path, trim = extra_audio, 0.0
            label = f"the render's audio {extra_audio.name} (replacing {name})"
        clips.append(
            AudioClip(
                path=path,
                start_s=seconds(track.start),
                trim_s=trim,
                volume=track.volume,
                fade_in_s=seconds(track.fade_in),
                fade_out_s=seconds(track.fade_out),
                loop=track.loop,
                end_s=end,
                label=label,
            )
        )
    if extra_audio is not None and not replaced:
        clips.append(
            AudioClip(extra_audio, 0.0, end_s=end, label=f"the render's audio {extra_audio.name}")
        )
    for layer in tpl.layers:
        if not isinstance(layer, VideoLayer) or not layer.visible or layer.volume <= 0:
            continue
        path = loaded.path(layer.src)
        if not _has_audio(path, f"{layer.src} (layer '{layer.id}')"):
            continue
        clips.append(
            AudioClip(
                path=path,
                start_s=seconds(layer.in_),
                trim_s=layer.trim,
                volume=layer.volume,
                loop=layer.loop,
                end_s=seconds(min(layer.out or tpl.frames, tpl.frames)),
                label=f"{layer.src} (sound of layer '{layer.id}')",
            )
        )
    return clips


def _has_audio(path: Path, label: str) -> bool:
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except (av.FFmpegError, OSError) as exc:
        raise UnsupportedMedia(f"{label}: cannot be opened to read its sound: {exc}") from exc


def mix_to_file(
    clips: list[AudioClip],
    start_s: float,
    duration_s: float,
    out: Path,
    should_cancel: Callable[[], bool] | None = None,
) -> bool:
    """Mix ``clips`` over the timeline window ``[start_s, start_s + duration_s)`` and encode
    it as AAC 48 kHz stereo into ``out`` (an ``.m4a``/MP4 file).

    Args:
        clips: from :func:`collect_clips`; silent ones (volume 0) are skipped.
        start_s: window start on the composition timeline (0 for a whole render).
        duration_s: window length; the output holds exactly this many seconds of samples
            (rounded to a sample), padded with silence where no clip plays.
        out: the file to write (the caller owns it, also on errors).
        should_cancel: polled between blocks of samples; True stops the mix.

    Returns:
        False, writing nothing, when no audible clip is given; True otherwise.

    Raises:
        UnsupportedMedia: a clip's file cannot be opened or decoded (named in the message).
        RenderCancelled: ``should_cancel`` answered True.
    """
    audible = [c for c in clips if c.volume > 0]
    total = round(duration_s * SAMPLE_RATE)
    if not audible or total <= 0:
        return False
    first = round(start_s * SAMPLE_RATE)
    streams = [_ClipStream(clip, first) for clip in audible]
    fmt = "ipod" if Path(out).suffix.lower() == ".m4a" else "mp4"
    try:
        with av.open(str(out), "w", format=fmt) as container:
            stream = container.add_stream("aac", rate=SAMPLE_RATE)
            stream.bit_rate = AAC_BITRATE
            stream.layout = "stereo"
            time_base = Fraction(1, SAMPLE_RATE)
            for block_start in range(0, total, _BLOCK):
                if should_cancel is not None and should_cancel():
                    raise RenderCancelled("audio mix cancelled")
                size = min(_BLOCK, total - block_start)
                mix = np.zeros((CHANNELS, size), np.float32)
                for clip_stream in streams:
                    part = clip_stream.render(size)
                    if part is not None:
                        mix += part
                np.clip(mix, -1.0, 1.0, out=mix)
                for offset in range(0, size, AAC_FRAME):
                    chunk = np.ascontiguousarray(mix[:, offset : offset + AAC_FRAME])
                    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                    frame.sample_rate = SAMPLE_RATE
                    frame.pts = block_start + offset
                    frame.time_base = time_base
                    container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
    finally:
        for clip_stream in streams:
            clip_stream.close()
    return True


class _Source:
    """A file's first audio stream as 48 kHz stereo float samples, read forward from
    ``skip`` samples in. Mono is copied to both channels at full level (dual mono); more
    channels are downmixed by FFmpeg."""

    def __init__(self, path: Path, label: str, skip: int) -> None:
        self._label = label
        self._skip = skip
        self._pending: deque[Samples] = deque()
        self._pending_len = 0
        self._eof = False
        try:
            self._container = av.open(str(path))
        except (av.FFmpegError, OSError) as exc:
            raise UnsupportedMedia(f"{label}: cannot be opened as audio: {exc}") from exc
        if not self._container.streams.audio:
            self._container.close()
            raise UnsupportedMedia(f"{label}: has no audio stream")
        stream = self._container.streams.audio[0]
        self._mono = stream.codec_context.layout.nb_channels == 1
        self._resampler = av.AudioResampler(
            format="fltp", layout="mono" if self._mono else "stereo", rate=SAMPLE_RATE
        )
        self._frames: Iterator[av.AudioFrame] = self._container.decode(stream)

    def _pull(self) -> None:
        try:
            frame = next(self._frames, None)
            resampled = self._resampler.resample(frame)
        except av.FFmpegError as exc:
            raise UnsupportedMedia(f"{self._label}: audio does not decode: {exc}") from exc
        for out in resampled:
            data = out.to_ndarray().astype(np.float32, copy=False)
            if self._mono:
                data = np.repeat(data, CHANNELS, axis=0)
            if self._skip:
                cut = min(self._skip, data.shape[1])
                self._skip -= cut
                data = data[:, cut:]
            if data.shape[1]:
                self._pending.append(data)
                self._pending_len += data.shape[1]
        if frame is None:
            self._eof = True

    def read(self, n: int) -> Samples:
        """Up to ``n`` samples; fewer means the source has ended."""
        while self._pending_len < n and not self._eof:
            self._pull()
        parts: list[Samples] = []
        got = 0
        while self._pending and got < n:
            head = self._pending.popleft()
            take = min(n - got, head.shape[1])
            parts.append(head[:, :take])
            if take < head.shape[1]:
                self._pending.appendleft(head[:, take:])
            got += take
        self._pending_len -= got
        if not parts:
            return np.zeros((CHANNELS, 0), np.float32)
        return np.concatenate(parts, axis=1)

    def close(self) -> None:
        self._container.close()


class _ClipStream:
    """One clip's contribution to successive output blocks (timeline in samples)."""

    def __init__(self, clip: AudioClip, position: int) -> None:
        self.clip = clip
        self.pos = position
        self.start = round(clip.start_s * SAMPLE_RATE)
        self.end = None if clip.end_s is None else round(clip.end_s * SAMPLE_RATE)
        self.trim = round(clip.trim_s * SAMPLE_RATE)
        self.fade_in = round(clip.fade_in_s * SAMPLE_RATE)
        self.fade_out = round(clip.fade_out_s * SAMPLE_RATE)
        self.src: _Source | None = None
        # Non-looping clips: samples buffered from clip offset `buf_at`, and where the source
        # ran out (clip offset), once known.
        self.buf = np.zeros((CHANNELS, 0), np.float32)
        self.buf_at = 0
        self.natural_end: int | None = None
        # Looping clips: the loop's length once one pass has been read, the offset within
        # the current pass, and the clip offset of the next sample the source yields.
        self.period: int | None = None
        self.pass_at = 0
        self.next_at = 0

    def close(self) -> None:
        if self.src is not None:
            self.src.close()
            self.src = None

    def _open(self, skip: int) -> _Source:
        self.close()
        self.src = _Source(self.clip.path, self.clip.name, skip)
        return self.src

    def render(self, n: int) -> Samples | None:
        """The next ``n`` output samples of this clip, or None when it is silent there."""
        p0, p1 = self.pos, self.pos + n
        self.pos = p1
        lo = max(p0, self.start)
        hi = p1 if self.end is None else min(p1, self.end)
        if hi <= lo:
            if self.end is not None and p0 >= self.end:
                self.close()
            return None
        a, b = lo - self.start, hi - self.start
        if self.clip.loop:
            samples = self._loop_samples(a, b)
            clip_end = None if self.end is None else self.end - self.start
        else:
            samples = self._plain_samples(a, b)
            clip_end = self.natural_end
            if self.end is not None:
                timeline_end = self.end - self.start
                clip_end = timeline_end if clip_end is None else min(clip_end, timeline_end)
        samples *= self._gains(a, b, clip_end)
        out = np.zeros((CHANNELS, n), np.float32)
        out[:, lo - p0 : hi - p0] = samples
        return out

    def _gains(self, a: int, b: int, clip_end: int | None) -> np.ndarray:
        at = np.arange(a, b, dtype=np.float64)
        gain = np.full(b - a, self.clip.volume, dtype=np.float64)
        if self.fade_in > 0:
            gain *= np.clip(at / self.fade_in, 0.0, 1.0)
        if self.fade_out > 0 and clip_end is not None:
            gain *= np.clip((clip_end - at) / self.fade_out, 0.0, 1.0)
        return gain.astype(np.float32)[np.newaxis, :]

    def _plain_samples(self, a: int, b: int) -> Samples:
        if self.src is None and self.natural_end is None:
            self._open(self.trim + a)
            self.buf_at = a
        # Blocks arrive in order, so everything before `a` is spent.
        self.buf = self.buf[:, a - self.buf_at :]
        self.buf_at = a
        # Look ahead one fade-out so a source that ends soon is faded before it stops.
        want = b + self.fade_out
        if self.end is not None:
            want = min(want, self.end - self.start)
        missing = want - a - self.buf.shape[1]
        if missing > 0 and self.src is not None:
            more = self.src.read(missing)
            self.buf = np.concatenate([self.buf, more], axis=1)
            if more.shape[1] < missing:
                self.natural_end = a + self.buf.shape[1]
                self.close()
        out = np.zeros((CHANNELS, b - a), np.float32)
        have = min(b - a, self.buf.shape[1])
        out[:, :have] = self.buf[:, :have]
        return out

    def _loop_samples(self, a: int, b: int) -> Samples:
        if self.next_at < a:
            self._skip_to(a)
        out = self._read_loop(b - a)
        self.next_at = b
        return out

    def _skip_to(self, target: int) -> None:
        while self.next_at < target:
            if self.period is not None:
                if self.period > 0:
                    self.pass_at = target % self.period
                self.close()
                self.next_at = target
                return
            step = min(target - self.next_at, _BLOCK)
            self._read_loop(step)
            self.next_at += step

    def _read_loop(self, n: int) -> Samples:
        parts: list[Samples] = []
        got = 0
        while got < n:
            if self.period == 0:
                break
            src = self.src or self._open(self.trim + self.pass_at)
            chunk = src.read(n - got)
            parts.append(chunk)
            got += chunk.shape[1]
            self.pass_at += chunk.shape[1]
            if got < n:  # the pass ended: start the next from the trim point
                self.close()
                if self.period is None:
                    self.period = self.pass_at
                self.pass_at = 0
        out = np.zeros((CHANNELS, n), np.float32)
        if parts:
            joined = np.concatenate(parts, axis=1)
            out[:, : joined.shape[1]] = joined
        return out
