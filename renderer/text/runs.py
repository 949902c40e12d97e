"""Runs of text for layout: grapheme clusters, line-break opportunities, and which font of a
layer's fallback chain draws each cluster, in what direction and in what visual order.

Clusters and break opportunities come from ICU (``icu4py``, which bundles ICU4C): UAX #29
grapheme clusters and UAX #14 line breaking, with ICU's dictionaries for Thai, Lao, Khmer and
Burmese and breaks between CJK ideographs. Korean keeps its words whole (CSS
``word-break: keep-all``, the Korean convention): breaks between two Hangul syllables are dropped.

A line is cut into runs of one font and one resolved direction; each run is shaped on its own
by Pillow's raqm layout and the runs are placed side by side in visual order. Directions follow
a reduced UAX #9 (levels 0-2: a paragraph direction from its first strong character, neutrals
between two strong runs of the same direction take it, others the paragraph's, digits follow
a preceding left-to-right run), which covers text mixing one right-to-left script with
left-to-right words and numbers; raqm still applies the full algorithm inside each run.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from icu4py.breakers import CharacterBreaker, LineBreaker
from PIL import ImageFont, features

from renderer.errors import InvalidTemplate
from renderer.text.fonts import FontFace, ignorable, uncovered

ELLIPSIS = "\u2026"
ASCII_ELLIPSIS = "..."
MIN_FONT_SIZE = 1.0


@lru_cache(maxsize=256)
def open_font(
    path: str | None, size: float, index: int = 0, strike: int | None = None
) -> ImageFont.FreeTypeFont:
    """The font file at ``path`` (None: Pillow's built-in scalable font) at ``size`` px, or at
    its ``strike`` size for a bitmap-only font, with raqm shaping when Pillow has it. Cached,
    so a shrink search reopens nothing.

    Raises:
        OSError: the file is missing or not a font.
        InvalidTemplate: Pillow was built without FreeType.
    """
    # FreeType refuses sizes under half a pixel ("invalid ppem value"); a text layer scaled
    # down by a small encoderConfig.res, or a tiny minSize, is drawn at one pixel instead.
    size = float(strike) if strike is not None else max(size, MIN_FONT_SIZE)
    if path is None:
        font = ImageFont.load_default(size)
        if not isinstance(font, ImageFont.FreeTypeFont):  # Pillow built without FreeType
            raise InvalidTemplate("text layers need Pillow with FreeType support")
        return font
    engine = ImageFont.Layout.RAQM if features.check("raqm") else ImageFont.Layout.BASIC
    return ImageFont.truetype(path, size, index=index, layout_engine=engine)


# --- clusters and breaks ----------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _clusters(text: str) -> tuple[str, ...]:
    return tuple(CharacterBreaker(text, "")) if text else ()


def cluster_starts(text: str) -> list[int]:
    """Start offsets of the grapheme clusters of ``text`` (UAX #29, extended clusters)."""
    starts: list[int] = []
    offset = 0
    for cluster in _clusters(text):
        starts.append(offset)
        offset += len(cluster)
    return starts


def _hangul(ch: str) -> bool:
    code = ord(ch)
    return 0xAC00 <= code <= 0xD7A3 or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F


@lru_cache(maxsize=256)
def break_segments(text: str) -> tuple[str, ...]:
    """``text`` cut at its line-break opportunities (UAX #14 with ICU's dictionaries); each
    piece keeps the spaces that follow it, so the pieces join back into ``text``."""
    if not text:
        return ("",)
    pieces: list[str] = []
    for piece in LineBreaker(text, ""):
        if pieces and _hangul(pieces[-1][-1]) and _hangul(piece[0]):
            pieces[-1] += piece  # keep-all for Korean words
        else:
            pieces.append(piece)
    return tuple(pieces)


@dataclass(frozen=True)
class Para:
    text: str
    direction: str
    spaced: bool  # letter spacing applies (see renderer.text.raster's docstring for when)


@dataclass(frozen=True)
class Line:
    text: str
    para: Para


# --- fonts and directions ---------------------------------------------------------------------


def _wants_color(cluster: str) -> bool:
    """Emoji presentation: an emoji-range code point, a VS16 or a skin-tone/ZWJ sequence."""
    if "\ufe0e" in cluster:
        return False
    return "\ufe0f" in cluster or any(
        0x1F000 <= ord(ch) <= 0x1FAFF or (ch == "\u200d" and len(cluster) > 1) for ch in cluster
    )


def _strong(cluster: str) -> str:
    """``L``, ``R``, ``D`` (digits) or ``N`` (neutral) for a cluster, from its first
    character of a strong or numeric bidi class."""
    for ch in cluster:
        kind = unicodedata.bidirectional(ch)
        if kind == "L":
            return "L"
        if kind in ("R", "AL"):
            return "R"
        if kind in ("EN", "AN"):
            return "D"
    return "N"


def _resolve(kinds: list[str], para_rtl: bool) -> list[bool]:
    """Whether each cluster runs right to left (the reduced UAX #9 of the module docstring)."""
    base = "R" if para_rtl else "L"
    resolved = list(kinds)
    last = base
    for i, kind in enumerate(resolved):
        if kind == "D":
            resolved[i] = "L" if last == "L" else "R"
        elif kind != "N":
            last = kind
    i = 0
    while i < len(resolved):
        if resolved[i] != "N":
            i += 1
            continue
        j = i
        while j < len(resolved) and resolved[j] == "N":
            j += 1
        before = resolved[i - 1] if i else base
        after = resolved[j] if j < len(resolved) else base
        fill = before if before == after else base
        resolved[i:j] = [fill] * (j - i)
        i = j
    return [kind == "R" for kind in resolved]


@dataclass(frozen=True)
class Run:
    """Consecutive clusters drawn with one face (``font``, an index into the chain) in one
    direction; ``start`` is the offset of the run in its line."""

    text: str
    start: int
    font: int
    rtl: bool


def visual_order(runs: list[Run], para_rtl: bool) -> list[Run]:
    """The runs left to right on the line (UAX #9 rule L2 over run levels)."""
    levels = [(1 if r.rtl else 2) if para_rtl else (1 if r.rtl else 0) for r in runs]
    order = list(range(len(runs)))
    odd = [level for level in levels if level % 2]
    lowest = min(odd) if odd else max(levels, default=0) + 1
    for level in range(max(levels, default=0), lowest - 1, -1):
        i = 0
        while i < len(order):
            if levels[order[i]] < level:
                i += 1
                continue
            j = i
            while j < len(order) and levels[order[j]] >= level:
                j += 1
            order[i:j] = order[i:j][::-1]
            i = j
    return [runs[k] for k in order]


class Shaper:
    """Measures text at one size in a chain of fonts, with the layer's letter spacing.

    ``texts`` (the paragraphs) decide which faces are used, hence the line's ascent and
    descent: the tallest of them, so fallback glyphs stay inside the lines.
    """

    def __init__(
        self, chain: tuple[FontFace, ...], size: float, spacing: float, texts: tuple[str, ...]
    ) -> None:
        self.chain = chain
        self.size = size
        self.spacing = spacing
        self._choice: dict[tuple[str, int], int] = {}
        self._widths: dict[tuple[str, bool, bool], float] = {}
        self._plain_chars: dict[bool, tuple[set[str], set[str]]] = {
            False: (set(), set()),
            True: (set(), set()),
        }
        used = {0} | {run.font for text in texts for run in self.runs(text, False)}
        self.ellipsis = ELLIPSIS
        if not any(face.covers(ord(ELLIPSIS)) for face in chain):
            self.ellipsis = ASCII_ELLIPSIS
        used |= {run.font for run in self.runs(self.ellipsis, False)}
        metrics = [self.font(i).getmetrics() for i in sorted(used)]
        scales = [self.scale(i) for i in sorted(used)]
        self.ascent = max(float(a) * s for (a, _), s in zip(metrics, scales, strict=True))
        self.descent = max(float(d) * s for (_, d), s in zip(metrics, scales, strict=True))

    def font(self, index: int) -> ImageFont.FreeTypeFont:
        """Face ``index`` of the chain opened at this size (or at its strike)."""
        face = self.chain[index]
        return open_font(face.path, self.size, face.index, face.strike)

    def scale(self, index: int) -> float:
        """Drawn size over opened size: below 1 for a bitmap strike opened larger."""
        strike = self.chain[index].strike
        return 1.0 if strike is None else max(self.size, MIN_FONT_SIZE) / strike

    def direction(self, run: Run) -> str | None:
        """The direction to shape ``run`` with, when its font is laid out by raqm."""
        if self.font(run.font).layout_engine != ImageFont.Layout.RAQM:
            return None
        return "rtl" if run.rtl else "ltr"

    def _face_for(self, cluster: str, previous: int) -> int:
        key = (cluster, previous)
        found = self._choice.get(key)
        if found is not None:
            return found
        chain = self.chain
        codes = [ord(ch) for ch in cluster if not ignorable(ord(ch))]
        # Emoji presentation prefers colour faces; anything else tries the system's colour
        # faces last, so digits, spaces and symbols an emoji font also maps are drawn as text.
        if _wants_color(cluster):
            order = sorted(range(len(chain)), key=lambda i: not chain[i].color)
        else:
            order = sorted(range(len(chain)), key=lambda i: chain[i].color and chain[i].system)
        neutral = unicodedata.category(cluster[0])[0] in "ZP"
        if not codes:
            choice = max(previous, 0)
        elif (
            neutral
            and previous >= 0
            and not (chain[previous].color and chain[previous].system)
            and all(chain[previous].covers(code) for code in codes)
        ):
            choice = previous  # spaces and punctuation stay in the run around them
        else:
            choice = next((i for i in order if all(chain[i].covers(c) for c in codes)), -1)
            if choice < 0:  # no face has the whole cluster: the one with its base, or tofu
                choice = next((i for i in order if chain[i].covers(codes[0])), 0)
        self._choice[key] = choice
        return choice

    def _plain(self, text: str, para_rtl: bool) -> bool:
        """Whether ``text`` is one run of the first face in the paragraph's direction: every
        character is in that face, none asks for colour, none is strong against the
        paragraph. Answered with set operations, as layout asks it for every measurement."""
        known, other = self._plain_chars[para_rtl]
        fresh = set(text) - known
        if fresh & other:
            return False
        face = self.chain[0]
        against = ("R", "AL") if not para_rtl else ("L",)
        for ch in fresh:
            code = ord(ch)
            ok = (
                face.covers(code)
                and unicodedata.bidirectional(ch) not in against
                and not ignorable(code)
                and not 0x1F000 <= code <= 0x1FAFF
                and not (face.color and face.system)
            )
            (known if ok else other).add(ch)
            if not ok:
                return False
        return True

    def runs(self, text: str, para_rtl: bool) -> list[Run]:
        """``text`` in logical order cut into runs of one face and one direction."""
        if not text:
            return []
        if self._plain(text, para_rtl):
            return [Run(text, 0, 0, para_rtl)]
        clusters = _clusters(text)
        faces: list[int] = []
        previous = -1
        for cluster in clusters:
            previous = self._face_for(cluster, previous)
            faces.append(previous)
        rtl = _resolve([_strong(c) for c in clusters], para_rtl)
        runs: list[Run] = []
        offset = 0
        for cluster, face, right in zip(clusters, faces, rtl, strict=True):
            last = runs[-1] if runs else None
            if last is not None and last.font == face and last.rtl == right:
                runs[-1] = Run(last.text + cluster, last.start, face, right)
            else:
                runs.append(Run(cluster, offset, face, right))
            offset += len(cluster)
        return runs

    def run_width(self, run: Run) -> float:
        font = self.font(run.font)
        return float(font.getlength(run.text, direction=self.direction(run))) * self.scale(run.font)

    def width(self, text: str, para_rtl: bool, spaced: bool) -> float:
        """Advance width of ``text`` in pixels, letter spacing included."""
        if not text:
            return 0.0
        key = (text, para_rtl, spaced)
        width = self._widths.get(key)
        if width is None:
            width = sum(self.run_width(run) for run in self.runs(text, para_rtl))
            if spaced:
                width += self.spacing * (len(_clusters(text)) - 1)
            if len(self._widths) < 50_000:
                self._widths[key] = width
        return width

    def uncovered(self, text: str) -> list[str]:
        """Distinct characters of ``text`` no face of the chain has."""
        return uncovered(text, self.chain)
