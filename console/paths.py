"""Where the config and the state live: flags, then environment, then defaults (platformdirs)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from opsgate.console.errors import ConfigError, UsageError

APP = "opsgate"

# What a state dir holds, named once.
AUDIT_FILE = "audit.jsonl"  # the hash-chained trail (console/audit/trail.py)
RECORDINGS_DIR = "recordings"  # recordings/<run>/<target>.cast
CREDENTIALS_FILE = "credentials.toml"  # factor secrets, FIDO2 credentials, replay and lockout state
CREDENTIALS_LOCK = ".credentials.lock"
GRANTS_FILE = "grants.json"  # kept step-up grants (`opsgate auth`)
GRANTS_LOCK = ".grants.lock"
FORWARD_CURSOR = "forward.cursor"  # how far the syslog collector has the trail
FORWARD_LOCK = "forward.lock"
GATE_TRAIL_COPY = "gate-audit.jsonl"  # gate mode: a copy of the gate's trail, for verify and the history
TRAIL_CHECKPOINT = "audit.verified"  # how far `opsgate run` has verified the trail (its incremental check)
CONFIG_CACHE = "config.cache"  # the console's validated config, for its start-up (console/catalog/cache.py)
RECORDING_CHECKS = "recordings.checked"  # the TUI's cache of recordings hashed (console/audit/checked.py)


def find_config(flag: str | None) -> Path:
    """``--config``, then ``OPSGATE_CONFIG``, then ``./opsgate.toml``, then the user config dir."""
    if flag:
        return Path(flag).expanduser()
    env = os.environ.get("OPSGATE_CONFIG")
    if env:
        return Path(env).expanduser()
    local = Path("opsgate.toml")
    if local.exists():
        return local
    import platformdirs  # only here and for the default state dir: most runs name both (a few ms saved)

    user = Path(platformdirs.user_config_dir(APP)) / "config.toml"
    if user.exists():
        return user
    raise ConfigError(
        f"no config found: pass --config PATH, set OPSGATE_CONFIG, or create ./opsgate.toml or {user} "
        "(see config.example.toml; `opsgate demo` runs without one)"
    )


def state_dir(flag: str | None, configured: Path | None) -> Path:
    """``--state-dir``, then ``OPSGATE_STATE_DIR``, then ``console.state_dir``, then the user state dir."""
    env = os.environ.get("OPSGATE_STATE_DIR")
    if flag:
        path = Path(flag).expanduser()
    elif env:
        path = Path(env).expanduser()
    elif configured is not None:
        path = configured
    else:
        import platformdirs

        path = Path(platformdirs.user_state_dir(APP))
    return ensure_private_dir(path)


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` 0700 if missing; refuse one that others can write to or that another user owns."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError as e:
        raise UsageError(f"{path}: cannot create state dir: {e.strerror or e}") from None
    if st.st_uid != os.getuid():
        raise UsageError(f"{path}: state dir is owned by uid {st.st_uid}, not by you; refusing to use it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UsageError(f"{path}: state dir is writable by group or others; run: chmod 700 {path}")
    return path
