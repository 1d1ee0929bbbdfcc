"""The gate's wire format: JSON lines, one object per line, UTF-8, versioned.

A console opens with ``{"v": 1, "op": "hello"}``; the gate answers with the operator it identified from
the connection (never from the request). Each request has an ``op`` and an ``id``; its final answer is
``{"id": N, "ok": true, "result": ...}`` or ``{"id": N, "ok": false, "error": {"type": T, "message": M}}``.
While a request runs, the gate may call back into the console (``{"call": NAME, "cid": K, "args": {...}}``,
answered by ``{"reply": K, "value": ...}`` or ``{"reply": K, "error": M}``): ask for a code, relay CTAP
to the operator's security key, ask for a confirmation, run a step's commands with certificates. The
console may send ``{"cancel": true}`` at any time during a run.

Error types map to the CLI's exit codes: denied, locked and needs-approval 3, bad-request 2, audit 4,
unavailable (no gate, wrong version) 2, internal 2.
"""

from __future__ import annotations

import json
import threading
from typing import BinaryIO

from opsgate.console.errors import (EXIT_AUDIT, EXIT_DENIED, EXIT_USAGE, AuditWriteError, OpsgateError,
                                    StepUpDenied, UsageError)

VERSION = 1
MAX_LINE = 16 << 20  # bytes; a longer line is a protocol error, not a memory problem

ERROR_EXIT = {"denied": EXIT_DENIED, "locked": EXIT_DENIED, "needs-approval": EXIT_DENIED,
              "bad-request": EXIT_USAGE, "audit": EXIT_AUDIT, "unavailable": EXIT_USAGE, "internal": EXIT_USAGE}


class GateError(OpsgateError):
    """An error the gate answered with, or a broken connection to it; ``exit_code`` follows its type."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.exit_code = ERROR_EXIT.get(kind, EXIT_USAGE)


def error_type(e: BaseException) -> str:
    """The wire type of an exception raised while serving a request."""
    if isinstance(e, GateError):
        return e.kind
    if isinstance(e, StepUpDenied):
        return "locked" if "locked out" in str(e) else "denied"
    if isinstance(e, AuditWriteError):
        return "audit"
    if isinstance(e, (UsageError, OpsgateError)) and e.exit_code == EXIT_USAGE:
        return "bad-request"
    return "internal"


class Channel:
    """One connection's two byte streams, read and written a line at a time; writes are serialised."""

    def __init__(self, reader: BinaryIO, writer: BinaryIO):
        self._reader = reader
        self._writer = writer
        self._write_lock = threading.Lock()

    def send(self, message: dict) -> None:
        data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        with self._write_lock:
            self._writer.write(data)
            self._writer.flush()

    def receive(self) -> dict | None:
        """The next message, or None at the end of the stream. Raises GateError on a malformed line."""
        line = self._reader.readline(MAX_LINE + 1)
        if not line:
            return None
        if len(line) > MAX_LINE or not line.endswith(b"\n"):
            raise GateError("bad-request", "protocol: line too long or cut off")
        try:
            message = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise GateError("bad-request", f"protocol: not a JSON line ({e})") from None
        if not isinstance(message, dict):
            raise GateError("bad-request", "protocol: a message must be a JSON object")
        return message
