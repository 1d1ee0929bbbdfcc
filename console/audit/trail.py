"""The tamper-evident audit trail: one hash-chained JSON Lines file per state dir (``STATE/audit.jsonl``).

Record
    ``seq`` (1, 2, ...), ``time`` (RFC 3339 UTC with microseconds, ``2026-11-28T14:50:01.123456Z``),
    ``event``, ``operator``, ``run`` (``null`` outside a run), the event's own fields, ``prev`` (the
    previous record's hash; 64 zeros for the first) and ``hash`` = sha256 hex of the canonical JSON of
    the record without ``hash``: sorted keys, no spaces, UTF-8, ``ensure_ascii=False``, no NaN.

Line format (what makes verify fast)
    Each line is exactly ``canonical(record without hash)`` with its closing ``}`` replaced by
    ``,"hash":"<64 hex>"}`` and a newline. So ``hash == sha256(line[:-76] + b"}")``: verify hashes the
    exact bytes it read, without re-serialising to find them. ``hash`` is deliberately the last key,
    outside the sorted order, because it is not part of what it hashes. Verify then confirms the
    canonical form by re-serialising the parsed record and comparing it with those bytes, so a line
    formatted by some other writer (spaces, key order, duplicate keys, other escapes) is reported and
    any independent tool that re-serialises gets the same hash. Verify streams the file in blocks
    and never holds more than a few of them; from ``PARALLEL_MIN_BYTES`` on, blocks are verified in
    worker processes and linked in file order (benchmarks/audit.py measures both).

Events (dotted names; not validated here, listed so readers know what to expect)
    ``stepup.success``, ``stepup.failure``, ``stepup.replay``, ``stepup.lockout``,
    ``stepup.clone_suspected``, ``approval.granted``, ``approval.denied``, ``action.denied``,
    ``action.dry_run``, ``action.start``, ``action.target`` (carries ``recording``, a path relative
    to the state dir, and ``recording_sha256``, both checked by verify), ``action.end``,
    ``action.cancelled``, ``config.loaded`` and ``audit.recovered`` (written by this module).

Concurrency
    ``append`` opens the file, takes an exclusive ``fcntl.flock``, reads the last record from the end
    of the file (never the whole file), writes one line, fsyncs and only then returns, so two consoles
    appending at once never interleave or fork the chain. The file is opened per append: a descriptor
    shared across ``fork`` would share its lock too. A threading lock serialises threads of one process.

Failures
    A write that fails (ENOSPC, EROFS, EACCES, ...) raises ``AuditWriteError`` after truncating the
    file back to where it was, so no partial line is left looking like a record. If a crash left a
    truncated last line anyway, ``verify`` reports it, and the next ``append`` first cuts it off and
    writes an ``audit.recovered`` record chained from the last good record, carrying the offset, the
    length, a preview and the complete cut bytes (base64), so nothing is silently dropped. The cut bytes
    are saved to ``audit.jsonl.partial-<offset>`` first and that file is removed once the record is on
    disk, so a crash during recovery loses nothing either.

Reading
    ``records()``, ``run_records()``, ``tail()`` and ``read_new()`` parse lines but do not check hashes
    (that is ``verify``'s job). A line that is not JSON raises ``AuditFormatError`` naming the line;
    nothing is skipped silently. A last line still being written by another process is not returned
    by ``read_new``/``tail`` (it is picked up on the next call); ``records()`` waits for the writer with
    a shared lock and raises if the line is really truncated.

Secrets
    The trail never receives secrets: the pipeline passes rendered commands and parameters already
    redacted. Nothing here redacts, so nothing secret must be passed to ``append``.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from opsgate.console.files import FileShrank, read_complete_lines
from opsgate.console.errors import EXIT_FAILED, AuditWriteError, OpsgateError, UsageError

GENESIS = "0" * 64
EVENTS = (
    "stepup.success", "stepup.failure", "stepup.replay", "stepup.lockout", "stepup.clone_suspected",
    "approval.granted", "approval.denied", "action.denied", "action.dry_run", "action.start",
    "action.target", "action.end", "action.cancelled", "config.loaded", "audit.recovered",
)
RESERVED = frozenset({"seq", "time", "event", "operator", "run", "prev", "hash"})
REQUIRED = ("seq", "time", "event", "operator", "run", "prev")

_HASH_KEY = b',"hash":"'
_SUFFIX_LEN = len(_HASH_KEY) + 64 + len(b'"}\n')  # 76
_BLOCK = 64 * 1024
_PREVIEW = 64

# One encoder object: skips json.dumps' per-call option handling on the hot paths.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER = json.JSONDecoder()


class AuditFormatError(OpsgateError):
    """The audit file holds a line that is not a record (reading, not verifying, found it)."""

    exit_code = EXIT_FAILED


def canonical(record: dict) -> str:
    """The canonical JSON text of ``record``: sorted keys, no spaces, non-ASCII kept as is."""
    return _ENCODER.encode(record)


def record_hash(record: dict) -> str:
    """The sha256 hex a record must carry: over the canonical JSON of the record without ``hash``."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


