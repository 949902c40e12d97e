"""``lottie`` layers: frame selection, fitting, lottieText, refusals, an end-to-end render.

The animation is the fixtures' hand-written Lottie: a square moving linearly with its centre
from (w/4, h/2) at its first frame to (3w/4, h/2) at its last, optionally under a "Title"
text layer. Pixel checks sample the square's centre and a point the square has left.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import numpy as np
import pytest

from renderer.compose.layers import SourceContext, open_source
from renderer.compose.layers import lottie as lottie_module
from renderer.compose.layers.lottie import LottieSource, probe_lottie, replace_text
from renderer.encode.config import EncoderConfig
from renderer.errors import InvalidCustomization, InvalidTemplate, UnsupportedMedia
from renderer.media import sandbox
from renderer.media.probe import read_lottie
from renderer.render import render
from renderer.template.customize import (
    apply_customizations,
    read_lottie_text_names,
    validate_customizations,
)
from renderer.template.loader import load_template, load_template_from_dict
from renderer.template.manifest import build_manifest
from renderer.template.model import CustomizationEntry, LoadedTemplate

RED = (255, 0, 0, 255)
CLEAR = (0, 0, 0, 0)
# A fully opaque square drawn with anti-aliasing: its inside is exact, edges are not sampled.
TOL = 2


def _source(path: Path, box: tuple[int, int] = (50, 50), **kwargs: Any) -> LottieSource:
    doc, info = read_lottie(path)
    return LottieSource(doc, info, box[0], box[1], **kwargs)


def _px(rgba: np.ndarray | None, x: int, y: int) -> tuple[int, ...]:
    assert rgba is not None
    return tuple(int(v) for v in rgba[y, x])


def _near(px: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    return max(abs(a - b) for a, b in zip(px, expected, strict=True)) <= TOL


def _centre_x(frame: float, width: float = 100, frames: int = 10) -> float:
    """Where the square's centre is (in Lottie pixels) at animation frame ``frame``."""
    return width / 4 + width / 2 * frame / (frames - 1)


@pytest.fixture()
def square(tmp_path: Path, fixtures_module: ModuleType) -> Path:
    """100x100 at 10 fps, 10 frames, a red 20-pixel square, no text."""
    return fixtures_module.make_lottie(tmp_path / "square.json", text=None)  # type: ignore[no-any-return]


# --- the source -------------------------------------------------------------------------------


def test_square_starts_at_its_first_keyframe_and_moves(square: Path) -> None:
    src = _source(square)  # box 50x50: half the Lottie size
    assert (src.width, src.height, src.static) == (50, 50, False)
    first = src.frame(0.0)
    assert first is not None and first.shape == (50, 50, 4) and first.dtype == np.uint8
    assert _near(_px(first, 12, 25), RED)  # centre (25, 50) / 2
    assert _near(_px(first, 37, 25), CLEAR)
    assert _near(_px(first, 12, 10), CLEAR)
    middle = src.frame(0.45)  # frame 4.5: centre x 50 -> 25
    assert _near(_px(middle, 25, 25), RED)
    assert _near(_px(middle, 12, 25), CLEAR)
    last = src.frame(0.9)  # frame 9: centre x 75 -> 37.5
    assert _near(_px(last, 37, 25), RED)
    assert _near(_px(last, 25, 25), CLEAR)
    src.close()
    src.close()  # twice is harmless


def test_output_is_premultiplied_rgba(tmp_path: Path, fixtures_module: ModuleType) -> None:
    path = fixtures_module.make_lottie(tmp_path / "a.json", color=(0, 0, 255), text=None)
    doc = json.loads(path.read_text())
    doc["layers"][0]["shapes"][1]["o"]["k"] = 50  # half-transparent fill
    path.write_text(json.dumps(doc))
    src = _source(path)
    r, g, b, a = _px(src.frame(0.0), 12, 25)
    assert abs(a - 128) <= 2 and (r, g) == (0, 0) and abs(b - a) <= 1
    src.close()


def test_animation_is_fitted_into_the_box_keeping_its_aspect(square: Path) -> None:
    src = _source(square, box=(80, 40))
    assert (src.width, src.height) == (40, 40)  # contain: the compositor centres it
    assert _near(_px(src.frame(0.0), 10, 20), RED)
    src.close()


