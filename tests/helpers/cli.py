"""Running the `opsgate` command line as a child process, the one way every CLI test does it.

``run_opsgate`` waits for the command and returns its ``CompletedProcess``; ``popen_opsgate`` starts it for
tests that talk to it while it runs (signals, ``-f``/``--follow``, a pty). Both run ``python -m opsgate.cli``
with this interpreter, or the installed console script with ``script=True``; ``config``/``state`` become the
global ``--config``/``--state-dir`` options (put them in ``args`` to test them elsewhere on the line).
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.helpers import ROOT

OPSGATE_SCRIPT = Path(sys.executable).parent / "opsgate"  # the console script of this venv
DEFAULT_TIMEOUT = 60.0


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any OPSGATE_* variable (no config or state dir leaks in), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSGATE_")}
    env.update(extra)
    return env


def opsgate_argv(*args: str | Path, config: Path | str | None = None, state: Path | str | None = None,
                 script: bool = False) -> list[str]:
    argv = [str(OPSGATE_SCRIPT)] if script else [sys.executable, "-m", "opsgate.cli"]
    if config is not None:
        argv += ["--config", str(config)]
    if state is not None:
        argv += ["--state-dir", str(state)]
    return argv + [str(a) for a in args]


def run_opsgate(*args: str | Path, config: Path | str | None = None, state: Path | str | None = None,
                stdin: str = "", env: dict[str, str] | None = None, cwd: Path | str = ROOT,
                timeout: float = DEFAULT_TIMEOUT, text: bool = True, script: bool = False,
                ) -> subprocess.CompletedProcess:
    """Run ``opsgate ARGS`` to the end, output captured.

    ``stdin`` is all the input it gets (then end of file: never the terminal pytest runs in); ``env`` is the
    whole environment (default ``clean_env()``); ``text=False`` leaves stdout/stderr as bytes (recordings'
    ``\\r\\n`` kept as they are).
    """
    return subprocess.run(opsgate_argv(*args, config=config, state=state, script=script),
                          input=stdin if text else stdin.encode(), capture_output=True, text=text,
                          env=clean_env() if env is None else env, cwd=cwd, timeout=timeout)


def popen_opsgate(*args: str | Path, config: Path | str | None = None, state: Path | str | None = None,
                  env: dict[str, str] | None = None, cwd: Path | str = ROOT, script: bool = False,
                  **popen_kwargs) -> subprocess.Popen:
    """Start ``opsgate ARGS``; ``popen_kwargs`` (stdin, stdout, stderr, text, start_new_session...) go to Popen.

    The caller owns the process: end it (``communicate``, ``terminate``/``wait``) in a ``finally``.
    """
    return subprocess.Popen(opsgate_argv(*args, config=config, state=state, script=script),
                            env=clean_env() if env is None else env, cwd=cwd, **popen_kwargs)


def read_until(master: int, proc: subprocess.Popen, marker: bytes | None, timeout: float = 60.0) -> bytes:
    """Read a pty's ``master`` side until ``marker`` shows (or, with None, until the child is done with it)."""
    data, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline and (marker is None or marker not in data):
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            data += chunk
        elif proc.poll() is not None:
            break
    return data


@contextlib.contextmanager
def opsgate_on_pty(*args: str | Path, **kwargs) -> Iterator[tuple[subprocess.Popen, int]]:
    """``opsgate ARGS`` with a new pty as its terminal (stdin, stdout and stderr, in a session of its own: getpass
    turns echo off there); yields the process and the pty's master side, to read with ``read_until`` and write
    the operator's keys to. Afterwards the pty is closed and a child still running is killed. ``kwargs`` go to
    ``popen_opsgate``."""
    master, slave = pty.openpty()
    proc = popen_opsgate(*args, stdin=slave, stdout=slave, stderr=slave, start_new_session=True, **kwargs)
    os.close(slave)
    try:
        yield proc, master
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
