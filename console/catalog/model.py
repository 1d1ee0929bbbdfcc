"""The catalog's model: settings, targets, actions, params, runbooks and the whole Config, all frozen.

``loader.py`` builds these from TOML and reports every problem; everything else only reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from opsgate.console.catalog.policy import Requirement

DEFAULT_RP_ID = "opsgate.local"
DEFAULT_POLICY = {
    "low": Requirement("none"),
    "medium": Requirement("otp", 15 * 60),
    "high": Requirement("otp", 5 * 60),
    "critical": Requirement("fido2", 0, confirm=True),
}
PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Settings:
    operator: str
    state_dir: Path | None
    known_hosts: tuple[Path, ...]
    max_parallel: int = 16
    connect_timeout: float = 10.0
    rp_id: str = DEFAULT_RP_ID
    # Security keys enrollment accepts: their models (AAGUIDs; None = any model) and the attestation roots
    # their certificate chain must reach (PEM files; empty = no chain asked for).
    authenticators: tuple[str, ...] | None = None
    attestation_roots: tuple[Path, ...] = ()
    # The config digest (sha256 of the file) runs must have been made under: `opsgate audit verify` and the
    # history flag a run under another (console/audit/anchor.py). Read from the reviewer's config.
    pinned_policy: str | None = None


@dataclass(frozen=True)
class Target:
    name: str
    host: str  # an address, a DNS name, or a Host alias of ~/.ssh/config
    port: int | None = None
    user: str | None = None
    identity_file: Path | None = None
    tags: tuple[str, ...] = ()
    jump: str | None = None  # ProxyJump hops ("bastion", "a,b", "user@host:port", "none"); wins over ~/.ssh/config


@dataclass(frozen=True)
class Param:
    name: str
    description: str = ""
    type: str = "str"  # "str" or "int"
    choices: tuple[str | int, ...] | None = None
    pattern: str | None = None
    min: int | None = None
    max: int | None = None
    default: str | int | None = None
    secret: bool = False

    @property
    def required(self) -> bool:
        return self.default is None

    def describe(self) -> str:
        """One line for a listing: what values it accepts."""
        if self.choices is not None:
            rule = "one of " + ", ".join(str(c) for c in self.choices)
        elif self.type == "int":
            lo = "" if self.min is None else f">= {self.min}"
            hi = "" if self.max is None else f"<= {self.max}"
            rule = "integer " + " ".join(x for x in (lo, hi) if x)
        else:
            rule = f"matches {self.pattern}"
        extra = "" if self.default is None else f", default {self.default}"
        secret = ", secret" if self.secret else ""
        return f"{rule.strip()}{extra}{secret}"


@dataclass(frozen=True)
class Action:
    id: str
    title: str
    risk: str
    command: str
    targets: tuple[str, ...]  # target names and "tag:NAME" references, as written
    description: str = ""
    timeout: float | None = None
    params: dict[str, Param] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Step:
    """One step of a runbook: a catalog action, an inline command, or a pause for the operator."""

    index: int  # 1-based
    title: str
    kind: str  # "action" | "command" | "pause"
    risk: str = "low"
    action: str | None = None
    command: str | None = None  # inline template over the runbook's params
    targets: tuple[str, ...] = ()  # refs as written; empty for an action step means the action's targets
    params: dict[str, str | int] = field(default_factory=dict, hash=False, compare=False)  # "{name}" = runbook param
    expect_exit: int | None = None
    expect_output: str | None = None
    pause: str | None = None
    skippable: bool = False
    on_failure: str = "stop"  # "stop" | "continue"


@dataclass(frozen=True)
class Runbook:
    """Ordered steps run as one plan with one step-up at the highest risk of its steps."""

    id: str
    title: str
    risk: str
    steps: tuple[Step, ...]
    description: str = ""
    params: dict[str, Param] = field(default_factory=dict, hash=False, compare=False)


FACILITIES = {  # syslog facility names (RFC 5424 section 6.2.1) and their codes
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8,
    "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14, "clock": 15,
    **{f"local{i}": 16 + i for i in range(8)},
}
FORWARD_SCHEMES = {"syslog+tcp": "tcp", "syslog+tls": "tls"}


@dataclass(frozen=True)
class Forwarding:
    """``[audit.forward]``: where every audit record is also sent, as RFC 5424 syslog (console/audit/forward/)."""

    url: str
    transport: str  # "tcp" | "tls"
    host: str
    port: int
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    app_name: str = "opsgate"
    facility: str = "authpriv"
    head_interval: float = 60.0


@dataclass(frozen=True)
class Gate:
    """``[gate]``. On a console: where its gate listens (a Unix socket, or ``ssh user@host``); then step-up,
    approvals and the trail are the gate's. On the gate: its operators (OS login -> operator; empty means
    the login name), how long a certificate is valid, its ``source-address``, how long approvals wait."""

    socket: Path | None = None
    ssh: str | None = None
    operators: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    certificate_window: float = 120.0
    source_address: str | None = None
    approval_timeout: float = 300.0


@dataclass(frozen=True)
class Config:
    path: Path | None
    sha256: str
    settings: Settings
    policy: dict[str, Requirement] = field(hash=False, compare=False)
    targets: dict[str, Target] = field(hash=False, compare=False)
    actions: dict[str, Action] = field(hash=False, compare=False)
    runbooks: dict[str, Runbook] = field(default_factory=dict, hash=False, compare=False)
    forwarding: Forwarding | None = None
    gate: Gate | None = None
    warnings: tuple[str, ...] = ()  # what `opsgate check` points out in a config that loads (file: key path: why)

    def requirement_for(self, action: Action | Runbook | Step) -> Requirement:
        return self.policy[action.risk]

    def targets_for(self, action: Action | Step | Runbook) -> list[Target]:
        """The allowed targets of an action or a runbook step, tags expanded, in config order, once each;
        of a runbook, every target its steps run on, in the order the steps first reach them."""
        if isinstance(action, Runbook):
            names = dict.fromkeys(t.name for s in action.steps if s.kind != "pause" for t in self.targets_for(s))
            return [self.targets[n] for n in names]
        refs = action.targets
        if isinstance(action, Step):
            refs = action.targets or (self.actions[action.action].targets if action.action else ())
        return self.expand_targets(refs)

    def expand_targets(self, refs: tuple[str, ...]) -> list[Target]:
        return expand_targets(self.targets, refs)


def expand_targets(targets: dict[str, Target], refs: tuple[str, ...]) -> list[Target]:
    """Names and ``tag:NAME`` refs to targets, in config order for tags, each once."""
    names: list[str] = []
    for ref in refs:
        if ref.startswith("tag:"):
            names += [t.name for t in targets.values() if ref[4:] in t.tags]
        else:
            names.append(ref)
    return [targets[n] for n in dict.fromkeys(names) if n in targets]


def param_ref(value: object) -> str | None:
    """The runbook param a step param value refers to (written ``"{name}"``), else None (a literal)."""
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and PARAM_NAME.match(value[1:-1]):
        return value[1:-1]
    return None


