"""Verifying the audit trail: the hash chain, streamed (in parallel for big files), and the recordings.

What holds (``trail.py`` describes the record and line format): each line's ``hash`` is the sha256
of the exact bytes before it, the line is the canonical JSON of its record, ``seq`` counts up by
one and ``prev`` is the previous record's hash (``GENESIS`` for the first). ``verify`` streams the
file in blocks and never holds more than a few of them; from ``PARALLEL_MIN_BYTES`` on, blocks are
verified in worker processes and linked in file order (benchmarks/audit.py measures both).
``verify_from`` goes on from an earlier report's end, for a pane that follows the trail.

Recordings: every ``action.target`` record names a recording (relative to the state dir) and its
sha256, or says it could not be written (``recording_error``: the run stopped that target, outcome
``recording-failed``; what reached the file hashes right, but the recording is incomplete and does not
verify). ``check_recording`` is the one decision on a recording: whether it verifies and, if not,
why, and whether it can be played at all (``opsgate replay``, the TUI's replay and history screens
and ``opsgate audit export`` all ask it).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from opsgate.actions.display import escape_line
from opsgate.console.audit.recording import file_sha256
from opsgate.console.audit.trail import ENCODER, GENESIS, REQUIRED, hashed_prefix, preview, record_hash
from opsgate.console.events import ACTION_TARGET, AUDIT_RECOVERED
from opsgate.console.files import FileShrank, read_complete_lines

_DECODER = json.JSONDecoder()


@dataclass
class VerifyReport:
    """What ``verify`` found. ``problems`` are one-line messages; the first names the first bad record."""

    ok: bool
    count: int  # records verified before the first bad one (all of them when ok)
    head: str | None  # hash of the last good record
    problems: list[str] = field(default_factory=list)
    first_bad_seq: int | None = None
    first_bad_line: int | None = None
    first_bad_offset: int | None = None
    recordings_checked: int = 0
    notes: list[str] = field(default_factory=list)  # not problems: e.g. audit.recovered records
    end_offset: int = 0  # byte offset after the last good record: where ``verify_from`` goes on
    last_seq: int = 0  # seq of the last good record (0: none)


PARALLEL_MIN_BYTES = 64 * 1024 * 1024  # below this, starting worker processes costs more than it saves
_SEQUENTIAL_BLOCK = 1024 * 1024
_PARALLEL_BLOCK = 8 * 1024 * 1024


@dataclass
class _Chunk:
    """What ``_verify_chunk`` found in a block of complete lines (picklable, for worker processes).

    Line numbers and byte counts are relative to the block; the caller makes them absolute.
    """

    count: int = 0  # good records before the first problem
    first_seq: object = None  # the first record's seq and prev, for the caller to link
    first_prev: object = None
    last_seq: int = 0  # the last good record
    last_hash: bytes = b""
    lines: int = 0  # lines read, the bad one included
    bytes: int = 0  # bytes of the good records
    problem: tuple[str, object] | None = None  # (what, the seq found on the bad line or None)
    # (seq, line, path, sha256, recording_error) of each action.target record: see _check_recordings
    recordings: list[tuple[object, int, object, object, object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _verify_chunk(data: bytes) -> _Chunk:
    """Verify a block of complete lines; the link into its first record is left to the caller.

    The hot loop of ``verify``: per line one sha256 over the exact bytes, one parse, one
    re-serialisation for the canonical check, and the link checks.
    """
    chunk = _Chunk()
    sha256, decode, encode = hashlib.sha256, _DECODER.decode, ENCODER.encode
    seq, prev = None, None
    try:
        for line in data.splitlines(keepends=True):
            chunk.lines += 1
            split = hashed_prefix(line)
            if split is None:
                try:
                    decode(line.decode("utf-8"))
                    chunk.problem = ("no hash at the end of the line (not written by opsgate)", None)
                except ValueError as e:
                    chunk.problem = (f"bad JSON: {e}", None)
                return chunk
            prefix, stored = split
            try:
                text = prefix.decode("utf-8")
                record = decode(text)
            except ValueError as e:  # UnicodeDecodeError is a ValueError
                chunk.problem = (f"bad JSON: {e}", None)
                return chunk
            if type(record) is not dict:
                chunk.problem = ("bad JSON: not an object", None)
                return chunk
            found = record.get("seq")
            if sha256(prefix).hexdigest().encode("ascii") != stored:
                chunk.problem = ("hash mismatch (the record was changed after it was written)", found)
                return chunk
            try:
                same = encode(record) == text
            except ValueError:
                same = False
            if not same:
                chunk.problem = ("not canonical JSON (sorted keys, no spaces): not written by opsgate", found)
                return chunk
            missing = [k for k in REQUIRED if k not in record]
            if missing:
                chunk.problem = (f"missing field(s): {', '.join(missing)}", found)
                return chunk
            if type(found) is not int:  # not a number (text can carry escapes into whoever shows it), bool, float
                chunk.problem = (f"seq is not an integer: {shown_value(found)}", None)
                return chunk
            if seq is None:
                chunk.first_seq, chunk.first_prev = found, record["prev"]
            else:
                problem = _link_problem(seq, prev, found, record["prev"])
                if problem:
                    chunk.problem = (problem, found)
                    return chunk
            event = record["event"]
            if event == ACTION_TARGET and "recording" in record:
                chunk.recordings.append((found, chunk.lines, record["recording"], record.get("recording_sha256"),
                                         record.get("recording_error")))
            elif event == AUDIT_RECOVERED:
                chunk.notes.append(escape_line(f"seq {found}: audit.recovered: {record.get('length')} bytes of a "
                                               f"truncated line cut at byte {record.get('offset')}: "
                                               f"{record.get('preview')}"))
            seq, prev = found, stored
            chunk.count += 1
            chunk.bytes += len(line)
        return chunk
    finally:
        if seq is not None:
            chunk.last_seq, chunk.last_hash = seq, prev


def shown_value(value: object, limit: int = 40) -> str:
    """A record's value (``seq``, ``prev``: anything, once edited) inside a problem message: escaped, cut."""
    return escape_line(value if isinstance(value, int) and type(value) is not bool else json.dumps(value), limit)


