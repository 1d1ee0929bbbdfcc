"""Durations: read from the config ("90s", "15m", 3600) and written for people ("15 min", "4:59")."""

from __future__ import annotations

import re
from typing import Any

_DURATION = re.compile(r"^(\d+)\s*(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """Seconds as an integer, or "90s", "15m", "12h", "1d". Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("expected seconds or a duration like \"90s\", \"15m\", \"12h\"")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if m:
            return float(int(m.group(1)) * _UNITS[m.group(2)])
        raise ValueError(f"bad duration {value!r}: use seconds or a number with s, m, h or d (\"15m\")")
    raise ValueError("expected seconds or a duration like \"90s\", \"15m\", \"12h\"")


def format_duration(seconds: float, short: bool = False) -> str:
    """A config-style span in its largest whole unit: "15 min" ("15m" when short), "2 h", "90 s"."""
    seconds = int(seconds)
    if seconds % 3600 == 0 and seconds >= 3600:
        n, unit, word = seconds // 3600, "h", "h"
    elif seconds % 60 == 0 and seconds >= 60:
        n, unit, word = seconds // 60, "m", "min"
    else:
        n, unit, word = seconds, "s", "s"
    return f"{n}{unit}" if short else f"{n} {word}"


def format_clock(seconds: float, *, round_up: bool = False) -> str:
    """A countdown or an elapsed time as a clock: "4:05", "1:02:03". Negative counts as 0.

    ``round_up`` for countdowns, so "0:00" is shown only once the time is really over.
    """
    seconds = max(0, int(seconds + 0.999) if round_up else int(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
