"""The run pipeline: one path for the TUI and the CLI (DESIGN.md, "The run pipeline").

request -> validate params -> render (shlex-quoted) -> policy -> step-up -> audit action.start (fsync)
-> fan-out over SSH, each target recorded -> audit action.target per target -> audit action.end.

Front ends differ only in how they ask (a ``Frontend`` is a step-up ``Prompter``) and how they show output.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from actions.fanout import FanOut
from actions.ssh import Chunk, Endpoint, TargetResult

from .audit import AuditTrail
from .config import Action, Config, Target
from .errors import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, AuditWriteError, StepUpDenied, UsageError
from .params import RenderedCommand, render_command, resolve_params
from .policy import Requirement
from .recording import Recording, recording_path
from .stepup import Prompter, StepUp, StepUpOutcome, StepUpRequest


@dataclass(frozen=True)
class RunRequest:
    """What the operator asked for, as typed: nothing here is trusted yet."""

    action_id: str
    targets: tuple[str, ...] = ()  # names or "tag:X"; empty means the action's targets
    params: Mapping[str, str] = field(default_factory=dict)
    operator: str = ""


@dataclass(frozen=True)
class Plan:
    """A validated, rendered request: exactly what will run, ready to be approved."""

    run_id: str
    operator: str
    action: Action
    targets: tuple[Target, ...]
    values: dict
    command: RenderedCommand
    requirement: Requirement

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.targets)

    def summary(self) -> str:
        """One line for prompts: "restart-service on web-1, web-2: sudo systemctl restart nginx"."""
        return f"{self.action.id} on {', '.join(self.target_names)}: {self.command.redacted}"


class Frontend(Prompter, Protocol):
    """How a front end asks the operator (``Prompter``) and shows the run. Called from worker threads."""

    def on_start(self, plan: Plan) -> None: ...

    def on_output(self, chunk: Chunk) -> None: ...

    def on_target_done(self, result: TargetResult) -> None: ...


@dataclass
class RunReport:
    run_id: str
    results: list[TargetResult]
    exit_code: int
    cancelled: bool = False
    recordings: dict[str, Path] = field(default_factory=dict)


def new_run_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class Pipeline:
    """Runs requests through validation, step-up, audit and fan-out. One per console (TUI) or command (CLI)."""

    def __init__(self, config: Config, state_dir: Path, *, stepup: StepUp, audit: AuditTrail):
        self.config = config
        self.state_dir = state_dir
        self.stepup = stepup
        self.audit = audit
        self._config_audited = False
        self._lock = threading.Lock()  # one audit append at a time from the fan-out threads
        self._cancel = threading.Event()
        self._fanout: FanOut | None = None

    # -- planning: bad input stops here, before anything is asked or audited -----------------------

    def plan(self, request: RunRequest) -> Plan:
        """Validate and render ``request``. Raises UsageError or ParamError (exit 2); nothing runs."""
        action = self.config.actions.get(request.action_id)
        if action is None:
            known = ", ".join(self.config.actions) or "none"
            raise UsageError(f"unknown action {request.action_id!r} (actions: {known})")
        targets = self._select_targets(action, request.targets)
        values = resolve_params(action, request.params)
        return Plan(new_run_id(), request.operator or self.config.settings.operator, action, targets, values,
                    render_command(action, values), self.config.requirement_for(action))

    def _select_targets(self, action: Action, wanted: tuple[str, ...]) -> tuple[Target, ...]:
        allowed = self.config.targets_for(action)
        if not wanted:
            return tuple(allowed)
        by_name = {t.name: t for t in allowed}
        chosen: dict[str, Target] = {}
        for ref in wanted:
            if ref.startswith("tag:"):
                matched = [t for t in allowed if ref[4:] in t.tags]
                if not matched:
                    raise UsageError(f"no target of {action.id} has tag {ref[4:]!r}")
                chosen.update((t.name, t) for t in matched)
            elif ref in by_name:
                chosen[ref] = by_name[ref]
            else:
                allowed_names = ", ".join(by_name)
                raise UsageError(f"target {ref!r} is not allowed for {action.id} (allowed: {allowed_names})")
        return tuple(chosen.values())

    # -- audit ---------------------------------------------------------------------------------------

    def _record(self, event: str, plan: Plan | None, operator: str | None = None, **fields) -> dict:
        """Append one audit record; raises AuditWriteError, which stops the run (fail closed)."""
        with self._lock:
            if not self._config_audited:
                self.audit.append("config.loaded", operator=operator or self.config.settings.operator, run=None,
                                  path=str(self.config.path) if self.config.path else None,
                                  sha256=self.config.sha256)
                self._config_audited = True
            return self.audit.append(event, operator=operator or (plan.operator if plan else ""),
                                     run=plan.run_id if plan else None, **fields)

    def _action_fields(self, plan: Plan) -> dict:
        return {
            "action": plan.action.id,
            "risk": plan.action.risk,
            "targets": list(plan.target_names),
            "command": plan.command.redacted,
            "params": {n: ("<redacted>" if plan.action.params[n].secret else v) for n, v in plan.values.items()},
        }

    def dry_run(self, plan: Plan) -> None:
        """Audit that the operator previewed ``plan``; nothing runs."""
        self._record("action.dry_run", plan, **self._action_fields(plan), requirement=plan.requirement.describe())

    # -- execution -----------------------------------------------------------------------------------

    def execute(self, plan: Plan, frontend: Frontend) -> RunReport:
        """Step up if needed, audit, run on every target, audit each outcome. Blocking.

        Raises StepUpDenied (exit 3) when the operator is not allowed to run it now, and
        AuditWriteError (exit 4) when the trail cannot be written before the run.
        """
        self._cancel.clear()
        request = StepUpRequest(plan.action.id, plan.command.command, plan.target_names, os.urandom(16),
                                display_command=plan.command.redacted)

        def stepup_event(event: str, fields: dict) -> None:
            fields = dict(fields)
            who = fields.pop("operator", None)
            self._record(event, plan, operator=who, action=plan.action.id, **fields)

        try:
            outcome = self.stepup.ensure(plan.operator, plan.requirement, request, frontend, stepup_event)
        except StepUpDenied as e:
            self._record("action.denied", plan, **self._action_fields(plan), reason=str(e))
            raise
        if self._cancel.is_set():
            self._record("action.cancelled", plan, action=plan.action.id, stage="before start")
            return RunReport(plan.run_id, [], EXIT_CANCELLED, cancelled=True)
        self._record("action.start", plan, **self._action_fields(plan), **self._stepup_fields(plan, outcome))
        frontend.on_start(plan)
        return self._fan_out(plan, frontend, outcome)

    def _stepup_fields(self, plan: Plan, outcome: StepUpOutcome) -> dict:
        grant = outcome.grant
        return {
            "requirement": plan.requirement.describe(),
            "grant": None if grant is None else {
                "factor": grant.factor,
                "auth_time": datetime.fromtimestamp(grant.auth_time, timezone.utc).isoformat(),
                "fresh": outcome.fresh,
            },
            "approvals": list(outcome.approvals),
            "fido2_digest": outcome.digest,
        }

    def _fan_out(self, plan: Plan, frontend: Frontend, outcome: StepUpOutcome) -> RunReport:
        settings = self.config.settings
        recordings: dict[str, Recording] = {}
        for target in plan.targets:
            rec = Recording(recording_path(self.state_dir, plan.run_id, target.name), run=plan.run_id,
                            action=plan.action.id, target=target.name, command=plan.command.redacted)
            if outcome.fresh:
                rec.marker(f"step-up {outcome.grant.factor}" if outcome.grant else "step-up")
            recordings[target.name] = rec
        audit_failures: list[AuditWriteError] = []

        def sink(chunk: Chunk) -> None:
            recordings[chunk.target].output(chunk.stream, chunk.data, chunk.t)
            frontend.on_output(chunk)

        def started(target: str) -> None:
            recordings[target].marker("start")

        def finished(result: TargetResult) -> None:
            rec = recordings[result.target]
            rec.marker(f"end {result.outcome}" + ("" if result.exit_code is None else f" exit {result.exit_code}"))
            digest = rec.close()
            try:
                self._record("action.target", plan, action=plan.action.id, target=result.target,
                             outcome=result.outcome, exit_code=result.exit_code,
                             duration=round(result.duration, 6), bytes_out=result.bytes_out,
                             bytes_err=result.bytes_err, error=result.error,
                             recording=str(rec.path.relative_to(self.state_dir)), recording_sha256=digest)
            except AuditWriteError as e:  # the command already ran: finish the others, then report
                audit_failures.append(e)
            frontend.on_target_done(result)

        endpoints = [self._endpoint(t) for t in plan.targets]
        fanout = FanOut(endpoints, plan.command.command, max_parallel=settings.max_parallel,
                        timeout=plan.action.timeout, sink=sink, on_start=started, on_result=finished)
        self._fanout = fanout
        try:
            if self._cancel.is_set():
                fanout.cancel()
            results = fanout.run()
        finally:
            self._fanout = None
            for rec in recordings.values():
                rec.close()
        cancelled = self._cancel.is_set() or any(r.outcome == "cancelled" for r in results)
        counts = Counter(r.outcome for r in results)
        exit_code = EXIT_CANCELLED if cancelled else (EXIT_OK if counts["ok"] == len(results) else EXIT_FAILED)
        if cancelled:
            self._record("action.cancelled", plan, action=plan.action.id, stage="running",
                         targets=[r.target for r in results if r.outcome == "cancelled"])
        self._record("action.end", plan, action=plan.action.id, outcomes=dict(sorted(counts.items())),
                     exit_code=exit_code)
        if audit_failures:
            raise audit_failures[0]
        return RunReport(plan.run_id, results, exit_code, cancelled, {n: r.path for n, r in recordings.items()})

    def _endpoint(self, target: Target) -> Endpoint:
        s = self.config.settings
        return Endpoint(target.name, target.host, target.port, target.user,
                        str(target.identity_file) if target.identity_file else None,
                        tuple(str(p) for p in s.known_hosts), s.connect_timeout)

    def cancel(self) -> None:
        """Stop the run: remote processes are killed, not only the local reader. Thread-safe."""
        self._cancel.set()
        fanout = self._fanout
        if fanout is not None:
            fanout.cancel()