def _link_problem(seq: int, prev: bytes, found: object, found_prev: object) -> str | None:
    """Why a record with ``found``/``found_prev`` cannot follow record ``seq`` whose hash is ``prev``."""
    wrong = []
    if found != seq + 1:
        wrong.append(f"seq gap: expected {seq + 1}, found {shown_value(found)} (a record was removed or reordered?)")
    if found_prev != prev.decode("ascii"):
        wrong.append(f"broken link: prev {escape_line(str(found_prev)[:16])}... is not the hash of the previous "
                     f"record ({prev.decode('ascii')[:16]}...)")
    return "; ".join(wrong) or None


def _blocks(f, size: int) -> Iterator[bytes]:
    """Blocks of about ``size`` bytes ending at a newline, then the trailing partial line (maybe empty)."""
    rest = b""
    while block := f.read(size):
        block = rest + block
        end = block.rfind(b"\n") + 1
        rest = block[end:]
        if end:
            yield block[:end]
    yield rest


def _chunks(f, workers: int) -> Iterator[_Chunk | bytes]:
    """``_verify_chunk`` results in file order, then the trailing partial line (bytes, maybe empty)."""
    if workers <= 1:
        for block in _blocks(f, _SEQUENTIAL_BLOCK):
            yield _verify_chunk(block) if block.endswith(b"\n") else block
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the caller may be a threaded program (the TUI).
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    pending: deque = deque()
    try:
        for block in _blocks(f, _PARALLEL_BLOCK):
            if not block.endswith(b"\n"):
                while pending:
                    yield pending.popleft().result()
                yield block
                return
            pending.append(pool.submit(_verify_chunk, block))
            if len(pending) > 2 * workers:  # bounded read-ahead: streaming, never the whole file
                yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def verify(path: Path, *, state_dir: Path | None = None, check_recordings: bool = True,
           workers: int | None = None) -> VerifyReport:
    """Check the whole chain, streaming, and the recordings that ``action.target`` records name.

    The chain check stops at the first bad record (everything after it is unanchored); recordings
    are checked for the records before it. ``state_dir`` defaults to the trail's directory.
    ``workers`` > 1 verifies blocks in that many processes; by default that happens for files of
    ``PARALLEL_MIN_BYTES`` or more on a multi-core machine. The report is the same either way.
    """
    path = Path(path)
    state_dir = Path(state_dir) if state_dir is not None else path.parent
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return VerifyReport(ok=False, count=0, head=None, problems=[f"no audit trail at {path}"])
    except OSError as e:
        return VerifyReport(ok=False, count=0, head=None, problems=[f"{path}: cannot read: {e.strerror or e}"])
    report = VerifyReport(ok=True, count=0, head=None)
    recordings: list[tuple[object, int, object, object, object]] = []
    seq, prev, number, offset = 0, GENESIS.encode("ascii"), 0, 0

    def bad(what: str, found: object, line: int, at: int) -> None:
        shown = f"seq {shown_value(found)}" if found is not None else f"expected seq {seq + 1}"
        report.ok = False
        report.problems.append(f"line {line} ({shown}, byte {at}): {what}")
        report.first_bad_seq = found if isinstance(found, int) else seq + 1
        report.first_bad_line, report.first_bad_offset = line, at

    with f:
        if workers is None:
            big = os.fstat(f.fileno()).st_size >= PARALLEL_MIN_BYTES
            workers = min(os.cpu_count() or 1, 4) if big else 1
        chunks = _chunks(f, workers)
        for chunk in chunks:
            if isinstance(chunk, bytes):
                if chunk:
                    bad(f"truncated last line ({len(chunk)} bytes, no newline; a crash?): {preview(chunk)}",
                        None, number + 1, offset)
                break
            if chunk.count:
                link = _link_problem(seq, prev, chunk.first_seq, chunk.first_prev)
                if link:
                    bad(link, chunk.first_seq, number + 1, offset)
                    break
                seq, prev = chunk.last_seq, chunk.last_hash
            report.count += chunk.count
            report.notes += chunk.notes
            recordings += [(s, number + n, rel, sha, lost) for s, n, rel, sha, lost in chunk.recordings]
            if chunk.problem:
                bad(chunk.problem[0], chunk.problem[1], number + chunk.lines, offset + chunk.bytes)
                offset += chunk.bytes  # the good records of this block stay verified
                break
            number += chunk.lines
            offset += chunk.bytes
        chunks.close()  # stops the workers early after a problem
    report.head = prev.decode("ascii") if seq else None
    report.end_offset, report.last_seq = offset, seq

    if check_recordings:
        _check_recordings(report, state_dir, recordings, with_line=True)
    return report