def test_loop_wraps_and_hold_keeps_the_last_frame(square: Path) -> None:
    looping = _source(square, loop=True)
    holding = _source(square, loop=False)
    assert looping.total_frames == holding.total_frames == 10
    # 1.25 s at 10 fps is frame 12.5: frame 2.5 when looping, frame 9 when holding.
    assert looping.lottie_frame(1.25) == pytest.approx(2.5)
    assert holding.lottie_frame(1.25) == 9
    assert looping.lottie_frame(1.0) == 0  # exactly one period later: the first frame
    x_loop = round(_centre_x(2.5) / 2)
    assert _near(_px(looping.frame(1.25), x_loop, 25), RED)
    assert _near(_px(holding.frame(1.25), 37, 25), RED)
    assert _near(_px(holding.frame(30.0), 37, 25), RED)
    looping.close()
    holding.close()


def test_speed_scales_time(square: Path) -> None:
    fast = _source(square, speed=2.0, loop=False)
    assert fast.lottie_frame(0.45) == pytest.approx(9)
    assert _near(_px(fast.frame(0.45), 37, 25), RED)
    slow = _source(square, speed=0.5)
    assert slow.lottie_frame(0.9) == pytest.approx(4.5)
    assert _near(_px(slow.frame(0.9), 25, 25), RED)
    fast.close()
    slow.close()


def test_frames_count_from_the_animations_in_point(
    tmp_path: Path, fixtures_module: ModuleType
) -> None:
    path = fixtures_module.make_lottie(tmp_path / "late.json", text=None, in_frame=5)
    src = _source(path)
    assert src.total_frames == 10
    assert _near(_px(src.frame(0.0), 12, 25), RED)  # the ip frame: the first keyframe
    src.close()


def test_single_frame_animation_is_static(tmp_path: Path, fixtures_module: ModuleType) -> None:
    path = fixtures_module.make_lottie(tmp_path / "one.json", frames=1, text=None)
    src = _source(path)
    assert src.static
    assert src.frame(0.0) is src.frame(5.0)
    src.close()


def test_same_frame_is_drawn_once(square: Path) -> None:
    src = _source(square, loop=False)
    assert src.frame(2.0) is src.frame(3.0)  # both held at frame 9
    frame = src.frame(0.0)
    assert frame is not None and not frame.flags.writeable
    src.close()


def test_sources_draw_correctly_from_several_threads(square: Path) -> None:
    times = [i / 20 for i in range(20)]
    expected = [_source(square).frame(t) for t in times]
    sources = [_source(square) for _ in range(3)]
    results: dict[int, list[np.ndarray]] = {}

    def work(index: int) -> None:
        results[index] = [np.array(sources[index].frame(t)) for t in times]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(3):
        for got, want in zip(results[index], expected, strict=True):
            assert np.array_equal(got, np.asarray(want))
    for src in sources:
        src.close()


# --- text -------------------------------------------------------------------------------------


def _ink(rgba: np.ndarray | None) -> np.ndarray:
    """The white (text) pixels of a frame."""
    assert rgba is not None
    return (rgba[..., 0] > 128) & (rgba[..., 1] > 128) & (rgba[..., 3] > 128)


def test_replace_text_changes_only_the_named_layer(
    tmp_path: Path, fixtures_module: ModuleType
) -> None:
    doc, info = read_lottie(fixtures_module.make_lottie(tmp_path / "t.json", text="HELLO"))
    assert info.text_layers == ("Title",)
    changed = replace_text(doc, {"Title": "SALE\nNOW", "Other": "x"})
    assert changed["layers"][0]["t"]["d"]["k"][0]["s"]["t"] == "SALE\rNOW"
    assert doc["layers"][0]["t"]["d"]["k"][0]["s"]["t"] == "HELLO"  # input untouched


def test_text_layer_is_drawn_and_lottie_text_changes_it(
    tmp_path: Path, fixtures_module: ModuleType
) -> None:
    path = fixtures_module.make_lottie(tmp_path / "t.json", width=200, height=100, text="HELLO")
    doc, info = read_lottie(path)
    plain = LottieSource(doc, info, 200, 100)
    swapped = LottieSource(replace_text(doc, {"Title": "I"}), info, 200, 100)
    hello, one = _ink(plain.frame(0.0)), _ink(swapped.frame(0.0))
    # The text sits at the bottom left; the square is red and never white.
    assert hello[60:, :].sum() > 100
    assert 0 < one[60:, :].sum() < hello[60:, :].sum() / 3
    plain.close()
    swapped.close()


# --- loading and refusals ---------------------------------------------------------------------


def _template_data(**layer: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "width": 64,
        "height": 36,
        "fps": 10,
        "frames": 10,
        "background": "#000000",
        "layers": [
            {
                "id": "sticker",
                "type": "lottie",
                "src": "lottie/s.json",
                "box": {"x": 14, "y": 0, "w": 36, "h": 36},
                **layer,
            }
        ],
    }


