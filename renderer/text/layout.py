"""Line layout for text layers: paragraphs, direction, line breaking and fitting (SPEC §4).

Layout works in three steps: split into paragraphs at explicit newlines, break them into lines
(``wrap`` and ``shrink``) measured with ``FreeTypeFont.getlength``, then keep the lines that fit
the box and ``maxLines``, ending the last kept one with an ellipsis when anything was dropped.
Breaks are found by galloping then bisecting over word (or cluster) counts, so each measured
run stays near a line's length and long texts cost O(n log n), not O(n^2). Internal to
``renderer.text.raster``, which draws the result.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

from renderer.template.model import TextLayer
from renderer.text.fonts import FontFace
from renderer.text.runs import (
    Line,
    Para,
    Shaper,
    break_segments,
    cluster_starts,
    open_font,
    visual_order,
)

__all__ = ["cluster_starts", "open_font"]

MIN_SHRINK_SIZE = 6.0

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


# --- characters -------------------------------------------------------------------------------


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


def paragraphs(text: str, layer: TextLayer) -> tuple[Para, ...]:
    """Split ``text`` at newlines; each paragraph gets its direction and whether the layer's
    letter spacing can apply to it without breaking shaping."""
    paras: list[Para] = []
    for chunk in clean_text(text, layer.uppercase).split("\n"):
        direction = paragraph_direction(chunk)
        spaced = layer.letter_spacing != 0 and direction == "ltr" and not is_complex(chunk)
        paras.append(Para(chunk, direction, spaced))
    return tuple(paras)


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
            return _width(shaper, word[: bounds[n - 1]], para) <= width

        k = _last_fitting(len(bounds), fits)
        cut = bounds[max(k, 1) - 1]
        pieces.append(word[:cut])
        word = word[cut:]
    return pieces


def _width(shaper: Shaper, text: str, para: Para) -> float:
    return shaper.width(text, para.direction == "rtl", para.spaced)


def _wrap(
    para: Para, shaper: Shaper, width: float, room: int, allow_breaks: bool
) -> tuple[list[str], bool]:
    """Greedy wrap of one paragraph at its line-break opportunities into at most ``room + 1``
    lines (one more than fits shows that something was dropped). Returns the lines and whether
    a piece had to be cut (or, when ``allow_breaks`` is False, would have had to be)."""
    pieces = list(break_segments(para.text))
    lines: list[str] = []
    broke = False
    i = 0
    gap = shaper.spacing if para.spaced else 0.0

    def estimate(start: int, n: int) -> float:
        # Pieces measured one by one (cached) and summed: shaping a whole candidate line per
        # probe costs a glyph load per character, too much for CJK. Shaping does not reach
        # across a break opportunity beyond kerning, which the exact check below catches.
        inner = sum(_width(shaper, piece, para) for piece in pieces[start : start + n - 1])
        last = _width(shaper, pieces[start + n - 1].rstrip(" "), para)
        return inner + last + gap * (n - 1)

    def exact(start: int, n: int) -> float:
        return _width(shaper, "".join(pieces[start : start + n]).rstrip(" "), para)

    while i < len(pieces) and len(lines) <= room:
        start = i

        def fits(n: int, start: int = start) -> bool:
            return estimate(start, n) <= width

        k = _last_fitting(len(pieces) - start, fits)
        while k > 0 and exact(start, k) > width:
            k -= 1
        if k == 0:
            broke = True
            if not allow_breaks:
                return lines, True
            cut = _break_word(pieces[start].rstrip(" "), shaper, para, width)
            lines.extend(cut[:-1])
            if _width(shaper, cut[-1], para) > width:
                # A single cluster wider than the box: give it a line of its own and move on.
                lines.append(cut[-1])
                i = start + 1
            else:
                pieces[start] = cut[-1] + pieces[start][len(pieces[start].rstrip(" ")) :]
            continue
        lines.append("".join(pieces[start : start + k]).rstrip(" "))
        i = start + k
    return lines or [""], broke


def _ellipsize(text: str, shaper: Shaper, para: Para, width: float) -> str:
    """The longest cluster prefix of ``text`` that still fits ``width`` with an ellipsis (or
    three full stops when no font of the chain has one)."""
    bounds = cluster_starts(text)[1:] + [len(text)]
    mark = shaper.ellipsis

    def fits(n: int) -> bool:
        return _width(shaper, text[: bounds[n - 1]].rstrip() + mark, para) <= width

    k = _last_fitting(len(bounds), fits)
    return (text[: bounds[k - 1]].rstrip() if k else "") + mark


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
    chain: tuple[FontFace, ...]
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

    shapers: dict[float, Shaper] = field(default_factory=dict, compare=False)

    def shaper(self, size: float) -> Shaper:
        shaper = self.shapers.get(size)
        if shaper is None:
            texts = tuple(p.text for p in self.paras)
            shaper = Shaper(self.chain, size, self.layer.letter_spacing, texts)
            self.shapers[size] = shaper
        return shaper


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
        if last_cut or _width(shaper, line.text, line.para) > w:
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
        line_w = _width(shaper, line.text, line.para)
        x = inset + share * (width - 2 * inset - line_w)
        if line.text:
            # Side bearings can put ink past the advance box; nudge it back inside the box.
            left, right = ink_extent(shaper, line, job.stroke)
            if right - left <= width:
                x = min(x, width - right)
                x = max(x, -left)
        origins.append((x, top + shaper.ascent + index * advance))
        widths.append(line_w)
    return origins, widths


def ink_extent(shaper: Shaper, line: Line, stroke: float) -> tuple[float, float]:
    """Leftmost and rightmost ink of ``line`` relative to its pen origin."""
    rtl = line.para.direction == "rtl"
    pen, left, right = 0.0, math.inf, -math.inf
    for run in visual_order(shaper.runs(line.text, rtl), rtl):
        scale = shaper.scale(run.font)
        box = shaper.font(run.font).getbbox(
            run.text, anchor="ls", direction=shaper.direction(run), stroke_width=stroke / scale
        )
        left = min(left, pen + box[0] * scale)
        right = max(right, pen + box[2] * scale)
        pen += shaper.run_width(run)
    if line.para.spaced:
        right = max(right, right + _width(shaper, line.text, line.para) - pen)
    return (left, right) if left <= right else (0.0, 0.0)
