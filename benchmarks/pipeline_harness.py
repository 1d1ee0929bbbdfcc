"""A Pipeline on a loopback sshd with throwaway state, for the throughput and UI benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

from opsgate.console.audit.trail import AuditTrail

from opsgate.console.paths import AUDIT_FILE
from opsgate.console.catalog.model import Config
from opsgate.console.catalog.loader import parse_config
from opsgate.console.run import Pipeline
from opsgate.console.stepup.verifier import StepUp


def write_config(directory: Path, server, commands: dict[str, str], *, targets: int = 1,
                 max_parallel: int = 16, timeout: str = "10m") -> Path:
    """A config with ``targets`` targets t0..tN (tag bench) on ``server`` and one low-risk action per command."""
    text = f"""
[console]
operator = "bench"
known_hosts = ["{server.known_hosts}"]
max_parallel = {max_parallel}
connect_timeout = "10s"
[policy.low]
factor = "none"
"""
    for i in range(targets):
        text += f"""
[targets.t{i}]
host = "{server.addresses[i % len(server.addresses)]}"
port = {server.port}
user = "{server.user}"
identity_file = "{server.identity_file}"
tags = ["bench"]
"""
    for name, command in commands.items():
        text += f"""
[actions.{name}]
title = "{name}"
risk = "low"
targets = ["tag:bench"]
command = {json.dumps(command)}
timeout = "{timeout}"
"""
    path = directory / "opsgate.toml"
    path.write_text(text)
    return path


def load(path: Path) -> Config:
    return parse_config(path.read_bytes(), str(path), path=path)


def make_pipeline(config: Config, state: Path) -> Pipeline:
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Pipeline(config, state, stepup=StepUp(state, config.settings), audit=AuditTrail(state / AUDIT_FILE))


class NullFrontend:
    """A front end that shows nothing and is never asked anything (low-risk actions only)."""

    def __init__(self, on_output=None):
        self._on_output = on_output

    def on_start(self, plan) -> None:
        pass

    def on_output(self, chunk) -> None:
        if self._on_output is not None:
            self._on_output(chunk)

    def on_target_done(self, result) -> None:
        pass

    def on_step(self, step, status, detail="") -> None:
        pass

    def ask_pause(self, step) -> bool:
        return True

    def __getattr__(self, name):  # any step-up question means the benchmark config is wrong
        raise AssertionError(f"the benchmark front end was asked {name!r}: use low-risk actions")
