"""A stored template (probed at ingest, immutable since) is loaded ``trusted``: the schema
and path checks still run, its media files are not probed again, and it renders the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from renderer.encode.config import EncoderConfig
from renderer.errors import InvalidTemplate
from renderer.render import render
from renderer.template import loader
from renderer.template.loader import load_template

PROBES = ("probe_image", "probe_video", "probe_audio", "check_font")


@pytest.fixture
def probe_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the media probes the loader calls, in order."""
    calls: list[str] = []
    for name in PROBES:
        real = getattr(loader, name)

        def counted(*args: Any, _real: Any = real, _name: str = name) -> Any:
            calls.append(_name)
            return _real(*args)

        monkeypatch.setattr(loader, name, counted)
    return calls


def test_trusted_load_does_not_probe_media(demo_template_dir: Path, probe_calls: list[str]) -> None:
    full = load_template(demo_template_dir)
    assert {"probe_image", "probe_video", "probe_audio"} <= set(probe_calls)
    probe_calls.clear()
    trusted = load_template(demo_template_dir, trusted=True)
    assert probe_calls == []
    assert trusted.template == full.template and trusted.root == full.root


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ("remove", "Missing images/"),
        ("escape", "leads outside the template folder"),
        ("schema", "frames"),
    ],
)
def test_trusted_load_keeps_the_structural_checks(
    demo_template_dir: Path, tmp_path: Path, probe_calls: list[str], change: str, match: str
) -> None:
    root = tmp_path / "tpl"
    shutil.copytree(demo_template_dir, root)
    data = json.loads((root / "data.json").read_text())
    image = next(layer for layer in data["layers"] if layer["type"] == "image")
    if change == "remove":
        (root / image["src"]).unlink()
    elif change == "escape":
        outside = tmp_path / "outside.png"
        shutil.copyfile(root / image["src"], outside)
        (root / image["src"]).unlink()
        (root / image["src"]).symlink_to(outside)
    else:
        data["frames"] = 0
    (root / "data.json").write_text(json.dumps(data))
    with pytest.raises(InvalidTemplate, match=match):
        load_template(root, trusted=True)
    assert probe_calls == []


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]


def test_trusted_and_probed_loads_render_the_same(demo_template_dir: Path, tmp_path: Path) -> None:
    config = EncoderConfig(rc=2, qp=0, preset=5)
    outputs = []
    for trusted in (False, True):
        out = tmp_path / f"trusted-{trusted}.mp4"
        loaded = load_template(demo_template_dir, trusted=trusted)
        report = render(loaded, out, encoder=config, frames=(0, 6))
        assert report.frames == 6 and report.has_audio
        outputs.append(_frames(out))
    probed, trusted_frames = outputs
    assert len(probed) == len(trusted_frames) == 6
    assert all(np.array_equal(a, b) for a, b in zip(probed, trusted_frames, strict=True))