def test_loader_accepts_a_lottie_layer(tmp_path: Path, fixtures_module: ModuleType) -> None:
    fixtures_module.make_lottie(tmp_path / "lottie/s.json")
    loaded = load_template_from_dict(_template_data(speed=2, loop=False), tmp_path)
    assert loaded.template.layers[0].type == "lottie"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"v": "5.7.0",\n "layers": [}', "lottie/s.json: not valid Lottie JSON: "),
        (b"[1, 2]", "lottie/s.json: not a Lottie animation: the JSON is not an object"),
        (b'{"w": 10, "h": 10, "fr": 30, "ip": 0}', "lottie/s.json: not a Lottie animation: 'op'"),
        (
            b'{"w": 10, "h": 10, "fr": 30, "ip": 0, "op": 0, "layers": []}',
            "frame range ip=0..op=0 is empty",
        ),
        (b"\xff\xfe{}", "lottie/s.json: not UTF-8"),
    ],
)
def test_broken_lottie_is_refused_naming_the_file(
    tmp_path: Path, content: bytes, message: str
) -> None:
    (tmp_path / "lottie").mkdir()
    (tmp_path / "lottie/s.json").write_bytes(content)
    with pytest.raises(UnsupportedMedia, match=message) as info:
        load_template_from_dict(_template_data(), tmp_path)
    assert isinstance(info.value, InvalidTemplate)


def test_hostile_broken_lottie_zip(hostile_zips: dict[str, tuple[Path, str]]) -> None:
    archive, reason = hostile_zips["broken_lottie"]
    with pytest.raises(InvalidTemplate, match=reason):
        load_template(archive)


def _with_image_asset(path: Path, folder: str, name: str) -> None:
    doc = json.loads(path.read_text())
    doc["assets"] = [{"id": "img", "w": 10, "h": 10, "u": folder, "p": name, "e": 0}]
    doc["layers"].append(
        {
            "ty": 2,
            "nm": "pic",
            "refId": "img",
            "ind": 3,
            "ip": 0,
            "op": 10,
            "st": 0,
            "ks": {
                "o": {"a": 0, "k": 100},
                "r": {"a": 0, "k": 0},
                "p": {"a": 0, "k": [50, 90, 0]},
                "a": {"a": 0, "k": [5, 5, 0]},
                "s": {"a": 0, "k": [100, 100, 100]},
            },
        }
    )
    path.write_text(json.dumps(doc))


def test_images_of_the_animation_are_drawn(tmp_path: Path, fixtures_module: ModuleType) -> None:
    path = fixtures_module.make_lottie(tmp_path / "lottie/s.json", text=None)
    fixtures_module.make_png(tmp_path / "lottie/images/img_0.png", 10, 10, (0, 0, 255), "opaque")
    _with_image_asset(path, "images/", "img_0.png")
    loaded = load_template_from_dict(_template_data(), tmp_path)
    src = open_source(loaded.template.layers[0], SourceContext(loaded, 100, 100, 1.0, 64, 36))
    assert _near(_px(src.frame(0.0), 50, 90), (0, 0, 255, 255))
    src.close()


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("../../", "must be relative to the animation, inside the template"),
        ("/etc/", "must be relative"),
        ("images/", "'images/missing.png' is missing"),
    ],
)
def test_images_outside_the_template_or_missing_are_refused(
    tmp_path: Path, fixtures_module: ModuleType, folder: str, message: str
) -> None:
    root = tmp_path / "tpl"
    path = fixtures_module.make_lottie(root / "lottie/s.json", text=None)
    fixtures_module.make_png(tmp_path / "missing.png", 10, 10)  # outside the template
    _with_image_asset(path, folder, "missing.png")
    with pytest.raises(UnsupportedMedia, match=message):
        load_template_from_dict(_template_data(), root)


