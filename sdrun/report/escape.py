"""Text a run folder holds, written into RESULTS.md and the CSV files so that it stays text.

A folder may come from someone else, and its config and summary values (`model.name`,
`dataset.name`, a summary string, a folder's name) reach the report. In Markdown, a newline would
start a heading or a new table, `![x](https://...)` would load a remote image, `[x](url)` or
`<a href=...>` would disguise a link and a backtick would end a code span; in a spreadsheet, a
CSV cell starting with `=` is a formula. So:

- `md(text)` is the one way folder text enters Markdown: control characters (newlines, tabs,
  bidirectional overrides) become a space or U+FFFD, and `\\`, `` ` ``, `|`, `[`, `]`, `<`, `>`
  are backslash-escaped (what is left cannot open a link, an image, HTML, a code span or a
  table cell). Bare URLs stay visible text (their destination is shown as it is).
- `code(text)` shows folder text (a path) in a code span that no backtick inside can close.
- `Markup` marks Markdown that the report composed itself (numbers, its own links): `table`
  escapes every other cell.
- `csv_cell(value)` neutralises a text cell that a spreadsheet would read as a formula (the
  OWASP rule: a leading `= + - @`, tab or carriage return gets a `'` in front); numbers stay
  numbers, so a negative gain is still a number.
"""

from __future__ import annotations

import re
from typing import Any

_MD_SPECIAL = re.compile(r"([\\`|\[\]<>])")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class Markup(str):
    """Markdown the report composed from its own text and escaped values: not escaped again."""


def printable(text: str) -> str:
    """`text` with every control or format character replaced: whitespace ones (newline, tab,
    line separators) by a space, the others (NUL, bidirectional overrides) by U+FFFD."""
    return "".join(_printable_char(c) for c in text) if not text.isprintable() else text


def _printable_char(char: str) -> str:
    if char.isprintable():
        return char
    return " " if char.isspace() else "\ufffd"


def md(value: Any) -> str:
    """Folder text as Markdown text: nothing in it is Markdown syntax (see the module doc)."""
    if isinstance(value, Markup):
        return value
    return _MD_SPECIAL.sub(r"\\\1", printable(str(value)))


def code(value: Any) -> Markup:
    """Folder text in a code span: fenced with more backticks than it holds in a row (no
    backtick inside can close it), `|` escaped (GitHub splits table cells before code spans)."""
    text = printable(str(value)).replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return Markup(f"{fence}{pad}{text}{pad}{fence}")


def csv_cell(value: Any) -> Any:
    """A CSV cell no spreadsheet reads as a formula: text starting with `= + - @`, a tab or a
    carriage return gets a leading `'`; numbers, None and other text are returned as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
