"""Font faces for text layers: which fonts exist, what each covers, and how each is opened.

A text layer draws each character with the first font of its chain that has a glyph for it:
the layer's font, the template's other fonts, then the system fallbacks found here (DejaVu and
the Noto families that ``scripts/system-deps.sh`` installs: Latin, Greek, Cyrillic, Arabic,
Hebrew, Devanagari, Thai, CJK, colour emoji, symbols, and every other ``NotoSans*-Regular``
present). Coverage is read from each font's ``cmap`` through HarfBuzz (``uharfbuzz``), whose
table parsing is hardened for untrusted fonts and answers one code point at a time, so a
hostile ``cmap`` claiming the whole of Unicode costs nothing to ask.

Bitmap-only colour fonts (Noto Color Emoji is CBDT with one 109 px strike) can only be opened
at a strike size; ``FontFace.strike`` says which, and the drawing code scales the glyphs.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import uharfbuzz as hb

if TYPE_CHECKING:
    from renderer.template.model import LoadedTemplate

DEFAULT_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
DEJAVU = "DejaVuSans.ttf"
CJK = "NotoSansCJK-Regular.ttc"
CJK_FACE = "Noto Sans CJK SC"  # simplified Chinese forms; kana and hangul are in every face
# Tried in this order after the template's own fonts. Noto Sans first for Latin, Greek and
# Cyrillic (it has the ellipsis and typographic punctuation), DejaVu for symbols it lacks.
FALLBACK_FILES = (
    "NotoSans-Regular.ttf",
    DEJAVU,
    "NotoSansArabic-Regular.ttf",
    "NotoSansHebrew-Regular.ttf",
    "NotoSansDevanagari-Regular.ttf",
    "NotoSansThai-Regular.ttf",
    "NotoSansLao-Regular.ttf",
    CJK,
    "NotoColorEmoji.ttf",
    "NotoSansSymbols-Regular.ttf",
    "NotoSansSymbols2-Regular.ttf",
    "NotoSansMath-Regular.ttf",
)
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
# Characters a font need not have: joiners, variation selectors and emoji tags only steer
# shaping, and every shaper handles them without a glyph.
_IGNORABLE = frozenset({0x200C, 0x200D, 0x2060, 0xFEFF, *range(0xFE00, 0xFE10)})


def ignorable(code: int) -> bool:
    """Whether ``code`` needs no glyph of its own (joiners, selectors, tags)."""
    return code in _IGNORABLE or 0xE0000 <= code <= 0xE01EF


@dataclass(frozen=True)
class FontFace:
    """One face of a font file. ``path`` None is Pillow's built-in font (ASCII only);
    ``strike`` is the pixel size a bitmap-only font must be opened at; ``color`` marks faces
    with colour glyphs (CBDT, sbix, COLR), which are drawn in their own colours; ``system``
    marks the default and fallback fonts, as opposed to the template's own."""

    path: str | None
    index: int = 0
    strike: int | None = None
    color: bool = False
    system: bool = False

    def covers(self, code: int) -> bool:
        """Whether the face maps ``code`` to a glyph."""
        if self.path is None:
            return 0x20 <= code <= 0x7E
        font = _hb_font(self.path, self.index)
        return font is not None and font.get_nominal_glyph(code) is not None


@lru_cache(maxsize=256)
def _hb_font(path: str, index: int) -> hb.Font | None:
    try:
        return hb.Font(hb.Face(hb.Blob.from_file_path(path), index))
    except Exception:  # an unreadable file covers nothing; opening it reports the error
        return None


