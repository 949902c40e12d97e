"""Chunked renders (SPEC §7): split a long range into GOP-aligned chunks, join the chunks'
video without re-encoding, then mix the audio once and mux it.

Each chunk is an independent ``render(..., audio=False)`` of a template frame range. The
encoder writes closed GOPs whose keyframes are IDR frames at a fixed spacing, and every chunk
starts a fresh encoder, so a chunk's first frame is an IDR that references nothing before
it: the chunks' packets can be laid end to end with shifted timestamps. Boundaries fall on
multiples of the GOP (counted in output frames from the start of the range), so the joined
file has its keyframes exactly where a single render would have put them.

The sound is not cut per chunk: AAC frames overlap their neighbours, so joining separately
encoded pieces clicks at every seam. :func:`finalize` mixes the whole range in one pass.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import av
from av.container import OutputContainer
from av.stream import Stream

from renderer.template.model import CustomizationEntry, LoadedTemplate

if TYPE_CHECKING:
    from renderer.encode.config import EncoderConfig
    from renderer.plan import OutputPlan


class ChunkMismatch(ValueError):
    """Chunks that cannot be joined without re-encoding (different codec parameters, or a
    chunk that does not start with a keyframe)."""


def _signature(stream: Stream) -> tuple[object, ...]:
    ctx = stream.codec_context
    extradata = bytes(ctx.extradata) if ctx.extradata else b""
    fmt = getattr(ctx, "format", None)
    return (
        ctx.name,
        getattr(ctx, "width", None),
        getattr(ctx, "height", None),
        fmt.name if fmt is not None else None,
        ctx.profile,
        stream.time_base,
        extradata,
    )


_FIELDS = ("codec", "width", "height", "pixel format", "profile", "time base", "extradata")


def concat_chunks(chunks: Sequence[Path], out_video: Path) -> int:
    """Join video-only MP4 chunks into one video-only MP4 by copying their packets, each
    chunk's timestamps shifted to start where the previous one ended.

    Args:
        chunks: the chunks' files in playback order (each from ``render(..., audio=False)``
            with the same encoder settings).
        out_video: the joined file (written in place; pass a temporary name).

    Returns:
        The number of video packets (frames) written.

    Raises:
        ChunkMismatch: a chunk has no video stream, does not start with a keyframe, or its
            codec, size, pixel format, profile, time base or extradata (SPS/PPS) differ from
            the first chunk's: joining them would need re-encoding.
        ValueError: ``chunks`` is empty.
    """
    if not chunks:
        raise ValueError("concat_chunks needs at least one chunk")
    inputs = [av.open(str(path)) for path in chunks]
    try:
        streams: list[Stream] = []
        for path, container in zip(chunks, inputs, strict=True):
            if not container.streams.video:
                raise ChunkMismatch(f"chunk {Path(path).name} has no video stream")
            streams.append(container.streams.video[0])
        first = _signature(streams[0])
        for path, stream in zip(chunks[1:], streams[1:], strict=True):
            theirs = _signature(stream)
            if theirs != first:
                differ = [n for n, a, b in zip(_FIELDS, first, theirs, strict=True) if a != b]
                raise ChunkMismatch(
                    f"chunk {Path(path).name} differs from {Path(chunks[0]).name} in "
                    f"{', '.join(differ)}; chunks must share one encoder configuration"
                )
        with av.open(str(out_video), "w", format="mp4") as output:
            assert isinstance(output, OutputContainer)
            # opaque: copy the demuxer's codec parameters; nothing is re-encoded here.
            target = output.add_stream_from_template(streams[0], opaque=True)
            offset = 0
            written = 0
            for path, container, stream in zip(chunks, inputs, streams, strict=True):
                base = stream.start_time or 0
                end = base
                seen = False
                for packet in container.demux(stream):
                    if packet.dts is None or packet.pts is None:
                        continue  # the demuxer's empty flush packet
                    if not seen and not packet.is_keyframe:
                        raise ChunkMismatch(
                            f"chunk {Path(path).name} does not start with a keyframe"
                        )
                    seen = True
                    end = max(end, packet.pts + (packet.duration or 0))
                    packet.pts += offset - base
                    packet.dts += offset - base
                    packet.stream = target
                    output.mux(packet)
                    written += 1
                offset += end - base
            return written
    finally:
        for container in inputs:
            container.close()


def finalize(
    video: Path,
    template: LoadedTemplate,
    out: Path,
    *,
    customizations: Sequence[CustomizationEntry] = (),
    encoder: EncoderConfig | None = None,
    frames: tuple[int, int] | None = None,
    extra_audio: Path | None = None,
) -> bool:
    """Mix the sound of template frames ``frames`` once and mux it with the joined
    ``video`` into ``out`` (written under a temporary name, renamed when complete).

    The mix covers exactly the output frames a single ``render`` of the same range would
    have: it starts at the range's first output frame and lasts ``frames × 1/fps``.

    Args:
        video: the joined video-only MP4 (:func:`concat_chunks`).
        template: the loaded template (customisations are applied here, as in ``render``).
        out: the final MP4.
        customizations, encoder, frames, extra_audio: as given to ``render``.

    Returns:
        Whether the output has an audio stream.

    Raises:
        InvalidCustomization: a customisation does not fit the template.
        InvalidFrameRange: ``frames`` is empty or outside the composition.
        UnsupportedMedia: an audio source cannot be read.
    """
    from renderer.encode.mux import mux
    from renderer.plan import OutputPlan

    plan = OutputPlan.of(template.template, encoder, frames)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        audio = tmp / "audio.m4a"
        has_audio = mix_audio(
            template, audio, plan, customizations=customizations, extra_audio=extra_audio
        )
        muxed = tmp / "muxed.mp4"
        mux(Path(video), audio if has_audio else None, muxed)
        os.replace(muxed, out)
        return has_audio
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def mix_audio(
    template: LoadedTemplate,
    dest: Path,
    plan: OutputPlan,
    *,
    customizations: Sequence[CustomizationEntry] = (),
    extra_audio: Path | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> bool:
    """Mix the sound of ``plan``'s range into the AAC file ``dest``: it starts at the
    range's first output frame and lasts exactly its output frames. False (and no file)
    when nothing in the range makes a sound.

    Raises:
        InvalidCustomization, UnsupportedMedia: as :func:`finalize`.
    """
    from renderer.compose.audio import collect_clips, mix_to_file
    from renderer.template.customize import customized

    loaded = customized(template, customizations)
    clips = collect_clips(loaded, extra_audio)
    return bool(
        mix_to_file(clips, plan.start_s, plan.duration_s, Path(dest), should_cancel=should_cancel)
    )