def utc_now() -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2026-11-28T14:50:01.123456Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _encode_line(record: dict) -> tuple[bytes, str]:
    """The line for ``record`` (without ``hash``) and its hash, per the line format above."""
    try:
        body = canonical(record).encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"audit record field is not valid Unicode text: {e}") from None
    digest = hashlib.sha256(body).hexdigest()
    return body[:-1] + _HASH_KEY + digest.encode("ascii") + b'"}\n', digest


def _hashed_prefix(line: bytes) -> tuple[bytes, bytes] | None:
    """(the bytes the hash covers, the stored hash) if ``line`` ends in the spliced hash, else None."""
    if len(line) <= _SUFFIX_LEN or line[-_SUFFIX_LEN:-67] != _HASH_KEY or line[-3:] != b'"}\n':
        return None
    return line[:-_SUFFIX_LEN] + b"}", line[-67:-3]


def preview(data: bytes, limit: int = _PREVIEW) -> str:
    """The first ``limit`` bytes, printable ASCII kept and everything else escaped (``\\xNN``)."""
    text = data[:limit].decode("ascii", "backslashreplace")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return text + ("..." if len(data) > limit else "")


def _rfind_newline(fd: int, before: int) -> int:
    """Offset of the last ``\\n`` strictly before byte ``before``, or -1; reads backwards in blocks."""
    pos = before
    while pos > 0:
        start = max(0, pos - _BLOCK)
        block = os.pread(fd, pos - start, start)
        i = block.rfind(b"\n")
        if i >= 0:
            return start + i
        pos = start
    return -1


@dataclass
class _Tail:
    """Where the file's complete lines end, and the last one's seq and hash."""

    end: int  # byte offset after the last complete line
    seq: int
    hash: str


def _read_tail(fd: int, size: int, path: Path) -> _Tail:
    """Find and check the last complete record without reading the whole file."""
    end = _rfind_newline(fd, size) + 1
    if end == 0:
        return _Tail(0, 0, GENESIS)
    start = _rfind_newline(fd, end - 1) + 1
    line = os.pread(fd, end - start, start)
    where = f"{path}: last record (byte {start})"
    split = _hashed_prefix(line)
    if split is None:
        raise AuditFormatError(f"{where} has no hash; run `opsgate audit verify`")
    prefix, stored = split
    if hashlib.sha256(prefix).hexdigest().encode("ascii") != stored:
        raise AuditFormatError(f"{where} does not match its hash; run `opsgate audit verify`")
    try:
        seq = json.loads(prefix)["seq"]
    except (ValueError, TypeError, KeyError):
        raise AuditFormatError(f"{where} is not a valid record; run `opsgate audit verify`") from None
    return _Tail(end, seq, stored.decode("ascii"))


def pick_run(prefix: str, runs: list[str], *, where: str = "") -> str:
    """The run ``prefix`` names among ``runs`` (ids starting with it): the exact id, or a unique prefix
    of at least 6 characters. Raises UsageError saying which rule failed."""
    if prefix in runs:
        return prefix
    if not runs:
        raise UsageError(f"no run {prefix!r} in the audit trail{where}")
    if len(prefix) < 6:
        raise UsageError(f"run {prefix!r} not found; a prefix must have at least 6 characters")
    if len(runs) > 1:
        raise UsageError(f"run prefix {prefix!r} is ambiguous: {', '.join(runs[:5])}")
    return runs[0]


