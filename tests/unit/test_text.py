"""Text layer layout and rasterisation (SPEC §4 ``text``), checked on tiny boxes pixel by pixel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont, features

from renderer.errors import InvalidTemplate
from renderer.template.model import LoadedTemplate, Template, TextLayer
from renderer.text import fonts as text_module
from renderer.text.fonts import default_font_path, resolve_font
from renderer.text.layout import cluster_starts
from renderer.text.raster import TextRaster, render_text

W, H = 120, 40
needs_raqm = pytest.mark.skipif(not features.check("raqm"), reason="Pillow built without raqm")
needs_dejavu = pytest.mark.skipif(default_font_path() is None, reason="DejaVu Sans not installed")


def layer(**fields: Any) -> TextLayer:
    return TextLayer.model_validate({"id": "title", "type": "text", "size": 20, **fields})


def draw(width: int = W, height: int = H, **fields: Any) -> TextRaster:
    return render_text(layer(**fields), None, width, height)


def ink(rgba: NDArray[np.uint8], threshold: int = 0) -> tuple[int, int, int, int]:
    """Inclusive (x0, y0, x1, y1) of pixels whose alpha exceeds ``threshold``."""
    ys, xs = np.nonzero(rgba[..., 3] > threshold)
    assert xs.size, "nothing was drawn"
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def row_bands(rgba: NDArray[np.uint8]) -> int:
    """How many separate horizontal bands of ink there are (one per line of text); gaps of a
    couple of rows (between an i and its dot) do not separate bands."""
    rows = np.nonzero((rgba[..., 3] > 0).any(axis=1))[0]
    return 0 if rows.size == 0 else 1 + int(np.count_nonzero(np.diff(rows) > 3))


# --- the raster ---------------------------------------------------------------------------------


def test_raster_is_exactly_the_box_and_premultiplied() -> None:
    raster = draw(
        width=90,
        height=50,
        text="Wavy text",
        color="#ff880080",
        stroke={"color": "#00ffff", "width": 2},
        shadow={"color": "#0000ff99", "x": 2, "y": 2, "blur": 3},
        background={"color": "#20ff2040", "padding": 3, "radius": 5},
    )
    rgba = raster.rgba
    assert rgba.shape == (50, 90, 4)
    assert rgba.dtype == np.uint8
    assert (rgba[..., :3] <= rgba[..., 3:4]).all()
    assert not rgba.flags.writeable


def test_glyph_pixels_take_the_layer_colour() -> None:
    rgba = draw(text="HH", size=30, color="#ff0000").rgba
    solid = rgba[rgba[..., 3] == 255]
    assert len(solid) > 20
    assert (solid[:, :3] == [255, 0, 0]).all()


def test_customised_text_and_colour_replace_the_layers() -> None:
    raster = render_text(layer(text="ignored", color="#ff0000"), None, W, H, text="I", color="#0f0")
    solid = raster.rgba[raster.rgba[..., 3] == 255]
    assert (solid[:, :3] == [0, 255, 0]).all()
    x0, _, x1, _ = ink(raster.rgba)
    assert x1 - x0 < 6  # one narrow "I", not the seven letters of "ignored"


def test_translucent_colour_is_premultiplied() -> None:
    rgba = draw(text="HH", size=30, color="#ff000080").rgba
    assert rgba[..., 3].max() == 128
    assert rgba[..., 0].max() == 128
    assert rgba[..., 1:3].max() == 0


def test_empty_text_is_transparent() -> None:
    raster = draw(text="", background={"color": "#ffffff", "padding": 4})
    assert raster.rgba.max() == 0
    assert raster.fit.lines == 0
    assert not raster.fit.truncated


# --- alignment ----------------------------------------------------------------------------------


@pytest.mark.parametrize("align", ["left", "center", "right"])
def test_horizontal_alignment(align: str) -> None:
    x0, _, x1, _ = ink(draw(text="Hi", align=align).rgba)
    if align == "left":
        assert x0 <= 3
    elif align == "right":
        assert x1 >= W - 4
    else:
        assert abs((x0 + x1) / 2 - (W - 1) / 2) <= 1.5


def test_vertical_alignment() -> None:
    boxes = {v: ink(draw(height=80, text="Hi", valign=v).rgba) for v in ("top", "middle", "bottom")}
    top, middle, bottom = boxes["top"], boxes["middle"], boxes["bottom"]
    assert top[1] <= 6  # only the space between the ascender and cap height
    assert bottom[3] <= 79
    assert top[1] < middle[1] < bottom[1]
    assert abs((middle[1] - top[1]) - (bottom[1] - middle[1])) <= 1


# --- fitting ------------------------------------------------------------------------------------


def test_fit_none_respects_explicit_newlines() -> None:
    raster = draw(height=60, text="One\nTwo", size=16)
    assert raster.fit.lines == 2
    assert row_bands(raster.rgba) == 2


def test_overflowing_line_is_truncated_with_an_ellipsis_inside_the_box() -> None:
    full = "Truncate this overly long headline"
    raster = draw(text=full, size=16)
    assert raster.fit.truncated
    assert raster.rgba[..., 3][:, -1].max() == 0, "a glyph was cut at the right edge"
    # The raster is exactly a prefix of the text plus an ellipsis, drawn alone (and fitting).
    candidates = [draw(text=full[:k].rstrip() + "\u2026", size=16) for k in range(1, len(full))]
    matches = [c for c in candidates if not c.fit.truncated and np.array_equal(c.rgba, raster.rgba)]
    assert len(matches) >= 1, "the raster is not a prefix of the text plus an ellipsis"


def test_truncated_stroked_text_keeps_its_stroke_inside_the_box() -> None:
    raster = draw(text="Stroked and far too long", size=16, stroke={"color": "#000", "width": 3})
    assert raster.fit.truncated
    alpha = raster.rgba[..., 3]
    assert alpha[:, 0].max() == 0
    assert alpha[:, -1].max() == 0


def test_line_height_spaces_the_lines() -> None:
    def second_line_top(line_height: float) -> int:
        alpha = draw(height=100, text="H\nH", lineHeight=line_height).rgba[..., 3]
        rows = np.nonzero(alpha.any(axis=1))[0]
        return int(rows[np.argmax(np.diff(rows) > 1) + 1])

    assert second_line_top(2.0) - second_line_top(1.0) == 20  # one more size (20 px) apart


def test_fit_none_drops_lines_below_the_box() -> None:
    raster = draw(height=30, text="One\nTwo\nThree", size=16)
    assert raster.fit.lines == 1
    assert raster.fit.truncated
    assert row_bands(raster.rgba) == 1


def test_wrap_breaks_at_spaces() -> None:
    raster = draw(height=100, text="wrapping these words", size=16, fit="wrap")
    assert raster.fit.lines == 2
    assert row_bands(raster.rgba) == 2
    assert not raster.fit.truncated


def test_wrap_drops_lines_beyond_max_lines_and_ends_with_an_ellipsis() -> None:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    raster = draw(height=200, text=words, size=16, fit="wrap", maxLines=2)
    assert raster.fit.lines == 2
    assert raster.fit.truncated
    assert row_bands(raster.rgba) == 2
    # The second line ends with the ellipsis: its last ink is a dot, a few pixels tall.
    alpha = raster.rgba[..., 3]
    rows = np.nonzero(alpha.any(axis=1))[0]
    second = alpha[rows[np.argmax(np.diff(rows) > 1) + 1] :]
    last_column = np.nonzero(second.any(axis=0))[0][-1]
    assert 1 <= np.count_nonzero(second[:, last_column - 1 : last_column + 1].any(axis=1)) <= 4


def test_wrap_breaks_a_word_longer_than_the_line() -> None:
    raster = draw(height=120, text="abcdefghijklmnopqrstuvwxyz", size=20, fit="wrap")
    assert raster.fit.lines >= 2
    assert not raster.fit.truncated
    assert raster.rgba[..., 3][:, -1].max() == 0


@pytest.mark.parametrize("fit", ["none", "wrap", "shrink"])
@pytest.mark.parametrize(("width", "height"), [(1, 1), (4, 200), (200, 3)])
def test_boxes_smaller_than_a_glyph_still_give_a_box_sized_raster(
    fit: str, width: int, height: int
) -> None:
    raster = draw(width=width, height=height, text="Wide words", size=40, fit=fit)
    assert raster.rgba.shape == (height, width, 4)
    assert raster.fit.truncated


@pytest.mark.parametrize("font", ["dejavu", "builtin"])
def test_sub_pixel_sizes_render_instead_of_failing(font: str) -> None:
    # A 320x180 template rendered with encoderConfig.res [16, 16] scales 12 px text to 0.6 px
    # and a minSize of 6 to 0.3 px; FreeType refuses those ("invalid ppem value").
    path = default_font_path() if font == "dejavu" else None
    if font == "dejavu" and path is None:
        pytest.skip("DejaVu Sans not installed")
    for fields in ({"size": 0.3}, {"size": 0.6, "fit": "shrink", "minSize": 0.3}):
        raster = render_text(layer(text="The quick brown fox", **fields), path, 6, 2)
        assert raster.rgba.shape == (2, 6, 4)


def test_shrink_keeps_the_size_when_the_text_fits() -> None:
    raster = draw(text="Fits", size=20, fit="shrink")
    assert raster.fit.used_size == 20
    assert raster.fit.requested_size == 20


def test_shrink_reduces_the_size_to_the_largest_that_fits() -> None:
    words = "Shrink this text to fit two lines"
    raster = draw(height=60, text=words, size=40, fit="shrink", maxLines=2)
    fit = raster.fit
    assert 10 <= fit.used_size < 40
    assert fit.lines <= 2
    assert not fit.truncated
    # One pixel larger would no longer fit: wrapping at that size overflows two lines.
    bigger = draw(height=60, text=words, size=fit.used_size + 1, fit="wrap", maxLines=2)
    assert bigger.fit.truncated


def test_shrink_stops_at_min_size_and_truncates() -> None:
    words = " ".join(["overflowing"] * 30)
    raster = draw(text=words, size=30, fit="shrink", minSize=12, maxLines=2)
    assert raster.fit.used_size == 12
    assert raster.fit.truncated
    assert raster.rgba[..., 3][:, -1].max() == 0


def test_shrink_default_floor_is_a_quarter_of_the_size_but_at_least_six() -> None:
    words = " ".join(["overflowing"] * 60)
    assert draw(text=words, size=40, fit="shrink").fit.used_size == 10
    assert draw(text=words, size=16, fit="shrink").fit.used_size == 6


def test_shrink_prefers_a_smaller_size_to_cutting_a_word() -> None:
    raster = draw(height=120, text="Extraordinarily", size=40, fit="shrink")
    assert raster.fit.used_size < 40
    assert raster.fit.lines == 1


# --- styling ------------------------------------------------------------------------------------


def test_uppercase_draws_capitals() -> None:
    upper = draw(text="abc", uppercase=True).rgba
    assert np.array_equal(upper, draw(text="ABC").rgba)
    assert not np.array_equal(upper, draw(text="abc").rgba)


def test_stroke_makes_the_ink_wider_in_the_stroke_colour() -> None:
    plain = ink(draw(text="Hi", align="center", valign="middle").rgba)
    stroked_raster = draw(
        text="Hi", align="center", valign="middle", stroke={"color": "#0000ff", "width": 3}
    ).rgba
    stroked = ink(stroked_raster)
    assert (stroked[2] - stroked[0]) - (plain[2] - plain[0]) >= 5
    assert (stroked[3] - stroked[1]) - (plain[3] - plain[1]) >= 5
    outer_left = stroked_raster[:, stroked[0] + 1]
    opaque = outer_left[outer_left[:, 3] == 255]
    assert len(opaque) > 3
    assert (opaque[:, :3] == [0, 0, 255]).all()


def test_shadow_offsets_the_ink() -> None:
    plain = ink(draw(text="Hi", size=20).rgba)
    rgba = draw(text="Hi", size=20, shadow={"color": "#0000ff", "x": 5, "y": 3}).rgba
    shadowed = ink(rgba)
    assert shadowed[0] == plain[0]
    assert shadowed[1] == plain[1]
    assert shadowed[2] == plain[2] + 5
    assert shadowed[3] == plain[3] + 3
    # The shadow shows beside the text, in its own colour.
    only_shadow = rgba[plain[1] + 3 : plain[3] + 4, plain[2] + 1 : plain[2] + 6]
    assert (only_shadow[..., 2] > 0).any()
    assert only_shadow[..., 0].max() == 0


def test_shadow_blur_spreads_it() -> None:
    sharp = ink(draw(text="Hi", shadow={"color": "#000", "x": 4, "y": 0}).rgba)
    soft = ink(draw(text="Hi", shadow={"color": "#000", "x": 4, "y": 0, "blur": 6}).rgba)
    assert soft[2] > sharp[2]


def test_background_fills_its_rectangle_premultiplied() -> None:
    rgba = draw(
        text="Hi", align="center", valign="middle", background={"color": "#0000ff", "padding": 6}
    ).rgba
    glyphs = ink(draw(text="Hi", align="center", valign="middle").rgba)
    mid_y = (glyphs[1] + glyphs[3]) // 2
    assert rgba[mid_y, glyphs[0] - 3].tolist() == [0, 0, 255, 255]
    assert rgba[mid_y, glyphs[2] + 3].tolist() == [0, 0, 255, 255]
    assert rgba[mid_y, 2].tolist() == [0, 0, 0, 0]  # the block, not the whole box
    translucent = draw(
        text="Hi", align="center", valign="middle", background={"color": "#0000ff80", "padding": 6}
    ).rgba
    assert translucent[mid_y, glyphs[0] - 3].tolist() == [0, 0, 128, 128]


def test_background_radius_rounds_its_corners() -> None:
    fields: dict[str, Any] = {"text": "Hi", "align": "center", "valign": "middle"}
    square = draw(**fields, background={"color": "#0000ff", "padding": 8}).rgba
    round_ = draw(**fields, background={"color": "#0000ff", "padding": 8, "radius": 10}).rgba
    x0, y0, x1, y1 = ink(square)
    assert square[y0 + 1, x0 + 1, 3] == 255
    assert round_[y0 + 1, x0 + 1, 3] == 0
    assert round_[(y0 + y1) // 2, x0 + 1, 3] == 255


def test_letter_spacing_widens_the_run() -> None:
    plain = ink(draw(text="abcd").rgba)
    spaced = ink(draw(text="abcd", letterSpacing=4).rgba)
    assert abs((spaced[2] - spaced[0]) - (plain[2] - plain[0]) - 12) <= 1


# --- right to left and complex scripts ----------------------------------------------------------


@needs_raqm
@needs_dejavu
def test_arabic_is_shaped_into_joined_forms() -> None:
    word = "\u0633\u0644\u0627\u0645"  # salaam
    shaped = draw(text=word, size=24).rgba[..., 3]
    basic = ImageFont.truetype(str(default_font_path()), 24, layout_engine=ImageFont.Layout.BASIC)
    image = Image.new("L", (W, H))
    ImageDraw.Draw(image).text((0, 30), word, fill=255, font=basic, anchor="ls")
    isolated = np.asarray(image)

    def gaps(alpha: NDArray[np.uint8]) -> int:
        columns = np.nonzero(alpha.any(axis=0))[0]
        return int((~alpha.any(axis=0)[columns[0] : columns[-1] + 1]).sum())

    assert gaps(shaped) < gaps(isolated)  # joined letters leave fewer blank columns


@needs_raqm
@needs_dejavu
def test_letter_spacing_leaves_arabic_joined() -> None:
    word = "\u0633\u0644\u0627\u0645"
    assert np.array_equal(
        draw(text=word, size=24, letterSpacing=6).rgba, draw(text=word, size=24).rgba
    )


@needs_raqm
@needs_dejavu
def test_right_aligned_rtl_text_touches_the_right_side() -> None:
    _, _, x1, _ = ink(draw(text="\u0645\u0631\u062d\u0628\u0627", size=24, align="right").rgba)
    assert x1 >= W - 4


@needs_raqm
@needs_dejavu
def test_hebrew_runs_right_to_left() -> None:
    alef, nun = "\u05d0", "\u05e0"
    word = draw(text=alef + nun * 3, size=24, align="right").rgba
    first = draw(text=alef, size=24, align="right").rgba
    last = draw(text=nun, size=24, align="right").rgba
    x0 = ink(first)[0]
    # The first logical letter sits at the right end of the line.
    assert np.array_equal(word[:, x0:], first[:, x0:])
    assert not np.array_equal(word[:, x0:], last[:, x0:])


@needs_raqm
@needs_dejavu
def test_rtl_truncation_keeps_the_start_of_the_text() -> None:
    words = " ".join(["\u05e9\u05dc\u05d5\u05dd"] * 12)
    raster = draw(text=words, size=20, align="right")
    assert raster.fit.truncated
    start = draw(text="\u05e9\u05dc\u05d5\u05dd", size=20, align="right").rgba
    x0 = ink(start)[0]
    assert np.array_equal(raster.rgba[:, x0:], start[:, x0:])
    assert raster.rgba[..., 3][:, 0].max() == 0


def test_clusters_keep_marks_flags_and_zwj_sequences_whole() -> None:
    assert cluster_starts("e\u0301x") == [0, 2]
    assert cluster_starts("\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea") == [0, 2]  # two flags
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert cluster_starts(family + "a") == [0, len(family)]
    assert cluster_starts("\U0001f44d\U0001f3fd!") == [0, 2]  # skin tone modifier


# --- fonts --------------------------------------------------------------------------------------


def test_resolve_font_reads_the_templates_fonts(tmp_path: Path) -> None:
    template = Template.model_validate(
        {"width": 64, "height": 36, "frames": 1, "fonts": {"Brand": "fonts/brand.ttf"}}
    )
    loaded = LoadedTemplate(root=tmp_path, template=template)
    assert resolve_font(loaded, "Brand") == tmp_path / "fonts/brand.ttf"
    assert resolve_font(loaded, None) is None
    assert resolve_font(loaded, "Unknown") is None


@needs_dejavu
def test_explicit_font_file_is_used() -> None:
    bold = Path(str(default_font_path()).replace("DejaVuSans.ttf", "DejaVuSans-Bold.ttf"))
    regular = render_text(layer(text="Hi"), None, W, H).rgba
    heavy = render_text(layer(text="Hi"), bold, W, H).rgba
    assert int(heavy[..., 3].sum()) > int(regular[..., 3].sum())


def test_builtin_font_is_used_without_dejavu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_module, "DEFAULT_FONT", Path("/nonexistent/DejaVuSans.ttf"))
    assert default_font_path() is None
    raster = draw(text="Hello world again", size=16, fit="wrap", height=60)
    assert raster.fit.lines == 2
    assert ink(raster.rgba)[0] <= 3


def test_unreadable_font_names_the_layer(tmp_path: Path) -> None:
    broken = tmp_path / "broken.ttf"
    broken.write_bytes(b"not a font")
    with pytest.raises(InvalidTemplate, match="'title'.*broken.ttf"):
        render_text(layer(text="Hi"), broken, W, H)
