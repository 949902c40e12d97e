"""Chunked renders: GOP-aligned ranges, joining chunks without re-encoding, one audio mix."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import av
import numpy as np
import pytest

from renderer.encode.concat import ChunkMismatch, concat_chunks, finalize
from renderer.encode.config import EncoderConfig
from renderer.plan import OutputPlan
from renderer.render import render
from renderer.template.loader import load_template
from renderer.template.model import LoadedTemplate

W, H = 64, 36
# Lossless so a chunked render and a single one decode to identical pixels; GOP 5.
LOSSLESS = EncoderConfig(rc=2, qp=0, preset=5, gop=5)


def _template(root: Path, fixtures_module: ModuleType, frames: int = 30) -> LoadedTemplate:
    """A box sliding across (every frame differs) over a tone that outlasts the video."""
    root.mkdir(parents=True, exist_ok=True)
    fixtures_module.make_audio(root / "tone.wav", seconds=5.0)
    data = {
        "version": 1,
        "width": W,
        "height": H,
        "fps": 10,
        "frames": frames,
        "background": "#204060",
        "layers": [
            {
                "id": "box",
                "type": "solid",
                "color": "#ff0000",
                "box": {"x": 0, "y": 4, "w": 8, "h": 8},
                "transform": {
                    "position": [{"t": 0, "v": [4, 8]}, {"t": frames - 1, "v": [60, 28]}]
                },
            }
        ],
        "audio": [{"id": "music", "src": "tone.wav"}],
    }
    (root / "data.json").write_text(json.dumps(data))
    return load_template(root)


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]


def _keyframes(path: Path) -> list[int]:
    """Indices (in presentation order) of the keyframes."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stamped = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.pts is not None]
    return [i for i, (_, key) in enumerate(sorted(stamped)) if key]


def _audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(f.samples for f in container.decode(stream))
        return samples / stream.codec_context.sample_rate


def _video_seconds(path: Path) -> Fraction:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.duration is not None and stream.time_base is not None
        return Fraction(stream.duration) * stream.time_base


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, fixtures_module: ModuleType) -> LoadedTemplate:
    return _template(tmp_path_factory.mktemp("concat") / "tpl", fixtures_module)


def _chunk_ranges(
    loaded: LoadedTemplate, config: EncoderConfig, frames: tuple[int, int], chunk_frames: int
) -> list[tuple[int, int]]:
    plan = OutputPlan.of(loaded.template, config, frames)
    return [part.frame_range for part in plan.chunks(chunk_frames)]


def _render_chunked(
    loaded: LoadedTemplate, tmp: Path, frames: tuple[int, int], chunk_frames: int
) -> tuple[Path, list[tuple[int, int]]]:
    ranges = _chunk_ranges(loaded, LOSSLESS, frames, chunk_frames)
    parts = []
    for index, rng in enumerate(ranges):
        part = tmp / f"chunk-{index}.mp4"
        report = render(loaded, part, encoder=LOSSLESS, frames=rng, audio=False)
        assert not report.has_audio
        with av.open(str(part)) as container:
            assert not container.streams.audio  # chunks carry no sound
        parts.append(part)
    joined = tmp / "joined.mp4"
    concat_chunks(parts, joined)
    out = tmp / "chunked.mp4"
    assert finalize(joined, loaded, out, encoder=LOSSLESS, frames=frames)
    return out, ranges


def test_chunk_ranges_tile_the_range_on_gop_boundaries(loaded: LoadedTemplate) -> None:
    assert _chunk_ranges(loaded, LOSSLESS, (0, 30), 10) == [(0, 10), (10, 20), (20, 30)]
    # Rounded down to whole GOPs (12 -> 10), the remainder in the last chunk.
    assert _chunk_ranges(loaded, LOSSLESS, (3, 30), 12) == [(3, 13), (13, 23), (23, 30)]
    # Shorter than a GOP still means one GOP per chunk.
    assert _chunk_ranges(loaded, LOSSLESS, (0, 12), 2) == [(0, 5), (5, 10), (10, 12)]
    assert _chunk_ranges(loaded, LOSSLESS, (0, 30), 900) == [(0, 30)]
    # Output at 5 fps from a 10 fps template: 10 output frames = 2 GOPs = 20 template frames.
    half = EncoderConfig.parse({"rc": 2, "qp": 0, "gop": 5, "fpsNum": 5})
    assert _chunk_ranges(loaded, half, (0, 30), 10) == [(0, 20), (20, 30)]


def test_chunked_render_equals_single_render(loaded: LoadedTemplate, tmp_path: Path) -> None:
    frames = (3, 30)
    chunked, ranges = _render_chunked(loaded, tmp_path, frames, 10)
    assert len(ranges) == 3
    single = tmp_path / "single.mp4"
    report = render(loaded, single, encoder=LOSSLESS, frames=frames)
    assert report.frames == 27 and report.has_audio

    a, b = _decode(chunked), _decode(single)
    assert len(a) == len(b) == 27
    for index, (x, y) in enumerate(zip(a, b, strict=True)):
        assert np.array_equal(x, y), f"frame {index} differs"
    # Not a trivial comparison: the box moves, so consecutive frames differ.
    assert not np.array_equal(a[0], a[1])
    assert _keyframes(chunked) == _keyframes(single) == [0, 5, 10, 15, 20, 25]
    assert _video_seconds(chunked) == _video_seconds(single) == Fraction(27, 10)
    # The tone lasts 5 s: the mix is cut to the video's 2.7 s (AAC frames are 1024 samples).
    assert _audio_seconds(chunked) == pytest.approx(2.7, abs=1024 / 48_000)
    assert _audio_seconds(chunked) == pytest.approx(_audio_seconds(single), abs=1e-9)


def test_mismatched_chunks_are_refused(loaded: LoadedTemplate, tmp_path: Path) -> None:
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    render(loaded, a, encoder=LOSSLESS, frames=(0, 10), audio=False)
    other = EncoderConfig(rc=2, qp=0, preset=5, gop=5, res=(32, 18))
    render(loaded, b, encoder=other, frames=(10, 20), audio=False)
    with pytest.raises(ChunkMismatch, match=r"b\.mp4 differs .* width, height"):
        concat_chunks([a, b], tmp_path / "joined.mp4")
    h265 = EncoderConfig(codec=1, rc=2, qp=20, gop=5)
    c = tmp_path / "c.mp4"
    render(loaded, c, encoder=h265, frames=(10, 20), audio=False)
    with pytest.raises(ChunkMismatch, match="codec"):
        concat_chunks([a, c], tmp_path / "joined2.mp4")
    with pytest.raises(ValueError, match="at least one"):
        concat_chunks([], tmp_path / "joined3.mp4")


def test_concat_of_one_chunk_is_a_copy(loaded: LoadedTemplate, tmp_path: Path) -> None:
    part = tmp_path / "part.mp4"
    render(loaded, part, encoder=LOSSLESS, frames=(0, 7), audio=False)
    joined = tmp_path / "joined.mp4"
    assert concat_chunks([part], joined) == 7
    assert all(np.array_equal(x, y) for x, y in zip(_decode(part), _decode(joined), strict=True))
