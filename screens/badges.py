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
