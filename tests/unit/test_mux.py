"""mux(): video and AAC joined without re-encoding, index first, audio cut to the video."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from renderer.compose.audio import AudioClip, mix_to_file
from renderer.encode.config import EncoderConfig
from renderer.encode.encoder import VideoEncoder, plane_arrays
from renderer.encode.mux import mux

pytestmark = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe missing")

FPS = Fraction(30)


def make_video(path: Path, frames: int, fps: Fraction = FPS, codec: int = 0) -> Path:
    config = EncoderConfig.model_validate({"gop": 10, "codec": codec})
    with VideoEncoder(path, 64, 36, fps, config, "software") as enc:
        for i in range(frames):
            frame = enc.new_frame()
            y, u, v = plane_arrays(frame)
            y[:] = (np.arange(64) * 3 + i * 5).astype(np.uint8)
            u[:] = 128
            v[:] = 100
            enc.encode(frame)
    return path


def make_audio(tmp: Path, seconds: float) -> Path:
    wav = tmp / "tone.wav"
    rate = 48_000
    t = np.arange(round(seconds * rate)) / rate
    data = (0.3 * np.sin(2 * np.pi * 330 * t) * 32767).astype(np.int16).reshape(1, -1)
    with av.open(str(wav), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
        frame.sample_rate = rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    out = tmp / "mix.m4a"
    assert mix_to_file([AudioClip(wav, 0.0)], 0.0, seconds, out)
    return out


def probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def top_level_atoms(path: Path) -> list[str]:
    data = path.read_bytes()
    atoms, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        atoms.append(kind.decode("latin-1"))
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        if size == 0:
            break
        pos += size
    return atoms


def video_payloads(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def test_video_and_audio_are_joined_without_reencoding(tmp_path: Path) -> None:
    video = make_video(tmp_path / "video.mp4", 60)
    audio = make_audio(tmp_path, 2.0)
    out = tmp_path / "out.mp4"
    mux(video, audio, out)
    info = probe(out)
    kinds = {s["codec_type"]: s for s in info["streams"]}
    assert set(kinds) == {"video", "audio"}
    assert kinds["video"]["codec_name"] == "h264"
    assert kinds["audio"]["codec_name"] == "aac"
    assert int(kinds["audio"]["sample_rate"]) == 48_000
    assert int(kinds["video"]["nb_frames"]) == 60
    assert float(kinds["video"]["duration"]) == pytest.approx(2.0, abs=1e-3)
    assert float(kinds["audio"]["duration"]) == pytest.approx(2.0, abs=1024 / 48_000)
    assert float(info["format"]["duration"]) == pytest.approx(2.0, abs=1024 / 48_000)
    assert video_payloads(out) == video_payloads(video)  # copied, not re-encoded


def test_index_is_at_the_front(tmp_path: Path) -> None:
    video = make_video(tmp_path / "video.mp4", 10)
    out = tmp_path / "out.mp4"
    mux(video, make_audio(tmp_path, 10 / 30), out)
    atoms = top_level_atoms(out)
    assert atoms.index("moov") < atoms.index("mdat")


def test_audio_never_outlasts_the_video(tmp_path: Path) -> None:
    video = make_video(tmp_path / "video.mp4", 30)
    audio = make_audio(tmp_path, 2.5)
    out = tmp_path / "out.mp4"
    mux(video, audio, out)
    streams = {s["codec_type"]: s for s in probe(out)["streams"]}
    video_s = float(streams["video"]["duration"])
    assert video_s == pytest.approx(1.0, abs=1e-3)
    assert float(streams["audio"]["duration"]) <= video_s + 1e-3
    with av.open(str(out)) as container:
        decoded = sum(f.samples for f in container.decode(audio=0))
    assert decoded <= 48_000 + 1024


def test_without_audio_the_video_is_remuxed_alone(tmp_path: Path) -> None:
    video = make_video(tmp_path / "video.mp4", 12)
    out = tmp_path / "out.mp4"
    mux(video, None, out)
    streams = probe(out)["streams"]
    assert [s["codec_type"] for s in streams] == ["video"]
    assert int(streams[0]["nb_frames"]) == 12
    assert top_level_atoms(out).index("moov") < top_level_atoms(out).index("mdat")
    assert video_payloads(out) == video_payloads(video)


def test_ntsc_rate_survives_the_remux(tmp_path: Path) -> None:
    rate = Fraction(30000, 1001)
    video = make_video(tmp_path / "video.mp4", 30, rate)
    out = tmp_path / "out.mp4"
    mux(video, make_audio(tmp_path, float(30 / rate)), out)
    stream = next(s for s in probe(out)["streams"] if s["codec_type"] == "video")
    assert Fraction(stream["r_frame_rate"]) == rate
    assert float(stream["duration"]) == pytest.approx(float(30 / rate), abs=1e-3)


def test_inputs_without_the_expected_stream_are_refused(tmp_path: Path) -> None:
    audio = make_audio(tmp_path, 0.5)
    video = make_video(tmp_path / "video.mp4", 5)
    with pytest.raises(ValueError, match=r"mix\.m4a has no video stream"):
        mux(audio, None, tmp_path / "out.mp4")
    with pytest.raises(ValueError, match=r"video\.mp4 has no audio stream"):
        mux(video, video, tmp_path / "out2.mp4")


@pytest.mark.parametrize("codec", [1, 2], ids=["hevc", "av1"])
def test_hevc_and_av1_are_remuxed_too(tmp_path: Path, codec: int) -> None:
    # AV1 is demuxed with libdav1d, a decoder with no encoder of that name to copy from.
    video = make_video(tmp_path / "video.mp4", 12, codec=codec)
    out = tmp_path / "out.mp4"
    mux(video, make_audio(tmp_path, 12 / 30), out)
    kinds = {s["codec_type"]: s for s in probe(out)["streams"]}
    assert kinds["video"]["codec_name"] == ("hevc" if codec == 1 else "av1")
    assert int(kinds["video"]["nb_frames"]) == 12
    assert kinds["audio"]["codec_name"] == "aac"
    assert video_payloads(out) == video_payloads(video)
