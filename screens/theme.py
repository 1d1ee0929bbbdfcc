"""Two themes: one for dark terminals, one for light. Risk badges carry their own contrasting colours."""

from __future__ import annotations

import os

from textual.theme import Theme

DARK = Theme(
    name="opsgate-dark",
    primary="#5fa8e8",
    secondary="#3a6ea5",
    accent="#f2c94c",
    warning="#f2c94c",
    error="#ff6b6b",
    success="#7ccf8a",
    foreground="#e6e6e6",
    background="#15181d",
    surface="#1d2128",
    panel="#262b33",
    dark=True,
)

LIGHT = Theme(
    name="opsgate-light",
    primary="#1f5fa8",
    secondary="#3a6ea5",
    accent="#9a6b00",
    warning="#9a6b00",
    error="#b3123a",
    success="#1e7b34",
    foreground="#1a1a1a",
    background="#f7f7f5",
    surface="#ecece8",
    panel="#e0e0da",
    dark=False,
)

THEMES = (DARK, LIGHT)


def default_theme() -> str:
    """``OPSGATE_THEME`` if set, else light when COLORFGBG says the background is light, else dark."""
    wanted = os.environ.get("OPSGATE_THEME")
    if wanted in ("light", "dark"):
        return f"opsgate-{wanted}"
    fgbg = os.environ.get("COLORFGBG", "")
    bg = fgbg.rsplit(";", 1)[-1]
    if bg.isdigit() and int(bg) in (7, 15):
        return LIGHT.name
    return DARK.name
