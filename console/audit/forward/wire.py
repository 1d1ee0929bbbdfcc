"""The wire format: audit records as RFC 5424 syslog messages, and reading them back.

One message per record, RFC 6587 octet-counting framing (``LEN SP MSG``)::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [opsgate@32473 seq="N" hash="H"] {"seq":N,...,"hash":"H"}

``PRI`` = facility * 8 + severity (info; notice for denials and failed step-ups; warning for
lockouts, replays, clone suspicions and recovered trails). ``TIMESTAMP`` is the record's own
``time``; ``MSGID`` is the event name (at most 32 characters). The MSG is the exact bytes of the
record's line in the local trail, without the newline and **without a BOM**: JSON is UTF-8 by
definition (RFC 8259), and collectors and the JSON tools behind them parse it directly. A reader
(``parse_collector_line``) accepts a leading BOM anyway. A head message anchors the chain outside
the operator's machine::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID audit.head [opsgate@32473 head="H" seq="N"] -

Reading back (``parse_collector_line``, one line of a collector's file): any line holding the
``[opsgate@32473 ...]`` structured data followed by a space and the JSON, as rsyslog writes with
``"<%PRI%>1 %TIMESTAMP:::date-rfc3339% %HOSTNAME% %APP-NAME% %PROCID% %MSGID% %STRUCTURED-DATA%
%msg%\\n"`` (the built-in ``RSYSLOG_SyslogProtocol23Format``), or a plain JSON line (a copy of the
trail). Other lines are not opsgate messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from opsgate.console.events import (
    ACTION_CANCELLED,
    ACTION_DENIED,
    APPROVAL_DENIED,
    AUDIT_RECOVERED,
    STEPUP_CLONE_SUSPECTED,
    STEPUP_FAILURE,
    STEPUP_LOCKOUT,
    STEPUP_REPLAY,
)

SD_ID = "opsgate@32473"
HEAD_MSGID = "audit.head"  # not a trail event: the MSGID of head messages, which only collectors see
BOM = b"\xef\xbb\xbf"

SEVERITY = {"warning": 4, "notice": 5, "info": 6}
EVENT_SEVERITY = {
    ACTION_DENIED: "notice", APPROVAL_DENIED: "notice", STEPUP_FAILURE: "notice",
    ACTION_CANCELLED: "notice",
    STEPUP_LOCKOUT: "warning", STEPUP_CLONE_SUSPECTED: "warning", STEPUP_REPLAY: "warning",
    AUDIT_RECOVERED: "warning",
}


def sd_escape(value: str) -> str:
    """A PARAM-VALUE per RFC 5424 section 6.3.3: ``"``, ``\\`` and ``]`` escaped with a backslash."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def header_token(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit`` characters, ``-`` if empty."""
    text = "".join(ch if 33 <= ord(ch) <= 126 else "_" for ch in value)[:limit]
    return text or "-"


def severity_for(event: str) -> int:
    """The syslog severity of an event: info, or notice/warning for denials, lockouts and clone signals."""
    return SEVERITY[EVENT_SEVERITY.get(event, "info")]


@dataclass(frozen=True)
class Origin:
    """The header fields that do not come from the record."""

    facility: int
    hostname: str
    app_name: str
    procid: str


def _timestamp(value: object) -> str:
    """The record's RFC 3339 time if it is a valid RFC 5424 TIMESTAMP, else the NILVALUE."""
    text = str(value)
    ok = len(text) <= 32 and text.endswith("Z") and text[4:5] == "-" and text[10:11] == "T" and text.isascii()
    return text if ok and " " not in text else "-"


def record_message(line: bytes, record: dict, origin: Origin) -> bytes:
    """The RFC 5424 message for one trail line (``line`` without its newline) and its parsed record."""
    event = str(record.get("event", ""))
    pri = origin.facility * 8 + severity_for(event)
    sd = f'[{SD_ID} seq="{sd_escape(str(record.get("seq")))}" hash="{sd_escape(str(record.get("hash")))}"]'
    header = (f"<{pri}>1 {_timestamp(record.get('time'))} {origin.hostname} {origin.app_name} {origin.procid} "
              f"{header_token(event, 32)} {sd} ")
    return header.encode("ascii") + line


def head_message(seq: int, head: str, origin: Origin, when: str) -> bytes:
    """The ``audit.head`` message: the chain's head hash at ``seq``, to anchor it at the collector."""
    pri = origin.facility * 8 + SEVERITY["info"]
    sd = f'[{SD_ID} head="{sd_escape(head)}" seq="{seq}"]'
    return (f"<{pri}>1 {when} {origin.hostname} {origin.app_name} {origin.procid} {HEAD_MSGID} {sd} -"
            ).encode("ascii")


def frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: the message length in decimal, a space, the message."""
    return str(len(message)).encode("ascii") + b" " + message


# -- reading it back -------------------------------------------------------------------------------


def _sd_params(text: str, start: int) -> tuple[dict[str, str], int] | None:
    """Parse ``[opsgate@32473 k="v" ...]`` at ``start``: (params, index after ``]``), or None."""
    head = "[" + SD_ID
    if not text.startswith(head, start):
        return None
    i, n, params = start + len(head), len(text), {}
    while i < n:
        if text[i] == "]":
            return params, i + 1
        if text[i] != " ":
            return None
        eq = text.find("=", i + 1)
        if eq < 0 or eq + 1 >= n or text[eq + 1] != '"':
            return None
        name, i, value = text[i + 1:eq], eq + 2, []
        while i < n and text[i] != '"':
            if text[i] == "\\" and i + 1 < n and text[i + 1] in '"\\]':
                i += 1
            value.append(text[i])
            i += 1
        if i >= n:
            return None
        params[name] = "".join(value)
        i += 1
    return None


def parse_collector_line(raw: bytes) -> tuple[str, dict, bytes | None] | None:
    """One line of a collector's file: ("record", sd params, JSON bytes) or ("head", sd params, None).

    None for a line that is not an opsgate message. Raises ValueError for an opsgate line that is broken.
    A plain JSON line (a copy of the trail) is a record with no structured data.
    """
    line = raw.rstrip(b"\r\n")
    if line.startswith(BOM):
        line = line[len(BOM):]
    if line.startswith(b"{"):
        return "record", {}, line
    marker = ("[" + SD_ID).encode("ascii")
    at = line.find(marker)
    if at < 0:
        return None
    text = line.decode("utf-8", "surrogateescape")
    at = text.find("[" + SD_ID)
    parsed = _sd_params(text, at)
    if parsed is None:
        raise ValueError("unreadable structured data")
    params, end = parsed
    while end < len(text) and text[end] == "[":  # other SD elements a relay may have added
        close = _skip_sd_element(text, end)
        if close is None:
            raise ValueError("unreadable structured data")
        end = close
    msg = text[end:].lstrip(" ").encode("utf-8", "surrogateescape")
    if msg.startswith(BOM):
        msg = msg[len(BOM):]
    if "head" in params:
        return "head", params, None
    if not msg.startswith(b"{"):
        raise ValueError("no JSON record after the structured data")
    return "record", params, msg


def _skip_sd_element(text: str, i: int) -> int | None:
    """Index after the SD element starting at ``i`` (honouring escapes), or None."""
    quoted = False
    i += 1
    while i < len(text):
        ch = text[i]
        if quoted and ch == "\\":
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == "]" and not quoted:
            return i + 1
        i += 1
    return None
