"""What a run is about, without paramiko: where to run (Endpoint), what came back (Chunk), how it ended.

Kept apart from actions/ssh.py so the console can name these types without importing paramiko
(start-up time of the TUI).
"""

from __future__ import annotations

from dataclasses import dataclass, field

OUTCOMES = ("ok", "failed", "timeout", "cancelled", "unreachable", "auth", "hostkey")


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to run: one target."""

    name: str  # the target's name, used in results and messages
    host: str  # address, DNS name, or a Host alias of ~/.ssh/config
    port: int | None = None  # None: from ssh config, else 22
    user: str | None = None  # None: from ssh config, else the local login name
    identity_file: str | None = None
    known_hosts: tuple[str, ...] = ()  # OpenSSH known_hosts files
    connect_timeout: float = 10.0
    ssh_config: str | None = "~/.ssh/config"  # None disables it (tests)
    allow_agent: bool = True
    look_for_keys: bool = True
    jump: str | None = None  # ProxyJump hops ("bastion", "a,b", "user@host:port", "none"); wins over ssh_config
    # Gate mode: (OpenSSH private key text, certificate line). The target is then authenticated with
    # this certificate only: no identity files, no agent (jump hosts still use the operator's own keys).
    certificate: tuple[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Chunk:
    """A piece of a target's output as it arrived."""

    target: str
    stream: str  # "stdout" or "stderr"
    data: bytes
    t: float  # time.monotonic() when received


@dataclass(frozen=True)
class TargetResult:
    """How running the command on one target ended."""

    target: str
    outcome: str  # one of OUTCOMES; "failed" = ran, non-zero exit
    exit_code: int | None
    duration: float  # seconds
    bytes_out: int
    bytes_err: int
    error: str | None = None  # one user-readable line for anything but ok/failed
