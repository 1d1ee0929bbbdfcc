"""The run pipeline: one path for the TUI and the CLI (ARCHITECTURE.md, "The run pipeline").

request -> validate params -> render (shlex-quoted) -> policy -> step-up -> audit action.start (fsync)
-> fan-out over SSH, each target recorded -> audit action.target per target -> audit action.end.

Front ends differ only in how they ask (a ``Frontend`` is a step-up ``Prompter``) and how they show output.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from opsgate.actions.outcome import Chunk, Endpoint, TargetResult

from opsgate.console.audit.trail import AuditTrail
from opsgate.console.files import sync_dir
from opsgate.console.catalog.model import Action, Config, Runbook, Settings, Step, Target, param_ref
from opsgate.console.errors import (EXIT_AUDIT, EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, AuditWriteError, StepUpDenied,
                                    UsageError)
from opsgate.console.events import (
    ACTION_CANCELLED,
    ACTION_DENIED,
    ACTION_DRY_RUN,
    ACTION_END,
    ACTION_START,
    ACTION_TARGET,
    CONFIG_LOADED,
    RUNBOOK_END,
    RUNBOOK_START,
    RUNBOOK_STEP,
)
from opsgate.console.catalog.params import SECRET, RenderedCommand, render_command, resolve_params
from opsgate.console.catalog.policy import Grant, Requirement, satisfies
from opsgate.console.audit.recording import Recording, recording_path
from opsgate.console.stepup.verifier import (RUNBOOK_PREFIX, AuditHook, Prompter, StepUp, StepUpOutcome,
                                              StepUpRequest)

if TYPE_CHECKING:  # paramiko is imported when the first run starts, not at start-up
    from opsgate.actions.fanout import ConnectionPool, FanOut


@dataclass(frozen=True)
class RunRequest:
    """What the operator asked for, as typed: nothing here is trusted yet."""

    action_id: str
    targets: tuple[str, ...] = ()  # names or "tag:X"; empty means the action's targets
    params: Mapping[str, str] = field(default_factory=dict)
    operator: str = ""
    reason: str = ""  # why: in the plan, the approval prompt, the certificate's key id and the trail


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
    reason: str = ""

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.targets)

    def summary(self) -> str:
        """One line for prompts: "restart-service on web-1, web-2: sudo systemctl restart nginx"."""
        return f"{self.action.id} on {', '.join(self.target_names)}: {self.command.redacted}"

    def stepup_request(self) -> StepUpRequest:
        """What a code or touch approves: this command on these targets, with a fresh nonce."""
        return StepUpRequest(self.action.id, self.command.command, self.target_names, os.urandom(16),
                             display_command=self.command.redacted)


@dataclass(frozen=True)
class StepPlan:
    """One rendered runbook step; ``plan`` is None for a pause."""

    step: Step
    plan: Plan | None


@dataclass(frozen=True)
class RunbookPlan:
    """A validated runbook: every step rendered, approved as one whole."""

    run_id: str
    operator: str
    runbook: Runbook
    values: dict
    steps: tuple[StepPlan, ...]
    requirement: Requirement
    reason: str = ""

    @property
    def target_names(self) -> tuple[str, ...]:
        names = (n for sp in self.steps if sp.plan for n in sp.plan.target_names)
        return tuple(dict.fromkeys(names))

    def describe_steps(self, redacted: bool = True) -> str:
        """Every step, one line each: what the step-up approves (the digest covers the real commands)."""
        lines = []
        for sp in self.steps:
            if sp.plan is None:
                lines.append(f"{sp.step.index}. pause: {sp.step.pause}")
            else:
                cmd = sp.plan.command.redacted if redacted else sp.plan.command.command
                lines.append(f"{sp.step.index}. {', '.join(sp.plan.target_names)}: {cmd}")
        return "\n".join(lines)

    def summary(self) -> str:
        return f"runbook {self.runbook.id} ({len(self.steps)} steps) on {', '.join(self.target_names)}"


class Frontend(Prompter, Protocol):
    """How a front end asks the operator (``Prompter``) and shows the run. Called from worker threads."""

    def on_start(self, plan: Plan) -> None: ...

    def on_output(self, chunk: Chunk) -> None: ...

    def on_target_done(self, result: TargetResult) -> None: ...

    # Runbooks only
    def on_step(self, step: StepPlan, status: str, detail: str = "") -> None: ...  # pending/running/ok/failed/skipped/waiting/cancelled

    def ask_pause(self, step: Step) -> bool: ...  # True: go on; False: stop the runbook


@dataclass
class RunReport:
    run_id: str
    results: list[TargetResult]
    exit_code: int
    cancelled: bool = False
    recordings: dict[str, Path] = field(default_factory=dict)
    certificates: list[dict] = field(default_factory=list)  # gate mode: per target, the key id and validity


CHECK_CAPTURE = 1 << 20  # stdout kept per target for a runbook's expect_output (the recording keeps all)


def new_run_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Executed:
    """A target's recording: its path relative to the state dir, its sha256, or why it could not be written."""

    recording: str | None
    recording_sha256: str | None
    recording_error: str | None = None
    output: bytes = b""  # stdout kept for a runbook's expect_output (gate mode: what the console sent)


