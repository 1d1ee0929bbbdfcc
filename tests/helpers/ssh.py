"""Reaching the test sshd with opsgate.actions.ssh, and finding the processes a remote command left behind."""

from __future__ import annotations

import random
import subprocess
import time

from opsgate.actions.ssh import Endpoint


def endpoint(server, name: str = "t1", **overrides) -> Endpoint:
    """An endpoint on the test sshd that reads nothing from the developer's ~/.ssh."""
    fields = dict(
        name=name,
        host=server.host,
        port=server.port,
        user=server.user,
        identity_file=server.identity_file,
        known_hosts=(server.known_hosts,),
        connect_timeout=5.0,
        ssh_config=None,
        allow_agent=False,
        look_for_keys=False,
    )
    fields.update(overrides)
    return Endpoint(**fields)


def remote_processes(pattern: str) -> list[str]:
    """Processes matching `pattern` (the sshd is local, so its children are ours to see)."""
    out = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def marker() -> int:
    """A sleep length no other test (or engineer) uses, so pgrep finds only our processes."""
    return random.randrange(400_000, 900_000)


def wait_gone(pattern: str, seconds: float) -> list[str]:
    """Poll until no process matches `pattern` or `seconds` pass; return what is still running."""
    deadline = time.monotonic() + seconds
    while (left := remote_processes(pattern)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left
