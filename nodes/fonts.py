"""A font per label that has glyphs for all of its characters (é, ß, Cyrillic, CJK, Arabic, ...).

Pillow's built-in font covers little beyond ASCII: "forêt" comes out as "for□t". Candidates are
common system fonts in the usual places of Linux, macOS and Windows (checked once per process),
then fontconfig's default sans-serif; for characters none of them has, fontconfig is asked once
for the fonts that cover them (`fc-list :charset=...`). Each label gets the first candidate with a
glyph for every one of its characters; Pillow's default font when there is none.

A font "has" a character when rendering it does not give the font's .notdef glyph (the box): the
character is rendered with Pillow's basic layout (a plain character-map lookup, no shaping) and
compared with the rendering of an unassigned code point, which every font draws as .notdef.
Everything is cached: the candidate list, the fonts, each (font, character) answer and each
label's choice; nothing scans the disk per call.
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import unicodedata

from PIL import ImageFont

log = logging.getLogger(__name__)

ELLIPSIS = "\u2026"
UNASSIGNED = "\u0378"  # no character is assigned to U+0378, so every font draws its .notdef for it
PROBE_SIZE = 32

_LINUX = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",  # Debian, Ubuntu
    "/usr/share/fonts/TTF/DejaVuSans.ttf",  # Arch
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",  # Fedora
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/google-noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-sans-cjk-vf-fonts/NotoSansCJK-VF.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansArabic-Regular.ttf",
    "/usr/share/fonts/noto/NotoSansArabic-Regular.ttf",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
]
_MACOS = [
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
    "/System/Library/Fonts/Helvetica.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/Hiragino Sans GB.ttc",
    "/System/Library/Fonts/ヒラギノ角ゴシック W3.ttc",
    "/System/Library/Fonts/AppleSDGothicNeo.ttc",
    "/System/Library/Fonts/Supplemental/GeezaPro.ttc",
    "/System/Library/Fonts/GeezaPro.ttc",
    "/System/Library/Fonts/Apple Symbols.ttf",
]
_WINDOWS = ["segoeui.ttf", "arial.ttf", "msyh.ttc", "msyh.ttf", "YuGothM.ttc", "meiryo.ttc", "malgun.ttf",
            "simsun.ttc", "arialuni.ttf", "tahoma.ttf", "Nirmala.ttf", "seguisym.ttf"]


def _known_paths() -> list[str]:
    if sys.platform == "darwin":
        return _MACOS
    if sys.platform.startswith("win"):
        folder = os.path.join(os.environ.get("WINDIR", r"C:\Windows"), "Fonts")
        return [os.path.join(folder, name) for name in _WINDOWS]
    return _LINUX


def _fontconfig(*arguments: str) -> list[str]:
    """Lines printed by a fontconfig tool (fc-match, fc-list); [] when it is not installed."""
    if shutil.which(arguments[0]) is None:
        return []
    try:
        result = subprocess.run(arguments, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as error:
        log.debug("%s failed: %s", arguments[0], error)
        return []
    return [line for line in result.stdout.splitlines() if line.strip()]


@functools.lru_cache(maxsize=1)
def candidates() -> tuple[tuple[str, int], ...]:
    """(font file, face index) to try, in order: known system fonts, then fontconfig's default sans."""
    found = [(path, 0) for path in _known_paths() if os.path.isfile(path)]
    for line in _fontconfig("fc-match", "-f", "%{file}\t%{index}\n", "sans-serif"):
        path, _, index = line.partition("\t")
        if path.lower().endswith((".ttf", ".otf", ".ttc")) and os.path.isfile(path):
            found.append((path, int(index or 0)))
    return tuple(dict.fromkeys(found))


