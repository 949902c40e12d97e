"""VideoEncoder: every EncoderConfig field observed in the output, with PyAV and ffprobe."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from renderer.encode import encoder as encoder_module
from renderer.encode.config import EncoderConfig, probe_level
from renderer.encode.encoder import (
    VideoEncoder,
    available_encoders,
    encoder_options,
    nvenc_opens,
    plane_arrays,
)
from renderer.errors import EncoderUnavailable, InvalidEncoderConfig, RenderCancelled

W, H = 160, 90
FPS = Fraction(30)
needs_ffprobe = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe missing")


def _canvas() -> np.ndarray:
    # 8×8 noise blocks on a canvas wider than the frame; panning it gives motion that
    # compresses (motion vectors) yet keeps asking for bits as new blocks enter.
    rng = np.random.default_rng(7)
    blocks = rng.integers(16, 236, (H // 8 + 2, 4 * W // 8), dtype=np.uint8)
    return np.kron(blocks, np.ones((8, 8), dtype=np.uint8))


CANVAS = _canvas()


def _fill(frame: av.VideoFrame, index: int) -> None:
    y, u, v = plane_arrays(frame)
    x0 = (index * 3) % (CANVAS.shape[1] - frame.width)
    y[:] = CANVAS[: frame.height, x0 : x0 + frame.width]
    u[:] = CANVAS[: frame.height // 2, x0 : x0 + frame.width // 2] // 2 + 64
    v[:] = 128


def encode(
    path: Path,
    config: EncoderConfig,
    frames: int = 60,
    size: tuple[int, int] = (W, H),
    fps: Fraction = FPS,
) -> VideoEncoder:
    with VideoEncoder(path, size[0], size[1], fps, config, "software") as enc:
        for i in range(frames):
            frame = enc.new_frame()
            _fill(frame, i)
            enc.encode(frame)
    return enc


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def packets(path: Path) -> list[av.Packet]:
    with av.open(str(path)) as container:
        found = [p for p in container.demux(video=0) if p.size]
    return sorted(found, key=lambda p: p.pts or 0)


def keyframes(path: Path) -> list[int]:
    return [i for i, p in enumerate(packets(path)) if p.is_keyframe]


def bitrate(path: Path, frames: int, fps: Fraction = FPS) -> float:
    return sum(p.size for p in packets(path)) * 8 / float(frames / fps)


def encoder_settings(path: Path) -> str:
    """The settings x264/x265 write into the stream itself (SEI user data)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        blob = (stream.codec_context.extradata or b"") + bytes(next(container.demux(stream)))
    match = re.search(rb"options: ([ -~]+)", blob)
    assert match, "no encoder settings string in the stream"
    return match.group(1).decode()


# --- codec, profile, level --------------------------------------------------------------


@needs_ffprobe
@pytest.mark.parametrize(
    ("config", "codec", "profile", "level"),
    [
        (EncoderConfig(codec=0, profile=66, level=30), "h264", "Constrained Baseline", 30),
        (EncoderConfig(codec=0, profile=77, level=31), "h264", "Main", 31),
        (EncoderConfig(codec=0, profile=100, level=41), "h264", "High", 41),
        (EncoderConfig(codec=1, profile=1, level=31), "hevc", "Main", 31),
        (EncoderConfig(codec=2, profile=0, level=40), "av1", "Main", 40),
    ],
)
def test_codec_profile_and_level_are_in_the_stream(
    tmp_path: Path, config: EncoderConfig, codec: str, profile: str, level: int
) -> None:
    out = tmp_path / "out.mp4"
    enc = encode(out, config, frames=8)
    stream = ffprobe(out)["streams"][0]
    assert stream["codec_name"] == codec
    assert stream["profile"] == profile
    assert probe_level(config.codec, stream["level"]) == level
    with av.open(str(out)) as container:
        ctx = container.streams.video[0].codec_context
        assert ctx.profile == profile
        assert probe_level(config.codec, ctx.level) == level
    assert enc.info.name == {0: "libx264", 1: "libx265", 2: "libsvtav1"}[config.codec]
    assert not enc.info.hardware


