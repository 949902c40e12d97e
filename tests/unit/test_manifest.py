"""The template manifest that GET /template/{id} serves."""

from __future__ import annotations

import json
from pathlib import Path

from renderer.template.loader import load_template, load_template_from_dict
from renderer.template.manifest import build_manifest
from tests.conftest import DEMO_FPS, DEMO_FRAMES, DEMO_HEIGHT, DEMO_WIDTH


def test_demo_manifest(demo_template_dir: Path) -> None:
    manifest = build_manifest(load_template(demo_template_dir))
    assert json.loads(json.dumps(manifest)) == manifest
    assert (manifest["width"], manifest["height"]) == (DEMO_WIDTH, DEMO_HEIGHT)
    assert manifest["fps"] == [DEMO_FPS, 1]
    assert manifest["frames"] == DEMO_FRAMES
    assert manifest["durationSeconds"] == DEMO_FRAMES / DEMO_FPS
    assert manifest["background"] == "#101018"
    assert manifest["fonts"] == ["DejaVu Sans"]
    assert manifest["audio"] == [{"id": "music", "src": "audio/music.wav", "replaceable": True}]
    layers = {layer["id"]: layer for layer in manifest["layers"]}
    assert list(layers) == ["bg", "band", "photo", "sticker", "badge", "headline", "rtl"]
    bg = layers["bg"]
    assert bg["type"] == "video" and bg["assetKind"] == "video"
    assert bg["customizable"] == ["assetId", "visible"]
    assert bg["box"] == {"x": 0, "y": 0, "w": DEMO_WIDTH, "h": DEMO_HEIGHT}
    assert (bg["in"], bg["out"]) == (0, DEMO_FRAMES)
    assert layers["photo"]["assetKind"] == "image"
    assert layers["band"]["customizable"] == ["color", "visible"]
    assert layers["band"]["assetKind"] is None
    headline = layers["headline"]
    assert headline["customizable"] == ["text", "color", "visible"]
    assert headline["defaults"] == {
        "text": "Hello from Velocity",
        "color": "#ffffff",
        "visible": True,
    }
    assert layers["badge"]["in"] > 0


def test_fractional_fps_and_explicit_out(tmp_path: Path) -> None:
    loaded = load_template_from_dict(
        {
            "width": 64,
            "height": 36,
            "fps": [30000, 1001],
            "frames": 30,
            "layers": [
                {
                    "id": "s",
                    "type": "solid",
                    "color": "#123",
                    "in": 3,
                    "out": 9,
                    "box": {"x": 1.5, "y": 2, "w": 10, "h": 4},
                }
            ],
            "audio": [],
        },
        tmp_path,
    )
    manifest = build_manifest(loaded)
    assert manifest["fps"] == [30000, 1001]
    assert manifest["durationSeconds"] == 30 * 1001 / 30000
    layer = manifest["layers"][0]
    assert (layer["in"], layer["out"]) == (3, 9)
    assert layer["box"] == {"x": 1.5, "y": 2, "w": 10, "h": 4}
    assert manifest["name"] == "Untitled"
    assert manifest["audio"] == [] and manifest["fonts"] == []
