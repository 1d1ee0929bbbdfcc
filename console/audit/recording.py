"""Session recordings: one asciicast v2 file per (run, target), playable by ``asciinema play``.

File: ``STATE/recordings/<run>/<target>.cast`` (see ``recording_path``), created 0600 and never
overwritten. Line 1 is the header (version 2, width, height, timestamp, ``idle_time_limit`` 2 s as
``opsgate replay`` uses, ``title`` "RUN action@target", ``command`` as rendered (already redacted by
the pipeline) and ``env`` {"TERM": "xterm-256color"}); then one event per line, ``[t, "o", text]`` or
``[t, "m", label]``, with ``t`` in seconds since the recording started (6 decimals, never decreasing).

- Bytes are decoded with one incremental UTF-8 decoder per stream (``errors="replace"``), so a
  multi-byte character split across chunks survives intact; only invalid bytes become U+FFFD.
- stderr text is wrapped in red SGR (``\\x1b[31m...\\x1b[0m``) so it stays distinguishable on replay.
- Newlines: a command run without a PTY writes bare ``\\n``; a terminal replaying that would only
  move down, not back to column 0, so each bare ``\\n`` is written as ``\\r\\n`` (``\\r\\n`` already
  sent stays as is, also when the ``\\r`` and the ``\\n`` arrive in different chunks).
- Markers (``"m"`` events) are the caller's: the pipeline adds "step-up <factor>", "start" and
  "end <outcome> exit <n>" with ``marker``; a Recording adds none of its own, so none appear twice.
- Written incrementally: events are buffered and written in batches, when 64 KiB are pending or
  every 100 ms (one background thread, shared by every open recording, flushes a quiet command's last
  output, and syncs a recording each time it grew by 16 MiB, so close has little left to sync), so a
  crash keeps what was received up to the last batch. ``close`` fsyncs and returns the
  sha256 of the file's bytes, which the pipeline puts in the ``action.target`` audit record with the
  path relative to the state dir.
- A write failure (disk full...) is kept in ``error`` and later events are dropped; ``close`` still
  returns the sha256 of what reached the file. ``on_error`` (if given) hears of it at once, from
  whichever thread wrote: the pipeline stops that target's command (a command must not run on without
  its recording) and audits the target as ``recording-failed`` with ``error``.
- The hot path of a flood: an ASCII chunk with no control characters other than ``\\n`` and ``\\r``
  (most output) is escaped as bytes, a few C-speed ``bytes.replace`` passes over the whole chunk that
  give what the JSON encoder gives; any other chunk goes through the decoder and the JSON encoder.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Callable

from opsgate.console.errors import EXIT_FAILED, OpsgateError
from opsgate.console.paths import RECORDINGS_DIR

RECORDING_FAILED = "recording-failed"  # a target's outcome when its recording could not be written
FLUSH_BYTES = 64 * 1024
FLUSH_INTERVAL = 0.1
SYNC_BYTES = 16 * 1024 * 1024  # the flusher syncs a recording that grew by this much, so close has little left
IDLE_TIME_LIMIT = 2.0
STREAMS = ("stdout", "stderr")
_RED, _RESET = "\x1b[31m", "\x1b[0m"
_UNSAFE = re.compile(r"[^A-Za-z0-9._@:+=-]")
_encode = json.JSONEncoder(ensure_ascii=False).encode  # one encoder: json.dumps builds one per call
# Bytes the JSON encoder would escape as \\uXXXX (or \\t, \\b, \\f): a chunk holding one takes the slow path.
_OTHER_CONTROLS = bytes(c for c in range(0x20) if c not in (0x0A, 0x0D))
_ALL_BUT_OTHER_CONTROLS = bytes(c for c in range(256) if c not in _OTHER_CONTROLS)
_RED_J, _RESET_J = _encode(_RED)[1:-1].encode(), _encode(_RESET)[1:-1].encode()  # as they appear escaped
_IOV_MAX = 1024
_COPY_BELOW = 16 * 1024  # a smaller chunk's event is one bytes object; a larger one is written in place


def file_sha256(path: Path) -> str:
    """sha256 hex of a file's bytes, read in blocks: what an ``action.target`` record says of its recording."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class RecordingError(OpsgateError):
    """A recording could not be created (exists already, unwritable directory...)."""

    exit_code = EXIT_FAILED


def _safe_name(name: str) -> str:
    """A single path component: unsafe characters become ``_`` and it cannot start with a dot."""
    safe = _UNSAFE.sub("_", name) or "_"
    return "_" + safe if safe.startswith(".") else safe


