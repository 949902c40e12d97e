"""Real-world text: every script drawn with a font that has it, colour emoji, Unicode line
breaks, the inserted ellipsis, and warnings for what no font can draw (issue 8).

The bundled fallbacks are the Noto and DejaVu fonts that ``scripts/system-deps.sh`` installs;
tests that need them fail under CI when they are missing rather than skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uharfbuzz as hb
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from renderer.compose.layers import SourceContext
from renderer.compose.layers.text import open_text
from renderer.media.probe import check_font
from renderer.template.loader import load_template_from_dict
from renderer.template.manifest import build_manifest
from renderer.template.model import LoadedTemplate, Template, TextLayer
from renderer.text import fonts
from renderer.text.fonts import default_font_path, resolve_fallbacks, resolve_font, text_chain
from renderer.text.layout import LayoutJob, choose_size, lay_out, paragraphs
from renderer.text.raster import TextRaster, render_text
from renderer.text.runs import Shaper, break_segments, visual_order

REQUIRED = (
    "NotoSans-Regular.ttf",
    "NotoSansCJK-Regular.ttc",
    "NotoColorEmoji.ttf",
    "NotoSansHebrew-Regular.ttf",
    "NotoSansThai-Regular.ttf",
)
have_fonts = all(fonts.installed(name) for name in REQUIRED) and default_font_path() is not None
if not have_fonts and os.environ.get("CI"):
    raise RuntimeError(f"CI needs the fallback fonts {REQUIRED}: run scripts/system-deps.sh")
pytestmark = pytest.mark.skipif(not have_fonts, reason="run scripts/system-deps.sh for fonts")
HEBREW_ONLY = fonts.installed("NotoSansHebrew-Regular.ttf")  # no Latin, digits or full stop
THAI_ONLY = fonts.installed("NotoSansThai-Regular.ttf")  # no ellipsis

W, H = 240, 72
THAI_WORDS = ("สวัสดี", "ครับ", "ยินดี", "ต้อนรับ", "สู่", "ประเทศไทย")
CJK = "你好世界，欢迎光临。日本語のテキストです"

MATRIX = {
    "latin": (None, "Crème brûlée, Ærøskøbing"),
    "arabic": (None, "مرحبا بالعالم ١٢٣"),
    "hebrew-only font + Latin": (HEBREW_ONLY, "שלום Dana 2024."),
    "devanagari": (None, "नमस्ते दुनिया"),
    "thai": (None, "".join(THAI_WORDS[:3])),
    "cjk": (None, "你好世界，日本語"),
    "korean": (None, "안녕하세요 여러분"),
    "emoji": (None, "Hi 😀👍🏽❤️🇫🇷"),
}


def layer(**fields: Any) -> TextLayer:
    base = {"id": "t", "type": "text", "size": 20, "color": "#ffffff", "fit": "wrap"}
    return TextLayer.model_validate({**base, **fields})


def draw(
    text: str, font: Path | None = None, width: int = W, height: int = H, **f: Any
) -> TextRaster:
    return render_text(layer(text=text, **f), font, width, height)


def job_for(text: str, font: Path | None, width: int, height: int, **f: Any) -> LayoutJob:
    lay = layer(text=text, **f)
    chain = fonts.font_chain(font if font is not None else default_font_path())
    return LayoutJob(lay, paragraphs(text, lay), chain, width, height, 0.0, 0.0)


def line_texts(
    text: str, font: Path | None = None, width: int = W, height: int = H, **f: Any
) -> list[str]:
    job = job_for(text, font, width, height, **f)
    return [line.text for line in lay_out(job, choose_size(job)).lines]


def tofu(text: str, font: Path | None) -> list[str]:
    """Clusters of ``text`` whose drawn glyph is the missing-glyph box of the font chosen for
    them: each is drawn alone and compared with the same font's drawing of U+FFFF (a
    noncharacter no font maps), pixel for pixel."""
    job = job_for(text, font, W, H)
    shaper = Shaper(job.chain, 20.0, 0.0, (text,))
    boxes = []
    for run in shaper.runs(text, False):
        for ch in run.text:
            if ch.isspace() or fonts.ignorable(ord(ch)):
                continue
            face = shaper.font(run.font)
            if shaper.chain[run.font].strike is not None:
                continue  # bitmap emoji: checked by colour below
            if _glyph(face, ch) == _glyph(face, "\uffff"):
                boxes.append(ch)
    return boxes


def _glyph(font: Any, ch: str) -> bytes:
    image = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(image).text((8, 48), ch, fill=255, font=font, anchor="ls")
    return image.tobytes()


def saturated(rgba: NDArray[np.uint8]) -> int:
    """Pixels whose (premultiplied) colour is far from grey: only colour glyphs make them
    when the text colour is white."""
    rgb = rgba[..., :3].astype(np.int32)
    return int(np.count_nonzero((rgb.max(axis=2) - rgb.min(axis=2)) > 60))


def ink_box(rgba: NDArray[np.uint8]) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(rgba[..., 3] > 0)
    assert xs.size, "nothing was drawn"
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


# --- the script matrix ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_every_script_is_drawn_with_a_font_that_has_it(case: str) -> None:
    font, text = MATRIX[case]
    raster = draw(text, font, align="center", valign="middle")
    assert raster.fit.uncovered == ""
    assert tofu(text, font) == []
    assert not raster.fit.truncated
    # Centred and untruncated, the ink stays clear of every edge: nothing was cut off.
    x0, y0, x1, y1 = ink_box(raster.rgba)
    assert x0 > 0 and y0 > 0 and x1 < W - 1 and y1 < H - 1


def test_without_fallbacks_the_hebrew_font_would_draw_boxes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The matrix check above fails when the fallback chain is taken away.
    monkeypatch.setattr(fonts, "fallback_faces", lambda: ())
    font, text = MATRIX["hebrew-only font + Latin"]
    missing = draw(text, font, align="center").fit.uncovered
    assert set("Dana2024.") <= set(missing)


def test_hebrew_font_with_latin_words_and_digits_keeps_rtl_order() -> None:
    font, text = MATRIX["hebrew-only font + Latin"]
    job = job_for(text, font, W, H)
    shaper = job.shaper(20.0)
    runs = visual_order(shaper.runs(text, True), True)
    hebrew_face = job.chain[0]
    assert shaper.chain[runs[-1].font] == hebrew_face and "שלום" in runs[-1].text
    latin = [r for r in runs if "Dana" in r.text or "2024" in r.text]
    assert latin and all(shaper.chain[r.font] != hebrew_face for r in latin)
    # Visually: full stop, then "Dana 2024", then the Hebrew word on the right (UAX #9).
    order = "".join(r.text for r in runs)
    assert order.index("Dana") < order.index("2024") < order.index("שלום")
    assert order.startswith(".")


# --- colour emoji ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [10, 20, 48, 150])
def test_emoji_are_drawn_in_colour_at_any_size(size: int) -> None:
    side = int(size * 2.2)
    raster = draw("😀", size=size, width=side, height=side, align="center", valign="middle")
    assert raster.fit.uncovered == ""
    x0, y0, x1, y1 = ink_box(raster.rgba)
    assert 0.7 * size <= x1 - x0 + 1 <= 1.6 * size  # scaled from the 109 px strike
    assert saturated(raster.rgba) > 0.1 * (x1 - x0 + 1) * (y1 - y0 + 1)
    assert np.all(raster.rgba[..., :3] <= raster.rgba[..., 3:4])  # still premultiplied


def test_emoji_sequences_are_one_colour_glyph_each() -> None:
    job = job_for("👍🏽👨‍👩‍👧🇫🇷1️⃣", None, W, H)
    shaper = job.shaper(20.0)
    runs = shaper.runs("👍🏽👨‍👩‍👧🇫🇷1️⃣", False)
    assert len(runs) == 1 and shaper.chain[runs[0].font].color
    text_only = draw("Hi there", align="center")
    assert saturated(text_only.rgba) == 0


def build_colr_font(path: Path) -> None:
    """A scalable COLRv0 font whose U+2665 is a red square with a blue square inside."""
    from fontTools.colorLib.builder import buildCOLR, buildCPAL
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    def square(x0: int, y0: int, x1: int, y1: int) -> Any:
        pen = TTGlyphPen(None)
        pen.moveTo((x0, y0))
        pen.lineTo((x0, y1))
        pen.lineTo((x1, y1))
        pen.lineTo((x1, y0))
        pen.closePath()
        return pen.glyph()

    names = [".notdef", "heart", "heart.red", "heart.blue"]
    builder = FontBuilder(1000, isTTF=True)
    builder.setupGlyphOrder(names)
    builder.setupCharacterMap({0x2665: "heart"})
    builder.setupGlyf(
        {
            ".notdef": square(50, 0, 450, 700),
            "heart": square(0, 0, 800, 800),
            "heart.red": square(0, 0, 800, 800),
            "heart.blue": square(250, 250, 550, 550),
        }
    )
    builder.setupHorizontalMetrics({name: (900, 0) for name in names})
    builder.setupHorizontalHeader(ascent=800, descent=-200)
    builder.setupNameTable({"familyName": "ColrTest", "styleName": "Regular"})
    builder.setupOS2(sTypoAscender=800, usWinAscent=800, usWinDescent=200)
    builder.setupPost()
    builder.font["COLR"] = buildCOLR({"heart": [("heart.red", 0), ("heart.blue", 1)]})
    builder.font["CPAL"] = buildCPAL([[(1.0, 0.0, 0.0, 1.0), (0.0, 0.0, 1.0, 1.0)]])
    builder.save(str(path))


@pytest.mark.parametrize("size", [12, 40])
def test_colr_font_draws_its_palette_colours(tmp_path: Path, size: int) -> None:
    font = tmp_path / "colr.ttf"
    build_colr_font(font)
    assert check_font(font).family == "ColrTest"
    raster = draw("\u2665 ok", font, width=size * 5, height=size * 2, size=size)
    opaque = raster.rgba[raster.rgba[..., 3] == 255][:, :3]
    colours = {tuple(int(v) for v in px) for px in opaque}
    assert (255, 0, 0) in colours and (0, 0, 255) in colours
    assert raster.fit.uncovered == ""  # "ok" came from a fallback


def test_noto_color_emoji_as_the_layers_own_font() -> None:
    emoji_font = fonts.installed("NotoColorEmoji.ttf")
    assert emoji_font is not None
    assert check_font(emoji_font).family == "Noto Color Emoji"  # a bitmap-only font loads
    raster = draw("😀 42 hi", emoji_font, size=24)
    assert raster.fit.uncovered == ""
    assert saturated(raster.rgba) > 50


def test_translucent_colour_fades_emoji() -> None:
    solid = draw("😀", color="#ffffffff").rgba
    faded = draw("😀", color="#ffffff80").rgba
    assert 0.4 < faded[..., 3].sum() / solid[..., 3].sum() < 0.6


def test_emoji_cast_the_layer_shadow() -> None:
    plain = draw("😀", valign="middle").rgba
    shadowed = draw("😀", valign="middle", shadow={"x": 6, "y": 0, "blur": 0}).rgba
    assert ink_box(shadowed)[2] >= ink_box(plain)[2] + 5


# --- the inserted ellipsis ------------------------------------------------------------------------


def test_ellipsis_comes_from_a_fallback_when_the_font_lacks_it() -> None:
    assert THAI_ONLY is not None and not fonts.describe(str(THAI_ONLY)).covers(0x2026)
    text = "".join(THAI_WORDS) * 3
    lines = line_texts(text, THAI_ONLY, width=120, height=30, fit="none")
    assert lines[-1].endswith("\u2026")
    raster = draw(text, THAI_ONLY, width=120, height=30, fit="none")
    assert raster.fit.truncated
    assert tofu(lines[-1], THAI_ONLY) == []


def test_ellipsis_falls_back_to_full_stops_when_no_font_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    face = hb.Face(hb.Blob.from_file_path(str(default_font_path())))
    wanted = hb.SubsetInput()
    wanted.unicode_set.update(range(0x20, 0x7F))
    ascii_font = tmp_path / "ascii.ttf"
    ascii_font.write_bytes(hb.subset(face, wanted).blob.data)
    monkeypatch.setattr(fonts, "fallback_faces", lambda: ())
    lines = line_texts("a fairly long line of text", ascii_font, width=80, height=30, fit="none")
    assert lines[-1].endswith("...") and "\u2026" not in lines[-1]


# --- line breaking --------------------------------------------------------------------------------


def test_thai_wraps_between_words_only() -> None:
    text = "".join(THAI_WORDS)
    lines = line_texts(text, None, width=110, height=200)
    assert len(lines) > 2
    assert "".join(lines) == text
    legal = {sum(len(w) for w in THAI_WORDS[:k]) for k in range(len(THAI_WORDS) + 1)}
    offset = 0
    for line in lines[:-1]:
        offset += len(line)
        assert offset in legal, f"break inside a word after {line!r}"


def test_cjk_in_shrink_wraps_into_lines_at_a_readable_size() -> None:
    raster = draw(CJK, width=200, height=120, size=40, fit="shrink")
    assert raster.fit.lines >= 3
    assert raster.fit.used_size >= 24
    assert not raster.fit.truncated
    lines = line_texts(CJK, None, width=200, height=120, size=raster.fit.used_size, fit="shrink")
    assert "".join(lines) == CJK
    for line in lines[1:]:
        assert line[0] not in "，。", "closing punctuation must not start a line"


def test_korean_breaks_at_spaces_not_inside_words() -> None:
    assert break_segments("안녕하세요 반갑습니다") == ("안녕하세요 ", "반갑습니다")
    lines = line_texts("안녕하세요 반갑습니다 여러분", None, width=120, height=200)
    assert lines == ["안녕하세요", "반갑습니다", "여러분"]


def test_latin_still_breaks_at_spaces() -> None:
    assert line_texts("one two three four", None, width=90, height=200) == [
        "one two",
        "three",
        "four",
    ]


# --- warnings -------------------------------------------------------------------------------------


def test_render_reports_characters_no_font_has_and_draws_the_rest() -> None:
    raster = draw("Hi \ue000 there \ue000")
    assert raster.fit.uncovered == "\ue000"
    assert raster.rgba[..., 3].any()


def test_manifest_warns_about_characters_no_font_has(tmp_path: Path) -> None:
    def text_layer(id_: str, text: str) -> dict[str, Any]:
        return {"id": id_, "type": "text", "text": text, "size": 20}

    loaded = load_template_from_dict(
        {
            "width": 64,
            "height": 36,
            "fps": 25,
            "frames": 5,
            "layers": [text_layer("ok", "Hi 😀 你好"), text_layer("bad", "logo \ue000")],
            "audio": [],
        },
        tmp_path,
    )
    layers = {entry["id"]: entry for entry in build_manifest(loaded)["layers"]}
    assert layers["ok"]["warnings"] == []
    (warning,) = layers["bad"]["warnings"]
    assert "U+E000" in warning


def test_rtl_phrase_inside_ltr_text_is_one_right_to_left_run() -> None:
    text = "I said مرحبا بالعالم today"
    shaper = job_for(text, None, W, H).shaper(20.0)
    runs = visual_order(shaper.runs(text, False), False)
    assert [(r.text, r.rtl) for r in runs] == [
        ("I said ", False),
        ("مرحبا بالعالم", True),
        (" today", False),
    ]


def test_template_fonts_come_before_system_fallbacks_and_fits_report_uncovered(
    tmp_path: Path,
) -> None:
    assert HEBREW_ONLY is not None
    bold = Path(str(default_font_path())).with_name("DejaVuSans-Bold.ttf")
    shutil.copy(HEBREW_ONLY, tmp_path / "hebrew.ttf")
    shutil.copy(bold, tmp_path / "bold.ttf")
    tpl = Template.model_validate(
        {"width": 64, "height": 36, "frames": 5, "fonts": {"heb": "hebrew.ttf", "b": "bold.ttf"}}
    )
    loaded = LoadedTemplate(tmp_path, tpl)
    chain = text_chain(resolve_font(loaded, "heb"), resolve_fallbacks(loaded, "heb"))
    shaper = Shaper(chain, 20.0, 0.0, ("שלום Dana",))
    faces = {
        run.text.strip(): Path(str(chain[run.font].path)).name
        for run in shaper.runs("שלום Dana", True)
    }
    assert faces == {"שלום": "hebrew.ttf", "Dana": "bold.ttf"}

    text = layer(text="שלום Dana \ue000", font="heb")
    source = open_text(text, SourceContext(loaded, 120, 40, 2.0, 64, 36))
    assert source.text_fit.uncovered == "\ue000"