@functools.lru_cache(maxsize=256)
def _fontconfig_covering(characters: frozenset) -> tuple[tuple[str, int], ...]:
    """Fonts that fontconfig says cover all `characters`: regular sans faces first."""
    query = ":charset=" + " ".join(f"{ord(ch):x}" for ch in sorted(characters))
    ranked = []
    for line in _fontconfig("fc-list", "-f", "%{file}\t%{index}\t%{style[0]}\t%{family[0]}\t%{spacing}\n", query):
        path, index, style, family, spacing = (line.split("\t") + [""] * 5)[:5]
        if not path.lower().endswith((".ttf", ".otf", ".ttc")):
            continue
        rank = (style.lower() not in ("regular", "book", "normal", "roman", "medium"),
                "sans" not in family.lower(), spacing == "100" or "mono" in family.lower(), family, path)
        ranked.append((rank, (path, int(index or 0))))
    return tuple(face for _, face in sorted(ranked))


@functools.lru_cache(maxsize=64)
def _probe(face: tuple[str, int]):
    """The font at a fixed size with plain character-map lookups, and its .notdef rendering."""
    try:
        font = ImageFont.truetype(face[0], PROBE_SIZE, index=face[1], layout_engine=ImageFont.Layout.BASIC)
    except OSError as error:
        log.debug("font %s unusable: %s", face, error)
        return None, None
    return font, _rendering(font, UNASSIGNED)


def _rendering(font, text: str):
    mask = font.getmask(text)
    return mask.size, bytes(mask)


def _invisible(ch: str) -> bool:
    """Spaces, controls and format characters draw nothing, whichever font; they need no glyph."""
    return unicodedata.category(ch) in ("Zs", "Zl", "Zp", "Cc", "Cf")


@functools.lru_cache(maxsize=8192)
def has_glyph(face: tuple[str, int] | None, ch: str) -> bool:
    """Whether the font (file, index), or Pillow's default font for None, has a glyph for `ch`."""
    if _invisible(ch):
        return True
    if face is None:
        font = _default_font(PROBE_SIZE)
        notdef = _rendering(font, UNASSIGNED)
    else:
        font, notdef = _probe(face)
        if font is None:
            return False
    return _rendering(font, ch) != notdef


def _covers(face, text: str) -> bool:
    return all(has_glyph(face, ch) for ch in set(text))


@functools.lru_cache(maxsize=1024)
def face_for(text: str) -> tuple[str, int] | None:
    """The first candidate font with glyphs for every character of `text`; failing that, fontconfig's
    choice among the fonts covering them all; failing that, the candidate covering the most
    characters (when it covers more than Pillow's default font); None: Pillow's default font."""
    for face in candidates():
        if _covers(face, text):
            return face
    needed = frozenset(ch for ch in text if not _invisible(ch))
    if not needed:
        return None
    for face in _fontconfig_covering(needed):
        if _covers(face, text):
            return face
    def covered(face):
        return sum(has_glyph(face, ch) for ch in needed)
    best = max(candidates(), key=covered, default=None)  # max keeps the first of equals
    if best is not None and covered(best) > covered(None):
        return best
    return None


@functools.lru_cache(maxsize=16)
def _default_font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


@functools.lru_cache(maxsize=128)
def _font(face: tuple[str, int] | None, size: int):
    if face is None:
        return _default_font(size)
    return ImageFont.truetype(face[0], size, index=face[1])


def label_font(text: str, size: int):
    """The font (Pillow FreeTypeFont, `size` pixels) to draw `text` with."""
    return _font(face_for(text), int(size))


def shorten(text: str, font, max_width: float) -> str:
    """`text`, cut at a character boundary and ended with an ellipsis so that it is at most
    `max_width` pixels wide in `font` ('' when not even the ellipsis fits)."""
    if font.getlength(text) <= max_width:
        return text
    ellipsis = ELLIPSIS if _covers_font(font, ELLIPSIS) else "..."
    low, high = 0, len(text)  # the longest prefix that fits with the ellipsis
    while low < high:
        middle = (low + high + 1) // 2
        if font.getlength(text[:middle].rstrip() + ellipsis) <= max_width:
            low = middle
        else:
            high = middle - 1
    if low == 0:
        return ellipsis if font.getlength(ellipsis) <= max_width else ""
    return text[:low].rstrip() + ellipsis


def _covers_font(font, text: str) -> bool:
    path = getattr(font, "path", None)
    face = (path, getattr(font, "index", 0)) if isinstance(path, str) else None
    return _covers(face, text)
