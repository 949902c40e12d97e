"""The renderer's limits: an output size cap checked at every packet, and stop requests
polled during set-up as well as between frames (the worker's budget deadline rides on it)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from renderer.encode.config import EncoderConfig
from renderer.encode.encoder import VideoEncoder, plane_arrays
from renderer.errors import OutputTooLarge, RenderCancelled
from renderer.render import render
from renderer.template.loader import load_template

# Lossless: every frame of noise costs about its raw size, so the sizes below are certain.
LOSSLESS = EncoderConfig(rc=2, qp=0, preset=5)
W, H = 64, 36


def _template(root: Path, frames: int = 12) -> Path:
    root.mkdir(parents=True, exist_ok=True)
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
                "transform": {"position": [{"t": 0, "v": [4, 8]}, {"t": 9, "v": [40, 8]}]},
            },
            {"id": "label", "type": "text", "text": "Hi", "size": 10},
        ],
    }
    (root / "data.json").write_text(json.dumps(data))
    return root


def test_encoder_refuses_the_packet_that_would_pass_the_cap(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    path = tmp_path / "noise.mp4"
    limit = 20_000  # a 64x36 frame of noise is ~3.4 KB raw; 30 of them cannot fit
    with (
        pytest.raises(OutputTooLarge) as caught,
        VideoEncoder(path, W, H, Fraction(10), LOSSLESS, "software", max_bytes=limit) as enc,
    ):
        for _ in range(30):
            frame = enc.new_frame()
            for plane in plane_arrays(frame):
                plane[...] = rng.integers(0, 256, plane.shape, dtype=np.uint8)
            enc.encode(frame)
    assert caught.value.limit == limit and caught.value.written > limit
    # Nothing past the cap was written: the refused packet never reached the file.
    assert enc.bytes_written <= limit
    assert path.stat().st_size <= limit + 4096  # plus the header and the index


def test_render_over_its_size_limit_fails_and_leaves_nothing(tmp_path: Path) -> None:
    loaded = load_template(_template(tmp_path / "tpl"))
    full = tmp_path / "full.mp4"
    report = render(loaded, full, encoder=LOSSLESS, encoder_preference="software")
    size = full.stat().st_size
    assert report.output_bytes == size

    out_dir = tmp_path / "capped"
    out_dir.mkdir()
    with pytest.raises(OutputTooLarge) as caught:
        render(
            loaded,
            out_dir / "o.mp4",
            encoder=LOSSLESS,
            encoder_preference="software",
            max_output_bytes=size - 1,
        )
    assert caught.value.limit == size - 1
    assert list(out_dir.iterdir()) == []  # neither the output nor the scratch folder

    # A cap the whole file fits in is no obstacle.
    render(
        loaded,
        out_dir / "ok.mp4",
        encoder=LOSSLESS,
        encoder_preference="software",
        max_output_bytes=size,
    )
    assert (out_dir / "ok.mp4").stat().st_size == size


def test_stop_requests_are_honoured_during_set_up(tmp_path: Path) -> None:
    loaded = load_template(_template(tmp_path / "tpl"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    polls: list[int] = []
    progress: list[int] = []

    def stop_at_second_poll() -> bool:
        polls.append(1)
        return len(polls) >= 2  # the first set-up step passes, the next one stops

    with pytest.raises(RenderCancelled):
        render(
            loaded,
            out_dir / "o.mp4",
            encoder=LOSSLESS,
            encoder_preference="software",
            on_progress=lambda done, _total: progress.append(done),
            should_cancel=stop_at_second_poll,
        )
    assert progress == []  # stopped before drawing a frame
    assert len(polls) == 2
    assert list(out_dir.iterdir()) == []
