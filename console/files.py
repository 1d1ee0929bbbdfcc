"""Small files done right, in one place: durable private writes, advisory locks, complete lines from an offset."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class FileShrank(Exception):
    """The file is now shorter than the offset already read: it was replaced or truncated."""


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically and durably: a 0600 temp file beside ``path`` (never through a symlink),
    fsync, rename, fsync the directory. Raises OSError; ``path`` then keeps its old content."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT honours the umask; make the mode exact
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    sync_dir(path.parent)  # the rename itself must survive a crash


def sync_dir(path: Path) -> None:
    """fsync a directory: the names created, renamed or removed in it survive a crash."""
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@contextmanager
def file_lock(lock_path: Path, exclusive: bool) -> Iterator[None]:
    """An fcntl lock on a separate lock file (a data file replaced by rename cannot hold one)."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read_complete_lines(path: Path, offset: int, max_bytes: int | None = None) -> bytes:
    """The complete lines of ``path`` from byte ``offset`` (which must start a line), ending at a newline.

    A last line still being written is left for a later call. With ``max_bytes``, about that much is
    read, but always at least one whole line when there is one. Raises FileNotFoundError, FileShrank
    when the file is now shorter than ``offset``, or OSError.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < offset:
            raise FileShrank(f"{path}: shrank below byte {offset} (replaced or truncated?)")
        f.seek(offset)
        want = size - offset if max_bytes is None else min(size - offset, max_bytes)
        data = f.read(want)
        end = data.rfind(b"\n") + 1
        while end == 0 and max_bytes is not None and offset + len(data) < size:  # a line longer than a block
            more = f.read(max_bytes)
            if not more:
                break
            data += more
            end = data.rfind(b"\n") + 1
    return data[:end]
