"""Size ceilings and deep probes (issue 6): the hostile cases of fixtures/hostile_archives.py
are refused by the renderer with a specific reason before any work, and leave nothing."""

from __future__ import annotations

import json
import os
import sys
import traceback
import tracemalloc
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import Image

from renderer.compose.layers.image import ImageSource
from renderer.errors import InvalidTemplate, StorageLimitExceeded, UnsupportedMedia
from renderer.media.probe import validate_media_file
from renderer.template.archive import (
    MAX_DEPTH,
    inspect_archive,
    remove_tree,
    safe_extract,
)
from renderer.template.loader import load_template, load_template_from_dict, parse_data_json
from renderer.template.model import LayerTooLarge, Template, check_layer_sizes
from tests.limit_cases import load_limit_cases_module

GOOD = {"width": 64, "height": 36, "fps": 30, "frames": 10}


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    module: ModuleType = load_limit_cases_module()
    made: dict[str, Any] = module.make_limit_cases(tmp_path_factory.mktemp("limits"))
    return made


TEMPLATE_CASES = [
    "oversize_box",
    "box_1e999",
    "fps_1e999",
    "width_5000_digits",
    "pixels_per_frame",
    "pixels_per_template",
    "huge_gif",
    "tiny_entry_bomb",
    "deep_1000",
    "deep_2100",
    "long_name",
    "damaged_video_in_template",
]


@pytest.mark.parametrize("name", TEMPLATE_CASES)
def test_hostile_template_is_refused_with_its_reason_and_leaves_nothing(
    name: str, cases: dict[str, Any], tmp_path: Path
) -> None:
    case = cases[name]
    workdir = tmp_path / "work"
    with pytest.raises(InvalidTemplate) as caught:
        load_template(case.path, workdir)
    assert case.reason in str(caught.value)
    assert caught.value.code == case.code
    assert "Error" not in str(caught.value)  # no exception class names, no "unexpected"
    assert not workdir.exists() or list(workdir.iterdir()) == []


def test_every_template_case_is_covered(cases: dict[str, Any]) -> None:
    templates = {n for n, c in cases.items() if c.kind == "template"}
    assert templates == set(TEMPLATE_CASES) | {"over_quota"}


def test_quota_budget_refuses_before_writing(cases: dict[str, Any], tmp_path: Path) -> None:
    archive = cases["over_quota"].path
    plan = inspect_archive(archive)
    assert plan.declared_bytes > 4_000_000
    dest = tmp_path / "dest"
    with pytest.raises(StorageLimitExceeded, match="only 1.0 MB of storage") as caught:
        safe_extract(archive, dest, budget_bytes=1024 * 1024)
    assert caught.value.code == "storage_quota_exceeded"
    assert not dest.exists()
    # Within the budget it extracts, and writes exactly what it declared.
    root = safe_extract(archive, dest, budget_bytes=plan.declared_bytes)
    written = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert written == plan.declared_bytes


def test_written_bytes_count_against_the_budget_entry_by_entry(tmp_path: Path) -> None:
    """A budget smaller than what is declared stops at once; a budget is checked against
    written bytes too (here: the declared sizes fit, the budget does not)."""
    archive = tmp_path / "t.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.json", json.dumps(GOOD))
        for i in range(5):
            zf.writestr(f"f{i}.bin", os.urandom(1000))
    dest = tmp_path / "d"
    with pytest.raises(StorageLimitExceeded):
        safe_extract(archive, dest, budget_bytes=3000)
    assert not dest.exists()


def test_depth_limit_is_exact(tmp_path: Path) -> None:
    ok = tmp_path / "ok.zip"
    deep = "/".join(["d"] * MAX_DEPTH)
    with zipfile.ZipFile(ok, "w") as zf:
        zf.writestr("data.json", json.dumps(GOOD))
        zf.writestr(f"{deep}/x", b"1")
        zf.writestr(f"{deep}/y", b"2")
    root = safe_extract(ok, tmp_path / "a")
    assert (root / deep / "y").read_bytes() == b"2"
    too_deep = tmp_path / "deep.zip"
    with zipfile.ZipFile(too_deep, "w") as zf:
        zf.writestr("data.json", json.dumps(GOOD))
        zf.writestr(f"{deep}/d/x", b"1")
    with pytest.raises(InvalidTemplate, match=f"{MAX_DEPTH + 1} folders deep"):
        safe_extract(too_deep, tmp_path / "b")


def test_remove_tree_removes_a_tree_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    top = tmp_path / "top"
    top.mkdir()
    depth = 300
    cwd = os.getcwd()
    try:
        os.chdir(top)  # relative steps keep each path short
        for _ in range(depth):
            os.mkdir("d")
            os.chdir("d")
        Path("leaf.txt").write_bytes(b"x")
    finally:
        os.chdir(cwd)
    # Leave less room on the stack than the tree is deep: a recursive walk would fail.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(traceback.extract_stack()) + depth // 3)
    try:
        remove_tree(top)
    finally:
        sys.setrecursionlimit(limit)
    assert not top.exists()


