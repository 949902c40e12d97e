"""load_template: folders and ZIPs in, validated templates out, readable refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from renderer.errors import InvalidTemplate, UnsupportedMedia
from renderer.template.loader import load_template, load_template_from_dict
from renderer.template.model import ImageLayer, LoadedTemplate, TextLayer, VideoLayer


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _base(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"width": 64, "height": 36, "fps": 30, "frames": 6, "layers": []}
    data.update(extra)
    return data


def _folder(tmp_path: Path, data: dict[str, Any], files: dict[str, bytes] | None = None) -> Path:
    root = tmp_path / "tpl"
    root.mkdir(exist_ok=True)
    (root / "data.json").write_text(json.dumps(data))
    for rel, payload in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(payload)
    return root


# --- good templates ---------------------------------------------------------------------------


def test_demo_folder_loads_with_every_layer_type(demo_template_dir: Path) -> None:
    loaded = load_template(demo_template_dir)
    assert isinstance(loaded, LoadedTemplate)
    assert loaded.root == demo_template_dir
    template = loaded.template
    types = {layer.type for layer in template.layers}
    assert types == {"video", "solid", "image", "text"}
    srcs = {layer.src for layer in template.layers if isinstance(layer, ImageLayer)}
    assert {Path(s).suffix for s in srcs} == {".png", ".gif", ".tga"}
    texts = [layer for layer in template.layers if isinstance(layer, TextLayer)]
    assert any(any("\u0600" <= ch <= "\u06ff" for ch in t.text) for t in texts)
    headline = next(t for t in texts if t.id == "headline")
    assert headline.stroke and headline.shadow and headline.background
    assert template.audio[0].replaceable and template.audio[0].fade_in > 0
    for layer in template.layers:
        if isinstance(layer, (ImageLayer, VideoLayer)):
            assert loaded.path(layer.src).is_file()


def test_flat_zip_loads_into_workdir(demo_zip: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    loaded = load_template(demo_zip, workdir)
    assert loaded.root == workdir
    assert (workdir / "data.json").is_file()
    assert loaded.template.layer("headline") is not None


def test_container_zip_loads_from_its_folder(
    fixtures_module: ModuleType, demo_template_dir: Path, tmp_path: Path
) -> None:
    archive = fixtures_module.zip_folder(demo_template_dir, tmp_path / "c.zip", container="promo")
    loaded = load_template(archive, tmp_path / "work")
    assert loaded.root == tmp_path / "work" / "promo"
    assert loaded.template.name == "Velocity demo"


def test_zip_without_workdir_uses_a_fresh_temp_folder(demo_zip: Path) -> None:
    loaded = load_template(demo_zip)
    try:
        assert loaded.root.is_dir()
        assert loaded.root.name.startswith("velocity-template-")
    finally:
        shutil.rmtree(loaded.root)


def test_folder_with_single_subfolder_and_data_json_file(
    demo_template_dir: Path, tmp_path: Path
) -> None:
    outer = tmp_path / "outer"
    shutil.copytree(demo_template_dir, outer / "inner")
    assert load_template(outer).root == outer / "inner"
    assert load_template(outer / "inner" / "data.json").root == outer / "inner"


def test_load_template_from_dict(tmp_path: Path, fixtures_module: ModuleType) -> None:
    fixtures_module.make_png(tmp_path / "images/a.png", 8, 8)
    loaded = load_template_from_dict(
        _base(layers=[{"id": "a", "type": "image", "src": "images/a.png"}]), tmp_path
    )
    assert loaded.root == tmp_path
    assert loaded.template.layers[0].id == "a"


# --- hostile archives -------------------------------------------------------------------------


def test_every_hostile_zip_is_refused_with_its_reason(
    hostile_zips: dict[str, tuple[Path, str]], tmp_path: Path
) -> None:
    assert len(hostile_zips) >= 15
    for name, (archive, reason) in hostile_zips.items():
        parent = tmp_path / name
        dest = parent / "dest"
        dest.mkdir(parents=True)
        before = _listing(tmp_path)
        with pytest.raises(InvalidTemplate) as info:
            load_template(archive, dest)
        assert reason in str(info.value), f"{name}: {info.value}"
        assert _listing(tmp_path) == before, name
        assert list(dest.iterdir()) == [], name


def test_media_refusals_are_unsupported_media(hostile_zips: dict[str, tuple[Path, str]]) -> None:
    for name in ("unsupported_codec", "unsupported_image", "fake_png"):
        with pytest.raises(UnsupportedMedia):
            load_template(hostile_zips[name][0])


def test_refused_zip_without_workdir_leaves_no_temp_folder(
    hostile_zips: dict[str, tuple[Path, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    with pytest.raises(InvalidTemplate):
        load_template(hostile_zips["missing_file"][0])
    assert list(tmp_path.iterdir()) == []


# --- data.json problems ------------------------------------------------------------------------


def test_missing_data_json_in_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "other").mkdir()
    with pytest.raises(InvalidTemplate, match="data.json not found"):
        load_template(tmp_path)


def test_bad_json_names_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text('{\n  "width": 64,\n  "height": 36,,\n}')
    with pytest.raises(InvalidTemplate, match=r"not valid JSON: .* at line 3, column 16"):
        load_template(tmp_path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"width": NaN}', "NaN"),
        ("[1, 2]", "JSON object, not array"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)
def test_data_json_shape(tmp_path: Path, text: str | bytes, match: str) -> None:
    path = tmp_path / "data.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(InvalidTemplate, match=match):
        load_template(tmp_path)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            _base(
                layers=[{"id": i, "type": "solid", "color": "#000"} for i in "abc"]
                + [{"id": "headline", "type": "text", "text": "x", "size": 0}]
            ),
            "layer 'headline' (layers[3]): size: Input should be greater than 0",
        ),
        (_base(width=63), "data.json: width: must be even for 4:2:0 video, got 63"),
        (
            _base(layers=[{"id": "t", "type": "text", "text": "x", "colour": "#fff"}]),
            "layer 't' (layers[0]): colour: unknown field",
        ),
        (_base(layers=[{"id": "t", "text": "x"}]), "layer 't' (layers[0]): missing 'type'"),
        (
            _base(layers=[{"id": "s", "type": "solid", "color": "red"}]),
            "layer 's' (layers[0]): color: colour 'red' is not #rgb, #rrggbb or #rrggbbaa",
        ),
        (
            _base(layers=[{"type": "solid", "color": "#fff"}]),
            "layer layers[0]: id: field required",
        ),
        (
            _base(layers=[{"id": "s", "type": "solid", "color": "#fff", "in": 5, "out": 2}]),
            "layer 's' (layers[0]): 'out' (2) must be greater than 'in' (5)",
        ),
        (
            _base(
                layers=[
                    {
                        "id": "s",
                        "type": "solid",
                        "color": "#fff",
                        "transform": {"opacity": [{"t": 0, "v": 0}, {"t": "late", "v": 1}]},
                    }
                ]
            ),
            "layer 's' (layers[0]): transform.opacity[1].t:",
        ),
        (
            _base(audio=[{"id": "music", "src": "a.wav", "volume": -1}]),
            "audio track 'music' (audio[0]): volume: Input should be greater than or equal to 0",
        ),
        (
            _base(layers=[{"id": "x", "type": "solid", "color": "#fff"}] * 2),
            "data.json: layer id 'x' is used twice",
        ),
    ],
)
def test_schema_errors_name_layer_and_field(
    tmp_path: Path, data: dict[str, Any], expected: str
) -> None:
    with pytest.raises(InvalidTemplate) as info:
        load_template_from_dict(data, tmp_path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_further_problems_are_counted(tmp_path: Path) -> None:
    with pytest.raises(InvalidTemplate, match=r"\(and 2 more problems\)"):
        load_template_from_dict({"width": 3, "height": 5, "frames": 0}, tmp_path)


# --- referenced files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "match"),
    [
        ("/etc/passwd", "must be relative to data.json"),
        ("C:/x.png", "must be relative"),
        ("../x.png", "must not contain '..'"),
        ("images/../x.png", "must not contain '..'"),
        ("./images/a.png", "is not normalised; write 'images/a.png'"),
        ("images//a.png", "is not normalised"),
        ("images\\a.png", "backslash"),
        ("", "empty path"),
        ("images", "is not a file"),
    ],
)
def test_unsafe_or_odd_paths_refused(
    tmp_path: Path, fixtures_module: ModuleType, src: str, match: str
) -> None:
    fixtures_module.make_png(tmp_path / "images/a.png", 8, 8)
    data = _base(layers=[{"id": "logo", "type": "image", "src": src}])
    with pytest.raises(InvalidTemplate, match=match) as info:
        load_template_from_dict(data, tmp_path)
    assert "layer 'logo'" in str(info.value)


def test_symlink_leading_outside_the_folder_is_refused(
    tmp_path: Path, fixtures_module: ModuleType
) -> None:
    secret = fixtures_module.make_png(tmp_path / "secret.png", 8, 8)
    root = _folder(tmp_path, _base(layers=[{"id": "logo", "type": "image", "src": "logo.png"}]))
    (root / "logo.png").symlink_to(secret)
    with pytest.raises(InvalidTemplate, match="leads outside the template folder"):
        load_template(root)


def test_missing_font_audio_and_video_name_their_owner(tmp_path: Path) -> None:
    cases = [
        (
            _base(fonts={"Brand": "fonts/brand.ttf"}),
            "Missing fonts/brand.ttf referenced by font 'Brand'",
        ),
        (
            _base(audio=[{"id": "music", "src": "audio/m.mp3"}]),
            "Missing audio/m.mp3 referenced by audio track 'music'",
        ),
        (_base(audio=[{"src": "audio/m.mp3"}]), "referenced by audio track audio[0]"),
        (
            _base(layers=[{"id": "bg", "type": "video", "src": "videos/bg.mp4"}]),
            "Missing videos/bg.mp4 referenced by layer 'bg'",
        ),
    ]
    for data, expected in cases:
        with pytest.raises(InvalidTemplate) as info:
            load_template_from_dict(data, tmp_path)
        assert expected in str(info.value)


def test_text_font_must_be_defined(tmp_path: Path) -> None:
    data = _base(layers=[{"id": "t", "type": "text", "text": "hi", "font": "Inter"}])
    with pytest.raises(InvalidTemplate, match="font: 'Inter' is not a key of fonts"):
        load_template_from_dict(data, tmp_path)


def test_text_without_font_uses_default(tmp_path: Path) -> None:
    data = _base(layers=[{"id": "t", "type": "text", "text": "hi"}])
    assert load_template_from_dict(data, tmp_path).template.layers[0].id == "t"


def test_lottie_layers_are_probed(tmp_path: Path, fixtures_module: ModuleType) -> None:
    (tmp_path / "b.json").write_text("{}")
    data = _base(layers=[{"id": "burst", "type": "lottie", "src": "b.json"}])
    with pytest.raises(UnsupportedMedia, match="b.json: not a Lottie animation: 'w' must be"):
        load_template_from_dict(data, tmp_path)
    fixtures_module.make_lottie(tmp_path / "b.json")
    assert load_template_from_dict(data, tmp_path).template.layers[0].type == "lottie"


def test_media_are_probed_as_the_kind_they_are_used_as(
    tmp_path: Path, fixtures_module: ModuleType
) -> None:
    fixtures_module.make_png(tmp_path / "images/a.png", 8, 8)
    fixtures_module.make_video(tmp_path / "videos/v9.mp4", 16, 16, 30, 2, codec="libvpx-vp9")
    (tmp_path / "fonts").mkdir()
    (tmp_path / "fonts/bad.ttf").write_bytes(b"not a font at all" * 10)
    fixtures_module.make_audio(tmp_path / "audio/a.wav", 0.1)
    cases = [
        (
            _base(layers=[{"id": "bg", "type": "video", "src": "images/a.png"}]),
            "images/a.png: container 'png_pipe' is not supported",
        ),
        (
            _base(layers=[{"id": "bg", "type": "video", "src": "videos/v9.mp4"}]),
            "videos/v9.mp4: video codec 'vp9' is not supported; use H.264 or H.265",
        ),
        (
            _base(layers=[{"id": "p", "type": "image", "src": "audio/a.wav"}]),
            "audio/a.wav: not a readable image",
        ),
        (_base(fonts={"Bad": "fonts/bad.ttf"}), "fonts/bad.ttf: cannot be loaded as a font"),
        (
            _base(audio=[{"src": "images/a.png"}]),
            "images/a.png: container 'png_pipe' is not supported; use MP3, WAV or AAC",
        ),
    ]
    for data, expected in cases:
        with pytest.raises(UnsupportedMedia) as info:
            load_template_from_dict(data, tmp_path)
        assert expected in str(info.value)
        assert str(tmp_path) not in str(info.value)