def test_without_the_engine_lottie_layers_are_refused_clearly(
    tmp_path: Path, fixtures_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixtures_module.make_lottie(tmp_path / "lottie/s.json")
    monkeypatch.setitem(sys.modules, "thorvg_python", None)  # makes the import fail
    monkeypatch.setattr(sandbox, "_POOL", sandbox._Pool())
    with pytest.raises(InvalidTemplate) as info:
        load_template_from_dict(_template_data(), tmp_path)
    assert str(info.value) == (
        "layer 'sticker': lottie layers cannot be rendered here: the Lottie engine "
        "(Python package thorvg-python) is not installed"
    )
    assert lottie_module.engine_unavailable_reason() is not None


def test_probe_reports_size_frames_and_text_layers(
    tmp_path: Path, fixtures_module: ModuleType
) -> None:
    info = probe_lottie(fixtures_module.make_lottie(tmp_path / "p.json", 120, 80, 25, 50))
    assert (info.width, info.height, info.fps) == (120, 80, 25)
    assert (info.in_frame, info.out_frame, info.frame_count) == (0, 50, 50)
    assert info.text_layers == ("Title",)


# --- customisation ----------------------------------------------------------------------------


@pytest.fixture()
def loaded(tmp_path: Path, fixtures_module: ModuleType) -> LoadedTemplate:
    fixtures_module.make_lottie(tmp_path / "lottie/s.json", 200, 100, text="HELLO")
    return load_template_from_dict(_template_data(), tmp_path)


def test_lottie_text_travels_with_the_customised_template(loaded: LoadedTemplate) -> None:
    entries = [
        CustomizationEntry(layer_id="sticker", lottie_text={"Title": "A"}),
        CustomizationEntry(layer_id="sticker", lottie_text={"Title": "SALE"}),
    ]
    custom = apply_customizations(loaded, entries)
    assert custom.lottie_text == {"sticker": {"Title": "SALE"}}
    assert loaded.lottie_text == {}  # the input is unchanged


def test_unknown_lottie_text_key_is_refused_at_apply_time(loaded: LoadedTemplate) -> None:
    entries = [
        CustomizationEntry(layer_id="sticker", visible=True),
        CustomizationEntry(layer_id="sticker", lottie_text={"Titel": "SALE"}),
    ]
    with pytest.raises(InvalidCustomization) as info:
        apply_customizations(loaded, entries)
    assert str(info.value) == (
        "customizationMap[1] (layerId 'sticker'): lottieText: 'Titel' is not a text layer "
        "of lottie/s.json (text layers: 'Title')"
    )


def test_lottie_text_keys_are_checked_at_submission_with_the_names(
    loaded: LoadedTemplate,
) -> None:
    names = read_lottie_text_names(loaded)
    assert names == {"sticker": ["Title"]}
    entry = {"layerId": "sticker", "lottieText": {"Nope": "x"}}
    # Without the names (the model alone), the key cannot be checked yet.
    assert validate_customizations(loaded.template, [entry])
    with pytest.raises(InvalidCustomization, match="'Nope' is not a text layer"):
        validate_customizations(loaded.template, [entry], lottie_text_layers=names)
    with pytest.raises(InvalidCustomization, match="lottieText is empty"):
        validate_customizations(loaded.template, [{"layerId": "sticker", "lottieText": {}}])


def test_manifest_lists_lottie_text_layers(loaded: LoadedTemplate) -> None:
    layer = build_manifest(loaded)["layers"][0]
    assert layer["customizable"] == ["visible", "lottieText"]
    assert layer["defaults"] == {"visible": True, "lottieText": {"Title": "HELLO"}}


def test_open_source_applies_lottie_text(loaded: LoadedTemplate) -> None:
    ctx = SourceContext(loaded, 200, 100, 1.0, 64, 36)
    layer = loaded.template.layers[0]
    plain = open_source(layer, ctx)
    custom = apply_customizations(
        loaded, [CustomizationEntry(layer_id="sticker", lottie_text={"Title": "I"})]
    )
    swapped = open_source(layer, SourceContext(custom, 200, 100, 1.0, 64, 36))
    assert _ink(swapped.frame(0.0)).sum() < _ink(plain.frame(0.0)).sum() / 3
    plain.close()
    swapped.close()


# --- end to end -------------------------------------------------------------------------------


def test_render_draws_the_lottie_layer(tmp_path: Path, fixtures_module: ModuleType) -> None:
    root = tmp_path / "tpl"
    fixtures_module.make_lottie(root / "lottie/s.json", size=40, text=None)
    (root / "data.json").write_text(json.dumps(_template_data()))
    out = tmp_path / "out.mp4"
    report = render(
        load_template(root), out, encoder=EncoderConfig(rc=2, qp=0, preset=5), audio=False
    )
    assert report.frames == 10
    with av.open(str(out)) as container:
        frames = [
            f.reformat(format="rgb24", src_colorspace="ITU709", src_color_range="MPEG")
            .to_ndarray()
            .astype(int)
            for f in container.decode(video=0)
        ]
    assert len(frames) == 10
    # Box x 14..50 holds the 100x100 animation at 0.36: the square's centre moves from
    # x 14 + 9 = 23 to 14 + 27 = 41, at y 18; the background is black.
    for index, (x_on, x_off) in ((0, (23, 41)), (9, (41, 23))):
        frame = frames[index]
        r, g, b = frame[18, x_on]
        assert r > 200 and g < 60 and b < 60, (index, frame[18, x_on])
        assert frame[18, x_off].max() < 40, (index, frame[18, x_off])
    assert frames[0][2, 2].max() < 40
