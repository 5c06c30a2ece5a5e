"""Reading Hershey single-stroke vector fonts (`.jhf`, Debian's `hershey-fonts-data`) as pen strokes.

A JHF record is: glyph number (5 columns), vertex count (3 columns, the left/right margin pair included),
the left and right margins, then one pair of characters per vertex, each coordinate being `ord(c) - ord("R")`
(y grows downwards); the pair " R" lifts the pen. A long record may continue on the next line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERSHEY_DIR = Path("/usr/share/hershey-fonts")
# Fonts laid out in ASCII order from the space (glyph i is chr(32 + i)): letters and punctuation.
LETTER_FONTS = ("rowmans", "futural", "futuram", "scripts", "cursive", "timesr", "rowmand")
# Fonts of pictograms and symbols: every glyph is used.
# (Music and the Greek capitals are left out: a flat sign reads as b, a Zeta as Z.)
SYMBOL_FONTS = ("markers", "symbolic", "astrology", "meteorology")
# Letters a user could draw as a digit (O o -> 0, l I -> 1, S s -> 5, Z z -> 2, B -> 8, G b -> 6, q g -> 9):
# never a negative, never scored as a non-digit.
AMBIGUOUS_LETTERS = frozenset("OoIlSsZzBGqgb")
# Punctuation kept as symbols (others, such as | ! / ( ), look like a 1 or are too small to be a drawing).
KEPT_PUNCTUATION = frozenset("#$%&@?*+=<>{}[]~^")

# Glyph slots of '0'-'9' in ASCII order: left out of the symbol fonts too, in case one draws a digit there
# (the slots of ambiguous letters likewise).
DIGIT_SLOTS = frozenset(range(16, 26))

# A glyph whose box is this many times longer than wide is a bar: drawn, it reads as a 1.
MAX_ASPECT = 3.5

Stroke = list[tuple[float, float]]


class HersheyError(ValueError):
    """A font file is missing or not in the JHF format."""


@dataclass(frozen=True)
class Glyph:
    """One glyph: its strokes (polylines in font units) and what it is (`font:char` or `font:#index`)."""

    name: str
    strokes: tuple[tuple[tuple[float, float], ...], ...]


def _records(text: str) -> list[str]:
    records: list[str] = []
    pending = ""
    for line in text.splitlines():
        pending = pending + line if pending else line
        if len(pending) < 8:
            continue
        count = int(pending[5:8])
        if len(pending) >= 8 + 2 * count:
            records.append(pending[: 8 + 2 * count])
            pending = ""
    return records


def parse_jhf(text: str, name: str = "<jhf>") -> list[list[Stroke]]:
    """The glyphs of a JHF file, in file order, each a list of strokes (lists of (x, y))."""
    glyphs = []
    for record in _records(text):
        try:
            body = record[10:]
            strokes: list[Stroke] = [[]]
            for i in range(0, len(body) - 1, 2):
                pair = body[i : i + 2]
                if pair == " R":
                    strokes.append([])
                else:
                    strokes[-1].append((float(ord(pair[0]) - ord("R")), float(ord(pair[1]) - ord("R"))))
        except (ValueError, IndexError) as exc:
            raise HersheyError(f"{name}: not a JHF record: {record[:20]!r} ({exc})") from None
        glyphs.append([s for s in strokes if s])
    return glyphs


def is_bar(strokes: list[Stroke]) -> bool:
    """True for thin glyphs (a dash, a slash, an i) that a user's pen would turn into a 1."""
    xs = [x for s in strokes for x, _ in s]
    ys = [y for s in strokes for _, y in s]
    w, h = max(xs) - min(xs) + 1, max(ys) - min(ys) + 1
    return max(w, h) / min(w, h) > MAX_ASPECT


def load_font(font: str, folder: Path = HERSHEY_DIR) -> list[list[Stroke]]:
    """Parse `<folder>/<font>.jhf`; HersheyError names the Debian package when it is missing."""
    path = Path(folder) / f"{font}.jhf"
    if not path.is_file():
        raise HersheyError(f"{path} not found: install the Debian package hershey-fonts-data")
    return parse_jhf(path.read_text(encoding="latin-1"), str(path))


def letter_glyphs(folder: Path = HERSHEY_DIR) -> list[Glyph]:
    """Letters (ambiguous ones left out) and kept punctuation of the ASCII-ordered fonts."""
    out = []
    for font in LETTER_FONTS:
        for i, strokes in enumerate(load_font(font, folder)):
            char = chr(32 + i)
            keep = (char.isascii() and char.isalpha() and char not in AMBIGUOUS_LETTERS) or char in KEPT_PUNCTUATION
            if keep and strokes and not is_bar(strokes):
                out.append(Glyph(f"{font}:{char}", tuple(tuple(s) for s in strokes)))
    return out


def symbol_glyphs(folder: Path = HERSHEY_DIR) -> list[Glyph]:
    """Every non-empty glyph of the symbol fonts."""
    return [Glyph(f"{font}:#{i}", tuple(tuple(s) for s in strokes))
            for font in SYMBOL_FONTS for i, strokes in enumerate(load_font(font, folder))
            if strokes and i not in DIGIT_SLOTS and chr(32 + i) not in AMBIGUOUS_LETTERS and not is_bar(strokes)]