def recording_path(state_dir: Path, run: str, target: str) -> Path:
    """``STATE/recordings/<run>/<target>.cast``, with run and target made safe as file names."""
    return Path(state_dir) / RECORDINGS_DIR / _safe_name(run) / f"{_safe_name(target)}.cast"


class Recording:
    """An asciicast v2 recording being written; thread-safe (stdout and stderr readers may share it)."""

    def __init__(self, path: Path, *, run: str, action: str, target: str, command: str,
                 width: int = 120, height: int = 40, on_error: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.error: str | None = None
        self._on_error = on_error  # called once, with the lock held: it must only signal (set an event)
        self._lock = threading.Lock()
        self._buf: list[bytes] = []
        self._buf_len = 0
        self._sha = hashlib.sha256()
        self._digest: str | None = None
        self._unsynced = 0  # bytes written since the flusher last synced the file
        self._last_t = 0.0
        self._decoders = {s: codecs.getincrementaldecoder("utf-8")(errors="replace") for s in STREAMS}
        self._pending = dict.fromkeys(STREAMS, False)  # the decoder holds part of a character
        self._ends_cr = dict.fromkeys(STREAMS, False)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise RecordingError(f"{self.path}: a recording with this name exists already; not overwriting it") from None
        except OSError as e:
            raise RecordingError(f"{self.path}: cannot create the recording: {e.strerror or e}") from None
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._t0 = time.monotonic()
        header = {
            "version": 2, "width": width, "height": height, "timestamp": int(time.time()),
            "idle_time_limit": IDLE_TIME_LIMIT, "title": f"{run} {action}@{target}", "command": command,
            "env": {"TERM": "xterm-256color"},
        }
        with self._lock:
            self._add(json.dumps(header, ensure_ascii=False) + "\n")
            self._flush()  # the header reaches the file at once
        _FLUSHER.add(self)

    # -- public ----------------------------------------------------------------------------------

    def output(self, stream: str, data: bytes, t: float | None = None) -> None:
        """Record bytes from ``stream`` ("stdout" or "stderr") that arrived at ``t`` (time.monotonic())."""
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}; expected stdout or stderr")
        t = time.monotonic() if t is None else t
        with self._lock:
            self._check_open()
            if data and not self._pending[stream] and data.isascii() \
                    and not data.translate(None, _ALL_BUT_OTHER_CONTROLS):  # no copy of the chunk
                self._ascii(stream, data, t)
                return
            decoder = self._decoders[stream]
            self._text(stream, decoder.decode(data), t)
            self._pending[stream] = bool(decoder.getstate()[0])

    def marker(self, label: str, t: float | None = None) -> None:
        """Add a marker (``"m"`` event), e.g. "step-up otp" or "exit 0"."""
        t = time.monotonic() if t is None else t
        with self._lock:
            self._check_open()
            self._event(t, "m", label)

    def close(self) -> str:
        """Finish the file (pending partial characters, fsync) and return its sha256 hex."""
        with self._lock:
            if self._digest is not None:
                return self._digest
            now = time.monotonic()
            for stream in STREAMS:
                self._text(stream, self._decoders[stream].decode(b"", final=True), now)
            self._flush()
            try:
                os.fsync(self._file.fileno())
            except OSError as e:
                self._failed(f"{self.path}: cannot sync the recording: {e.strerror or e}")
            self._file.close()
            self._digest = self._sha.hexdigest() if self.error is None else file_sha256(self.path)
        _FLUSHER.discard(self)
        return self._digest

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals (called with the lock held) ---------------------------------------------------

    def _check_open(self) -> None:
        if self._digest is not None:
            raise ValueError(f"{self.path}: the recording is closed")

    def _text(self, stream: str, text: str, t: float) -> None:
        if not text:
            return
        # Most output has no "\r" at all: then one replace does it (this is the hot path of a flood).
        out = text.replace("\n", "\r\n") if "\r" not in text else text.replace("\r\n", "\n").replace("\n", "\r\n")
        if self._ends_cr[stream] and text[0] == "\n":
            out = out[1:]  # its \r ended the previous chunk
        self._ends_cr[stream] = text[-1] == "\r"
        self._event(t, "o", f"{_RED}{out}{_RESET}" if stream == "stderr" else out)

    def _ascii(self, stream: str, data: bytes, t: float) -> None:
        """``_text`` for an ASCII chunk without control characters but newlines: escaped as bytes, exactly
        as the JSON encoder would escape the text (``\\\\``, ``\\"``, ``\\r``, ``\\n``)."""
        if b"\\" in data:
            data = data.replace(b"\\", b"\\\\")
        if b'"' in data:
            data = data.replace(b'"', b'\\"')
        if b"\r" in data:
            out = data.replace(b"\r\n", b"\n").replace(b"\r", b"\\r").replace(b"\n", b"\\r\\n")
        else:
            out = data.replace(b"\n", b"\\r\\n")
        if self._ends_cr[stream] and data[0] == 0x0A:
            out = out[2:]  # its \r ended the previous chunk
        self._ends_cr[stream] = data[-1] == 0x0D
        self._last_t = max(self._last_t, t - self._t0)
        if stream == "stderr":
            out = b"%b%b%b" % (_RED_J, out, _RESET_J)
        if len(out) < _COPY_BELOW:
            line = b'[%.6f, "o", "%b"]\n' % (self._last_t, out)
            self._buf.append(line)
            self._buf_len += len(line)
        else:  # a large chunk is not copied into a line: its parts go to writev as they are
            self._buf += (b'[%.6f, "o", "' % self._last_t, out, b'"]\n')
            self._buf_len += len(out) + 20
        if self._buf_len >= FLUSH_BYTES:
            self._flush()

    def _event(self, t: float, kind: str, text: str) -> None:
        # Events must never go back in time, even when threads deliver out of order.
        self._last_t = max(self._last_t, t - self._t0)
        self._add(f"[{self._last_t:.6f}, {_encode(kind)}, {_encode(text)}]\n")
        if self._buf_len >= FLUSH_BYTES:
            self._flush()

    def _add(self, line: str) -> None:
        data = line.encode("utf-8")
        self._buf.append(data)
        self._buf_len += len(data)

    def _flush(self) -> None:
        if not self._buf:
            return
        parts = self._buf
        self._buf = []
        self._buf_len = 0
        if self.error is not None:
            return  # after a failed write the file's tail is unknown: add nothing more
        if len(parts) > 64:  # many small events: one write, one hash update
            parts = [b"".join(parts)]
        sha = self._sha.copy()  # the hash of the file's bytes: parts that fail to reach it are not in it
        for part in parts:
            sha.update(part)
        try:
            _write_all(self._file.fileno(), parts)
        except OSError as e:
            self._failed(f"{self.path}: cannot write the recording: {e.strerror or e}")
            return
        self._sha = sha
        self._unsynced += sum(map(len, parts))

    def _failed(self, error: str) -> None:
        if self.error is None:
            self.error = error
            if self._on_error is not None:
                self._on_error(error)

    def _timed_flush(self) -> None:
        """The flusher's tick: write what is pending and, once enough was written, sync it outside the
        lock (on a duplicate of the descriptor, which close cannot pull away), the writers going on."""
        with self._lock:
            if self._digest is not None:
                return
            self._flush()
            if self._unsynced < SYNC_BYTES or self.error is not None:
                return
            self._unsynced = 0
            fd = os.dup(self._file.fileno())
        try:
            os.fdatasync(fd)
        except OSError as e:  # the error is the file's: close's fsync would no longer hear of it
            with self._lock:
                self._failed(f"{self.path}: cannot sync the recording: {e.strerror or e}")
        finally:
            os.close(fd)


