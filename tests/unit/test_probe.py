"""Media probing: accepted formats report their facts; everything else is UnsupportedMedia."""

from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import av
import numpy as np
import pytest
from PIL import Image

from renderer.errors import InvalidTemplate, UnsupportedMedia
from renderer.media.probe import (
    AudioInfo,
    ImageInfo,
    VideoInfo,
    check_font,
    probe_audio,
    probe_image,
    probe_video,
    validate_media_file,
)

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


# --- images -----------------------------------------------------------------------------------


def test_png_jpeg_tga_and_static_gif(tmp_path: Path, fixtures_module: ModuleType) -> None:
    png = fixtures_module.make_png(tmp_path / "a.png", 12, 10)
    jpg = fixtures_module.make_jpeg(tmp_path / "a.jpg", 14, 8)
    tga = fixtures_module.make_tga(tmp_path / "a.tga", 10, 6)
    gif = fixtures_module.make_gif(tmp_path / "a.gif", 8, 8, animated=False)
    assert probe_image(png) == ImageInfo(12, 10, 1, False)
    assert probe_image(jpg) == ImageInfo(14, 8, 1, False)
    assert probe_image(tga) == ImageInfo(10, 6, 1, False)
    assert probe_image(gif) == ImageInfo(8, 8, 1, False)


def test_animated_gif_counts_frames(tmp_path: Path, fixtures_module: ModuleType) -> None:
    gif = fixtures_module.make_gif(tmp_path / "a.gif", 8, 8, animated=True, frames=4)
    assert probe_image(gif) == ImageInfo(8, 8, 4, True)


def test_truncated_png_is_refused(tmp_path: Path, fixtures_module: ModuleType) -> None:
    png = tmp_path / "big.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(png)
    cut = tmp_path / "cut.png"
    cut.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    with pytest.raises(UnsupportedMedia, match="cut.png: not a readable image"):
        probe_image(cut)


def test_truncated_animated_gif_is_refused(tmp_path: Path, fixtures_module: ModuleType) -> None:
    gif = fixtures_module.make_gif(tmp_path / "a.gif", 32, 32, animated=True, frames=4)
    cut = tmp_path / "cut.gif"
    cut.write_bytes(gif.read_bytes()[: int(gif.stat().st_size * 0.6)])
    with pytest.raises(UnsupportedMedia, match="cut.gif"):
        probe_image(cut)


@pytest.mark.parametrize(("fmt", "label"), [("BMP", "BMP"), ("TIFF", "TIFF"), ("WEBP", "WebP")])
def test_other_image_formats_are_named(tmp_path: Path, fmt: str, label: str) -> None:
    path = tmp_path / f"x.{fmt.lower()}"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path, format=fmt)
    with pytest.raises(UnsupportedMedia, match=f"image format {label} is not supported"):
        probe_image(path)


@pytest.mark.parametrize("payload", [b"", b"hello, not an image\n" * 8, bytes(range(256)) * 4])
def test_garbage_is_refused_without_leaking_paths(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "junk.png"
    path.write_bytes(payload)
    with pytest.raises(UnsupportedMedia) as info:
        probe_image(path, "images/junk.png")
    assert str(info.value).startswith("images/junk.png: ")
    assert str(tmp_path) not in str(info.value)


def test_tga_is_only_trusted_by_suffix(tmp_path: Path, fixtures_module: ModuleType) -> None:
    tga = fixtures_module.make_tga(tmp_path / "a.tga", 10, 6)
    renamed = tmp_path / "a.png"
    renamed.write_bytes(tga.read_bytes())
    with pytest.raises(UnsupportedMedia):
        probe_image(renamed)


def test_unsupported_media_is_an_invalid_template() -> None:
    assert issubclass(UnsupportedMedia, InvalidTemplate)
    assert issubclass(UnsupportedMedia, ValueError)


# --- video ------------------------------------------------------------------------------------


def test_h264_with_sound(tmp_path: Path, fixtures_module: ModuleType) -> None:
    path = fixtures_module.make_video(tmp_path / "v.mp4", 32, 18, 25, 10, audio=True)
    info = probe_video(path)
    assert isinstance(info, VideoInfo)
    assert (info.width, info.height, info.codec) == (32, 18, "h264")
    assert info.fps == Fraction(25)
    assert info.frames_estimate == 10
    assert info.duration_s == pytest.approx(0.4, abs=0.01)
    assert info.has_audio


def test_hevc_ntsc_rate_in_mov(tmp_path: Path, fixtures_module: ModuleType) -> None:
    path = fixtures_module.make_video(
        tmp_path / "v.mov", 32, 32, Fraction(30000, 1001), 6, codec="libx265"
    )
    info = probe_video(path)
    assert info.codec == "hevc"
    assert info.fps == Fraction(30000, 1001)
    assert info.frames_estimate == 6
    assert not info.has_audio


@pytest.mark.parametrize(("codec", "name"), [("mpeg4", "mpeg4"), ("libvpx-vp9", "vp9")])
def test_other_codecs_in_mp4_are_named(
    tmp_path: Path, fixtures_module: ModuleType, codec: str, name: str
) -> None:
    path = fixtures_module.make_video(tmp_path / "bg.mp4", 16, 16, 30, 2, codec=codec)
    with pytest.raises(UnsupportedMedia) as info:
        probe_video(path, "videos/bg.mp4")
    assert str(info.value) == (
        f"videos/bg.mp4: video codec '{name}' is not supported; use H.264 or H.265"
    )


def test_webm_container_is_refused(tmp_path: Path, fixtures_module: ModuleType) -> None:
    path = fixtures_module.make_video(tmp_path / "v.webm", 16, 16, 30, 2, codec="libvpx-vp9")
    with pytest.raises(UnsupportedMedia, match="container 'matroska,webm' is not supported"):
        probe_video(path)


def test_truncated_video_is_refused(tmp_path: Path, fixtures_module: ModuleType) -> None:
    path = fixtures_module.make_video(tmp_path / "v.mp4", 32, 32, 30, 6)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UnsupportedMedia, match="cut.mp4"):
        probe_video(cut)


