"""A config whose targets are the real sshd fixture, for pipeline, CLI and TUI tests; reading the trail
a run left and enrolling an operator for it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyotp

from opsgate.console.catalog.loader import load_config
from opsgate.console.paths import AUDIT_FILE
from opsgate.console.stepup.verifier import StepUp

POLICY = """
[policy.low]
factor = "none"
[policy.medium]
factor = "otp"
max_age = "15m"
[policy.high]
factor = "otp"
max_age = 0
[policy.critical]
factor = "fido2"
max_age = 0
confirm = true
"""

ACTIONS = """
[actions.hello]
title = "Say hello"
risk = "low"
targets = ["tag:lab"]
command = "echo hello from $(hostname -s 2>/dev/null || echo host) {name}; echo warn >&2"
[actions.hello.params.name]
pattern = "[A-Za-z ]{1,20}"
default = "world"

[actions.fail-on-two]
title = "Fails on t2"
risk = "low"
targets = ["tag:lab"]
command = "echo \\"$SSH_CONNECTION\\" | grep -q ' 127.0.0.2 ' && exit 3 || echo fine"

[actions.restart]
title = "Restart a service"
risk = "medium"
targets = ["t1"]
command = "echo restarting {service}"
[actions.restart.params.service]
choices = ["nginx", "haproxy"]

[actions.rotate-key]
title = "Rotate a key"
risk = "medium"
targets = ["t1"]
command = "printf 'key=%s\\\\n' {key} | wc -c"
[actions.rotate-key.params.key]
pattern = "[A-Za-z0-9]{8,64}"
secret = true

[actions.sleepy]
title = "Sleep"
risk = "low"
targets = ["t1"]
command = "echo started; sleep 347"
timeout = "60s"

[actions.failover]
title = "Failover"
risk = "critical"
targets = ["t1"]
command = "echo promoted"
"""


def write_config(tmp_path: Path, sshd, *, operator: str = "alice", extra: str = "", policy: str = POLICY,
                 unreachable: bool = False) -> Path:
    """Write a config with targets t1, t2 (tag lab) on the sshd fixture; return its path."""
    targets = ""
    for name, addr in (("t1", sshd.addresses[0]), ("t2", sshd.addresses[1])):
        targets += f"""
[targets.{name}]
host = "{addr}"
port = {sshd.port}
user = "{sshd.user}"
identity_file = "{sshd.identity_file}"
tags = ["lab"]
"""
    if unreachable:
        targets += f"""
[targets.down]
host = "127.0.0.1"
port = 1
user = "{sshd.user}"
identity_file = "{sshd.identity_file}"
tags = ["lab"]
"""
    path = tmp_path / "opsgate.toml"
    path.write_text(f"""
[console]
operator = "{operator}"
known_hosts = ["{sshd.known_hosts}"]
max_parallel = 4
connect_timeout = "5s"
{policy}
{targets}
{ACTIONS}
{extra}
""")
    return path


def records(state: Path) -> list[dict]:
    """The audit records in ``state`` (none if there is no trail yet)."""
    path = state / AUDIT_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def events(state: Path) -> list[str]:
    return [r["event"] for r in records(state)]


def enroll_otp(config: Path, state: Path, operator: str = "alice") -> str:
    """Enroll a TOTP secret for ``operator`` through the real StepUp code; return the secret."""
    secret = pyotp.random_base32(32)
    state.mkdir(mode=0o700, exist_ok=True)
    stepup = StepUp(state, load_config(config).settings)
    assert stepup.enroll_otp(operator, secret, pyotp.TOTP(secret).now())
    return secret


def next_code(secret: str) -> str:
    """A code the verifier accepts after enrollment spent the current step (the next step is within ±1)."""
    return pyotp.TOTP(secret).at(time.time() + 30)
