"""Line layout for text layers: paragraphs, direction, line breaking and fitting (SPEC §4).

Layout works in three steps: split into paragraphs at explicit newlines, break them into lines
(``wrap`` and ``shrink``) measured with ``FreeTypeFont.getlength``, then keep the lines that fit
the box and ``maxLines``, ending the last kept one with an ellipsis when anything was dropped.
Breaks are found by galloping then bisecting over word (or cluster) counts, so each measured
run stays near a line's length and long texts cost O(n log n), not O(n^2). Internal to
``renderer.text``, which draws the result.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from PIL import ImageFont, features

from renderer.errors import InvalidTemplate
from renderer.model import TextLayer

ELLIPSIS = "\u2026"
MIN_SHRINK_SIZE = 6.0
MIN_FONT_SIZE = 1.0

# Scripts whose glyphs join or reorder, so they must be shaped as whole runs.
_COMPLEX_RANGES = (
    (0x0590, 0x08FF),  # Hebrew, Arabic, Syriac, Thaana, NKo, Samaritan, Mandaic, Arabic ext.
    (0x0900, 0x0DFF),  # Indic
    (0x0E00, 0x0FFF),  # Thai, Lao, Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x18AF),  # Khmer, Mongolian
    (0xA8E0, 0xA8FF),  # Devanagari extended
    (0xFB1D, 0xFDFF),  # Hebrew and Arabic presentation forms
    (0xFE70, 0xFEFF),  # Arabic presentation forms B
)
_NEWLINES = str.maketrans({"\r": "\n", "\u2028": "\n", "\u2029": "\n", "\t": " "})


@lru_cache(maxsize=64)
def open_font(path: str | None, size: float) -> ImageFont.FreeTypeFont:
    """The font file at ``path`` (None: Pillow's built-in scalable font) at ``size`` px, with
    raqm shaping when Pillow has it. Cached, so a shrink search reopens nothing.

    Raises:
        OSError: the file is missing or not a font.
        InvalidTemplate: Pillow was built without FreeType.
    """
    # FreeType refuses sizes under half a pixel ("invalid ppem value"); a text layer scaled
    # down by a small encoderConfig.res, or a tiny minSize, is drawn at one pixel instead.
    size = max(size, MIN_FONT_SIZE)
    if path is None:
        font = ImageFont.load_default(size)
        if not isinstance(font, ImageFont.FreeTypeFont):  # Pillow built without FreeType
            raise InvalidTemplate("text layers need Pillow with FreeType support")
        return font
    engine = ImageFont.Layout.RAQM if features.check("raqm") else ImageFont.Layout.BASIC
    return ImageFont.truetype(path, size, layout_engine=engine)


# --- characters -------------------------------------------------------------------------------


def _extends_cluster(prev: str, ch: str) -> bool:
    code = ord(ch)
    return (
        unicodedata.category(ch) in ("Mn", "Mc", "Me")
        or ch == "\u200d"
        or prev == "\u200d"
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0x1F3FB <= code <= 0x1F3FF  # skin-tone modifiers
        or 0xE0020 <= code <= 0xE007F  # emoji tag sequences
        or 0xE0100 <= code <= 0xE01EF
    )


def cluster_starts(text: str) -> list[int]:
    """Start offsets of (approximate) grapheme clusters: a base and what attaches to it."""
    starts: list[int] = []
    regional = 0
    for i, ch in enumerate(text):
        is_regional = 0x1F1E6 <= ord(ch) <= 0x1F1FF
        joins_flag = is_regional and regional % 2 == 1
        regional = regional + 1 if is_regional else 0
        if i and (joins_flag or _extends_cluster(text[i - 1], ch)):
            continue
        starts.append(i)
    return starts


def paragraph_direction(paragraph: str) -> str:
    """``rtl`` when the first strong character is right-to-left (UAX #9 rule P2), else ``ltr``."""
    for ch in paragraph:
        kind = unicodedata.bidirectional(ch)
        if kind in ("R", "AL"):
            return "rtl"
        if kind == "L":
            return "ltr"
    return "ltr"


def is_complex(text: str) -> bool:
    """Whether ``text`` has characters of a script that must be shaped as whole runs."""
    return any(lo <= ord(ch) <= hi for ch in text for lo, hi in _COMPLEX_RANGES)


def clean_text(text: str, uppercase: bool) -> str:
    """Normalise line breaks to ``\\n``, tabs to spaces, drop other control characters."""
    text = text.replace("\r\n", "\n").translate(_NEWLINES)
    text = "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch) != "Cc")
    return text.upper() if uppercase else text


# --- measuring and breaking -------------------------------------------------------------------


@dataclass(frozen=True)
class Para:
    text: str
    direction: str
    spaced: bool  # letter spacing applies (see renderer.text's docstring for when)


@dataclass(frozen=True)
class Line:
    text: str
    para: Para


def paragraphs(text: str, layer: TextLayer) -> tuple[Para, ...]:
    """Split ``text`` at newlines; each paragraph gets its direction and whether the layer's
    letter spacing can apply to it without breaking shaping."""
    paras: list[Para] = []
    for chunk in clean_text(text, layer.uppercase).split("\n"):
        direction = paragraph_direction(chunk)
        spaced = layer.letter_spacing != 0 and direction == "ltr" and not is_complex(chunk)
        paras.append(Para(chunk, direction, spaced))
    return tuple(paras)


class Shaper:
    """Measures runs in one font at one size, with the layer's letter spacing."""

    def __init__(self, font: ImageFont.FreeTypeFont, spacing: float) -> None:
        self.font = font
        self.spacing = spacing
        self.raqm = font.layout_engine == ImageFont.Layout.RAQM
        ascent, descent = font.getmetrics()
        self.ascent = float(ascent)
        self.descent = float(descent)

    def direction(self, para: Para) -> str | None:
        return para.direction if self.raqm else None

    def width(self, text: str, para: Para) -> float:
        """Advance width of ``text`` in pixels, letter spacing included."""
        if not text:
            return 0.0
        width = float(self.font.getlength(text, direction=self.direction(para)))
        if para.spaced:
            width += self.spacing * (len(cluster_starts(text)) - 1)
        return width


def _last_fitting(count: int, fits: Callable[[int], bool]) -> int:
    """Largest k in 1..count with fits(k) (fits is monotone), or 0. Gallops from 1 so each
    probe stays near the answer's length rather than the whole text's."""
    if count < 1 or not fits(1):
        return 0
    good, step = 1, 1
    while True:
        probe = min(good + step, count)
        if probe == good:
            return good
        if not fits(probe):
            bad = probe
            break
        good, step = probe, step * 2
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def _break_word(word: str, shaper: Shaper, para: Para, width: float) -> list[str]:
    """Cut a word wider than ``width`` at cluster boundaries (at least one cluster a piece)."""
    pieces: list[str] = []
    while word:
        bounds = [*cluster_starts(word)[1:], len(word)]

        def fits(n: int, word: str = word, bounds: list[int] = bounds) -> bool:
            return shaper.width(word[: bounds[n - 1]], para) <= width

        k = _last_fitting(len(bounds), fits)
        cut = bounds[max(k, 1) - 1]
        pieces.append(word[:cut])
        word = word[cut:]
    return pieces


def _wrap(
    para: Para, shaper: Shaper, width: float, room: int, allow_breaks: bool
) -> tuple[list[str], bool]:
    """Greedy word wrap of one paragraph into at most ``room + 1`` lines (one more than fits
    shows that something was dropped). Returns the lines and whether a word had to be cut
    (or, when ``allow_breaks`` is False, would have had to be)."""
    words = para.text.split(" ")
    lines: list[str] = []
    broke = False
    i = 0
    while i < len(words) and len(lines) <= room:
        if lines and words[i] == "" and i + 1 < len(words):
            i += 1  # a space that fell on a break is not carried to the next line
            continue
        start = i

        def fits(n: int, start: int = start) -> bool:
            return shaper.width(" ".join(words[start : start + n]).rstrip(" "), para) <= width

        k = _last_fitting(len(words) - start, fits)
        if k == 0:
            broke = True
            if not allow_breaks:
                return lines, True
            pieces = _break_word(words[start], shaper, para, width)
            lines.extend(pieces[:-1])
            if shaper.width(pieces[-1], para) > width:
                # A single cluster wider than the box: give it a line of its own and move on.
                lines.append(pieces[-1])
                i = start + 1
            else:
                words[start] = pieces[-1]
            continue
        lines.append(" ".join(words[start : start + k]).rstrip(" "))
        i = start + k
    return lines or [""], broke


def _ellipsize(text: str, shaper: Shaper, para: Para, width: float) -> str:
    """The longest cluster prefix of ``text`` that still fits ``width`` with an ellipsis."""
    bounds = cluster_starts(text)[1:] + [len(text)]

    def fits(n: int) -> bool:
        return shaper.width(text[: bounds[n - 1]].rstrip() + ELLIPSIS, para) <= width

    k = _last_fitting(len(bounds), fits)
    return (text[: bounds[k - 1]].rstrip() if k else "") + ELLIPSIS


@dataclass(frozen=True)
class Layout:
    """The lines chosen at one size; ``truncated`` when any text was cut or dropped."""

    shaper: Shaper
    size: float
    lines: list[Line]
    truncated: bool


def _room(
    shaper: Shaper, size: float, line_height: float, height: float, max_lines: int | None
) -> int:
    advance = size * line_height
    by_height = math.floor((height - shaper.ascent - shaper.descent) / advance + 1e-6) + 1
    room = max(1, by_height)
    return room if max_lines is None else min(room, max_lines)


@dataclass(frozen=True)
class LayoutJob:
    """One render_text call's inputs, resolved."""

    layer: TextLayer
    paras: tuple[Para, ...]
    font_key: str | None
    width: int
    height: int
    stroke: float
    padding: float

    @property
    def inset(self) -> float:
        # Keep the stroke and the background's padding inside the box.
        return math.ceil(self.stroke) + self.padding

    @property
    def inner_w(self) -> float:
        return max(1.0, self.width - 2 * self.inset)

    @property
    def inner_h(self) -> float:
        return max(1.0, self.height - 2 * self.inset)

    def shaper(self, size: float) -> Shaper:
        return Shaper(open_font(self.font_key, size), self.layer.letter_spacing)


def _fits_at(job: LayoutJob, size: float) -> bool:
    """Whether every word fits whole at ``size`` within the box height and ``maxLines``."""
    layer = job.layer
    shaper = job.shaper(size)
    if shaper.ascent + shaper.descent > job.inner_h:
        return False
    room = _room(shaper, size, layer.line_height, job.inner_h, layer.max_lines)
    used = 0
    for para in job.paras:
        lines, broke = _wrap(para, shaper, job.inner_w, room - used, allow_breaks=False)
        used += len(lines)
        if broke or used > room:
            return False
    return True


def choose_size(job: LayoutJob) -> float:
    """The layer's size, or for ``shrink`` the largest size down to minSize that fits."""
    size = job.layer.size
    if job.layer.fit != "shrink" or _fits_at(job, size):
        return size
    # Gallops up from minSize, then bisects: O(log n) layouts, each cut short once it overflows.
    sizes = _shrink_sizes(job.layer)[:-1]
    k = _last_fitting(len(sizes), lambda n: _fits_at(job, sizes[n - 1]))
    return sizes[max(k, 1) - 1]


def lay_out(job: LayoutJob, size: float) -> Layout:
    """The lines to draw at ``size``: wrapped (unless ``fit`` is ``none``), limited to the box
    height and ``maxLines``, overflowing ones ending with an ellipsis."""
    layer = job.layer
    shaper = job.shaper(size)
    w = job.inner_w
    room = _room(shaper, size, layer.line_height, job.inner_h, layer.max_lines)
    raw: list[Line] = []
    for para in job.paras:
        if len(raw) > room:
            break
        if layer.fit == "none":
            raw.append(Line(para.text, para))
        else:
            texts, _ = _wrap(para, shaper, w, room - len(raw), allow_breaks=True)
            raw.extend(Line(t, para) for t in texts)
    dropped = len(raw) > room
    kept = raw[:room]
    lines: list[Line] = []
    truncated = dropped
    for index, line in enumerate(kept):
        last_cut = dropped and index == len(kept) - 1
        if last_cut or shaper.width(line.text, line.para) > w:
            truncated = True
            lines.append(Line(_ellipsize(line.text, shaper, line.para, w), line.para))
        else:
            lines.append(line)
    # A box shorter than one line still shows one; it is clipped, so count it as truncated.
    clipped = shaper.ascent + shaper.descent > job.inner_h
    return Layout(shaper, size, lines, truncated or clipped)


def _shrink_sizes(layer: TextLayer) -> list[float]:
    floor = layer.min_size if layer.min_size is not None else max(layer.size / 4, MIN_SHRINK_SIZE)
    floor = min(floor, layer.size)
    whole = range(math.floor(floor) + 1, math.ceil(layer.size))
    return sorted({floor, *map(float, whole), layer.size})


def place(job: LayoutJob, layout: Layout) -> tuple[list[tuple[float, float]], list[float]]:
    """Pen origins (left, baseline) and advance widths of each line inside the box."""
    layer, width, inset = job.layer, job.width, job.inset
    shaper = layout.shaper
    advance = layout.size * layer.line_height
    block = (len(layout.lines) - 1) * advance + shaper.ascent + shaper.descent
    inner_h = job.height - 2 * inset
    top = inset + {"top": 0.0, "middle": 0.5, "bottom": 1.0}[layer.valign] * (inner_h - block)
    share = {"left": 0.0, "center": 0.5, "right": 1.0}[layer.align]
    origins: list[tuple[float, float]] = []
    widths: list[float] = []
    for index, line in enumerate(layout.lines):
        line_w = shaper.width(line.text, line.para)
        x = inset + share * (width - 2 * inset - line_w)
        if line.text and not line.para.spaced:
            # Side bearings can put ink past the advance box; nudge it back inside the box.
            left, _, right, _ = shaper.font.getbbox(
                line.text,
                anchor="ls",
                direction=shaper.direction(line.para),
                stroke_width=job.stroke,
            )
            if right - left <= width:
                x = min(x, width - right)
                x = max(x, -left)
        origins.append((x, top + shaper.ascent + index * advance))
        widths.append(line_w)
    return origins, widths
