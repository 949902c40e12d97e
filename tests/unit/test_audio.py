"""The audio mix: level, fades, trim, loop, windows, clip collection from a template."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from renderer.compose.audio import SAMPLE_RATE, AudioClip, collect_clips, mix_to_file
from renderer.errors import UnsupportedMedia
from renderer.template.model import LoadedTemplate, Template

FREQ = 440.0
AAC_FRAME = 1024


def write_wav(
    path: Path,
    segments: Sequence[tuple[float, float]],
    rate: int = 44_100,
    stereo: bool = False,
) -> Path:
    """A sine at FREQ made of (seconds, amplitude) segments; stereo puts it on the left only."""
    parts = []
    for seconds, amp in segments:
        parts.append(np.full(round(seconds * rate), amp))
    envelope = np.concatenate(parts)
    t = np.arange(envelope.size) / rate
    mono = (envelope * np.sin(2 * np.pi * FREQ * t) * 32767).astype(np.int16)
    layout = "stereo" if stereo else "mono"
    if stereo:
        data = np.stack([mono, np.zeros_like(mono)], axis=1).reshape(1, -1)
    else:
        data = mono.reshape(1, -1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_video_with_sound(path: Path, seconds: float, amp: float | None) -> Path:
    """A tiny H.264 MP4 (64x36, 30 fps), with an AAC sine track when ``amp`` is given."""
    frames = round(seconds * 30)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 64, 36, "yuv420p"
        audio = container.add_stream("aac", rate=48_000) if amp is not None else None
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((36, 64, 3), 40, np.uint8), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            n = round(seconds * 48_000)
            t = np.arange(n) / 48_000
            tone = (amp * np.sin(2 * np.pi * FREQ * t)).astype(np.float32)
            for start in range(0, n, AAC_FRAME):
                chunk = np.ascontiguousarray(np.stack([tone, tone])[:, start : start + AAC_FRAME])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                frame.sample_rate = 48_000
                frame.pts = start
                container.mux(audio.encode(frame))
            container.mux(audio.encode(None))
    return path


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1).astype(
            np.float64
        )


def rms(samples: np.ndarray, start_s: float, end_s: float, channel: int = 0) -> float:
    part = samples[channel, round(start_s * SAMPLE_RATE) : round(end_s * SAMPLE_RATE)]
    return float(np.sqrt(np.mean(part**2)))


def level(amp: float) -> float:
    """RMS of a sine of amplitude ``amp``."""
    return amp / np.sqrt(2)


def ffprobe_stream(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    stream: dict[str, Any] = json.loads(out)["streams"][0]
    return stream


@pytest.fixture
def tone(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "tone.wav", [(2.0, 0.5)])


# --- format and length -------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe missing")
@pytest.mark.parametrize("duration", [2.0, 1.3, 0.7])
def test_output_is_aac_48k_stereo_of_the_requested_length(
    tmp_path: Path, tone: Path, duration: float
) -> None:
    out = tmp_path / "mix.m4a"
    assert mix_to_file([AudioClip(tone, 0.0)], 0.0, duration, out) is True
    stream = ffprobe_stream(out)
    assert stream["codec_name"] == "aac"
    assert int(stream["sample_rate"]) == 48_000
    assert stream["channels"] == 2
    assert float(stream["duration"]) == pytest.approx(duration, abs=AAC_FRAME / SAMPLE_RATE)
    samples = decode(out)
    assert 0 <= samples.shape[1] - duration * SAMPLE_RATE < AAC_FRAME


def test_output_is_padded_with_silence_past_a_short_source(tmp_path: Path) -> None:
    short = write_wav(tmp_path / "short.wav", [(0.5, 0.5)])
    out = tmp_path / "mix.m4a"
    mix_to_file([AudioClip(short, 0.0)], 0.0, 1.5, out)
    samples = decode(out)
    assert samples.shape[1] >= 1.5 * SAMPLE_RATE
    assert rms(samples, 0.1, 0.4) == pytest.approx(level(0.5), rel=0.03)
    assert rms(samples, 0.6, 1.4) < 1e-3


# --- level and channels --------------------------------------------------------------------


@pytest.mark.parametrize("volume", [1.0, 0.5, 0.25])
def test_level_follows_volume(tmp_path: Path, tone: Path, volume: float) -> None:
    out = tmp_path / "mix.m4a"
    mix_to_file([AudioClip(tone, 0.0, volume=volume)], 0.0, 1.0, out)
    samples = decode(out)
    for channel in (0, 1):  # mono plays on both channels at full level
        assert rms(samples, 0.2, 0.8, channel) == pytest.approx(level(0.5 * volume), rel=0.03)


def test_stereo_sources_keep_their_channels(tmp_path: Path) -> None:
    left = write_wav(tmp_path / "left.wav", [(1.0, 0.5)], stereo=True, rate=48_000)
    out = tmp_path / "mix.m4a"
    mix_to_file([AudioClip(left, 0.0)], 0.0, 1.0, out)
    samples = decode(out)
    assert rms(samples, 0.2, 0.8, 0) == pytest.approx(level(0.5), rel=0.03)
    assert rms(samples, 0.2, 0.8, 1) < 1e-3


def test_clips_are_summed_and_clipped(tmp_path: Path) -> None:
    loud = write_wav(tmp_path / "loud.wav", [(1.0, 0.9)])
    single, double = tmp_path / "one.m4a", tmp_path / "two.m4a"
    mix_to_file([AudioClip(loud, 0.0, volume=0.5)], 0.0, 1.0, single)
    mix_to_file([AudioClip(loud, 0.0, volume=0.5)] * 2, 0.0, 1.0, double)
    assert rms(decode(double), 0.2, 0.8) == pytest.approx(2 * rms(decode(single), 0.2, 0.8), 0.03)
    clipped = tmp_path / "clipped.m4a"
    mix_to_file([AudioClip(loud, 0.0)] * 2, 0.0, 1.0, clipped)
    samples = decode(clipped)
    # 1.8 × sin clipped to ±1 has an RMS of 0.87 (AAC at 192 kb/s keeps about 0.81); the
    # unclipped sum would be 1.27, one clip alone 0.64.
    assert 0.75 < rms(samples, 0.2, 0.8) < 0.95
    assert np.abs(samples).max() < 1.1


# --- placement, trim, loop, fades ----------------------------------------------------------


def test_clip_starts_at_its_timeline_position(tmp_path: Path, tone: Path) -> None:
    out = tmp_path / "mix.m4a"
    mix_to_file([AudioClip(tone, 0.5)], 0.0, 1.0, out)
    samples = decode(out)
    assert rms(samples, 0.0, 0.48) < 1e-3
    assert rms(samples, 0.52, 0.98) == pytest.approx(level(0.5), rel=0.03)


def test_trim_skips_the_start_of_the_source(tmp_path: Path) -> None:
    stepped = write_wav(tmp_path / "stepped.wav", [(0.5, 0.1), (0.5, 0.5)])
    out = tmp_path / "mix.m4a"
    mix_to_file([AudioClip(stepped, 0.0, trim_s=0.5)], 0.0, 1.0, out)
    samples = decode(out)
    assert rms(samples, 0.02, 0.45) == pytest.approx(level(0.5), rel=0.03)
    assert rms(samples, 0.55, 0.95) < 1e-3  # the trimmed source has run out


def test_end_stops_the_clip(tmp_path: Path, tone: Path) -> None:
    out = tmp_path / "mix.m4a"
    mix_to_file([AudioClip(tone, 0.0, end_s=0.6)], 0.0, 1.2, out)
    samples = decode(out)
    assert rms(samples, 0.1, 0.55) == pytest.approx(level(0.5), rel=0.03)
    assert rms(samples, 0.65, 1.15) < 1e-3


# A 0.4 s source: loud for 0.2 s then quiet for 0.2 s.
LOOP_SEGMENTS = [(0.2, 0.5), (0.2, 0.1)]


def _loop_expected(t: float, trim: float) -> float:
    period = 0.4 - trim
    source_t = trim + (t % period)
    return 0.5 if source_t < 0.2 else 0.1


@pytest.mark.parametrize("trim", [0.0, 0.1])
def test_loop_repeats_the_source_from_the_trim_point(tmp_path: Path, trim: float) -> None:
    src = write_wav(tmp_path / "loop.wav", LOOP_SEGMENTS)
    out = tmp_path / "mix.m4a"
    mix_to_file([AudioClip(src, 0.0, trim_s=trim, loop=True)], 0.0, 1.5, out)
    samples = decode(out)
    for centre in np.arange(0.05, 1.45, 0.1):
        expected = _loop_expected(centre, trim)
        got = rms(samples, centre - 0.03, centre + 0.03)
        assert got == pytest.approx(level(expected), rel=0.06), centre


def test_without_loop_the_source_plays_once(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "loop.wav", LOOP_SEGMENTS)
    out = tmp_path / "mix.m4a"
    mix_to_file([AudioClip(src, 0.0)], 0.0, 1.0, out)
    assert rms(decode(out), 0.45, 0.95) < 1e-3


def test_fades_ramp_linearly_from_and_to_silence(tmp_path: Path, tone: Path) -> None:
    out = tmp_path / "mix.m4a"
    # The source's natural end (2.0 s) is where the fade-out must land.
    clip = AudioClip(tone, 0.0, fade_in_s=0.5, fade_out_s=0.5)
    mix_to_file([clip], 0.0, 2.5, out)
    samples = decode(out)
    full = level(0.5)
    assert rms(samples, 0.0, 0.02) < 0.05 * full
    assert rms(samples, 0.24, 0.26) == pytest.approx(0.5 * full, rel=0.1)
    assert rms(samples, 0.8, 1.2) == pytest.approx(full, rel=0.03)
    assert rms(samples, 1.74, 1.76) == pytest.approx(0.5 * full, rel=0.1)
    assert rms(samples, 1.98, 2.0) < 0.05 * full
    assert rms(samples, 2.05, 2.45) < 1e-3


def test_fade_out_ends_at_the_clip_end_when_looping(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "short.wav", [(0.3, 0.5)])
    out = tmp_path / "mix.m4a"
    clip = AudioClip(src, 0.0, loop=True, fade_out_s=0.4, end_s=1.0)
    mix_to_file([clip], 0.0, 1.2, out)
    samples = decode(out)
    full = level(0.5)
    assert rms(samples, 0.1, 0.5) == pytest.approx(full, rel=0.05)
    assert rms(samples, 0.79, 0.81) == pytest.approx(0.5 * full, rel=0.12)
    assert rms(samples, 0.98, 1.0) < 0.08 * full
    assert rms(samples, 1.02, 1.18) < 1e-3


# --- windows (frame ranges) ---------------------------------------------------------------


def test_window_is_cut_from_the_composition_timeline(tmp_path: Path) -> None:
    stepped = write_wav(tmp_path / "stepped.wav", [(0.5, 0.1), (0.5, 0.5)])
    out = tmp_path / "mix.m4a"
    mix_to_file([AudioClip(stepped, 0.0)], 0.5, 0.5, out)
    samples = decode(out)
    assert 0 <= samples.shape[1] - 0.5 * SAMPLE_RATE < AAC_FRAME
    assert rms(samples, 0.02, 0.45) == pytest.approx(level(0.5), rel=0.03)


def test_window_keeps_loop_phase_and_fades(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "loop.wav", LOOP_SEGMENTS)
    out = tmp_path / "mix.m4a"
    clip = AudioClip(src, 0.2, trim_s=0.1, loop=True, fade_in_s=2.0)
    mix_to_file([clip], 1.0, 0.8, out)
    samples = decode(out)
    for centre in np.arange(0.05, 0.75, 0.1):
        t = 1.0 + centre
        fade = (t - 0.2) / 2.0
        expected = level(_loop_expected(t - 0.2, 0.1)) * fade
        got = rms(samples, centre - 0.03, centre + 0.03)
        assert got == pytest.approx(expected, rel=0.08), centre


# --- nothing to mix, broken input -----------------------------------------------------------


def test_no_clips_writes_nothing(tmp_path: Path, tone: Path) -> None:
    out = tmp_path / "mix.m4a"
    assert mix_to_file([], 0.0, 1.0, out) is False
    assert mix_to_file([AudioClip(tone, 0.0, volume=0.0)], 0.0, 1.0, out) is False
    assert not out.exists()


def test_undecodable_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(b"ID3" + bytes(range(256)) * 40)
    with pytest.raises(UnsupportedMedia, match=r"broken\.mp3"):
        mix_to_file([AudioClip(bad, 0.0)], 0.0, 1.0, tmp_path / "mix.m4a")


def test_file_without_sound_is_named(tmp_path: Path) -> None:
    silent = write_video_with_sound(tmp_path / "silent.mp4", 0.5, None)
    clip = AudioClip(silent, 0.0, label="videos/silent.mp4 (layer 'bg')")
    with pytest.raises(UnsupportedMedia, match=r"videos/silent\.mp4 \(layer 'bg'\).*no audio"):
        mix_to_file([clip], 0.0, 1.0, tmp_path / "mix.m4a")


# --- clips from a template -----------------------------------------------------------------


def _template(root: Path, audio: list[dict[str, Any]]) -> LoadedTemplate:
    write_video_with_sound(root / "talk.mp4", 1.0, 0.4)
    write_video_with_sound(root / "mute.mp4", 1.0, None)
    write_wav(root / "music.wav", [(2.0, 0.5)])
    write_wav(root / "jingle.wav", [(0.5, 0.5)])
    data = {
        "width": 64,
        "height": 36,
        "fps": 30,
        "frames": 60,
        "layers": [
            {"id": "talk", "type": "video", "src": "talk.mp4", "in": 15, "out": 45, "trim": 0.2,
             "volume": 0.7},
            {"id": "mute", "type": "video", "src": "mute.mp4"},
            {"id": "hidden", "type": "video", "src": "talk.mp4", "visible": False},
            {"id": "quiet", "type": "video", "src": "talk.mp4", "volume": 0},
            {"id": "looped", "type": "video", "src": "talk.mp4", "loop": True, "in": 30},
        ],
        "audio": audio,
    }  # fmt: skip
    return LoadedTemplate(root, Template.model_validate(data))


def test_collect_clips_reads_tracks_and_video_sound(tmp_path: Path) -> None:
    loaded = _template(
        tmp_path,
        [{"id": "music", "src": "music.wav", "start": 15, "trim": 0.25, "volume": 0.8,
          "fadeIn": 3, "fadeOut": 6, "loop": True}],
    )  # fmt: skip
    clips = collect_clips(loaded)
    assert [c.path.name for c in clips] == ["music.wav", "talk.mp4", "talk.mp4"]
    music, talk, looped = clips
    assert music.start_s == pytest.approx(0.5)
    assert music.trim_s == 0.25 and music.volume == 0.8 and music.loop
    assert music.fade_in_s == pytest.approx(0.1) and music.fade_out_s == pytest.approx(0.2)
    assert music.end_s == pytest.approx(2.0)
    assert "music" in music.name
    assert talk.start_s == pytest.approx(0.5) and talk.end_s == pytest.approx(1.5)
    assert talk.trim_s == 0.2 and talk.volume == 0.7 and not talk.loop
    assert "talk" in talk.name
    assert looped.loop and looped.start_s == pytest.approx(1.0)
    assert looped.end_s == pytest.approx(2.0)


def test_extra_track_replaces_the_replaceable_one(tmp_path: Path) -> None:
    loaded = _template(
        tmp_path,
        [
            {"id": "music", "src": "music.wav", "start": 6, "trim": 1.0, "volume": 0.5,
             "fadeOut": 3, "replaceable": True},
            {"id": "sfx", "src": "jingle.wav"},
        ],
    )  # fmt: skip
    extra = write_wav(tmp_path / "upload.wav", [(1.0, 0.5)])
    clips = collect_clips(loaded, extra)
    assert [c.path.name for c in clips[:2]] == ["upload.wav", "jingle.wav"]
    replaced = clips[0]
    assert replaced.start_s == pytest.approx(0.2)
    assert replaced.volume == 0.5 and replaced.fade_out_s == pytest.approx(0.1)
    assert replaced.trim_s == 0  # the original's trim belonged to the original file
    assert "music.wav" not in [c.path.name for c in clips]


def test_extra_track_is_added_when_none_is_replaceable(tmp_path: Path) -> None:
    loaded = _template(tmp_path, [{"id": "sfx", "src": "jingle.wav"}])
    extra = write_wav(tmp_path / "upload.wav", [(1.0, 0.5)])
    clips = collect_clips(loaded, extra)
    names = [c.path.name for c in clips]
    assert names[:2] == ["jingle.wav", "upload.wav"]
    added = clips[1]
    assert added.start_s == 0 and added.volume == 1 and added.end_s == pytest.approx(2.0)


def test_video_layer_sound_is_mixed_in_its_time_span(tmp_path: Path) -> None:
    loaded = _template(tmp_path, [])
    clips = [c for c in collect_clips(loaded) if not c.loop]
    out = tmp_path / "mix.m4a"
    assert mix_to_file(clips, 0.0, 2.0, out)
    samples = decode(out)
    # Layer 'talk': frames 15-45 (0.5-1.5 s), trim 0.2 s of a 1 s source, volume 0.7:
    # the source runs out at 0.5 + 0.8 = 1.3 s.
    assert rms(samples, 0.0, 0.45) < 1e-3
    assert rms(samples, 0.6, 1.2) == pytest.approx(level(0.4 * 0.7), rel=0.05)
    assert rms(samples, 1.35, 1.95) < 1e-3


def test_template_track_start_and_fades_in_frames(tmp_path: Path) -> None:
    loaded = _template(tmp_path, [{"src": "music.wav", "start": 30, "fadeIn": 15, "volume": 0.5}])
    clips = [c for c in collect_clips(loaded) if c.path.name == "music.wav"]
    out = tmp_path / "mix.m4a"
    mix_to_file(clips, 0.0, Fraction(60, 30).__float__(), out)
    samples = decode(out)
    assert rms(samples, 0.0, 0.98) < 1e-3
    assert rms(samples, 1.24, 1.26) == pytest.approx(0.5 * level(0.25), rel=0.1)
    assert rms(samples, 1.6, 1.95) == pytest.approx(level(0.25), rel=0.03)