def _check_recordings(report: VerifyReport, state_dir: Path | None, recordings, *, with_line: bool) -> None:
    """Check each (seq, line, path, sha256, recording_error) named by an action.target record; add a problem
    per mismatch, and per recording that could not be written (incomplete evidence)."""
    for rec_seq, rec_line, rel, expected, lost in recordings:
        problem = check_recording(state_dir, rel, expected, lost=lost).problem
        report.recordings_checked += 1
        if problem:
            report.ok = False
            where = f"line {rec_line} (seq {rec_seq})" if with_line else f"seq {rec_seq}"
            report.problems.append(f"{where}: recording {escape_line(rel)}: {problem}")


def verify_from(path: Path, offset: int, seq: int, prev_hash: str | None, *, state_dir: Path | None = None,
                check_recordings: bool = True) -> VerifyReport:
    """Verify only the records after byte ``offset``, chained to the verified record ``seq``/``prev_hash``.

    Same rules as ``verify`` (hash over the exact line bytes, canonical form, seq and prev links,
    recordings of new ``action.target`` records); ``offset``, ``seq`` and ``prev_hash`` come from the
    ``end_offset``, ``last_seq`` and ``head`` of an earlier report (0, 0, None for an empty trail).
    ``count`` is the number of new records verified. A last line without its newline yet is left for
    the next call (a writer may be appending it); a full ``verify`` reports a truly truncated one.
    Records before ``offset`` are not read again: only a full ``verify`` sees an edit there.
    """
    path = Path(path)
    state_dir = Path(state_dir) if state_dir is not None else path.parent
    report = VerifyReport(ok=True, count=0, head=prev_hash, end_offset=offset, last_seq=seq)
    try:
        data = read_complete_lines(path, offset)
    except FileShrank:
        report.ok = False
        report.problems.append(f"the trail shrank below byte {offset} (replaced or truncated?)")
        report.first_bad_offset = offset
        return report
    except FileNotFoundError:
        if offset == 0:
            return report
        return VerifyReport(ok=False, count=0, head=prev_hash, problems=[f"no audit trail at {path}"],
                            end_offset=offset, last_seq=seq)
    except OSError as e:
        return VerifyReport(ok=False, count=0, head=prev_hash, end_offset=offset, last_seq=seq,
                            problems=[f"{path}: cannot read: {e.strerror or e}"])
    if not data:
        return report
    chunk = _verify_chunk(data)
    prev = (prev_hash or GENESIS).encode("ascii")

    def bad(what: str, found: object, at: int) -> None:
        shown = f"seq {shown_value(found)}" if found is not None else f"expected seq {report.last_seq + 1}"
        report.ok = False
        report.problems.append(f"byte {at} ({shown}): {what}")
        report.first_bad_seq = found if isinstance(found, int) else report.last_seq + 1
        report.first_bad_offset = at

    if chunk.count:
        link = _link_problem(seq, prev, chunk.first_seq, chunk.first_prev)
        if link:
            bad(link, chunk.first_seq, offset)
            return report
        report.count = chunk.count
        report.last_seq, report.head = chunk.last_seq, chunk.last_hash.decode("ascii")
        report.end_offset = offset + chunk.bytes
    report.notes += chunk.notes
    if chunk.problem:
        bad(chunk.problem[0], chunk.problem[1], offset + chunk.bytes)
    if check_recordings:
        _check_recordings(report, state_dir, chunk.recordings, with_line=False)  # chunk lines are relative
    return report


