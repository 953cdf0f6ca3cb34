"""Text as a terminal shows it: display width, padding and aligned tables.

Name tags are often Japanese (``データベース-1``): an East Asian wide or full-width character takes
two columns, a combining mark or a zero-width character none. ``str.ljust`` counts code points, so a
table padded with it comes apart after the first wide name.
"""
from __future__ import annotations

import unicodedata
from typing import Sequence


def width(text: str) -> int:
    """The columns ``text`` takes in a terminal (wcwidth's rules, for the characters a name can hold)."""
    total = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf", "Cc"):
            continue
        total += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return total


def pad(text: str, columns: int) -> str:
    """``text`` followed by spaces up to ``columns`` display columns."""
    return text + " " * max(columns - width(text), 0)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], gap: str = "  ") -> list[str]:
    """Lines of a table whose columns line up by display width (the last column is not padded)."""
    widths = [max([width(h)] + [width(r[i]) for r in rows]) for i, h in enumerate(headers)]
    return [gap.join(pad(cell, w) for cell, w in zip(line, widths)).rstrip() for line in [list(headers), *rows]]