def _strike(face: hb.Face) -> int | None:
    """The largest strike of a CBLC table, or None. Layout: version (4 bytes), numSizes
    (uint32), then 48-byte BitmapSize records whose ppemY is the byte at offset 45."""
    data = face.reference_table("CBLC").data
    if len(data) < 8:
        return None
    (count,) = struct.unpack(">I", data[4:8])
    count = min(count, (len(data) - 8) // 48)  # a hostile count cannot outrun the table
    sizes = [data[8 + 48 * i + 45] for i in range(count)]
    sizes = [s for s in sizes if s > 0]
    return max(sizes) if sizes else None


@lru_cache(maxsize=256)
def describe(path: str | None, index: int = 0) -> FontFace:
    """The face at ``path``/``index`` with its strike size and whether it is in colour.
    A file HarfBuzz cannot read gets no strike; opening it with Pillow reports the error."""
    if path is None:
        return FontFace(None)
    try:
        face = hb.Face(hb.Blob.from_file_path(path), index)
        tags = set(face.table_tags)
    except Exception:
        return FontFace(path, index)
    scalable = bool(tags & {"glyf", "CFF ", "CFF2"})
    strike = None if scalable or "CBLC" not in tags else _strike(face)
    color = bool(tags & {"CBDT", "sbix", "COLR"})
    return FontFace(path, index, strike, color)


@lru_cache(maxsize=1)
def _installed() -> dict[str, str]:
    """File name -> path of every font under the system font folders (first one wins)."""
    found: dict[str, str] = {}
    for root in FONT_DIRS:
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                found.setdefault(name, os.path.join(folder, name))
    return found


def _cjk_index(path: str) -> int:
    for index in range(hb.Face(hb.Blob.from_file_path(path)).count):
        family = hb.Face(hb.Blob.from_file_path(path), index).get_name(
            hb.OTNameIdPredefined.FONT_FAMILY
        )
        if family == CJK_FACE:
            return index
    return 0


@lru_cache(maxsize=1)
def fallback_faces() -> tuple[FontFace, ...]:
    """The installed system fallbacks in the order they are tried: ``FALLBACK_FILES``, then
    every other ``NotoSans*-Regular`` font (other scripts), by name."""
    installed = _installed()
    names = [n for n in FALLBACK_FILES if n in installed]
    names += sorted(
        n
        for n in installed
        if n.startswith("NotoSans") and n.endswith("-Regular.ttf") and n not in FALLBACK_FILES
    )
    faces: list[FontFace] = []
    for name in names:
        path = installed[name]
        face = describe(path, _cjk_index(path) if name == CJK else 0)
        faces.append(replace(face, system=True))
    return tuple(faces)


def font_chain(
    primary: Path | None, others: tuple[Path, ...] = (), *, system: bool = False
) -> tuple[FontFace, ...]:
    """The faces a text layer tries, in order: its font (None: Pillow's built-in font; with
    ``system`` the primary is the default font, not the template's), the template's other
    fonts, then the system fallbacks; each file face once."""
    first = describe(str(primary)) if primary is not None else FontFace(None)
    chain: list[FontFace] = [replace(first, system=system or primary is None)]
    seen = {(first.path, first.index)}
    for face in (*(describe(str(p)) for p in others), *fallback_faces()):
        if (face.path, face.index) not in seen:
            seen.add((face.path, face.index))
            chain.append(face)
    return tuple(chain)


def uncovered(text: str, chain: tuple[FontFace, ...]) -> list[str]:
    """The distinct characters of ``text`` (in order of appearance) that no face of ``chain``
    has, leaving out controls, whitespace and characters that need no glyph."""
    missing: list[str] = []
    for ch in dict.fromkeys(text):
        code = ord(ch)
        if ch.isspace() or code < 0x20 or ignorable(code):
            continue
        if not any(face.covers(code) for face in chain):
            missing.append(ch)
    return missing


def installed(name: str) -> Path | None:
    """The font file of that name in the system font folders, if any."""
    path = _installed().get(name)
    return None if path is None else Path(path)


def font_names() -> list[str]:
    """Names of the fallback font files found, in chain order (for reports and notes)."""
    return [Path(face.path).name for face in fallback_faces() if face.path is not None]


def resolve_font(loaded: LoadedTemplate, name: str | None) -> Path | None:
    """The font file for a text layer's ``font``.

    Args:
        loaded: the template and the folder its paths resolve against.
        name: the layer's ``font``, a key of the template's ``fonts``.

    Returns:
        The file's path, or None (use the default font) when ``name`` is None or unknown.
    """
    if name is None:
        return None
    relative = loaded.template.fonts.get(name)
    return None if relative is None else loaded.path(relative)


def resolve_fallbacks(loaded: LoadedTemplate, name: str | None) -> tuple[Path, ...]:
    """The template's fonts other than ``name``, in the template's order: a text layer tries
    them for characters its own font lacks."""
    return tuple(
        loaded.path(relative) for key, relative in loaded.template.fonts.items() if key != name
    )


def text_chain(font_path: Path | None, fallbacks: tuple[Path, ...]) -> tuple[FontFace, ...]:
    """The fonts a text layer tries per character: ``font_path`` (None: the default font),
    the template's other fonts (``fallbacks``), then the system fallbacks."""
    primary = font_path if font_path is not None else default_font_path()
    return font_chain(primary, fallbacks, system=font_path is None)


def default_font_path() -> Path | None:
    """DejaVu Sans when installed, else None (Pillow's built-in scalable font is used)."""
    return DEFAULT_FONT if DEFAULT_FONT.is_file() else None