class RecordingStatus(Enum):
    """Whether a recording verifies, or the first reason it does not."""

    OK = "ok"  # the file hashes to the sha256 its audit record gives
    NOT_RECORDED = "not-recorded"  # the record names no recording path and sha256
    OUTSIDE = "outside"  # the path leads out of the state dir
    MISSING = "missing"
    UNREADABLE = "unreadable"
    HASH_MISMATCH = "hash-mismatch"  # the file changed since the run
    INCOMPLETE = "incomplete"  # the record says it could not be written (recording-failed): not all is on record
    RECORD_CHANGED = "record-changed"  # the action.target record does not match its own hash


_CANNOT_OPEN = (RecordingStatus.NOT_RECORDED, RecordingStatus.OUTSIDE, RecordingStatus.MISSING,
                RecordingStatus.UNREADABLE)


@dataclass(frozen=True)
class RecordingCheck:
    """What ``check_recording`` decided: does the recording verify, and can it be played at all.

    A recording that does not verify may still be played (a reviewer may look; ``opsgate replay``
    needs ``--force``): a changed file, or a file whose record was changed. One that is not
    recorded, missing, unreadable or outside the state dir never is.
    """

    status: RecordingStatus
    problem: str | None = None  # why it does not verify, for people; None when it does
    cannot_play: str | None = None  # why it cannot be opened at all, for people; None when it can

    @property
    def verified(self) -> bool:
        return self.status is RecordingStatus.OK

    @property
    def playable(self) -> bool:
        return self.cannot_play is None


def _check_file(state_dir: Path, rel: object, expected: object) -> tuple[RecordingStatus, str | None]:
    """The recording file at ``state_dir/rel`` against ``expected``: (status, what is wrong or None)."""
    if not isinstance(rel, str) or not isinstance(expected, str):
        return RecordingStatus.NOT_RECORDED, "the record does not name a recording path and sha256"
    root = Path(state_dir).resolve()
    target = (root / rel).resolve()
    if Path(rel).is_absolute() or not target.is_relative_to(root):
        return RecordingStatus.OUTSIDE, "path is outside the state dir"
    try:
        digest = file_sha256(target)
    except FileNotFoundError:
        return RecordingStatus.MISSING, "missing"
    except OSError as e:
        return RecordingStatus.UNREADABLE, f"cannot read: {e.strerror or e}"
    if digest != expected:
        return (RecordingStatus.HASH_MISMATCH,
                f"changed since the run (sha256 {digest[:16]}..., the trail says {expected[:16]}...)")
    return RecordingStatus.OK, None


def check_recording(state_dir: Path, rel: object, expected: object, *, record: dict | None = None,
                    lost: object = None) -> RecordingCheck:
    """Check the recording ``rel`` (relative to ``state_dir``) against the sha256 ``expected``.

    ``lost`` (or ``record``'s ``recording_error``) says the recording could not be written: a file that
    matches is then INCOMPLETE, never OK (it may be played: it holds what was recorded before).
    With ``record`` (the ``action.target`` record naming it), that record must also still match
    its own hash; if it does not, that is the problem reported (the file's sha256 then proves
    nothing), though the file may still be played.
    """
    status, problem = _check_file(state_dir, rel, expected)
    lost = lost or (record or {}).get("recording_error")
    if lost and status is RecordingStatus.OK:
        status = RecordingStatus.INCOMPLETE
        problem = (f"incomplete: it could not be written during the run ({str(lost)[:200]}); the target's "
                   f"outcome is recording-failed")
    cannot_play = None
    if status in _CANNOT_OPEN:
        cannot_play = ("the audit record names no recording" if not isinstance(rel, str)
                       else f"cannot play it: {problem}")
    if record and record.get("hash") != record_hash(record):
        status = RecordingStatus.RECORD_CHANGED
        problem = f"its audit record (seq {shown_value(record.get('seq'))}) does not match its own hash"
    return RecordingCheck(status, problem, cannot_play)