def _write_all(fd: int, parts: list[bytes]) -> None:
    """Write every byte of ``parts`` to ``fd`` in order (``os.writev``, resuming after a short write)."""
    i = 0
    while i < len(parts):
        batch = parts[i:i + _IOV_MAX]
        n = os.writev(fd, batch)
        for part in batch:
            if n >= len(part):
                n -= len(part)
                i += 1
                continue
            parts[i] = memoryview(part)[n:]  # a short write: the rest of this part comes next
            break


class _Flusher:
    """One thread for every open recording: every ``FLUSH_INTERVAL`` it writes what each has pending.

    It starts with the first recording and ends when none is open, so an idle process keeps no thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, Recording] = {}
        self._thread: threading.Thread | None = None

    def add(self, rec: Recording) -> None:
        with self._lock:
            self._open[id(rec)] = rec
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="recordings flusher", daemon=True)
                self._thread.start()

    def discard(self, rec: Recording) -> None:
        with self._lock:
            self._open.pop(id(rec), None)

    def _loop(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            with self._lock:
                recs = list(self._open.values())
                if not recs:
                    self._thread = None
                    return
            for rec in recs:
                rec._timed_flush()


_FLUSHER = _Flusher()
# A forked child has none of its parent's threads, nor its recordings to flush: it starts afresh.
os.register_at_fork(after_in_child=_FLUSHER.__init__)