class Executor(Protocol):
    """Runs one plan's command on its targets and reports each target as it finishes."""

    def run(self, plan: Plan, frontend: Frontend, marker: str | None,
            on_result: Callable[[TargetResult, Executed], None], *, cancel: threading.Event,
            pool: ConnectionPool | None = None, capture: dict | None = None) -> list[TargetResult]: ...

    def cancel(self) -> None: ...


def target_endpoint(target: Target, settings: Settings) -> Endpoint:
    """How to reach ``target`` with the operator's own keys (local mode)."""
    return Endpoint(target.name, target.host, target.port, target.user,
                    str(target.identity_file) if target.identity_file else None,
                    tuple(str(p) for p in settings.known_hosts), settings.connect_timeout, jump=target.jump)


class LocalExecutor:
    """Runs over SSH from this process, one asciicast recording per target in the state dir.

    Local mode uses the operator's keys; a console in gate mode passes ``endpoint`` to connect with the
    run's ephemeral key and the gate's certificates.
    """

    def __init__(self, state_dir: Path, settings: Settings,
                 endpoint: Callable[[Target], Endpoint] | None = None):
        self.state_dir = state_dir
        self.settings = settings
        self.endpoint = endpoint or (lambda target: target_endpoint(target, settings))
        self._fanout: FanOut | None = None

    def run(self, plan: Plan, frontend: Frontend, marker: str | None,
            on_result: Callable[[TargetResult, Executed], None], *, cancel: threading.Event,
            pool: ConnectionPool | None = None, capture: dict | None = None) -> list[TargetResult]:
        """A command never runs on without its recording: a target whose recording cannot be created or
        written (disk full) is stopped at once, or never started; its ``Executed`` carries the error."""
        from opsgate.console.audit.recording import RecordingError

        recordings: dict[str, Recording] = {}
        uncreated: dict[str, str] = {}  # target -> why its recording could not even be created
        running: list[FanOut] = []

        def lost(target: str) -> None:  # from the thread whose write failed, with the recording's lock held
            for fanout in running:
                fanout.stop(target)

        for target in plan.targets:
            try:
                rec = Recording(recording_path(self.state_dir, plan.run_id, target.name), run=plan.run_id,
                                action=plan.action.id, target=target.name, command=plan.command.redacted,
                                on_error=lambda _error, name=target.name: lost(name))
            except RecordingError as e:
                uncreated[target.name] = str(e)
                continue
            if marker:
                rec.marker(marker)
            recordings[target.name] = rec
        if recordings:  # the new names (and the run's directory) survive a crash before any command starts
            run_dir = next(iter(recordings.values())).path.parent
            try:
                sync_dir(run_dir)
                sync_dir(run_dir.parent)
            except OSError as e:
                uncreated.update((name, f"{rec.path}: cannot sync its directory: {e.strerror or e}")
                                 for name, rec in recordings.items())
                for rec in recordings.values():
                    rec.close()
                recordings.clear()

        def sink(chunk: Chunk) -> None:
            rec = recordings.get(chunk.target)
            if rec is not None:
                rec.output(chunk.stream, chunk.data, chunk.t)
            if capture is not None and chunk.stream == "stdout":  # for a runbook check on output
                buf = capture[chunk.target]
                if len(buf) < CHECK_CAPTURE:
                    buf += chunk.data[: CHECK_CAPTURE - len(buf)]
            frontend.on_output(chunk)

        def started(target: str) -> None:
            if target in recordings:
                recordings[target].marker("start")

        def finished(result: TargetResult) -> None:
            rec = recordings.get(result.target)
            if rec is None:
                on_result(result, Executed(None, None, uncreated[result.target]))
                return
            rec.marker(f"end {result.outcome}" + ("" if result.exit_code is None else f" exit {result.exit_code}"))
            digest = rec.close()
            on_result(result, Executed(str(rec.path.relative_to(self.state_dir)), digest, rec.error))

        from opsgate.actions.fanout import FanOut

        fanout = FanOut([self.endpoint(t) for t in plan.targets], plan.command.command, stdin=plan.command.stdin,
                        max_parallel=self.settings.max_parallel, timeout=plan.action.timeout, sink=sink,
                        on_start=started, on_result=finished, pool=pool)
        running.append(fanout)
        for name in [*uncreated, *(n for n, rec in recordings.items() if rec.error)]:
            fanout.stop(name)  # failed before the fan-out existed (the header could not be written)
        self._fanout = fanout
        try:
            if cancel.is_set():
                fanout.cancel()
            return fanout.run()
        finally:
            self._fanout = None
            for rec in recordings.values():
                rec.close()

    def cancel(self) -> None:
        fanout = self._fanout
        if fanout is not None:
            fanout.cancel()