class AuditTrail:
    """Append to and read one audit file. Safe across threads and processes (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._mutex = threading.Lock()

    # -- writing ---------------------------------------------------------------------------------

    def append(self, event: str, *, operator: str, run: str | None = None, **fields) -> dict:
        """Write one record, fsync it, and return it (with ``seq``, ``time``, ``prev`` and ``hash``).

        Raises ``AuditWriteError`` if the record cannot be made durable; the file is then unchanged.
        """
        clash = RESERVED.intersection(fields)
        if clash:
            raise ValueError(f"audit fields may not use reserved names: {', '.join(sorted(clash))}")
        try:  # fail before touching the file, not halfway through an append
            canonical(fields).encode("utf-8")
        except (TypeError, ValueError) as e:  # UnicodeEncodeError (a lone surrogate) is a ValueError
            raise ValueError(f"audit fields must be JSON text (no NaN, no lone surrogates): {e}") from None
        with self._mutex:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as e:
                raise AuditWriteError(f"{self.path}: cannot open the audit trail for writing: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                try:
                    tail = _read_tail(fd, size, self.path)
                except AuditFormatError as e:
                    raise AuditWriteError(f"{e}; refusing to append to a broken chain") from None
                except OSError as e:
                    raise AuditWriteError(f"{self.path}: cannot read the audit trail: {e.strerror or e}") from None
                if tail.end < size:
                    tail = self._recover(fd, tail, size, operator)
                record = {"seq": tail.seq + 1, "time": utc_now(), "event": event, "operator": operator,
                          "run": run, **fields, "prev": tail.hash}
                line, digest = _encode_line(record)
                self._write_at(fd, line, tail.end)
                if tail.end == 0:
                    _fsync_dir(self.path.parent)
            finally:
                os.close(fd)  # also releases the flock
        record["hash"] = digest
        return record

    def _write_at(self, fd: int, data: bytes, offset: int) -> None:
        """Write ``data`` at ``offset`` and fsync; on failure truncate back to ``offset`` and raise."""
        try:
            view = memoryview(data)
            pos = offset
            while view:
                n = os.pwrite(fd, view, pos)
                if n <= 0:
                    raise OSError(28, "No space left on device")
                view, pos = view[n:], pos + n
            os.ftruncate(fd, pos)  # a longer cut-off tail must not survive behind the new line
            os.fsync(fd)
        except OSError as e:
            try:
                os.ftruncate(fd, offset)
                os.fsync(fd)
            except OSError:
                pass
            raise AuditWriteError(f"{self.path}: cannot write the audit record: {e.strerror or e}") from None

    def _recover(self, fd: int, tail: _Tail, size: int, operator: str) -> _Tail:
        """Cut a truncated last line off and record it in an ``audit.recovered`` record."""
        cut = os.pread(fd, size - tail.end, tail.end)
        # Keep the bytes in a side file first, so a crash during recovery cannot lose them.
        side = self.path.with_name(f"{self.path.name}.partial-{tail.end}")
        try:
            with open(side, "wb") as f:
                f.write(cut)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise AuditWriteError(f"{side}: cannot save the truncated last line before recovery: {e.strerror or e}") from None
        record = {
            "seq": tail.seq + 1, "time": utc_now(), "event": "audit.recovered", "operator": operator,
            "run": None, "reason": "truncated last line", "offset": tail.end, "length": len(cut),
            "preview": preview(cut), "cut_sha256": hashlib.sha256(cut).hexdigest(),
            "cut_b64": base64.b64encode(cut).decode("ascii"), "prev": tail.hash,
        }
        line, digest = _encode_line(record)
        try:
            self._write_at(fd, line, tail.end)
        except AuditWriteError as e:
            # The original bytes were overwritten or truncated away; put them back (they are in `side`).
            try:
                os.pwrite(fd, cut, tail.end)
                os.fsync(fd)
            except OSError:
                pass
            raise AuditWriteError(f"{e} (while recovering a truncated last line; its bytes are kept in {side})") from None
        side.unlink(missing_ok=True)
        return _Tail(tail.end + len(line), tail.seq + 1, digest)

    # -- reading ---------------------------------------------------------------------------------

    def head(self) -> str | None:
        """The hash of the last complete record, or None when the trail is empty or missing."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # wait for an append in progress
            tail = _read_tail(fd, os.fstat(fd).st_size, self.path)
        finally:
            os.close(fd)
        return None if tail.end == 0 else tail.hash

    def _lines(self) -> Iterator[tuple[int, int, bytes]]:
        """(line number, byte offset, line) for every line; a truncated last line raises."""
        try:
            f = open(self.path, "rb", buffering=_BLOCK * 16)
        except FileNotFoundError:
            return
        with f:
            offset = 0
            for number, line in enumerate(f, 1):
                if not line.endswith(b"\n"):
                    # Another console may be writing this line right now: wait for it with a shared lock.
                    fcntl.flock(f.fileno(), fcntl.LOCK_SH)
                    f.seek(offset)
                    line = f.readline()
                    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
                    if not line.endswith(b"\n"):
                        raise AuditFormatError(f"{self.path}: line {number} (byte {offset}) is a truncated "
                                               f"last line ({len(line)} bytes): {preview(line)}")
                yield number, offset, line
                offset += len(line)

    def _parse(self, where: str, line: bytes) -> dict:
        try:
            record = json.loads(line)
        except ValueError as e:
            raise AuditFormatError(f"{self.path}: {where} is not JSON ({e}); run `opsgate audit verify`") from None
        if not isinstance(record, dict):
            raise AuditFormatError(f"{self.path}: {where} is not a JSON object; run `opsgate audit verify`")
        return record

    def _parse_block(self, data: bytes, offset: int) -> list[dict]:
        out = []
        for line in data.splitlines(keepends=True):
            out.append(self._parse(f"the line at byte {offset}", line))
            offset += len(line)
        return out

    def records(self) -> Iterator[dict]:
        """Every record in order, streaming. Hashes are not checked here (use ``verify``);
        a line that is not a record raises ``AuditFormatError``."""
        for number, _, line in self._lines():
            yield self._parse(f"line {number}", line)

    def run_records(self, run: str) -> list[dict]:
        """The records of one run, in order."""
        needle = b'"run":' + json.dumps(run, ensure_ascii=False).encode("utf-8")
        out = []
        for number, _, line in self._lines():
            if needle in line:  # cheap filter before parsing; the parsed field decides
                record = self._parse(f"line {number}", line)
                if record.get("run") == run:
                    out.append(record)
        return out

    def find_run(self, prefix: str) -> str:
        """The run id that ``prefix`` names: the exact id, or a unique prefix of at least 6 characters."""
        needle = b'"run":' + json.dumps(prefix, ensure_ascii=False).encode("utf-8")[:-1]
        runs: dict[str, None] = {}
        for number, _, line in self._lines():
            if needle in line:
                run = self._parse(f"line {number}", line).get("run")
                if isinstance(run, str) and run.startswith(prefix):
                    runs[run] = None
        return pick_run(prefix, list(runs), where=f" {self.path}")

    def read_new(self, offset: int) -> tuple[list[dict], int]:
        """Records whose lines start at or after byte ``offset``, and the offset to pass next time.

        Only complete lines are returned; a line still being written is picked up on a later call.
        ``offset`` must be 0 or a value this method (or ``tail``) returned.
        """
        try:
            data = read_complete_lines(self.path, offset)
        except FileNotFoundError:
            return [], offset
        except FileShrank:
            raise AuditFormatError(f"{self.path}: the trail shrank below byte {offset} (replaced or truncated?)") from None
        return self._parse_block(data, offset), offset + len(data)

    def tail(self, n: int) -> tuple[list[dict], int]:
        """The last ``n`` complete records and the byte offset after them (for ``read_new``)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return [], 0
        try:
            end = _rfind_newline(fd, os.fstat(fd).st_size) + 1
            start = end
            for _ in range(max(n, 0)):
                if start == 0:
                    break
                start = _rfind_newline(fd, start - 1) + 1
            data = os.pread(fd, end - start, start)
        finally:
            os.close(fd)
        return self._parse_block(data, start), end


def _fsync_dir(path: Path) -> None:
    """Make a newly created file's directory entry durable (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- verify ---------------------------------------------------------------------------------------


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
    recordings: list[tuple[object, int, object, object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _verify_chunk(data: bytes) -> _Chunk:
    """Verify a block of complete lines; the link into its first record is left to the caller.

    The hot loop of ``verify``: per line one sha256 over the exact bytes, one parse, one
    re-serialisation for the canonical check, and the link checks.
    """
    chunk = _Chunk()
    sha256, decode, encode = hashlib.sha256, _DECODER.decode, _ENCODER.encode
    seq, prev = None, None
    try:
        for line in data.splitlines(keepends=True):
            chunk.lines += 1
            split = _hashed_prefix(line)
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
            if seq is None:
                chunk.first_seq, chunk.first_prev = found, record["prev"]
            else:
                problem = _link_problem(seq, prev, found, record["prev"])
                if problem:
                    chunk.problem = (problem, found)
                    return chunk
            event = record["event"]
            if event == "action.target" and "recording" in record:
                chunk.recordings.append((found, chunk.lines, record["recording"], record.get("recording_sha256")))
            elif event == "audit.recovered":
                chunk.notes.append(f"seq {found}: audit.recovered: {record.get('length')} bytes of a truncated "
                                   f"line cut at byte {record.get('offset')}: {record.get('preview')}")
            seq, prev = found, stored
            chunk.count += 1
            chunk.bytes += len(line)
        return chunk
    finally:
        if seq is not None:
            chunk.last_seq, chunk.last_hash = seq, prev


def _link_problem(seq: int, prev: bytes, found: object, found_prev: object) -> str | None:
    """Why a record with ``found``/``found_prev`` cannot follow record ``seq`` whose hash is ``prev``."""
    wrong = []
    if found != seq + 1:
        wrong.append(f"seq gap: expected {seq + 1}, found {found} (a record was removed or reordered?)")
    if found_prev != prev.decode("ascii"):
        wrong.append(f"broken link: prev {str(found_prev)[:16]}... is not the hash of the previous record "
                     f"({prev.decode('ascii')[:16]}...)")
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
    recordings: list[tuple[object, int, object, object]] = []
    seq, prev, number, offset = 0, GENESIS.encode("ascii"), 0, 0

    def bad(what: str, found: object, line: int, at: int) -> None:
        shown = f"seq {found}" if found is not None else f"expected seq {seq + 1}"
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
            recordings += [(s, number + n, rel, sha) for s, n, rel, sha in chunk.recordings]
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
    """Check each (seq, line, path, sha256) named by an action.target record; add a problem per mismatch."""
    for rec_seq, rec_line, rel, expected in recordings:
        problem = check_recording(state_dir, rel, expected)
        report.recordings_checked += 1
        if problem:
            report.ok = False
            where = f"line {rec_line} (seq {rec_seq})" if with_line else f"seq {rec_seq}"
            report.problems.append(f"{where}: recording {rel}: {problem}")


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
        shown = f"seq {found}" if found is not None else f"expected seq {report.last_seq + 1}"
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


def check_recording(state_dir: Path, rel: object, expected: object) -> str | None:
    """None if the recording at ``state_dir/rel`` hashes to ``expected``, else what is wrong."""
    if not isinstance(rel, str) or not isinstance(expected, str):
        return "the record does not name a recording path and sha256"
    root = Path(state_dir).resolve()
    target = (root / rel).resolve()
    if Path(rel).is_absolute() or not target.is_relative_to(root):
        return "path is outside the state dir"
    try:
        digest = file_sha256(target)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"cannot read: {e.strerror or e}"
    if digest != expected:
        return f"changed since the run (sha256 {digest[:16]}..., the trail says {expected[:16]}...)"
    return None


def file_sha256(path: Path) -> str:
    """sha256 hex of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# -- display --------------------------------------------------------------------------------------

_CORE = ("seq", "time", "event", "operator", "run", "prev", "hash")
_FIRST = ("action", "target", "exit_code", "exit", "status", "factor", "reason", "error")
_MAX_VALUE = 60


def _clean(text: str) -> str:
    """Escape control characters: record fields may carry remote or user text into a terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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
    parts = [t[11:19] if len(t) >= 19 else (t or "?"), _short(record.get("operator") or "?", 20),
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
        parts.append(f"exit {record.get('exit_code')}" if outcome == "failed" and record.get("exit_code") is not None
                     else _short(outcome))
    elif record.get("status") is not None:
        parts.append(_short(record["status"]))
    elif record.get("exit_code") is not None:
        parts.append("ok" if record["exit_code"] == 0 else f"exit {record['exit_code']}")
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
    time = time[:19] + "Z" if len(time) >= 19 else time
    keys = [k for k in _FIRST if k in record] + [k for k in record if k not in _CORE and k not in _FIRST]
    fields = " ".join(f"{_clean(k)}={_value(record[k])}" for k in keys)
    head = (f"#{record.get('seq', '?')} {time} {_clean(str(record.get('operator', '?')))} "
            f"{_clean(str(record.get('event', '?')))} run={_clean(str(record.get('run') or '-'))}")
    return f"{head} {fields}" if fields else head
