"""The validated config, cached in the state dir, so the console starts without parsing and checking the
TOML again (for 1,000 actions that is about 100 ms of a start-up).

One file, ``config.cache``, holds one entry. It is used only when its key matches, and the key is a
sha256 over everything the loader's result depends on: the config file's bytes and the name it was
read under (warnings and ``Config.path`` carry it), the source of the modules that validate it (so a
new opsgate or an edited loader never reads an old entry), the Python version (the pickle format),
and what the loader reads from the environment: ``--operator``, the login name (``getpass`` reads
``LOGNAME``, ``USER``, ``LNAME``, ``USERNAME``, then the uid) and ``HOME`` (``~`` in paths).

The entry is a pickle, read back with an unpickler that can only make the model's own frozen
dataclasses and ``PosixPath`` (nothing else can be named in it). It is read only from a regular file
that this user owns and nobody else can read or write, in a dir that only this user can write; the
state dir also holds the credentials, so whoever can write this file can already do worse
(SECURITY.md). A payload digest guards against a damaged file. Anything that does not check out is
ignored silently: the caller does the full load and writes a fresh entry.

``opsgate check`` never reads the cache: it always parses and validates the file.
"""

from __future__ import annotations

import getpass
import hashlib
import io
import os
import pickle
import stat
import sys
from pathlib import Path

from opsgate.console.catalog import model, policy
from opsgate.console.files import write_private
from opsgate.console.paths import CONFIG_CACHE

MAGIC = b"opsgate-config-cache 1\n"
# The modules whose code decides what a config file loads to (relative to opsgate.console).
_SOURCES = ("catalog/loader.py", "catalog/model.py", "catalog/params.py", "catalog/template.py",
            "catalog/policy.py", "catalog/cache.py", "durations.py", "errors.py")
_ENV = ("HOME", "LOGNAME", "USER", "LNAME", "USERNAME")

_ALLOWED = {
    ("opsgate.console.catalog.model", name): getattr(model, name)
    for name in ("Config", "Settings", "Target", "Param", "Action", "Step", "Runbook", "Forwarding", "Gate")
}
_ALLOWED[("opsgate.console.catalog.policy", "Requirement")] = policy.Requirement
_PATH = type(Path("/"))  # PosixPath, under the module name pickle writes for it
_ALLOWED[(_PATH.__module__, _PATH.__name__)] = _PATH


class _ModelUnpickler(pickle.Unpickler):
    """Makes the model's classes and paths, and refuses to name anything else."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of the config model") from None


_code_digest: bytes | None = None


def _code() -> bytes:
    global _code_digest
    if _code_digest is None:
        root = Path(__file__).resolve().parent.parent
        h = hashlib.sha256()
        for name in _SOURCES:
            h.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
        _code_digest = h.digest()
    return _code_digest


def cache_key(data: bytes, filename: str, default_operator: str | None) -> str:
    """What the loader's result depends on, hashed. Raises OSError if the loader's source cannot be read."""
    try:
        login = getpass.getuser()
    except Exception:
        login = ""
    parts = [MAGIC, hashlib.sha256(data).digest(), filename.encode("utf-8", "surrogateescape"),
             (default_operator or "").encode(), _code(), sys.version.encode(), str(os.getuid()).encode(),
             login.encode("utf-8", "surrogateescape")]
    parts += [os.environ.get(k, "\0unset").encode("utf-8", "surrogateescape") for k in _ENV]
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big") + part)
    return h.hexdigest()


def _private_dir(cache_dir: Path) -> bool:
    try:
        st = os.stat(cache_dir)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def read_cached(cache_dir: Path, key: str) -> model.Config | None:
    """The cached config for ``key``, or None if there is none, it is another key's, or it cannot be trusted."""
    if not _private_dir(cache_dir):
        return None
    try:
        fd = os.open(cache_dir / CONFIG_CACHE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            blob = f.read()
    except OSError:
        return None
    finally:
        os.close(fd)
    head, sep, payload = blob.partition(b"\n\n")
    lines = head.split(b"\n")
    if not sep or len(lines) != 3 or lines[0] + b"\n" != MAGIC or lines[1] != key.encode():
        return None
    if hashlib.sha256(payload).hexdigest().encode() != lines[2]:
        return None
    try:
        config = _ModelUnpickler(io.BytesIO(payload)).load()
    except Exception:
        return None
    return config if isinstance(config, model.Config) else None


def write_cached(cache_dir: Path, key: str, config: model.Config) -> bool:
    """Keep ``config`` under ``key`` (0600, written atomically); False if it could not be written."""
    if not _private_dir(cache_dir):
        return False
    try:
        payload = pickle.dumps(config, protocol=5)
        blob = MAGIC + key.encode() + b"\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n\n" + payload
        write_private(cache_dir / CONFIG_CACHE, blob)
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        return False
    return True