def test_audio_only_mp4_is_not_a_video(tmp_path: Path, fixtures_module: ModuleType) -> None:
    path = fixtures_module.make_audio(tmp_path / "a.m4a", 0.2, fmt="aac")
    with pytest.raises(UnsupportedMedia, match="a.m4a: has no video stream"):
        probe_video(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedMedia, match="nothing.mp4: file not found"):
        probe_video(tmp_path / "nothing.mp4")


# --- audio ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "suffix", "codec"),
    [
        ("wav", ".wav", "pcm_s16le"),
        ("mp3", ".mp3", "mp3"),
        ("aac", ".aac", "aac"),
        ("aac", ".m4a", "aac"),
    ],
)
def test_accepted_audio(
    tmp_path: Path, fixtures_module: ModuleType, fmt: str, suffix: str, codec: str
) -> None:
    path = fixtures_module.make_audio(tmp_path / f"a{suffix}", 0.5, fmt=fmt)
    info = probe_audio(path)
    assert isinstance(info, AudioInfo)
    assert (info.codec, info.sample_rate, info.channels) == (codec, 48_000, 2)
    # Compressed formats add encoder padding; ADTS durations are estimates.
    assert info.duration_s == pytest.approx(0.5, abs=0.1)


def test_sound_of_a_video_file_is_accepted(tmp_path: Path, fixtures_module: ModuleType) -> None:
    path = fixtures_module.make_video(tmp_path / "v.mp4", 16, 16, 30, 6, audio=True)
    assert probe_audio(path).codec == "aac"


def test_mono_wav(tmp_path: Path, fixtures_module: ModuleType) -> None:
    path = fixtures_module.make_audio(
        tmp_path / "m.wav", 0.25, fmt="wav", channels=1, sample_rate=22_050
    )
    info = probe_audio(path)
    assert (info.channels, info.sample_rate) == (1, 22_050)
    assert info.duration_s == pytest.approx(0.25, abs=0.001)


def test_flac_is_refused_naming_the_codec(tmp_path: Path) -> None:
    path = tmp_path / "a.flac"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("flac", rate=48_000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 4800), dtype=np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 48_000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(UnsupportedMedia, match="'flac' is not supported; use MP3, WAV or AAC"):
        probe_audio(path, "audio/a.flac")


def test_wav_with_a_truncated_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(bytes(1600))
    cut = tmp_path / "cut.wav"
    cut.write_bytes(path.read_bytes()[:20])
    with pytest.raises(UnsupportedMedia, match="cut.wav"):
        probe_audio(cut)


def test_video_without_sound_is_not_audio(tmp_path: Path, fixtures_module: ModuleType) -> None:
    path = fixtures_module.make_video(tmp_path / "v.mp4", 16, 16, 30, 2)
    with pytest.raises(UnsupportedMedia, match="v.mp4: has no audio stream"):
        probe_audio(path)


# --- fonts and dispatch -----------------------------------------------------------------------


@pytest.mark.skipif(not DEJAVU.is_file(), reason="DejaVu fonts not installed")
def test_font_loads() -> None:
    info = check_font(DEJAVU)
    assert info.family == "DejaVu Sans"


def test_bad_font_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.ttf"
    path.write_bytes(b"\x00\x01\x00\x00" + bytes(64))
    with pytest.raises(UnsupportedMedia, match="fonts/x.ttf: cannot be loaded as a font"):
        check_font(path, "fonts/x.ttf")


def test_validate_media_file_dispatches_by_kind(
    tmp_path: Path, fixtures_module: ModuleType
) -> None:
    png = fixtures_module.make_png(tmp_path / "a.png", 8, 8)
    mp4 = fixtures_module.make_video(tmp_path / "v.mp4", 16, 16, 30, 2)
    wav = fixtures_module.make_audio(tmp_path / "a.wav", 0.1)
    assert isinstance(validate_media_file(png, "image"), ImageInfo)
    assert isinstance(validate_media_file(mp4, "video"), VideoInfo)
    assert isinstance(validate_media_file(wav, "audio"), AudioInfo)
    with pytest.raises(UnsupportedMedia, match="v.mp4: not a readable image"):
        validate_media_file(mp4, "image")
    with pytest.raises(UnsupportedMedia, match="a.png"):
        validate_media_file(png, "video")
    with pytest.raises(ValueError, match="unknown media kind"):
        validate_media_file(png, "lottie")  # type: ignore[arg-type]
