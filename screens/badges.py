"""Risk badges and status words that read with colour and without it (the word carries the meaning)."""

from __future__ import annotations

from rich.text import Text

from opsgate.actions.display import escape_line
from opsgate.console.catalog.policy import RISKS

# Solid backgrounds with a contrasting foreground read the same on dark and light terminals.
RISK_STYLES = {
    "low": "bold #0b2e13 on #7ccf8a",
    "medium": "bold #2e2300 on #f2c94c",
    "high": "bold #ffffff on #d9631e",
    "critical": "bold #ffffff on #b3123a",
}
RISK_MARKS = {"low": "○", "medium": "◐", "high": "●", "critical": "◆"}
RISK_WIDTH = max(len(r) for r in RISKS) + 4  # " ◆ CRITICAL "


def risk_badge(risk: str, *, pad: bool = True) -> Text:
    """``◐ MEDIUM`` on a coloured background; the word alone tells the risk on a monochrome terminal."""
    label = f" {RISK_MARKS.get(risk, '?')} {escape_line(str(risk).upper(), 12)} "  # a record's: maybe edited
    if pad:
        label = label.ljust(RISK_WIDTH)
    return Text(label, style=RISK_STYLES.get(risk, "reverse"))


def risk_at_least(risk: str, floor: str | None) -> bool:
    return floor is None or RISKS.index(risk) >= RISKS.index(floor)


STATUS_MARKS = {
    "pending": "◌",
    "running": "◔",
    "ok": "✓",
    "failed": "✗",
    "timeout": "⧗",
    "unreachable": "⊘",
    "cancelled": "■",
    "denied": "✗",
}


def fit_parts(width: int, parts: list[tuple[int, Text]], *, sep: str = "  ·  ", narrow_sep: str = " · ") -> Text:
    """One line of ``parts`` (rank, text) in their order, no wider than ``width``.

    Rank 0 is never dropped; the highest rank goes first (the later of equals first), after the
    separators have narrowed. What is left is cropped at the end, so rank 0 parts belong in front.
    """
    kept = list(parts)

    def join(items: list[tuple[int, Text]], between: str) -> Text:
        line = Text()
        for i, (_, text) in enumerate(items):
            if i:
                line.append(between)
            line.append_text(text)
        return line

    for between in (sep, narrow_sep):
        line = join(kept, between)
        if line.cell_len <= width:
            return line
    while True:
        line = join(kept, narrow_sep)
        droppable = [i for i, (rank, _) in enumerate(kept) if rank > 0]
        if line.cell_len <= width or not droppable:
            break
        worst = max(droppable, key=lambda i: (kept[i][0], i))
        del kept[worst]
    line.truncate(max(width, 0), overflow="ellipsis")
    return line
