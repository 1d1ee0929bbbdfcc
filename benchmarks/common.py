"""Shared parts of the benchmarks: the loopback sshd, alternating rounds, result rows.

Every benchmark script can run alone (``python benchmarks/X.py``, prints its own rows) or under
``benchmarks/run_all.py``, which runs each in its own process with ``--json`` and prints one table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers.sshd import SshServer, start_sshd  # noqa: E402

JSON_MARK = "BENCH-JSON "


@dataclass
class Row:
    """One line of the results table. ``ratio`` is opsgate/peer where there is a peer."""

    name: str
    opsgate: str  # the figure, with its unit
    peer: str = ""  # the peer's figure, with its name
    ratio: float | None = None
    target: str = ""  # what the issue asks for, in words
    met: bool | None = None
    note: str = ""


def ssh_argv(server, host: str | None = None, known_hosts: str | None = None) -> list[str]:
    """OpenSSH's ``ssh`` to ``server`` (or one of its addresses), its key only, host key checked; add the command."""
    return ["ssh", "-F", "none", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known_hosts or server.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-i", server.identity_file,
            "-p", str(server.port), f"{server.user}@{host or server.host}"]


@contextlib.contextmanager
def sshd_server(addresses: tuple[str, ...] | None = None, options: dict[str, str] | None = None) -> Iterator[SshServer]:
    """A fresh sshd on loopback (tests/helpers/sshd.py) in a temp dir, stopped and removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="opsgate-bench-"))
    kwargs: dict = {} if addresses is None else {"addresses": addresses}
    if options:
        kwargs["options"] = options
    server = start_sshd(workdir, **kwargs)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def clean_shell(work: Path) -> dict[str, str]:
    """sshd options whose sessions read no rc file (``HOME`` set to an empty directory in ``work``), as on hosts
    of their own: root's rc files here run ``pyenv rehash``, CPU and one lock that every "target" shares."""
    home = work / "empty-home"
    home.mkdir(exist_ok=True)
    return {"SetEnv": f"HOME={home}"}


def alternate(rounds: int, runs: dict[str, Callable[[], float]], *, log: Callable[[str], None] = print) -> dict[str, float]:
    """Run each callable once per round, in turn (so drift hits all alike); return the medians."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_no in range(1, rounds + 1):
        for name, fn in runs.items():
            times[name].append(fn())
        log(f"  round {round_no}: " + "  ".join(f"{n} {t[-1]:.3f}" for n, t in times.items()))
    return {name: statistics.median(t) for name, t in times.items()}


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def cli(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON (for run_all.py)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and smaller sizes (a smoke run)")
    return parser


def emit(rows: list[Row], as_json: bool) -> None:
    """Print the rows: as one JSON line for run_all.py, or as a table."""
    if as_json:
        print(JSON_MARK + json.dumps([asdict(r) for r in rows]), flush=True)
    else:
        print(table(rows))


def table(rows: list[Row]) -> str:
    """A Markdown table of the rows."""
    out = ["| benchmark | opsgate | peer | ratio | target | met |", "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
        met = {True: "yes", False: "**no**", None: "-"}[r.met]
        name = r.name + (f" ({r.note})" if r.note else "")
        out.append(f"| {name} | {r.opsgate} | {r.peer} | {ratio} | {r.target} | {met} |")
    return "\n".join(out)


def log(message: str) -> None:
    """Progress on stderr, so stdout stays the result."""
    print(message, file=sys.stderr, flush=True)
