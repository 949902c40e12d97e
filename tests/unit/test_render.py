"""End-to-end renders of tiny templates: frames, size, rate, colours, ranges, cancel."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from renderer.encode.config import EncoderConfig
from renderer.errors import InvalidCustomization, InvalidFrameRange, RenderCancelled
from renderer.plan import output_frames
from renderer.render import render, render_frame_png
from renderer.template.loader import load_template
from renderer.template.model import CustomizationEntry

# Lossless H.264 so decoded pixels equal what the compositor drew (up to 4:2:0 chroma).
LOSSLESS = EncoderConfig(rc=2, qp=0, preset=5)
W, H = 64, 36


def _template(root: Path) -> Path:
    """Background, a solid box sliding right, a half-transparent PNG, a fading text."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    Image.new("RGBA", (8, 8), (0, 255, 0, 255)).save(root / "images/green.png")
    data = {
        "version": 1,
        "width": W,
        "height": H,
        "fps": 10,
        "frames": 10,
        "background": "#204060",
        "layers": [
            {
                "id": "box",
                "type": "solid",
                "color": "#ff0000",
                "box": {"x": 0, "y": 4, "w": 8, "h": 8},
                "transform": {"position": [{"t": 0, "v": [4, 8]}, {"t": 9, "v": [40, 8]}]},
            },
            {
                "id": "img",
                "type": "image",
                "src": "images/green.png",
                "box": {"x": 48, "y": 20, "w": 8, "h": 8},
                "transform": {"opacity": 0.5},
            },
            {
                "id": "title",
                "type": "text",
                "text": "Hi",
                "size": 10,
                "box": {"x": 0, "y": 24, "w": 40, "h": 12},
                "in": 5,
            },
        ],
    }
    (root / "data.json").write_text(json.dumps(data))
    return root