def renderings(plan: Plan | RunbookPlan) -> list[list[str]]:
    """What would run, comparable between two copies of a catalog: [targets, command] per step."""
    if isinstance(plan, RunbookPlan):
        return [[",".join(sp.plan.target_names), sp.plan.command.command] if sp.plan else ["", "pause"]
                for sp in plan.steps]
    return [[",".join(plan.target_names), plan.command.command]]


class Pipeline:
    """Runs requests through validation, step-up, audit and fan-out. One per console (TUI) or command (CLI)."""

    def __init__(self, config: Config, state_dir: Path, *, stepup: StepUp, audit: AuditTrail,
                 executor: "Executor | None" = None):
        self.config = config
        self.state_dir = state_dir
        self.stepup = stepup
        self.audit = audit
        self.config_recorded = False
        self._lock = threading.Lock()  # one audit append at a time from the fan-out threads
        self._cancel = threading.Event()
        # How this console runs a command over SSH: in this process (the CLI), or in a worker process
        # (the TUI: console.runner.IsolatedExecutor, set by wiring.assemble(isolated=True)).
        self.executors: Callable[..., Executor] = LocalExecutor
        self.executor = executor or self.executors(state_dir, config.settings)

    # -- planning: bad input stops here, before anything is asked or audited -----------------------

    def plan(self, request: RunRequest) -> Plan | RunbookPlan:
        """Validate and render ``request``. Raises UsageError or ParamError (exit 2); nothing runs."""
        if request.action_id in self.config.runbooks:
            return self.plan_runbook(request)
        action = self.config.actions.get(request.action_id)
        if action is None:
            known = ", ".join([*self.config.actions, *self.config.runbooks]) or "none"
            raise UsageError(f"unknown action {request.action_id!r} (actions and runbooks: {known})")
        targets = self._select_targets(action, request.targets)
        values = resolve_params(action, request.params)
        plan = Plan(new_run_id(), request.operator or self.config.settings.operator, action, targets, values,
                    render_command(action, values), self.config.requirement_for(action), request.reason.strip())
        self._check_reason(plan)
        return plan

    def plan_runbook(self, request: RunRequest) -> RunbookPlan:
        """Render every step of a runbook from its params; steps keep their own targets."""
        rb = self.config.runbooks[request.action_id]
        if request.targets:
            raise UsageError(f"{rb.id} is a runbook: its steps name their targets (no --target)")
        values = resolve_params(rb, request.params)
        run_id = new_run_id()
        operator = request.operator or self.config.settings.operator
        steps = []
        for step in rb.steps:
            if step.kind == "pause":
                steps.append(StepPlan(step, None))
                continue
            if step.kind == "command":
                action = Action(f"{rb.id}#{step.index}", step.title, step.risk, step.command, step.targets,
                                params=rb.params)
                step_values = values
            else:
                action = self.config.actions[step.action]
                given = {n: str(values[ref] if (ref := param_ref(v)) else v) for n, v in step.params.items()}
                step_values = resolve_params(action, given)
            targets = tuple(self.config.targets_for(step))
            plan = Plan(f"{run_id}.{step.index}", operator, action, targets, step_values,
                        render_command(action, step_values), self.config.requirement_for(step), request.reason.strip())
            steps.append(StepPlan(step, plan))
        plan = RunbookPlan(run_id, operator, rb, values, tuple(steps), self.config.requirement_for(rb),
                           request.reason.strip())
        self._check_reason(plan)
        return plan

    def _check_reason(self, plan: Plan | RunbookPlan) -> None:
        if plan.requirement.reason and not plan.reason:
            name = plan.runbook.id if isinstance(plan, RunbookPlan) else plan.action.id
            raise UsageError(f"{name} needs a reason: pass --reason TEXT (the policy for {plan.requirement.describe()} "
                             "asks why)")

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

    def record_config(self, operator: str | None = None) -> None:
        """The config's path and digest in the trail, once per pipeline, before anything else it records."""
        with self._lock:
            self._record_config(operator)

    def _record_config(self, operator: str | None) -> None:
        if not self.config_recorded:
            self.audit.append(CONFIG_LOADED, operator=operator or self.config.settings.operator, run=None,
                              path=str(self.config.path) if self.config.path else None, sha256=self.config.sha256)
            self.config_recorded = True

    def _record(self, event: str, plan: Plan | None, operator: str | None = None, **fields) -> dict:
        """Append one audit record; raises AuditWriteError, which stops the run (fail closed)."""
        with self._lock:
            self._record_config(operator)
            return self.audit.append(event, operator=operator or (plan.operator if plan else ""),
                                     run=plan.run_id if plan else None, **fields)

    def _action_fields(self, plan: Plan) -> dict:
        return {
            "action": plan.action.id,
            "risk": plan.action.risk,
            "targets": list(plan.target_names),
            "command": plan.command.redacted,
            "params": {n: (SECRET if plan.action.params[n].secret else v) for n, v in plan.values.items()},
            **({"reason": plan.reason} if plan.reason else {}),
        }

    def _runbook_fields(self, plan: RunbookPlan) -> dict:
        return {
            "runbook": plan.runbook.id,
            "risk": plan.runbook.risk,
            "targets": list(plan.target_names),
            "steps": [{"step": sp.step.index, "title": sp.step.title, "kind": sp.step.kind,
                       "run": sp.plan.run_id if sp.plan else None,
                       "targets": list(sp.plan.target_names) if sp.plan else [],
                       "command": sp.plan.command.redacted if sp.plan else None,
                       "pause": sp.step.pause} for sp in plan.steps],
            "params": {n: (SECRET if plan.runbook.params[n].secret else v) for n, v in plan.values.items()},
            **({"reason": plan.reason} if plan.reason else {}),
        }

    def stepup_audit(self, operator: str, plan: Plan | RunbookPlan | None = None, **extra) -> AuditHook:
        """The step-up's audit hook: each event one record, under ``plan``'s run (or none), by the operator
        the event names (an approver) or else ``operator``. Raises AuditWriteError (fail closed)."""

        def hook(event: str, fields: dict) -> None:
            fields = dict(fields)
            who = fields.pop("operator", None) or operator
            self._record(event, plan, operator=who, **extra, **fields)

        return hook

    def step_up_now(self, operator: str, factor: str | None, prompter: Prompter) -> Grant:
        """Step up now and keep the grant (``opsgate auth``, the TUI's ``s``), every event audited."""
        return self.stepup.step_up_now(operator, factor, prompter, self.stepup_audit(operator))

    def dry_run(self, plan: Plan | RunbookPlan) -> None:
        """Audit that the operator previewed ``plan``; nothing runs."""
        fields = self._runbook_fields(plan) if isinstance(plan, RunbookPlan) else self._action_fields(plan)
        self._record(ACTION_DRY_RUN, plan, **fields, requirement=plan.requirement.describe())

    # -- execution -----------------------------------------------------------------------------------

    def execute(self, plan: Plan | RunbookPlan, frontend: Frontend) -> RunReport:
        """Step up if needed, audit, run on every target, audit each outcome. Blocking.

        Raises StepUpDenied (exit 3) when the operator is not allowed to run it now, and
        AuditWriteError (exit 4) when the trail cannot be written before the run.
        """
        self._cancel.clear()
        if isinstance(plan, RunbookPlan):
            return self._execute_runbook(plan, frontend)
        outcome = self._step_up(plan, plan.requirement, plan.stepup_request(), frontend, self._action_fields(plan),
                                label=plan.action.id)
        if self._cancel.is_set():
            self._record(ACTION_CANCELLED, plan, action=plan.action.id, stage="before start")
            return RunReport(plan.run_id, [], EXIT_CANCELLED, cancelled=True)
        return self._run_plan(plan, frontend, outcome)

    def _step_up(self, plan: Plan | RunbookPlan, requirement: Requirement, request: StepUpRequest,
                 frontend: Frontend, denied_fields: dict, label: str) -> StepUpOutcome:
        """``StepUp.ensure`` with every event audited under this run; a denial is audited, then raised."""
        try:
            return self.stepup.ensure(plan.operator, requirement, request, frontend,
                                      self.stepup_audit(plan.operator, plan, action=label))
        except StepUpDenied as e:
            fields = dict(denied_fields)
            why = fields.pop("reason", None)  # the operator's reason; a denial's "reason" says why it was denied
            self._record(ACTION_DENIED, plan, **fields, reason=str(e), **({"operator_reason": why} if why else {}))
            raise

    def _run_plan(self, plan: Plan, frontend: Frontend, outcome: StepUpOutcome, *, pool: ConnectionPool | None = None,
                  link: dict | None = None, capture: dict | None = None) -> RunReport:
        """Audit action.start, then fan out. ``link`` ties a runbook step's records to its runbook run."""
        self._record(ACTION_START, plan, **self._action_fields(plan), **self._stepup_fields(plan, outcome),
                     **(link or {}), config_sha256=self.config.sha256)
        frontend.on_start(plan)
        return self._fan_out(plan, frontend, outcome, pool=pool, capture=capture)

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

    def _fan_out(self, plan: Plan, frontend: Frontend, outcome: StepUpOutcome, *, pool: ConnectionPool | None = None,
                 capture: dict | None = None) -> RunReport:
        from dataclasses import replace

        from opsgate.console.audit.recording import RECORDING_FAILED

        audit_failures: list[AuditWriteError] = []
        recordings: dict[str, Path] = {}
        unrecorded: dict[str, TargetResult] = {}  # targets whose recording was lost: the evidence is incomplete

        def finished(result: TargetResult, executed: Executed) -> None:
            if executed.recording_error:  # the executor stopped the command (or it had ended already)
                how = "was stopped" if result.outcome == "cancelled" else f"had ended ({result.outcome})"
                result = replace(result, outcome=RECORDING_FAILED,
                                 error=f"{result.target}: the recording could not be written "
                                       f"({executed.recording_error}); the command {how}")
                unrecorded[result.target] = result
            if executed.recording:
                recordings[result.target] = self.state_dir / executed.recording
            try:
                self._record(ACTION_TARGET, plan, action=plan.action.id, target=result.target,
                             outcome=result.outcome, exit_code=result.exit_code,
                             duration=round(result.duration, 6), bytes_out=result.bytes_out,
                             bytes_err=result.bytes_err, error=result.error,
                             recording=executed.recording, recording_sha256=executed.recording_sha256,
                             recording_error=executed.recording_error)
            except AuditWriteError as e:  # the command already ran: finish the others, then report
                audit_failures.append(e)
            frontend.on_target_done(result)

        marker = None
        if outcome.fresh:
            marker = f"step-up {outcome.grant.factor}" if outcome.grant else "step-up"
        results = self.executor.run(plan, frontend, marker, finished, cancel=self._cancel, pool=pool, capture=capture)
        results = [unrecorded.get(r.target, r) for r in results]
        cancelled = self._cancel.is_set() or any(r.outcome == "cancelled" for r in results)
        counts = Counter(r.outcome for r in results)
        exit_code = EXIT_CANCELLED if cancelled else (EXIT_OK if counts["ok"] == len(results) else EXIT_FAILED)
        if unrecorded:
            exit_code = EXIT_AUDIT  # what ran is not all on record: as when the trail cannot be written
        if cancelled:
            self._record(ACTION_CANCELLED, plan, action=plan.action.id, stage="running",
                         targets=[r.target for r in results if r.outcome == "cancelled"])
        self._record(ACTION_END, plan, action=plan.action.id, outcomes=dict(sorted(counts.items())),
                     exit_code=exit_code)
        if audit_failures:
            raise audit_failures[0]
        return RunReport(plan.run_id, results, exit_code, cancelled, recordings)

    def cancel(self) -> None:
        """Stop the run: remote processes are killed, not only the local reader. Thread-safe."""
        self._cancel.set()
        self.executor.cancel()

    # -- runbooks ------------------------------------------------------------------------------------

    def _execute_runbook(self, plan: RunbookPlan, frontend: Frontend) -> RunReport:
        """Steps in order, one step-up for the whole plan; stop at the first failed step unless it continues."""
        from opsgate.actions.fanout import ConnectionPool

        request = StepUpRequest(f"{RUNBOOK_PREFIX}{plan.runbook.id}", plan.describe_steps(redacted=False),
                                plan.target_names, os.urandom(16), display_command=plan.describe_steps())
        fields = self._runbook_fields(plan)
        outcome = self._step_up(plan, plan.requirement, request, frontend, fields, label=plan.runbook.id)
        self._record(RUNBOOK_START, plan, **fields, **self._stepup_fields(plan, outcome),
                     config_sha256=self.config.sha256)
        every_run_used = False  # the plan's step-up covers the first every-run step only
        results: list[TargetResult] = []
        statuses: dict[int, str] = {}
        exit_code = EXIT_OK
        with ConnectionPool() as pool:
            for sp in plan.steps:
                step = sp.step
                if self._cancel.is_set() or exit_code != EXIT_OK:
                    status = "cancelled" if self._cancel.is_set() else "skipped"
                    self._step_done(plan, sp, status, frontend, "not started", statuses)
                    continue
                if sp.plan is None:
                    frontend.on_step(sp, "waiting")
                    if frontend.ask_pause(step) and not self._cancel.is_set():
                        self._step_done(plan, sp, "ok", frontend, "operator continued", statuses)
                    else:
                        self._cancel.set()
                        self._step_done(plan, sp, "cancelled", frontend, "operator stopped at the pause", statuses)
                        exit_code = EXIT_CANCELLED
                    continue
                step_outcome = outcome
                req = sp.plan.requirement
                needs_again = req.needs_stepup and (
                    (req.max_age == 0 and every_run_used) or not satisfies(outcome.grant, req, self.stepup.clock()))
                if req.needs_stepup and req.max_age == 0:
                    every_run_used = True
                if needs_again:
                    step_outcome = self._step_up(sp.plan, req, sp.plan.stepup_request(), frontend,
                                                 self._action_fields(sp.plan), label=sp.plan.action.id)
                elif req.confirm and not plan.requirement.confirm:
                    # The plan's grant covers the factor; this step's tier also asks for its typed confirmation.
                    self._step_up(sp.plan, Requirement(confirm=True), sp.plan.stepup_request(), frontend,
                                  self._action_fields(sp.plan), label=sp.plan.action.id)
                frontend.on_step(sp, "running")
                capture: dict = defaultdict(bytearray)
                link = {"runbook": plan.runbook.id, "runbook_run": plan.run_id, "step": step.index}
                report = self._run_plan(sp.plan, frontend, step_outcome, pool=pool, link=link, capture=capture)
                results += report.results
                status, detail = check_step(step, report, capture)
                self._step_done(plan, sp, status, frontend, detail, statuses)
                if status == "cancelled":
                    exit_code = EXIT_CANCELLED
                elif report.exit_code == EXIT_AUDIT:  # a recording was lost: stop, and say so as exit 4
                    exit_code = EXIT_AUDIT
                elif status == "failed" and step.on_failure == "stop":
                    exit_code = EXIT_FAILED
        if exit_code == EXIT_OK and any(v == "failed" for v in statuses.values()):
            exit_code = EXIT_FAILED
        self._record(RUNBOOK_END, plan, runbook=plan.runbook.id,
                     steps={str(k): v for k, v in statuses.items()}, exit_code=exit_code)
        return RunReport(plan.run_id, results, exit_code, exit_code == EXIT_CANCELLED)

    def _step_done(self, plan: RunbookPlan, sp: StepPlan, status: str, frontend: Frontend, detail: str,
                   statuses: dict[int, str]) -> None:
        """Audit a step's end, keep its status for runbook.end, and tell the front end."""
        statuses[sp.step.index] = status
        self._record(RUNBOOK_STEP, plan, runbook=plan.runbook.id, step=sp.step.index, title=sp.step.title,
                     step_run=sp.plan.run_id if sp.plan else None, status=status, detail=detail)
        frontend.on_step(sp, status, detail)


def check_step(step: Step, report: RunReport, capture: dict) -> tuple[str, str]:
    """A step passes when every target ran with the expected exit code and, if asked, printed the expected text."""
    if report.cancelled:
        return "cancelled", "cancelled"
    expected = 0 if step.expect_exit is None else step.expect_exit
    for r in report.results:
        if r.outcome not in ("ok", "failed"):
            return "failed", f"{r.target}: {r.outcome}" + (f" ({r.error})" if r.error else "")
        if r.exit_code != expected:
            return "failed", f"{r.target}: exit {r.exit_code}, expected {expected}"
        if step.expect_output is not None:
            text = bytes(capture.get(r.target, b"")).decode("utf-8", "replace")
            if not re.search(step.expect_output, text, re.MULTILINE):
                return "failed", f"{r.target}: output does not match {step.expect_output!r}"
    return "ok", "checks passed" if (step.expect_output or step.expect_exit is not None) else "ok"