def _template(**extra: Any) -> dict[str, Any]:
    return {**GOOD, **extra}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"width": 64, "height": 36, "fps": 30, "frames": 1e999}', "frames: number is too"),
        ('{"width": 64, "height": 36, "fps": [30, 1e999], "frames": 5}', "fps[1]: number"),
        ('{"width": 64, "height": 36, "fps": 30, "frames": -1' + "0" * 30 + "}", "frames:"),
        (
            json.dumps(_template(layers=[{"id": "t", "type": "text", "text": "x", "size": 1e300}])),
            "layer 't' (layers[0]): size: Input should be less than or equal to 2000",
        ),
        (
            json.dumps(
                _template(
                    layers=[
                        {
                            "id": "s",
                            "type": "solid",
                            "color": "#fff",
                            "transform": {"rotation": [{"t": 0, "v": 1e200}]},
                        }
                    ]
                )
            ),
            "layer 's' (layers[0]): transform.rotation[0].v",
        ),
        (
            json.dumps(_template(audio=[{"src": "a.wav", "fadeIn": 10**12}])),
            "audio track audio[0]: fadeIn: Input should be less than or equal to 216000",
        ),
    ],
)
def test_numbers_out_of_range_name_the_field(data: str, expected: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidTemplate) as caught:
        load_template_from_dict(parse_data_json(data), tmp_path)
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_template(layers=[{"id": "i", "type": "image", "src": "a" * 5000}]), "is too long"),
        (_template(fonts={"x": "f" * 300}), "font 'x': path"),
        (_template(audio=[{"src": "/".join(["b" * 200] * 30)}]), "audio[0]: path"),
        (_template(layers=[{"id": "t", "type": "text", "text": "x" * 20_000}]), "at most 10000"),
    ],
)
def test_long_strings_are_refused_before_touching_files(
    data: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidTemplate) as caught:
        load_template_from_dict(data, tmp_path)
    assert expected in str(caught.value)


def test_boxes_are_bounded_relative_to_the_canvas_and_absolutely() -> None:
    def solid(w: float, h: float) -> dict[str, Any]:
        return {"id": "s", "type": "solid", "color": "#fff", "box": {"w": w, "h": h}}

    Template.model_validate(_template(layers=[solid(128, 72)]))  # twice the canvas: fine
    with pytest.raises(ValueError, match="largest allowed is 128x72"):
        Template.model_validate(_template(layers=[solid(129, 72)]))
    big = Template.model_validate(
        {**GOOD, "width": 8192, "height": 4096, "layers": [solid(8192, 4096)]}
    )
    # A render at a larger size scales the box: checked again there, absolutely.
    with pytest.raises(LayerTooLarge, match="at most 8192 a side"):
        check_layer_sizes(big, 8192 * 2, 4096 * 2)


def test_animated_gif_is_streamed_not_held_at_box_size(tmp_path: Path) -> None:
    """100 frames fitted into a 512x512 box would hold 100 MB; streamed, one frame's worth."""
    frames = [Image.new("RGB", (16, 16), (i * 2, 0, 255 - i * 2)) for i in range(100)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)
    tracemalloc.start()
    try:
        source = ImageSource(path, 512, 512, fit="fill")
        seen: set[bytes] = set()
        for i in range(100):
            rgba = source.frame(i * 0.04)
            assert rgba is not None
            seen.add(bytes(rgba[0, 0]))
        del rgba
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    source.close()
    assert source.frame_count == 100 and len(seen) > 50
    assert peak < 20 * 1024 * 1024


def test_damaged_media_uploads_are_refused(cases: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedMedia, match="audio is damaged at"):
        validate_media_file(cases["damaged_mp3"].path, "audio")
    with pytest.raises(UnsupportedMedia, match="video is damaged at"):
        validate_media_file(cases["damaged_mp4"].path, "video")


def test_gif_frame_pixels_limit(cases: dict[str, Any], tmp_path: Path) -> None:
    module: ModuleType = load_limit_cases_module()
    path = tmp_path / "a.gif"
    path.write_bytes(module.huge_gif(8192, 8192, 17))
    with pytest.raises(UnsupportedMedia, match="17 frames of 8192x8192"):
        validate_media_file(path, "image")
    path.write_bytes(module.huge_gif(64, 64, 17))
    assert validate_media_file(path, "image").frames == 17  # type: ignore[union-attr]


def test_image_and_video_sources_are_bounded_per_template(tmp_path: Path) -> None:
    """Each image layer decodes its source at full size: four layers of an 8192x8192 image
    (a 1-pixel GIF on an 8192x8192 screen) fit the per-template sum; a fifth passes it."""
    module: ModuleType = load_limit_cases_module()
    (tmp_path / "big.gif").write_bytes(module.huge_gif(8192, 8192, 1))

    def data(n: int) -> dict[str, Any]:
        layers = [{"id": f"i{i}", "type": "image", "src": "big.gif"} for i in range(n)]
        return _template(layers=layers)

    load_template_from_dict(data(4), tmp_path)
    with pytest.raises(InvalidTemplate, match="layer 'i4': the image and video layers' sources"):
        load_template_from_dict(data(5), tmp_path)
