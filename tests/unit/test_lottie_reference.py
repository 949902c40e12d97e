"""Lottie frames drawn by Velocity (ThorVG, in the sandbox, after ``read_lottie``'s checks)
against an independent renderer, rlottie (``rlottie-python``, a dev-only dependency): the
subject must be where the reference draws it, in the same colour. Documents are generated:
a moving, turning square; the square inside a scaled precomp; a masked layer carrying a Fill
effect (which the engine spread over the whole layer until Velocity dropped it)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import rlottie_python as rlottie

from renderer.compose.layers.lottie import LottieSource
from renderer.media.probe import read_lottie

SIZE = 96


def _static(value: Any) -> dict[str, Any]:
    return {"a": 0, "k": value}


def _ks(x: float, y: float, scale: float = 100) -> dict[str, Any]:
    return {
        "o": _static(100),
        "r": _static(0),
        "p": _static([x, y, 0]),
        "a": _static([0, 0, 0]),
        "s": _static([scale, scale, 100]),
    }


def _shape_layer(color: list[float], size: float, **extra: Any) -> dict[str, Any]:
    return {
        "ty": 4,
        "nm": "shape",
        "ind": 1,
        "ip": 0,
        "op": 10,
        "st": 0,
        "ks": _ks(SIZE / 2, SIZE / 2),
        "shapes": [
            {"ty": "rc", "d": 1, "p": _static([0, 0]), "s": _static([size, size]), "r": _static(0)},
            {"ty": "fl", "c": _static([*color, 1]), "o": _static(100), "r": 1},
        ],
        **extra,
    }


def _doc(
    layers: list[dict[str, Any]], assets: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "v": "5.7.0",
        "fr": 10,
        "ip": 0,
        "op": 10,
        "w": SIZE,
        "h": SIZE,
        "ddd": 0,
        "assets": assets or [],
        "layers": layers,
    }


def _precomp() -> dict[str, Any]:
    inner = {"id": "inner", "layers": [_shape_layer([0, 0.5, 1], 30)]}
    layer = {
        "ty": 0,
        "nm": "scaled",
        "ind": 1,
        "refId": "inner",
        "ip": 0,
        "op": 10,
        "st": 0,
        "w": SIZE,
        "h": SIZE,
        "ks": {**_ks(SIZE / 2, SIZE / 2, 150), "a": _static([SIZE / 2, SIZE / 2, 0])},
    }
    return _doc([layer], [inner])


def _masked_fill() -> dict[str, Any]:
    # A 60 px green square masked to a 30 px diamond, with a red Fill effect on the layer.
    half = 15.0
    mask_path = {
        "i": [[0, 0]] * 4,
        "o": [[0, 0]] * 4,
        "v": [
            [SIZE / 2, SIZE / 2 - half],
            [SIZE / 2 + half, SIZE / 2],
            [SIZE / 2, SIZE / 2 + half],
            [SIZE / 2 - half, SIZE / 2],
        ],
        "c": True,
    }
    fill = {
        "ty": 21,
        "nm": "Fill",
        "en": 1,
        "ef": [
            {"ty": 10, "nm": "Fill Mask", "v": _static(0)},
            {"ty": 7, "nm": "All Masks", "v": _static(0)},
            {"ty": 2, "nm": "Color", "v": _static([1, 0, 0, 1])},
            {"ty": 7, "nm": "Invert", "v": _static(0)},
            {"ty": 0, "nm": "Horizontal Feather", "v": _static(0)},
            {"ty": 0, "nm": "Vertical Feather", "v": _static(0)},
            {"ty": 0, "nm": "Opacity", "v": _static(1)},
        ],
    }
    layer = _shape_layer(
        [0, 1, 0],
        60,
        hasMask=True,
        masksProperties=[{"mode": "a", "inv": False, "pt": _static(mask_path), "o": _static(100)}],
        ef=[fill],
    )
    # Mask vertices are in layer space: the layer's anchor is its centre at (SIZE/2, SIZE/2).
    layer["ks"]["a"] = _static([SIZE / 2, SIZE / 2, 0])
    layer["shapes"][0]["p"] = _static([SIZE / 2, SIZE / 2])
    return _doc([layer])


def _ours(path: Path, frame: float) -> np.ndarray:
    doc, info = read_lottie(path)
    source = LottieSource(doc, info, SIZE, SIZE)
    try:
        return source.draw(frame)
    finally:
        source.close()


def _reference(path: Path, frame: int) -> np.ndarray:
    with rlottie.LottieAnimation.from_file(str(path)) as anim:
        image = anim.render_pillow_frame(frame_num=frame, width=SIZE, height=SIZE)
        return np.asarray(image.convert("RGBA"))


@pytest.mark.parametrize("case", ["moving_square", "precomp", "masked_fill"])
def test_frames_match_an_independent_renderer(
    tmp_path: Path, fixtures_module: ModuleType, case: str
) -> None:
    path = tmp_path / f"{case}.json"
    if case == "moving_square":
        fixtures_module.make_lottie(path, SIZE, SIZE, text=None, rotate=90, size=24)
    else:
        path.write_text(json.dumps(_precomp() if case == "precomp" else _masked_fill()))
    for frame in (0, 5, 9):
        ours, ref = _ours(path, frame), _reference(path, frame)
        covered, expected = ours[..., 3] > 127, ref[..., 3] > 127
        assert expected.sum() > 100, "the reference draws the subject"
        # Same place and size (the two interpolate rotations a little differently, so the
        # outlines are not compared pixel for pixel) ...
        assert abs(int(covered.sum()) - int(expected.sum())) <= 0.1 * expected.sum(), (case, frame)
        for axis in (0, 1):
            ours_at = np.nonzero(covered)[axis].mean()
            ref_at = np.nonzero(expected)[axis].mean()
            assert abs(ours_at - ref_at) <= 1.5, (case, frame, axis, ours_at, ref_at)
        # ... and the same colour where both are opaque.
        both = (ours[..., 3] == 255) & (ref[..., 3] == 255)
        assert both.sum() > 50
        assert np.abs(ours[both][:, :3].astype(int) - ref[both][:, :3]).max() <= 2
