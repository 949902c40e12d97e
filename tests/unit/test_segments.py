"""Render only what changed: static span detection, the span cache, segmented renders."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import numpy as np
import pytest

from renderer.encode.config import EncoderConfig
from renderer.errors import RenderCancelled
from renderer.plan import OutputPlan
from renderer.render import render
from renderer.segments import SpanCache, plan_spans, render_segmented, span_key
from renderer.template.loader import load_template
from renderer.template.model import CustomizationEntry, LoadedTemplate

W, H = 64, 36
FRAMES = 50
# Lossless, so a segmented render and a one-piece render decode to identical pixels; GOP 5.
LOSSLESS = EncoderConfig(rc=2, qp=0, preset=5, gop=5)


def _solid(layer_id: str, color: str, x: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": layer_id,
        "type": "solid",
        "color": color,
        "box": {"x": x, "y": 4, "w": 12, "h": 12},
        **extra,
    }


def _template(root: Path, fixtures_module: ModuleType) -> LoadedTemplate:
    """A moving background box the whole time; a name card in frames [0, 8); a fading badge
    in [20, 35) whose opacity reaches 0 at frame 27; a hidden layer in [30, 36); an end card
    in [42, 50); a tone under it all."""
    root.mkdir(parents=True, exist_ok=True)
    fixtures_module.make_audio(root / "tone.wav", seconds=6.0)
    data = {
        "version": 1,
        "width": W,
        "height": H,
        "fps": 10,
        "frames": FRAMES,
        "background": "#204060",
        "layers": [
            {
                "id": "bg",
                "type": "solid",
                "color": "#ff0000",
                "box": {"x": 0, "y": 20, "w": 8, "h": 8},
                "transform": {
                    "position": [{"t": 0, "v": [4, 24]}, {"t": FRAMES - 1, "v": [60, 24]}]
                },
            },
            _solid("name", "#ffffff", 2, out=8),
            _solid(
                "badge",
                "#00ff00",
                20,
                **{
                    "in": 20,
                    "out": 35,
                    "transform": {"opacity": [{"t": 20, "v": 1}, {"t": 27, "v": 0}]},
                },
            ),
            _solid("ghost", "#ff00ff", 30, visible=False, **{"in": 30, "out": 36}),
            _solid("end", "#ffff00", 40, **{"in": 42}),
        ],
        "audio": [{"id": "music", "src": "tone.wav"}],
    }
    (root / "data.json").write_text(json.dumps(data))
    return load_template(root)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, fixtures_module: ModuleType) -> LoadedTemplate:
    return _template(tmp_path_factory.mktemp("segments") / "tpl", fixtures_module)


def _plan(
    loaded: LoadedTemplate, config: EncoderConfig, frames: tuple[int, int] = (0, FRAMES)
) -> OutputPlan:
    return OutputPlan.of(loaded.template, config, frames)


def _entries(*raw: dict[str, Any]) -> list[CustomizationEntry]:
    return [CustomizationEntry.model_validate(r) for r in raw]


def _kinds(loaded: LoadedTemplate, *raw: dict[str, Any]) -> list[tuple[int, int, bool]]:
    spans = plan_spans(loaded, _entries(*raw), _plan(loaded, LOSSLESS, (0, FRAMES)))
    return [(s.k_start, s.k_end, s.static) for s in spans]


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]


def _keyframes(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stamped = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.pts is not None]
    return [i for i, (_, key) in enumerate(sorted(stamped)) if key]


# --- span detection -------------------------------------------------------------------------


def test_nothing_customised_is_one_static_span(loaded: LoadedTemplate) -> None:
    assert _kinds(loaded) == [(0, 50, True)]


def test_a_customised_layer_is_dynamic_in_the_gops_it_is_on_screen(loaded: LoadedTemplate) -> None:
    # The name card shows in [0, 8): GOPs [0, 5) and [5, 10).
    assert _kinds(loaded, {"layerId": "name", "color": "#000000"}) == [
        (0, 10, False),
        (10, 50, True),
    ]
    # in/out: the end card shows from 42 to the end.
    assert _kinds(
        loaded,
        {"layerId": "name", "text": None, "color": "#000000"},
        {
            "layerId": "end",
            "color": "#123456",
        },
    ) == [(0, 10, False), (10, 40, True), (40, 50, False)]


def test_opacity_reaching_zero_ends_the_dynamic_span(loaded: LoadedTemplate) -> None:
    # The badge is on from 20 but fully transparent from frame 27: GOPs [20, 25), [25, 30).
    assert _kinds(loaded, {"layerId": "badge", "color": "#000000"}) == [
        (0, 20, True),
        (20, 30, False),
        (30, 50, True),
    ]


def test_visibility_counts_where_the_layer_would_be_on_screen(loaded: LoadedTemplate) -> None:
    # Hiding the name card changes the frames it would have been drawn in.
    assert _kinds(loaded, {"layerId": "name", "visible": False})[0] == (0, 10, False)
    # Showing a layer the template hides changes its frames [30, 36).
    assert _kinds(loaded, {"layerId": "ghost", "visible": True}) == [
        (0, 30, True),
        (30, 40, False),
        (40, 50, True),
    ]


def test_spans_keep_the_keyframe_grid_of_a_partial_range(loaded: LoadedTemplate) -> None:
    entries = _entries({"layerId": "end", "color": "#000000"})
    spans = plan_spans(loaded, entries, _plan(loaded, LOSSLESS, (3, 50)))
    # GOPs count from the range's first output frame (3): boundaries at 3, 8, ..., 38, 43.
    assert [(s.k_start, s.k_end, s.static) for s in spans] == [(3, 38, True), (38, 50, False)]


# --- segmented renders and the cache --------------------------------------------------------


def test_cached_render_is_identical_to_uncached(loaded: LoadedTemplate, tmp_path: Path) -> None:
    cache = SpanCache(tmp_path / "cache", 64 * 1024 * 1024)
    first = render_segmented(
        loaded,
        tmp_path / "a.mp4",
        cache=cache,
        encoder=LOSSLESS,
        customizations=_entries({"layerId": "name", "color": "#000000"}),
    )
    assert first.cached_frames == 0 and first.has_audio
    assert cache.stats().entries == 2  # the static span and the mixed sound

    second_entries = _entries({"layerId": "name", "color": "#00ffff"})
    second = render_segmented(
        loaded, tmp_path / "b.mp4", cache=cache, encoder=LOSSLESS, customizations=second_entries
    )
    assert second.cached_frames == 40 and second.frames == 50
    assert second.spans == [(0, 10, False, False), (10, 50, True, True)]

    # The same render with no cache at all, and the same in one piece.
    uncached = render_segmented(
        loaded, tmp_path / "c.mp4", cache=None, encoder=LOSSLESS, customizations=second_entries
    )
    assert uncached.cached_frames == 0
    assert (tmp_path / "b.mp4").read_bytes() == (tmp_path / "c.mp4").read_bytes()
    render(loaded, tmp_path / "d.mp4", encoder=LOSSLESS, customizations=second_entries)
    a, b, d = _decode(tmp_path / "a.mp4"), _decode(tmp_path / "b.mp4"), _decode(tmp_path / "d.mp4")
    assert len(b) == len(d) == 50
    for index, (x, y) in enumerate(zip(b, d, strict=True)):
        assert np.array_equal(x, y), f"frame {index} differs from the one-piece render"
    # Not a trivial comparison: the customised frames differ between the two renders.
    assert not np.array_equal(a[0], b[0]) and np.array_equal(a[20], b[20])
    assert _keyframes(tmp_path / "b.mp4") == list(range(0, 50, 5))


def test_replacement_media_are_probed_once_per_segmented_render(
    tmp_path: Path, fixtures_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from renderer.template import customize

    root = tmp_path / "tpl"
    root.mkdir()
    fixtures_module.make_png(root / "photo.png", 12, 12, color=(10, 200, 30))
    fixtures_module.make_png(tmp_path / "me.png", 12, 12, color=(200, 10, 30))
    fixtures_module.make_audio(root / "tone.wav", seconds=6.0)
    data = {
        "version": 1,
        "width": W,
        "height": H,
        "fps": 10,
        "frames": FRAMES,
        "layers": [
            {"id": "photo", "type": "image", "src": "photo.png", "out": 8,
             "box": {"x": 2, "y": 4, "w": 12, "h": 12}},
            _solid("end", "#ffff00", 40, **{"in": 42}),
        ],
        "audio": [{"id": "music", "src": "tone.wav"}],
    }  # fmt: skip
    (root / "data.json").write_text(json.dumps(data))
    template = load_template(root)
    entries = _entries(
        {"layerId": "photo", "src": str(tmp_path / "me.png")},
        {"layerId": "end", "color": "#123456"},
    )
    probed: list[str] = []
    real = customize.probe_image

    def counted(path: Path, name: str | None = None) -> Any:
        probed.append(Path(path).name)
        return real(path, name)

    monkeypatch.setattr(customize, "probe_image", counted)
    report = render_segmented(
        template, tmp_path / "s.mp4", cache=None, encoder=LOSSLESS, customizations=entries
    )
    # Two dynamic spans rendered, a static one between them, the sound mixed once: the
    # replacement is applied (and probed) once for all of them.
    assert [(k0, k1, static) for k0, k1, static, _ in report.spans] == [
        (0, 10, False),
        (10, 40, True),
        (40, 50, False),
    ]
    assert probed == ["me.png"]
    render(template, tmp_path / "one.mp4", encoder=LOSSLESS, customizations=entries)
    pieces, whole = _decode(tmp_path / "s.mp4"), _decode(tmp_path / "one.mp4")
    assert len(pieces) == len(whole) == FRAMES
    for index, (x, y) in enumerate(zip(pieces, whole, strict=True)):
        assert np.array_equal(x, y), f"frame {index} differs from the one-piece render"


def test_a_corrupt_entry_is_ignored_and_rebuilt(loaded: LoadedTemplate, tmp_path: Path) -> None:
    cache = SpanCache(tmp_path / "cache", 64 * 1024 * 1024)
    entries = _entries({"layerId": "end", "color": "#000000"})
    render_segmented(
        loaded, tmp_path / "a.mp4", cache=cache, encoder=LOSSLESS, customizations=entries
    )
    entries_on_disk = list((tmp_path / "cache").glob("*/*.mp4"))
    assert len(entries_on_disk) == 2
    for entry in entries_on_disk:
        data = bytearray(entry.read_bytes())
        data[len(data) // 2] ^= 0xFF
        entry.write_bytes(bytes(data))
    report = render_segmented(
        loaded, tmp_path / "b.mp4", cache=cache, encoder=LOSSLESS, customizations=entries
    )
    assert report.cached_frames == 0  # the damaged span was rendered again ...
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    third = render_segmented(
        loaded, tmp_path / "c.mp4", cache=cache, encoder=LOSSLESS, customizations=entries
    )
    assert third.cached_frames == 40  # ... and stored whole again


def test_what_a_killed_writer_leaves_is_never_served(
    loaded: LoadedTemplate, tmp_path: Path
) -> None:
    """A writer killed mid-write leaves a temporary, or a video without its record (the
    record is renamed in last); neither is served, and the next render rebuilds it."""
    cache = SpanCache(tmp_path / "cache", 64 * 1024 * 1024)
    entries = _entries({"layerId": "end", "color": "#000000"})
    render_segmented(
        loaded, tmp_path / "a.mp4", cache=cache, encoder=LOSSLESS, customizations=entries
    )
    for meta in (tmp_path / "cache").glob("*/*.json"):
        video = meta.with_suffix(".mp4")
        # Killed between the two renames: the video is there, truncated, with no record.
        meta.unlink()
        video.write_bytes(video.read_bytes()[:100])
        (video.parent / f".{video.name}.dead.tmp").write_bytes(b"partial")
    report = render_segmented(
        loaded, tmp_path / "b.mp4", cache=cache, encoder=LOSSLESS, customizations=entries
    )
    assert report.cached_frames == 0
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_concurrent_writers_and_readers_see_whole_entries(tmp_path: Path) -> None:
    cache = SpanCache(tmp_path / "cache", 64 * 1024 * 1024)
    payloads = [bytes([i]) * (200_000 + i) for i in range(4)]
    sources = []
    for i, payload in enumerate(payloads):
        src = tmp_path / f"src{i}.mp4"
        src.write_bytes(payload)
        sources.append(src)
    key = "ab" + "0" * 62
    bad: list[int] = []

    def write(i: int) -> None:
        for _ in range(15):
            cache.store(key, sources[i])

    def read(n: int) -> None:
        for j in range(40):
            dest = tmp_path / f"read-{n}-{j}.mp4"
            if cache.fetch(key, dest):
                if dest.read_bytes() not in payloads:
                    bad.append(j)
                dest.unlink()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=read, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []
    final = tmp_path / "final.mp4"
    assert cache.fetch(key, final) and final.read_bytes() in payloads
    assert not list((tmp_path / "cache").glob("*/.*.tmp"))


def test_eviction_removes_the_least_recently_used(tmp_path: Path) -> None:
    cache = SpanCache(tmp_path / "cache", 250_000)
    for i in range(3):
        src = tmp_path / f"s{i}.bin"
        src.write_bytes(bytes([i]) * 100_000)
        key = f"{i:02d}" + "f" * 62
        cache.store(key, src)
        # Distinct access times without waiting: set them explicitly.
        meta = tmp_path / "cache" / key[:2] / f"{key}.json"
        os.utime(meta, (1_000_000 + i, 1_000_000 + i))
        cache.evict()
    assert cache.stats().entries == 2
    assert not cache.fetch("00" + "f" * 62, tmp_path / "x.bin")  # the oldest went first
    assert cache.fetch("02" + "f" * 62, tmp_path / "y.bin")
    assert cache.stats().bytes <= 250_000


def test_cancel_mid_assembly_leaves_nothing(loaded: LoadedTemplate, tmp_path: Path) -> None:
    cache = SpanCache(tmp_path / "cache", 64 * 1024 * 1024)
    entries = _entries(
        {"layerId": "name", "color": "#000000"}, {"layerId": "end", "color": "#000000"}
    )
    render_segmented(
        loaded, tmp_path / "warm.mp4", cache=cache, encoder=LOSSLESS, customizations=entries
    )
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)

    out = tmp_path / "out" / "cancelled.mp4"
    with pytest.raises(RenderCancelled):
        render_segmented(
            loaded,
            out,
            cache=cache,
            encoder=LOSSLESS,
            customizations=entries,
            on_progress=progress,
            # Cancel once the cached middle span has been placed (progress passed 10 frames).
            should_cancel=lambda: bool(seen) and seen[-1] >= 40,
        )
    assert seen and seen[-1] >= 40
    assert list(out.parent.iterdir()) == []


def test_keys_change_with_the_template_and_the_encoder(
    loaded: LoadedTemplate, tmp_path: Path, fixtures_module: ModuleType
) -> None:
    plan = _plan(loaded, LOSSLESS)
    span = plan_spans(loaded, [], plan)[0]
    base = span_key(loaded, plan, "libx264", span)
    assert base == span_key(loaded, plan, "libx264", span)
    other_cfg = EncoderConfig(rc=2, qp=1, preset=5, gop=5)
    assert base != span_key(loaded, _plan(loaded, other_cfg), "libx264", span)
    larger = EncoderConfig(rc=2, qp=0, preset=5, gop=5, res=(W * 2, H * 2))
    assert base != span_key(loaded, _plan(loaded, larger), "libx264", span)
    copy = _template(tmp_path / "copy", fixtures_module)
    assert span_key(copy, plan, "libx264", span) == base  # content, not path
    data = json.loads((tmp_path / "copy" / "data.json").read_text())
    data["background"] = "#000000"
    (tmp_path / "copy" / "data.json").write_text(json.dumps(data))
    changed = load_template(tmp_path / "copy")
    assert span_key(changed, plan, "libx264", span) != base


def test_size_limit_holds_across_spans(loaded: LoadedTemplate, tmp_path: Path) -> None:
    from renderer.errors import OutputTooLarge

    cache = SpanCache(tmp_path / "cache", 64 * 1024 * 1024)
    entries = _entries({"layerId": "name", "color": "#000000"})
    full = render_segmented(
        loaded, tmp_path / "full.mp4", cache=cache, encoder=LOSSLESS, customizations=entries
    )
    out = tmp_path / "out" / "capped.mp4"
    with pytest.raises(OutputTooLarge):
        # The cached span alone fits; the whole video does not.
        render_segmented(
            loaded,
            out,
            cache=cache,
            encoder=LOSSLESS,
            customizations=entries,
            max_output_bytes=full.output_bytes - 1,
        )
    assert list(out.parent.iterdir()) == []
