"""Trails for the verifier's tests: valid chains, lines whose hash matches whatever they hold, and what the
per-line reference (``_verify_lines``) reports, which every faster path must report too."""

from __future__ import annotations

import hashlib

from opsgate.console.audit.trail import GENESIS, _encode_line
from opsgate.console.audit.verify import _Chunk, _verify_lines


def reference(data: bytes) -> _Chunk:
    """What the per-line reference alone reports for ``data``."""
    chunk = _Chunk()
    seq, prev = _verify_lines(data, chunk, None, None)
    if seq is not None:
        chunk.last_seq, chunk.last_hash = seq, prev
    return chunk


def rehashed(body: bytes) -> bytes:
    """The line for hashed bytes ``body`` (ending in ``}``), its hash matching, whatever ``body`` is."""
    return body[:-1] + b',"hash":"' + hashlib.sha256(body).hexdigest().encode("ascii") + b'"}\n'


def chain(records: list[dict], *, event: str = "action.target", run: str = "r1") -> list[bytes]:
    """Lines for ``records`` (their own fields, which may name another event): a valid chain from the start."""
    out, prev = [], GENESIS
    for seq, fields in enumerate(records, 1):
        record = {"seq": seq, "time": "2026-11-28T14:50:01.123456Z", "event": event, "operator": "alice",
                  "run": run, **fields, "prev": prev}
        line, prev = _encode_line(record)
        out.append(line)
    return out