def _decode(path: Path) -> tuple[list[np.ndarray], Fraction, tuple[int, int]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = Fraction(stream.average_rate) if stream.average_rate else Fraction(0)
        frames = [
            f.reformat(format="rgb24", src_colorspace="ITU709", src_color_range="MPEG")
            .to_ndarray()
            .astype(int)
            for f in container.decode(stream)
        ]
        return frames, rate, (stream.codec_context.width, stream.codec_context.height)


def _near(px: np.ndarray, rgb: tuple[int, int, int], tol: int = 4) -> bool:
    return bool(np.abs(px - np.array(rgb)).max() <= tol)


@pytest.fixture
def tpl_dir(tmp_path: Path) -> Path:
    return _template(tmp_path / "tpl")


def test_render_draws_layers_where_they_belong(tpl_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    progress: list[tuple[int, int]] = []
    report = render(
        load_template(tpl_dir),
        out,
        encoder=LOSSLESS,
        on_progress=lambda d, t: progress.append((d, t)),
    )
    frames, rate, size = _decode(out)
    assert len(frames) == report.frames == 10
    assert rate == 10 and size == (W, H) and report.fps == 10
    assert report.encoder == "libx264" and not report.hardware
    assert set(report.stages_s) == {"decode", "composite", "convert", "encode", "audio", "mux"}
    assert progress[-1] == (10, 10) and [d for d, _ in progress] == list(range(1, 11))
    first, last = frames[0], frames[9]
    assert _near(first[2, 2], (0x20, 0x40, 0x60))  # background
    assert _near(first[8, 4], (255, 0, 0))  # box centred on (4, 8) at frame 0
    assert _near(last[8, 40], (255, 0, 0)) and _near(last[8, 4], (0x20, 0x40, 0x60))
    # Green at half opacity over the background.
    assert _near(first[24, 52], (0x10, 0x20 + 0x80, 0x30), tol=5)
    # Text appears at frame 5 only.
    assert frames[4][24:36, 0:40].max() <= 0x60 + 5
    assert frames[5][24:36, 0:40].max() > 200  # white text
    assert [f.layer_id for f in report.text_fits] == ["title"]
    assert not list(tmp_path.glob(".out.mp4*")), "temporary files left behind"


def test_customisations_change_colour_and_visibility(tpl_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.mp4"
    render(
        load_template(tpl_dir),
        out,
        encoder=LOSSLESS,
        frames=(0, 2),
        customizations=[
            CustomizationEntry(layer_id="box", color="#0000ff"),
            CustomizationEntry(layer_id="img", visible=False),
        ],
    )
    frames, _, _ = _decode(out)
    assert _near(frames[0][8, 4], (0, 0, 255))
    assert _near(frames[0][24, 52], (0x20, 0x40, 0x60))
    with pytest.raises(InvalidCustomization, match="nope"):
        render(
            load_template(tpl_dir),
            tmp_path / "x.mp4",
            customizations=[CustomizationEntry(layer_id="nope", text="x")],
        )
    assert not (tmp_path / "x.mp4").exists()


def test_frame_range_renders_the_same_frames(tpl_dir: Path, tmp_path: Path) -> None:
    full, part = tmp_path / "full.mp4", tmp_path / "part.mp4"
    render(load_template(tpl_dir), full, encoder=LOSSLESS)
    report = render(load_template(tpl_dir), part, encoder=LOSSLESS, frames=(3, 7))
    a, _, _ = _decode(full)
    b, _, _ = _decode(part)
    assert report.frames == len(b) == 4
    for i in range(4):
        assert np.abs(a[3 + i] - b[i]).max() <= 2
    with pytest.raises(InvalidFrameRange):
        render(load_template(tpl_dir), tmp_path / "bad.mp4", frames=(5, 5))


def test_output_size_and_rate_resample_the_composition(tpl_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "small.mp4"
    cfg = EncoderConfig(rc=2, qp=0, preset=5, res=(32, 18), fps_num=20)
    report = render(load_template(tpl_dir), out, encoder=cfg)
    frames, rate, size = _decode(out)
    assert size == (32, 18) and rate == 20 and len(frames) == report.frames == 20
    # Box centre (4, 8) in template pixels is (2, 4) here; at output frame 1 (t = 0.05 s,
    # template frame 0.5) it has moved 2 template px = 1 output px.
    assert _near(frames[0][4, 2], (255, 0, 0), tol=8)
    assert _near(frames[0][4, 6], (0x20, 0x40, 0x60), tol=8)


def test_output_frames_tile_across_ranges() -> None:
    first = output_frames(0, 4, Fraction(10), Fraction(24))
    second = output_frames(4, 10, Fraction(10), Fraction(24))
    whole = output_frames(0, 10, Fraction(10), Fraction(24))
    assert first[0] == 0 and first[1] == second[0] and (first[0], second[1]) == whole
    assert whole == (0, 24)


def test_cancel_raises_and_leaves_nothing(tpl_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "outdir"
    out_dir.mkdir()
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(RenderCancelled):
        render(load_template(tpl_dir), out_dir / "o.mp4", should_cancel=cancel)
    assert list(out_dir.iterdir()) == []


def test_preview_png_matches_the_composition(tpl_dir: Path, tmp_path: Path) -> None:
    png = tmp_path / "p.png"
    render_frame_png(
        load_template(tpl_dir), [CustomizationEntry(layer_id="box", color="#ffff00")], 9, png
    )
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert rgb.shape == (H, W, 3)
    assert rgb[8, 40].tolist() == [255, 255, 0]
    assert rgb[2, 2].tolist() == [0x20, 0x40, 0x60]
    with pytest.raises(InvalidFrameRange):
        render_frame_png(load_template(tpl_dir), [], 10, png)


def test_video_background_and_audio_from_the_demo(demo_template_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo.mp4"
    report = render(load_template(demo_template_dir), out, encoder=EncoderConfig(preset=5))
    assert report.has_audio and report.frames == 12
    with av.open(str(out)) as container:
        assert container.streams.video[0].frames == 12
        assert container.streams.audio[0].codec_context.name == "aac"
    assert {f.layer_id for f in report.text_fits} >= {"headline"}


def test_full_frame_video_and_picture_in_picture(tmp_path: Path) -> None:
    from tests.unit.test_layers import grey_level, make_grey_video

    root = tmp_path / "vid"
    (root / "videos").mkdir(parents=True)
    make_grey_video(root / "videos/g.mp4", 12, 12, w=W, h=H)
    data = {
        "version": 1, "width": W, "height": H, "fps": 24, "frames": 24,
        "layers": [
            {"id": "bg", "type": "video", "src": "videos/g.mp4", "loop": True},
            {"id": "pip", "type": "video", "src": "videos/g.mp4", "trim": 0.5, "fit": "fill",
             "box": {"x": 0, "y": 0, "w": 16, "h": 8}},
        ],
    }  # fmt: skip
    (root / "data.json").write_text(json.dumps(data))
    out = tmp_path / "v.mp4"
    render(load_template(root), out, encoder=LOSSLESS)
    with av.open(str(out)) as container:
        lumas = [
            np.frombuffer(f.planes[0], np.uint8).reshape(H, -1) for f in container.decode(video=0)
        ]
        got_bg = [int(y[30, 40]) for y in lumas]
        got_pip = [int(y[4, 8]) for y in lumas]
    # Output frame i (24 fps) shows source frame floor(i / 2) of the looping 12 fps clip.
    assert got_bg == [grey_level((i // 2) % 12) for i in range(24)]
    # The PiP starts half a second in and holds its last frame.
    assert got_pip == [grey_level(min(6 + i // 2, 11)) for i in range(24)]
