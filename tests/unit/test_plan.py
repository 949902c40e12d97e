"""One output plan: submission, chunking, span rendering and the render itself count the same
output frames for a range, whatever the template and output rates."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from jobs.errors import Refused
from jobs.renders.submission import RenderSpec, estimate, output_plan
from renderer.encode.config import EncoderConfig
from renderer.plan import OutputPlan
from renderer.render import render
from renderer.segments import render_segmented
from renderer.template.loader import load_template
from renderer.template.model import Template

W, H = 32, 18


def _definition(fps: Any, frames: int) -> dict[str, Any]:
    return {
        "version": 1,
        "width": W,
        "height": H,
        "fps": fps,
        "frames": frames,
        "background": "#204060",
        "layers": [
            {
                "id": "box",
                "type": "solid",
                "color": "#ff0000",
                "box": {"x": 0, "y": 2, "w": 8, "h": 8},
                "transform": {"position": [{"t": 0, "v": [4, 6]}, {"t": frames, "v": [28, 12]}]},
            }
        ],
    }


def _decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


# (template fps, output fpsNum/fpsDenum or None, [fStart, fEnd)). Most are ranges where
# "range length x rate ratio, rounded up" is a frame more than the frames the render writes.
CASES = [
    (30, (24, 1), (1, 26)),
    (30, (24, 1), (7, 18)),
    (25, (30, 1), (1, 12)),
    (25, (30, 1), (2, 19)),
    ([30000, 1001], (25, 1), (3, 20)),
    (24, (30000, 1001), (5, 22)),
    (10, (24, 1), (3, 7)),
    (30, None, (0, 30)),
]


@pytest.mark.parametrize(("fps", "out_fps", "frames"), CASES)
def test_submission_chunks_and_renders_count_the_same_frames(
    fps: Any, out_fps: tuple[int, int] | None, frames: tuple[int, int], tmp_path: Path
) -> None:
    definition = _definition(fps, 30)
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "data.json").write_text(json.dumps(definition))
    loaded = load_template(tmp_path / "tpl")
    raw: dict[str, Any] = {"bitrate": 200_000, "preset": 5, "gop": 4}
    if out_fps is not None:
        raw |= {"fpsNum": out_fps[0], "fpsDenum": out_fps[1]}
    spec = RenderSpec(name="n", encoder_config=raw, f_start=frames[0], f_end=frames[1])

    # What submission stores as frames_total (and charges the estimate for).
    submitted = output_plan(Template.model_validate(definition), spec)
    plan = OutputPlan.of(loaded.template, EncoderConfig.parse(raw), frames)
    assert submitted == plan
    assert estimate(plan)[0] >= 1

    parts = plan.chunks(4)
    assert len(parts) > 1
    assert sum(part.frames for part in parts) == plan.frames
    assert (parts[0].f_start, parts[-1].f_end) == frames
    for a, b in zip(parts, parts[1:], strict=False):
        assert a.f_end == b.f_start and a.k_end == b.k_start

    whole = render(loaded, tmp_path / "whole.mp4", encoder=plan.encoder, frames=frames)
    assert whole.frames == plan.frames == _decoded_frames(tmp_path / "whole.mp4")
    for index, part in enumerate(parts):
        report = render(loaded, tmp_path / f"part{index}.mp4", plan=part, audio=False)
        assert report.frames == part.frames
    spans = render_segmented(
        loaded,
        tmp_path / "spans.mp4",
        cache=None,
        encoder=plan.encoder,
        frames=frames,
        encoder_preference="software",
    )
    assert len(spans.spans) >= 1 and spans.frames == plan.frames


def test_a_range_without_output_frames_is_refused_at_submission() -> None:
    # At 60 fps a single template frame lasts 1/60 s: no 24 fps output frame starts in
    # [1/60, 2/60), so the render could only fail later.
    model = Template.model_validate(_definition(60, 30))
    spec = RenderSpec(
        name="n", encoder_config={"bitrate": 200_000, "fpsNum": 24}, f_start=1, f_end=2
    )
    with pytest.raises(Refused) as info:
        output_plan(model, spec)
    assert info.value.code == "invalid_frame_range"
    assert info.value.detail.startswith("jobInfo: frames [1, 2) contain no output frame")


def test_parts_keep_their_place_in_the_whole_render() -> None:
    model = Template.model_validate(_definition(10, 30))
    plan = OutputPlan.of(model, EncoderConfig(fps_num=24, gop=5), (3, 30))
    part = plan.part(10, 20)
    assert (part.k_start, part.k_end) == (24, 48)
    assert part.times()[0] == pytest.approx(1.0) and part.start_s == pytest.approx(1.0)
    assert part.duration_s == pytest.approx(1.0)
    assert plan.times()[part.k_start - plan.k_start] == part.times()[0]
    assert plan.fps == Fraction(24) and plan.template_fps == Fraction(10)
