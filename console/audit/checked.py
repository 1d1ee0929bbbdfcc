"""The recordings the console has hashed, so its audit pane does not read the whole archive at every start.

``RecordingChecks`` keeps, per recording file (its resolved path), what the file was when it was hashed (size,
mtime_ns, ctime_ns, inode, device) and the sha256 found. ``digest(path)`` stats the file: when all five are
the same, the stored sha256 stands for the file's and nothing is read; otherwise (a new, changed, replaced or
touched file) it hashes the file again. The verdict is still made each time, by ``check_recording`` against
the sha256 the trail gives (``verify(recording_digest=...)``): the cache holds what a file hashed to, not
whether that was right.

Races: an entry is stored only when the file did not change while it was hashed (fstat before and after, on the
descriptor read) and when its mtime and ctime are at least ``SETTLED_NS`` older than the moment the hash began
(a write within the file system's timestamp granularity could otherwise leave all five values the same, as
git's "racily clean" entries). A run's own recordings, hashed as its records arrive, are therefore stored at
the next start.

The file is ``STATE/recordings.checked`` (0600, replaced atomically by ``console.files.write_private``); one that
cannot be read or parsed is an empty cache. Whoever can change a recording in the state dir can change this
file as well, so only the TUI's panes use it; ``opsgate audit verify``, ``opsgate replay``, the replay screen
and ``opsgate audit export`` hash every file they judge.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from opsgate.console.files import write_private
from opsgate.console.paths import RECORDING_CHECKS

SETTLED_NS = 2_000_000_000  # a file changed less than this before its hash began is hashed again next time
MAX_BYTES = 64 * 1024 * 1024  # a larger cache file is not read (about 400,000 recordings)
_HEX = frozenset("0123456789abcdef")

Key = tuple[int, int, int, int, int]  # size, mtime_ns, ctime_ns, inode, device


def _key(st: os.stat_result) -> Key:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


class Cancelled(Exception):
    """``digest`` was asked to stop (the worker that called it was cancelled)."""


class RecordingChecks:
    """What each recording hashed to, for as long as it is unchanged. Thread-safe; one per state dir
    (``for_state_dir``), shared by the audit pane and the history."""

    def __init__(self, state_dir: Path, *, clock: Callable[[], int] = time.time_ns):
        self.path = Path(state_dir) / RECORDING_CHECKS
        self.clock = clock
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()  # one writer at a time (write_private's temp file is per process)
        self._entries: dict[str, tuple[Key, str]] = {}
        self._used: set[str] = set()  # looked up or stored since the last save: what a pruning save keeps
        self._dirty = False
        self.hashed = 0  # files read (tests and the benchmark count them)
        self.bytes_hashed = 0
        self._loaded = False  # read on first use, in whichever thread checks (never while the app composes)

    _shared: dict[Path, RecordingChecks] = {}
    _shared_lock = threading.Lock()

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> RecordingChecks:
        """The one cache of this process for ``state_dir`` (loaded on first use)."""
        state_dir = Path(state_dir).resolve()
        with cls._shared_lock:
            if state_dir not in cls._shared:
                cls._shared[state_dir] = cls(state_dir)
            return cls._shared[state_dir]

    def _load(self) -> None:
        """Called with the lock held, once."""
        self._loaded = True
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_size > MAX_BYTES:
                return
            with os.fdopen(os.dup(fd), "rb") as f:
                doc = json.loads(f.read())
        except (OSError, ValueError):
            return
        finally:
            os.close(fd)
        files = doc.get("files") if isinstance(doc, dict) and doc.get("version") == 1 else None
        if not isinstance(files, dict):
            return
        for name, value in files.items():
            if (isinstance(value, list) and len(value) == 6 and all(type(v) is int for v in value[:5])
                    and isinstance(value[5], str) and len(value[5]) == 64 and _HEX.issuperset(value[5])):
                self._entries[name] = (tuple(value[:5]), value[5])

    def known(self, path: Path) -> str | None:
        """The sha256 stored for ``path`` when the file is unchanged since it was hashed (a stat, no read), else
        None (also when it cannot be stat'ed)."""
        try:
            key = _key(os.stat(path))
        except OSError:
            return None
        name = str(path)
        with self._lock:
            if not self._loaded:
                self._load()
            entry = self._entries.get(name)
            if entry is None or entry[0] != key:
                return None
            self._used.add(name)
            return entry[1]

    def digest(self, path: Path, *, cancelled: Callable[[], bool] | None = None) -> str:
        """``path``'s sha256 hex: the stored one when the file is unchanged, else read (and stored when it
        settled). Raises OSError as reading would (FileNotFoundError for a missing file), or ``Cancelled``."""
        known = self.known(path)
        if known is not None:
            return known
        return self.rehash(path, cancelled=cancelled)

    def rehash(self, path: Path, *, cancelled: Callable[[], bool] | None = None) -> str:
        """Read ``path`` whatever is stored, and store what it hashes to (``v`` in the console: trust nothing)."""
        began = self.clock()
        with open(path, "rb") as f:
            before = os.fstat(f.fileno())
            h = hashlib.sha256()
            buf = bytearray(1 << 20)
            view = memoryview(buf)
            while True:
                if cancelled is not None and cancelled():
                    raise Cancelled(str(path))
                n = f.readinto(buf)
                if not n:
                    break
                h.update(view[:n])
                self.bytes_hashed += n
            after = os.fstat(f.fileno())
        digest = h.hexdigest()
        self.hashed += 1
        key = _key(before)
        if key == _key(after) and began - max(before.st_mtime_ns, before.st_ctime_ns) >= SETTLED_NS:
            name = str(path)
            with self._lock:
                if not self._loaded:
                    self._load()
                if self._entries.get(name) != (key, digest):
                    self._entries[name] = (key, digest)
                    self._dirty = True
                self._used.add(name)
        return digest

    def save(self, *, prune: bool = False) -> None:
        """Write the cache if it changed. ``prune``: keep only the files looked up or stored since the last save
        (after a check of every recording the trail names). Best effort: a failure keeps the old file."""
        with self._save_lock:
            self._save(prune)

    def _save(self, prune: bool) -> None:
        with self._lock:
            if not self._loaded:
                self._load()
            if prune:
                gone = self._entries.keys() - self._used
                for name in gone:
                    del self._entries[name]
                self._dirty = self._dirty or bool(gone)
                self._used = set()
            if not self._dirty:
                return
            doc = {"version": 1, "files": {name: [*key, digest] for name, (key, digest) in self._entries.items()}}
            data = json.dumps(doc, separators=(",", ":")).encode()
            self._dirty = False
        try:
            write_private(self.path, data)
        except OSError:
            with self._lock:
                self._dirty = True

    def __len__(self) -> int:
        with self._lock:
            if not self._loaded:
                self._load()
            return len(self._entries)
