"""Audit records for people: one line per record, for ``opsgate audit tail|show``, the TUI's audit
pane and the history screen.

Records carry remote and user text (targets, reasons, errors) into a terminal, and anyone who can edit
the file controls every field (``seq`` and ``time`` too), so every value is shown through the
sanitiser's one-line policy (``opsgate.actions.display.escape_line``), and long values are cut.
"""

from __future__ import annotations

import json

from opsgate.actions.display import escape_line
from opsgate.console.audit.trail import RESERVED

_FIRST = ("action", "target", "exit_code", "exit", "status", "factor", "reason", "error")
_MAX_VALUE = 60


def _clean(text: object) -> str:
    """Every control character visible (``^[``, ``\\x9b``): record fields may carry remote or edited text."""
    return escape_line(text)


def _value(v: object) -> str:
    if isinstance(v, str):
        text = v if v and not any(c.isspace() or c in "\"'=" for c in v) else json.dumps(v, ensure_ascii=False)
    else:
        text = json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    text = _clean(text)
    return text if len(text) <= _MAX_VALUE else text[:_MAX_VALUE - 3] + "..."


def _short(v: object, limit: int = 40) -> str:
    text = _clean(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, separators=(",", ":")))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def format_record_short(record: dict, width: int | None = None) -> str:
    """``15:21:55 demo action.target tail-log web-2 ok``: the time (UTC, to the second), operator, event,
    what it concerns (action or runbook, step, target) and how it ended, each only when the record has it.

    With ``width``, a line too long for it gets a shorter action name, so the target and outcome stay.
    """
    t = str(record.get("time", ""))
    parts = [_short(t[11:19] if len(t) >= 19 else (t or "?"), 20), _short(record.get("operator") or "?", 20),
             _short(record.get("event") or "?")]
    subject = record.get("action") or record.get("runbook")
    at = None
    if subject:
        at = len(parts)
        parts.append(_short(subject))
    if record.get("step") is not None and not str(subject).endswith(f"#{record['step']}"):
        parts.append(f"step {_short(record['step'])}")  # an inline step's action id already names it
    targets = record.get("targets")
    if record.get("target"):
        parts.append(_short(record["target"]))
    elif isinstance(targets, list) and targets and str(record.get("event", "")).endswith((".start", ".denied")):
        parts.append(_short(",".join(map(str, targets))) if len(targets) <= 2 else f"{len(targets)} targets")
    if record.get("outcome") is not None:
        outcome = record["outcome"]
        parts.append(f"exit {_short(record.get('exit_code'), 20)}"
                     if outcome == "failed" and record.get("exit_code") is not None else _short(outcome))
    elif record.get("status") is not None:
        parts.append(_short(record["status"]))
    elif record.get("exit_code") is not None:
        parts.append("ok" if record["exit_code"] == 0 else f"exit {_short(record['exit_code'], 20)}")
    elif record.get("factor") is not None:
        parts.append(_short(record["factor"]))
    if record.get("reason"):
        parts.append(_short(record["reason"], 60))
    elif record.get("error"):
        parts.append(_short(record["error"], 60))
    line = " ".join(parts)
    if width is not None and at is not None and len(line) > width:
        keep = max(3, len(parts[at]) - (len(line) - width) - 1)
        if keep < len(parts[at]):
            parts[at] = parts[at][:keep] + "…"
            line = " ".join(parts)
    return line


def format_record(record: dict) -> str:
    """One readable line: seq, time (to the second), operator, event, run, then the key fields."""
    time = str(record.get("time", "?"))
    time = _short(time[:19] + "Z" if len(time) >= 19 else time, 32)
    keys = [k for k in _FIRST if k in record] + [k for k in record if k not in RESERVED and k not in _FIRST]
    fields = " ".join(f"{_clean(k)}={_value(record[k])}" for k in keys)
    head = (f"#{_short(record.get('seq', '?'), 24)} {time} {_clean(str(record.get('operator', '?')))} "
            f"{_clean(str(record.get('event', '?')))} run={_clean(str(record.get('run') or '-'))}")
    return f"{head} {fields}" if fields else head
