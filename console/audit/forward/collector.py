"""Checking a syslog collector's copy of the trail against the local one (``opsgate audit verify --against``).

The collector's file holds one message per line, in the format ``wire.parse_collector_line``
reads; other lines are counted and ignored. The collector must keep the MSG intact: for rsyslog,
``parser.escapeControlCharactersOnReceive="off"`` (a DEL in a record would otherwise become
``#177``) and a ``maxMessageSize`` above the largest record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from opsgate.console.audit.forward import ForwardError
from opsgate.console.audit.forward.wire import parse_collector_line


@dataclass
class CollectorReport:
    """What ``compare_with_collector`` found. ``ok`` when every record the collector should have matches."""

    ok: bool = True
    records: int = 0  # distinct records in the collector copy
    copies: int = 0  # record messages, re-sent copies included
    duplicates: int = 0  # identical re-sent copies (counted once)
    missing: list[int] = field(default_factory=list)
    different: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)
    conflicting: list[int] = field(default_factory=list)  # two different copies of one seq at the collector
    unparsed: list[str] = field(default_factory=list)  # opsgate lines that could not be read
    ignored_lines: int = 0  # lines that are not opsgate messages
    not_yet_forwarded: int = 0
    newest: int = 0  # the collector's newest seq
    local_count: int = 0
    last_anchor: tuple[int, str] | None = None
    bad_anchors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _ranges(seqs: list[int], limit: int = 12) -> str:
    """``3, 5-9, 12`` for a sorted list of seqs, cut after ``limit`` ranges."""
    out, i = [], 0
    seqs = sorted(set(seqs))
    while i < len(seqs):
        j = i
        while j + 1 < len(seqs) and seqs[j + 1] == seqs[j] + 1:
            j += 1
        out.append(str(seqs[i]) if i == j else f"{seqs[i]}-{seqs[j]}")
        i = j + 1
    more = f", ... ({len(out) - limit} more ranges)" if len(out) > limit else ""
    return ", ".join(out[:limit]) + more


def compare_with_collector(trail_path: Path, collector_path: Path) -> CollectorReport:
    """Check a collector's copy against the local trail, by seq: missing, extra or different records.

    Identical copies of one record count once. Records newer than the collector's newest are "not
    yet forwarded", not an error. Head messages are not records; each is checked against the local
    record it names, and the newest is reported.
    """
    report = CollectorReport()
    copies: dict[int, bytes] = {}  # seq -> sha256 of the collector's JSON
    anchors: list[tuple[int, str, int]] = []
    try:
        f = open(collector_path, "rb")
    except OSError as e:
        raise ForwardError(f"{collector_path}: cannot read the collector copy: {e.strerror or e}") from None
    with f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                parsed = parse_collector_line(raw)
            except ValueError as e:
                report.unparsed.append(f"line {number}: {e}")
                continue
            if parsed is None:
                report.ignored_lines += 1
                continue
            kind, params, msg = parsed
            if kind == "head":
                try:
                    anchors.append((int(params["seq"]), params["head"], number))
                except (KeyError, ValueError):
                    report.unparsed.append(f"line {number}: a head message without a seq")
                continue
            try:
                record = json.loads(msg)
                seq = record["seq"]
                if type(seq) is not int:
                    raise ValueError("seq is not an integer")
            except (ValueError, TypeError, KeyError) as e:
                report.unparsed.append(f"line {number}: the record is not JSON with a seq ({e})")
                continue
            if params and (params.get("seq") != str(seq) or params.get("hash") != record.get("hash")):
                report.unparsed.append(f"line {number} (seq {seq}): the structured data (seq {params.get('seq')}, "
                                       f"hash {str(params.get('hash'))[:16]}...) does not match the record")
            report.copies += 1
            digest = hashlib.sha256(msg).digest()
            if seq in copies:
                if copies[seq] == digest:
                    report.duplicates += 1
                elif seq not in report.conflicting:
                    report.conflicting.append(seq)
                continue
            copies[seq] = digest
    report.records = len(copies)
    local_digests: dict[int, bytes] = {}  # 32 bytes a record: fine for millions
    local_hashes: dict[int, str] = {}
    anchor_seqs = {s for s, _, _ in anchors}
    try:
        local = open(trail_path, "rb")
    except OSError as e:
        raise ForwardError(f"{trail_path}: cannot read the audit trail: {e.strerror or e}") from None
    with local:
        for raw in local:
            if not raw.endswith(b"\n"):
                break  # a truncated last line is verify's to report
            body = raw[:-1]
            try:
                record = json.loads(body)
                seq = record["seq"]
                hash(seq)
            except (ValueError, TypeError, KeyError):
                continue  # verify names it
            local_digests[seq] = hashlib.sha256(body).digest()
            if seq in anchor_seqs:
                local_hashes[seq] = record.get("hash")
    report.local_count = len(local_digests)
    # The collector's newest record that the local chain also has: local records after it are
    # "not yet forwarded"; an extra record beyond the local chain does not make them missing.
    report.newest = max((s for s in copies if s in local_digests), default=0)
    for seq, digest in local_digests.items():
        if seq > report.newest:
            report.not_yet_forwarded += 1
        elif seq not in copies:
            report.missing.append(seq)
        elif copies[seq] != digest or seq in report.conflicting:
            report.different.append(seq)
    report.extra = sorted(s for s in copies if s not in local_digests)
    for seq, head, number in anchors:
        if local_hashes.get(seq) != head:
            report.bad_anchors.append(f"line {number}: head anchored at seq {seq} ({head[:16]}...) "
                                      + ("is not in the local chain" if seq not in local_hashes
                                         else f"does not match the local record ({str(local_hashes[seq])[:16]}...)"))
        elif report.last_anchor is None or seq >= report.last_anchor[0]:
            report.last_anchor = (seq, head)
    if report.missing:
        report.problems.append(f"missing at the collector ({len(report.missing)}): seq {_ranges(report.missing)}")
    if report.different:
        report.problems.append(f"different at the collector ({len(report.different)}): seq {_ranges(report.different)}")
    if report.extra:
        report.problems.append(f"extra at the collector, not in the local chain ({len(report.extra)}): "
                               f"seq {_ranges(report.extra)}")
    if report.conflicting:
        report.problems.append(f"the collector holds different copies of seq {_ranges(report.conflicting)}")
    report.problems += report.unparsed[:20] + report.bad_anchors[:20]
    report.ok = not report.problems
    return report
