"""Join the encoded video and the mixed AAC audio into the final MP4 without re-encoding."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
from av.container import InputContainer, OutputContainer
from av.packet import Packet
from av.stream import Stream


def mux(video_only: Path, audio: Path | None, out: Path) -> None:
    """Copy the video stream of ``video_only`` and the audio stream of ``audio`` (if any)
    into ``out`` as an MP4 with its index at the front (``movflags=+faststart``), so players
    and browsers can start before the whole file has arrived.

    Packets are interleaved by decode time, so the muxer never has to buffer a whole stream.
    Audio packets that start at or after the end of the video are dropped, and the last one is
    shortened to end with it, so the audio never outlasts the picture.

    Args:
        video_only: the encoder's video-only MP4.
        audio: the mix from ``renderer.compose.audio.mix_to_file``, or None for a silent video.
        out: the file to write; the caller passes a temporary name and renames it.

    Raises:
        ValueError: ``video_only`` has no video stream or ``audio`` no audio stream.
    """
    with av.open(str(video_only)) as vin:
        if not vin.streams.video:
            raise ValueError(f"{video_only.name} has no video stream")
        if audio is None:
            _write(out, vin, None)
            return
        with av.open(str(audio)) as ain:
            if not ain.streams.audio:
                raise ValueError(f"{audio.name} has no audio stream")
            _write(out, vin, ain)


def _write(out: Path, vin: InputContainer, ain: InputContainer | None) -> None:
    vstream = vin.streams.video[0]
    video_end = _stream_end(vin, vstream)
    with av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"}) as output:
        assert isinstance(output, OutputContainer)
        # opaque: reuse the demuxer's codec instead of looking up an encoder of the same name;
        # AV1 is decoded by libdav1d, which has no encoder, and no stream is re-encoded here.
        vout = output.add_stream_from_template(vstream, opaque=True)
        sources: list[Iterator[tuple[Fraction, int, Packet[Stream], Stream]]] = [
            _timed(vin, vstream, vout, 0, None)
        ]
        if ain is not None:
            astream = ain.streams.audio[0]
            aout = output.add_stream_from_template(astream, opaque=True)
            sources.append(_timed(ain, astream, aout, 1, video_end))
        for _, _, packet, target in heapq.merge(*sources, key=lambda item: item[:2]):
            packet.stream = target
            output.mux(packet)


def _stream_end(container: InputContainer, stream: Stream) -> Fraction | None:
    """When the stream ends, in seconds: its own duration, else the container's."""
    if stream.duration is not None and stream.time_base is not None:
        start = stream.start_time or 0
        return Fraction(start + stream.duration) * stream.time_base
    if container.duration is not None:
        return Fraction(container.duration, av.time_base)
    return None


def _timed(
    container: InputContainer,
    stream: Stream,
    target: Stream,
    order: int,
    end: Fraction | None,
) -> Iterator[tuple[Fraction, int, Packet[Stream], Stream]]:
    """The stream's packets keyed by decode time in seconds, cut at ``end``."""
    for packet in container.demux(stream):
        if packet.dts is None or packet.time_base is None:
            continue  # the demuxer's empty flush packet
        tb = packet.time_base
        if end is not None and packet.pts is not None:
            begins = Fraction(packet.pts) * tb
            if begins >= end:
                return
            limit = int((end - begins) / tb)
            if packet.duration and packet.duration > limit:
                packet.duration = limit
        yield Fraction(packet.dts) * tb, order, packet, target
