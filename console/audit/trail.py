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
    any independent tool that re-serialises gets the same hash. Verifying is ``verify.py``'s job;
    showing records to people is ``format.py``'s.

Events
    Dotted names (``console/events.py`` lists every one); not validated here. This module writes
    ``audit.recovered`` itself.

Concurrency
    ``append`` opens the file, takes an exclusive ``fcntl.flock``, reads the last record from the end
    of the file (never the whole file), writes one line, fsyncs and only then returns, so two consoles
    appending at once never interleave or fork the chain. The file is opened per append: a descriptor
    shared across ``fork`` would share its lock too. A threading lock serialises threads of one process.
    The file is opened with ``O_NOFOLLOW``: a symbolic link in its place (which would send the records,
    or a reader, to some other file) is refused with an error that says so, when appending and reading.

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
import errno
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from opsgate.console.errors import EXIT_FAILED, AuditWriteError, OpsgateError, UsageError
from opsgate.console.events import AUDIT_RECOVERED
from opsgate.console.files import FileShrank, read_complete_lines

GENESIS = "0" * 64
REQUIRED = ("seq", "time", "event", "operator", "run", "prev")  # every record has them (verify checks)
RESERVED = frozenset((*REQUIRED, "hash"))  # the record's own fields: an event's fields may not use them

_HASH_KEY = b',"hash":"'
_SUFFIX_LEN = len(_HASH_KEY) + 64 + len(b'"}\n')  # 76
_BLOCK = 64 * 1024
_PREVIEW = 64

# One encoder object: skips json.dumps' per-call option handling on the hot paths (verify's too).
ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class AuditFormatError(OpsgateError):
    """The audit file holds a line that is not a record (reading, not verifying, found it)."""

    exit_code = EXIT_FAILED


def canonical(record: dict) -> str:
    """The canonical JSON text of ``record``: sorted keys, no spaces, non-ASCII kept as is."""
    return ENCODER.encode(record)


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


def hashed_prefix(line: bytes) -> tuple[bytes, bytes] | None:
    """(the bytes the hash covers, the stored hash) if ``line`` ends in the spliced hash, else None."""
    if len(line) <= _SUFFIX_LEN or line[-_SUFFIX_LEN:-67] != _HASH_KEY or line[-3:] != b'"}\n':
        return None
    return line[:-_SUFFIX_LEN] + b"}", line[-67:-3]


def record_if(line: bytes, needles: tuple[bytes, ...]) -> dict | None:
    """The record on ``line`` when it holds one of ``needles`` and parses as a JSON object, else None: a scan
    that needs a few kinds of record tests the bytes first and parses only the lines that may matter."""
    if not any(n in line for n in needles):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


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
    split = hashed_prefix(line)
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
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except OSError as e:
                raise AuditWriteError(f"{self.path}: cannot open the audit trail for writing: "
                                      f"{_open_error(self.path, e)}") from None
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
            with os.fdopen(os.open(side, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                                   0o600), "wb") as f:
                f.write(cut)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise AuditWriteError(f"{side}: cannot save the truncated last line before recovery: {e.strerror or e}") from None
        record = {
            "seq": tail.seq + 1, "time": utc_now(), "event": AUDIT_RECOVERED, "operator": operator,
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

    def _open_read(self) -> int:
        """The trail open for reading; a symlink in its place is refused (AuditFormatError), as for writing."""
        try:
            return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise AuditFormatError(f"{self.path}: {_open_error(self.path, e)}") from None
            raise

    def head(self) -> str | None:
        """The hash of the last complete record, or None when the trail is empty or missing."""
        try:
            fd = self._open_read()
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
            f = os.fdopen(self._open_read(), "rb", buffering=_BLOCK * 16)
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
        """Every record in order, streaming. Hashes are not checked here (use ``verify.verify``);
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
            fd = self._open_read()
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


def _open_error(path: Path, e: OSError) -> str:
    """Why the trail could not be opened, in words; a symlink in its place is named as such."""
    if e.errno == errno.ELOOP and path.is_symlink():
        return ("it is a symbolic link (to {}); opsgate never follows one for the audit trail, which must be a "
                "plain file in the state dir: replace the link by the file it points to").format(os.readlink(path))
    return str(e.strerror or e)


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
