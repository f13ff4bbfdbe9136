"""Each method's colour and marker, the same in every figure (SD always blue circles): with more
methods than a 10-colour cycle, picking colours by position gave sd and tfkd the same blue, and
a method's colour changed with the set of methods a figure happens to hold."""

from __future__ import annotations

import zlib

from sdrun.report.table import BORN_AGAIN

# Distinct colours (tab10, then tab20's darker complements) and markers, one pair per method.
STYLES = {
    "sd": ("#1f77b4", "o"),
    "cyclic": ("#ff7f0e", "s"),
    "cosine": ("#2ca02c", "^"),
    "step": ("#d62728", "v"),
    "ls": ("#9467bd", "D"),
    "tfkd": ("#8c564b", "P"),
    "cskd": ("#e377c2", "X"),
    "pskd": ("#7f7f7f", "*"),
    "dlb": ("#bcbd22", "h"),
    "byot": ("#17becf", "p"),
    "kd": ("#393b79", "<"),
}
BORN_AGAIN_STYLES = (("#843c39", ">"), ("#637939", "d"), ("#7b4173", "8"), ("#8c6d31", "H"))
OTHER_COLORS = ("#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363", "#ad494a", "#a55194")
OTHER_MARKERS = ("o", "s", "^", "v", "D", "P", "X")
# Rows of one method with different settings: the same colour and marker, filled differently.
FILLS = ("full", "none", "left", "right", "bottom", "top")


def style_of(method: str) -> tuple[str, str]:
    """(colour, marker) of a method: fixed for known ones; for any other name, fixed by a hash
    of it (the same in every figure and every report)."""
    if method in STYLES:
        return STYLES[method]
    generation = method.removeprefix(BORN_AGAIN)
    if method.startswith(BORN_AGAIN) and generation.isdigit():
        return BORN_AGAIN_STYLES[(int(generation) - 2) % len(BORN_AGAIN_STYLES)]
    h = zlib.crc32(method.encode("utf-8", "surrogateescape"))
    return OTHER_COLORS[h % len(OTHER_COLORS)], OTHER_MARKERS[(h // 7) % len(OTHER_MARKERS)]


def fill_of(index: int) -> str:
    """The fill of a method's `index`-th row (0: its first, filled)."""
    return FILLS[index % len(FILLS)]
