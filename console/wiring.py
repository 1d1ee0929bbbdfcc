"""The parts one console needs, built in one place: step-up, the audit trail, the pipeline, the forwarder.

The CLI (``opsgate run``, ``auth``, ``enroll``), the TUI and the demo all assemble their console here,
so a rule about how the parts fit (which trail, which grants, who audits step-up events) is written once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from opsgate.console.audit.trail import AuditTrail
from opsgate.console.catalog.model import Config
from opsgate.console.paths import AUDIT_FILE
from opsgate.console.run import LocalExecutor, Pipeline
from opsgate.console.stepup.verifier import DEFAULT_TIMEOUT, StepUp

if TYPE_CHECKING:
    from opsgate.console.audit.forward.forwarder import Forwarder


@dataclass
class ConsoleParts:
    """What one console (a CLI command, a TUI session, the demo) works with."""

    config: Config
    state_dir: Path
    stepup: StepUp
    audit: AuditTrail
    pipeline: Pipeline

    def start_forwarder(self) -> "Forwarder | None":
        """With ``[audit.forward]``, ship the trail to the collector in the background; runs never wait for it."""
        if self.config.forwarding is None:
            return None
        from opsgate.console.audit.forward.forwarder import Forwarder

        return Forwarder(self.audit.path, self.state_dir, self.config.forwarding).start()


def assemble(config: Config, state_dir: Path, *, persist_grants: bool | str, authenticator: Callable | None = None,
             clock: Callable[[], float] = time.time, touch_timeout: float = DEFAULT_TIMEOUT,
             stepup: StepUp | None = None, audit: AuditTrail | None = None,
             pipeline: Pipeline | None = None, isolated: bool = False) -> ConsoleParts:
    """Build the console for ``config`` with its state in ``state_dir``; a part passed in is used as is.

    ``persist_grants``: grants kept in the state dir (``opsgate auth`` then ``run``), in memory only (False),
    or ``"read"`` (the TUI): the state dir's grants are used, the session's own step-ups are kept in memory
    and end with it. ``authenticator`` makes a FIDO2 device (the demo's
    and the tests' software key); None means a USB security key. ``isolated`` (the TUI): runs go over
    SSH from a worker process (``console.runner``), so a flood of output never holds up the UI's keys.
    """
    state_dir = Path(state_dir)
    if pipeline is not None:
        stepup, audit = stepup or pipeline.stepup, audit or pipeline.audit
    audit = audit or AuditTrail(state_dir / AUDIT_FILE)
    if stepup is None:
        stepup = StepUp(state_dir, config.settings, persist_grants=persist_grants is True,
                        authenticator=authenticator, clock=clock, touch_timeout=touch_timeout)
        if persist_grants == "read":
            from opsgate.console.stepup.grants import GrantBook

            stepup.grants = GrantBook(state_dir, write=False)
        # A policy that asks the key to verify the user: a key registers only with its PIN (none set: refused).
        stepup.enroll_user_verification = any(r.user_verification for r in config.policy.values())
    if pipeline is None and config.gate is not None:  # gate mode: step-up, approvals and the trail at the gate
        from opsgate.console.gate.client import GatePipeline

        pipeline = GatePipeline(config, state_dir, stepup=stepup, audit=audit)
    pipeline = pipeline or Pipeline(config, state_dir, stepup=stepup, audit=audit)
    if isolated and type(pipeline.executor) is LocalExecutor:  # not an executor a test passed in
        from opsgate.console.runner import IsolatedExecutor

        pipeline.executors = IsolatedExecutor
        pipeline.executor = pipeline.executors(state_dir, config.settings)
    return ConsoleParts(config, state_dir, stepup, audit, pipeline)