def test_baseline_profile_has_no_b_frames(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    encode(out, EncoderConfig(profile=66), frames=20)
    # Without B-frames decode order equals presentation order.
    with av.open(str(out)) as container:
        pts = [p.pts for p in container.demux(video=0) if p.size]
    assert pts == sorted(pts)


# --- keyframes ----------------------------------------------------------------------------


@pytest.mark.parametrize("codec", [0, 1, 2])
def test_keyframes_every_gop_frames(tmp_path: Path, codec: int) -> None:
    out = tmp_path / "out.mp4"
    encode(out, EncoderConfig(codec=codec, gop=15, idr=30), frames=60)
    assert keyframes(out) == [0, 15, 30, 45]


def test_default_gop_is_two_seconds(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    encode(out, EncoderConfig(), frames=130)
    assert keyframes(out) == [0, 60, 120]


def test_x264_settings_record_keyint_and_closed_gop(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    encode(out, EncoderConfig(gop=12, preset=4), frames=4)
    settings = encoder_settings(out)
    assert "keyint=12 " in settings
    assert "open_gop=0" in settings
    assert "scenecut=0" in settings
    # preset 4 is x264's veryfast: one reference frame and subme 2.
    assert "ref=1 " in settings
    assert "subme=2 " in settings


# --- rate control ------------------------------------------------------------------------


@pytest.mark.parametrize("codec", [0, 1, 2])
def test_cbr_bitrate_within_15_percent(tmp_path: Path, codec: int) -> None:
    # 150 kb/s is about what this 160x90 source can absorb at a low quantiser; far above
    # that, encoders without filler data (x265, SVT) run out of detail to spend bits on.
    out = tmp_path / "out.mp4"
    encode(out, EncoderConfig(codec=codec, rc=0, bitrate=150_000, gop=30), frames=60)
    measured = bitrate(out, 60)
    assert measured == pytest.approx(150_000, rel=0.15)


def test_cbr_is_signalled_as_cbr(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    encode(out, EncoderConfig(rc=0, bitrate=400_000), frames=4)
    settings = encoder_settings(out)
    assert "rc=cbr " in settings
    assert "nal_hrd=cbr" in settings
    assert "vbv_maxrate=400 " in settings


def test_vbr_caps_peaks_at_one_and_a_half_times_the_target(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    encode(out, EncoderConfig(rc=1, bitrate=300_000), frames=60)
    settings = encoder_settings(out)
    assert "rc=abr " in settings
    assert "bitrate=300 " in settings
    assert "vbv_maxrate=450 " in settings
    assert bitrate(out, 60) <= 450_000 * 1.15


def test_x265_cbr_settings(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    encode(out, EncoderConfig(codec=1, rc=0, bitrate=400_000, gop=30), frames=4)
    settings = encoder_settings(out)
    assert "rc=cbr " in settings
    assert "strict-cbr" in settings
    assert "keyint=30 " in settings
    assert "no-open-gop" in settings


@pytest.mark.parametrize("codec", [0, 1, 2])
def test_cqp_quantiser_changes_size(tmp_path: Path, codec: int) -> None:
    fine, coarse = tmp_path / "fine.mp4", tmp_path / "coarse.mp4"
    encode(fine, EncoderConfig(codec=codec, rc=2, qp=10), frames=10)
    encode(coarse, EncoderConfig(codec=codec, rc=2, qp=45), frames=10)
    assert bitrate(fine, 10) > 1.5 * bitrate(coarse, 10)


def test_cqp_is_constant_qp_in_x264(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    encode(out, EncoderConfig(rc=2, qp=30), frames=4)
    assert "rc=cqp " in encoder_settings(out)
    assert "qp=30" in encoder_settings(out)


def test_crf_changes_size(tmp_path: Path) -> None:
    fine, coarse = tmp_path / "fine.mp4", tmp_path / "coarse.mp4"
    encode(fine, EncoderConfig(crf=14), frames=10)
    encode(coarse, EncoderConfig(crf=40), frames=10)
    assert "rc=crf " in encoder_settings(fine)
    assert "crf=14.0" in encoder_settings(fine)
    assert bitrate(fine, 10) > 1.5 * bitrate(coarse, 10)


def test_presets_map_to_named_encoder_presets() -> None:
    names = [
        encoder_options(EncoderConfig(preset=p), W, H, FPS, nvenc=False)["preset"] for p in range(6)
    ]
    assert names == ["slower", "slow", "medium", "fast", "veryfast", "ultrafast"]
    svt = [
        int(encoder_options(EncoderConfig(codec=2, preset=p), W, H, FPS, nvenc=False)["preset"])
        for p in range(6)
    ]
    assert svt[0] == 4 and svt[-1] == 12 and svt == sorted(svt)
    nv = [
        encoder_options(EncoderConfig(preset=p), W, H, FPS, nvenc=True)["preset"] for p in range(6)
    ]
    assert nv == ["p7", "p6", "p5", "p4", "p3", "p2"]


def test_nvenc_options_follow_the_spec_table() -> None:
    cbr = encoder_options(EncoderConfig(rc=0, bitrate=2_000_000, gop=30), W, H, FPS, nvenc=True)
    assert cbr["rc"] == "cbr" and cbr["b"] == cbr["maxrate"] == "2000000"
    assert cbr["g"] == "30" and cbr["forced-idr"] == "1"
    cqp = encoder_options(EncoderConfig(rc=2, qp=20), W, H, FPS, nvenc=True)
    assert cqp["rc"] == "constqp" and cqp["qp"] == "20"
    crf = encoder_options(EncoderConfig(crf=28), W, H, FPS, nvenc=True)
    assert crf["cq"] == "28"
    prof = encoder_options(EncoderConfig(profile=100, level=41), W, H, FPS, nvenc=True)
    assert prof["profile"] == "high" and prof["level"] == "4.1"


# --- frame rate, size, count, duration -----------------------------------------------------


@needs_ffprobe
@pytest.mark.parametrize("fps", [Fraction(30000, 1001), Fraction(25), Fraction(60)])
def test_rate_count_and_duration(tmp_path: Path, fps: Fraction) -> None:
    out = tmp_path / "out.mp4"
    enc = encode(out, EncoderConfig(), frames=17, size=(64, 36), fps=fps)
    assert enc.info.frames == 17
    probe = ffprobe(out)
    stream = probe["streams"][0]
    assert Fraction(stream["r_frame_rate"]) == fps
    assert Fraction(stream["avg_frame_rate"]) == fps
    assert int(stream["nb_frames"]) == 17
    assert (stream["width"], stream["height"]) == (64, 36)
    assert float(stream["duration"]) == pytest.approx(float(17 / fps), abs=1e-3)
    assert float(probe["format"]["duration"]) == pytest.approx(float(17 / fps), abs=1e-3)
    with av.open(str(out)) as container:
        vs = container.streams.video[0]
        decoded = list(container.decode(vs))
        assert len(decoded) == 17
        times = [f.time for f in decoded]
        assert times == pytest.approx([float(i / fps) for i in range(17)], abs=1e-3)
        assert vs.average_rate == fps


# --- zero-copy planes ---------------------------------------------------------------------


def test_plane_views_are_writable_and_skip_row_padding() -> None:
    frame = av.VideoFrame(70, 36, "yuv420p")
    y, u, v = plane_arrays(frame)
    assert y.shape == (36, 70) and u.shape == (18, 35) and v.shape == (18, 35)
    assert frame.planes[0].line_size > 70  # padded rows: the views must cut them off
    y[:] = 9
    u[:] = 77
    raw = np.frombuffer(bytes(frame.planes[0]), np.uint8).reshape(36, -1)
    assert (raw[:, :70] == 9).all()
    assert frame.to_ndarray(format="yuv420p")[36:45].max() == 77  # U rows follow Y rows


def test_plane_arrays_refuses_other_formats() -> None:
    with pytest.raises(ValueError, match="yuv420p"):
        plane_arrays(av.VideoFrame(16, 16, "rgb24"))


def test_writes_through_plane_views_reach_the_output(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with VideoEncoder(out, 64, 36, FPS, EncoderConfig(rc=2, qp=0), "software") as enc:
        for i in range(3):
            frame = enc.new_frame()
            y, u, v = plane_arrays(frame)
            y[:, :32] = 40 + 50 * i
            y[:, 32:] = 200
            u[:] = 90
            v[:] = 160
            enc.encode(frame)
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]
    assert len(frames) == 3
    for i, data in enumerate(frames):
        luma, chroma_u, chroma_v = data[:36], data[36:45], data[45:54]
        assert np.abs(luma[:, 4:28].astype(int) - (40 + 50 * i)).max() <= 2
        assert np.abs(luma[:, 36:60].astype(int) - 200).max() <= 2
        assert np.abs(chroma_u.astype(int) - 90).max() <= 2
        assert np.abs(chroma_v.astype(int) - 160).max() <= 2


# --- encoder choice -------------------------------------------------------------------------


def test_auto_falls_back_to_software_and_records_it(tmp_path: Path) -> None:
    if nvenc_opens("h264_nvenc"):
        pytest.skip("NVENC opens on this machine")
    out = tmp_path / "out.mp4"
    with VideoEncoder(out, 64, 36, FPS, EncoderConfig(), "auto") as enc:
        frame = enc.new_frame()
        _fill(frame, 0)
        enc.encode(frame)
    assert enc.info.name == "libx264"
    assert enc.info.hardware is False
    assert enc.info.frames == 1
    assert ffprobe(out)["streams"][0]["codec_name"] == "h264"


def test_nvenc_preference_raises_when_it_cannot_open(tmp_path: Path) -> None:
    if nvenc_opens("h264_nvenc"):
        pytest.skip("NVENC opens on this machine")
    with pytest.raises(EncoderUnavailable, match="h264_nvenc"):
        VideoEncoder(tmp_path / "out.mp4", 64, 36, FPS, EncoderConfig(), "nvenc")


# NVENC's H.264 encoder takes at most 4096 pixels a side on every GPU generation, and
# without a GPU it does not open at all; libx264 takes this size. So with the probe forced
# to say NVENC opens, opening it fails on every machine and the fallback path runs.
_WIDER_THAN_NVENC = (4112, 16)


def test_auto_falls_back_to_software_when_nvenc_probes_but_refuses_to_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(encoder_module, "nvenc_opens", lambda name: True)
    out = tmp_path / "out.mp4"
    width, height = _WIDER_THAN_NVENC
    with (
        caplog.at_level("WARNING", logger="renderer.encode.encoder"),
        VideoEncoder(out, width, height, FPS, EncoderConfig(), "auto") as enc,
    ):
        enc.encode(enc.new_frame())
    assert "h264_nvenc failed to open, using software" in caplog.text
    assert (enc.info.name, enc.info.hardware, enc.info.frames) == ("libx264", False, 1)
    assert enc.info.options["preset"] == "fast"  # x264's options, not NVENC's p4
    stream = ffprobe(out)["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", width, height)


def test_nvenc_preference_raises_when_nvenc_probes_but_refuses_to_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encoder_module, "nvenc_opens", lambda name: True)
    width, height = _WIDER_THAN_NVENC
    with pytest.raises(EncoderUnavailable, match="h264_nvenc .NVENC. was found but refused"):
        VideoEncoder(tmp_path / "out.mp4", width, height, FPS, EncoderConfig(), "nvenc")


def test_available_encoders_lists_every_candidate() -> None:
    found = available_encoders()
    assert set(found) == {
        "libx264",
        "libx265",
        "libsvtav1",
        "h264_nvenc",
        "hevc_nvenc",
        "av1_nvenc",
    }
    assert found["libx264"] is True


def test_frame_threading_is_used_for_software(tmp_path: Path) -> None:
    enc = encode(tmp_path / "out.mp4", EncoderConfig(), frames=2)
    assert "sliced_threads=0" in encoder_settings(tmp_path / "out.mp4")
    assert enc.info.options["thread_type"] == "FRAME"


# --- refusals and errors --------------------------------------------------------------------


def test_level_too_small_for_the_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidEncoderConfig, match="level 2.0"):
        VideoEncoder(tmp_path / "out.mp4", 1920, 1080, FPS, EncoderConfig(level=20))


def test_wrong_frame_size_is_refused(tmp_path: Path) -> None:
    with (
        VideoEncoder(tmp_path / "out.mp4", 64, 36, FPS, EncoderConfig(), "software") as enc,
        pytest.raises(ValueError, match="64x36"),
    ):
        enc.encode(av.VideoFrame(32, 32, "yuv420p"))


def test_error_inside_the_block_still_finishes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with (
        pytest.raises(RuntimeError, match="boom"),
        VideoEncoder(out, 64, 36, FPS, EncoderConfig(), "software") as enc,
    ):
        for i in range(5):
            frame = enc.new_frame()
            _fill(frame, i)
            enc.encode(frame)
        raise RuntimeError("boom")
    assert out.exists()  # the caller owns (and removes) partial output
    with av.open(str(out)) as container:
        assert len(list(container.decode(video=0))) == 5


def test_cancelling_inside_the_block_skips_the_flush(tmp_path: Path) -> None:
    # x264's lookahead holds the fed frames; a cancelled render must not wait to encode them.
    out = tmp_path / "out.mp4"
    with (
        pytest.raises(RenderCancelled),
        VideoEncoder(out, 64, 36, FPS, EncoderConfig(preset=0), "software") as enc,
    ):
        for i in range(10):
            frame = enc.new_frame()
            _fill(frame, i)
            enc.encode(frame)
        raise RenderCancelled("stop")
    with av.open(str(out)) as container:
        packets = [p for p in container.demux() if p.size]
    assert len(packets) < 10


def test_missing_output_folder_is_not_blamed_on_the_config(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        VideoEncoder(tmp_path / "nope" / "out.mp4", 64, 36, FPS, EncoderConfig(), "software")


@pytest.mark.parametrize("codec", [0, 1, 2])
def test_stream_is_tagged_bt709_limited_range(tmp_path: Path, codec: int) -> None:
    # Untagged streams are read as BT.601 by players and ffmpeg, shifting the colours the
    # compositor wrote in BT.709.
    out = tmp_path / "tagged.mp4"
    encode(out, EncoderConfig(codec=codec, crf=30), frames=4)
    stream = ffprobe(out)["streams"][0]
    assert stream["color_space"] == "bt709"
    assert stream["color_primaries"] == "bt709"
    assert stream["color_transfer"] == "bt709"
    assert stream["color_range"] == "tv"
