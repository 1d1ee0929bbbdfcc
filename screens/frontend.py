"""The TUI's side of the run pipeline: a ``console.run.Frontend`` called from the run's worker thread.

It never touches widgets. Questions (code, confirmation, approver) push a modal on the UI thread and
wait on a Future for its result; output goes into the panel's thread-safe ``OutputBuffer``, which a
UI timer flushes; run events are posted as small messages. For a runbook, output and target events
are keyed by the running step (``step_key``), step changes are posted as ``StepChanged``, and a pause
asks the screen (``PauseAsked``) and waits for Continue or Stop.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from textual.message import Message
from textual.screen import Screen
from textual.worker import get_current_worker

from opsgate.console.run import RunbookPlan

from opsgate.screens.output import OutputBuffer, step_key
from opsgate.screens.stepup_modals import ApproverModal, ConfirmModal, OtpModal, RunSummary, TouchModal

if TYPE_CHECKING:
    from textual.app import App

    from opsgate.actions.ssh import Chunk, TargetResult
    from opsgate.console.catalog.model import Step
    from opsgate.console.run import Plan, StepPlan
    from opsgate.console.stepup.verifier import Prompt


@dataclass
class RunStarted(Message):
    run_id: str  # the run the operator started (a runbook's own run id for its steps too)
    keys: tuple[str, ...] = ()  # the output panes that start now
    executing: str = ""  # the id the run is recorded under (gate mode: the gate's; a step's is RUN.N)


@dataclass
class TargetDone(Message):
    run_id: str
    result: "TargetResult"
    key: str = ""  # the output pane: the target, or step_key(step, target) in a runbook


@dataclass
class StepChanged(Message):
    run_id: str
    step: int
    status: str  # pending / running / ok / failed / skipped / waiting / cancelled
    detail: str = ""


@dataclass
class PauseAsked(Message):
    run_id: str
    step: int
    text: str
    skippable: bool
    answer: concurrent.futures.Future  # set_result(True) goes on, False stops the runbook


def plan_summary(plan: "Plan | RunbookPlan") -> RunSummary:
    """What a step-up modal shows: the action's command, or every step of a runbook."""
    if isinstance(plan, RunbookPlan):
        return RunSummary(plan.runbook.id, plan.runbook.title, plan.runbook.risk, plan.target_names,
                          plan.describe_steps(), plan.requirement.describe(), kind="runbook")
    return RunSummary(plan.action.id, plan.action.title, plan.action.risk, plan.target_names, plan.command.redacted,
                      plan.requirement.describe())


class TuiFrontend:
    """Bridges one run's worker thread to the UI."""

    def __init__(self, app: "App", screen: Screen, plan: "Plan | None", buffer: OutputBuffer | None, *,
                 clock: Callable[[], float] = time.time, touch_timeout: float | None = None,
                 demo_touch: Callable[[], None] | None = None, otp_hint: Callable[[str], str | None] | None = None,
                 locked_until: Callable[[str], float | None] | None = None):
        self.app = app
        self.screen = screen
        self.plan = plan
        self.buffer = buffer
        self.clock = clock
        self.touch_timeout = touch_timeout
        self.demo_touch = demo_touch
        self.otp_hint = otp_hint
        self.locked_until = locked_until
        self.summary = None if plan is None else plan_summary(plan)
        self.runbook = plan if isinstance(plan, RunbookPlan) else None
        self._step: int | None = None  # the runbook step running now
        self._done_steps: set[int] = set()
        self._pause: concurrent.futures.Future | None = None
        self._touch_modal: TouchModal | None = None
        self._touch_cancel: threading.Event | None = None
        self.asked: list[str] = []  # what was asked, in order ("otp", "fido2", "confirm", "approver")

    # -- questions --------------------------------------------------------------------------------

    def _summary_for(self, prompt: "Prompt") -> RunSummary | None:
        """The whole plan, or, when a runbook step asks again (an every-run step), that step alone."""
        rb = self.runbook
        if rb is None or f"runbook:{rb.runbook.id}" in prompt.summary:
            return self.summary
        for sp in rb.steps:
            if sp.plan is not None and sp.step.index not in self._done_steps and (
                    f"{sp.plan.action.id} on " in prompt.summary):
                title = f"step {sp.step.index} of {rb.runbook.id}: {sp.step.title}"
                return RunSummary(sp.plan.action.id, title, sp.plan.action.risk, sp.plan.target_names,
                                  sp.plan.command.redacted, sp.plan.requirement.describe())
        return self.summary

    def _ask(self, make_screen: Callable[[], Screen]):
        """Push a modal from the worker thread and block until it is dismissed (None if the app stops)."""
        future: concurrent.futures.Future = concurrent.futures.Future()

        def push() -> None:
            self.app.push_screen(make_screen(), callback=lambda result: future.set_result(result))

        self.app.call_from_thread(push)
        worker = get_current_worker()
        while True:
            try:
                return future.result(timeout=0.2)
            except concurrent.futures.TimeoutError:
                if worker.is_cancelled:
                    return None

    def ask_code(self, prompt: "Prompt") -> str | None:
        self.asked.append("otp")
        locked = prompt.locked_until
        if locked is None and self.locked_until is not None:
            locked = self.locked_until(prompt.operator)
        otp_hint = self.otp_hint
        hint = (lambda: otp_hint(prompt.operator)) if otp_hint else None  # asked again every second
        summary = self._summary_for(prompt)
        return self._ask(lambda: OtpModal(summary, operator=prompt.operator, purpose=prompt.purpose,
                                          attempts_left=prompt.attempts_left, error=prompt.error,
                                          locked_until=locked, clock=self.clock, hint=hint))

    def ask_pin(self, prompt: "Prompt") -> str | None:
        """The key's PIN, typed in the touch modal's masked field (None: cancelled, or no touch modal)."""
        self.asked.append("pin")
        modal = self._touch_modal
        if modal is None:
            return None
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.app.call_from_thread(modal.ask_pin, future, prompt.attempts_left, prompt.error)
        worker = get_current_worker()
        while True:
            try:
                return future.result(timeout=0.2)
            except concurrent.futures.TimeoutError:
                if worker.is_cancelled or (self._touch_cancel is not None and self._touch_cancel.is_set()):
                    return None

    def touch_started(self, prompt: "Prompt", cancel: threading.Event) -> None:
        self.asked.append("fido2")
        modal = TouchModal(self._summary_for(prompt), operator=prompt.operator, cancel=cancel, timeout=self.touch_timeout,
                           purpose=prompt.purpose, clock=self.clock, demo_touch=self.demo_touch)
        self._touch_modal = modal
        self._touch_cancel = cancel
        self.app.call_from_thread(self.app.push_screen, modal)

    def touch_finished(self) -> None:
        modal, self._touch_modal = self._touch_modal, None
        if modal is None:
            return

        self.app.call_from_thread(modal.finish)

    def ask_confirmation(self, expected: str, prompt: "Prompt") -> str | None:
        self.asked.append("confirm")
        summary = self._summary_for(prompt)
        return self._ask(lambda: ConfirmModal(summary, expected=expected, hint=prompt.hint, clock=self.clock))

    def notice(self, text: str) -> None:
        """A message from the gate while it works (a pending approval's id, ...)."""
        self.app.call_from_thread(self.app.notify, text, title="Gate", timeout=30)

    def ask_approver(self, candidates: list[str], prompt: "Prompt") -> str | None:
        self.asked.append("approver")
        summary = self._summary_for(prompt)
        return self._ask(lambda: ApproverModal(summary, candidates=candidates, requester=prompt.operator,
                                               clock=self.clock))

    def abort(self) -> None:
        """The console is closing or the run is cancelled: stop waiting for a touch or a pause (thread-safe)."""
        if self._touch_cancel is not None:
            self._touch_cancel.set()
        self.answer_pause(False)

    # -- the run ----------------------------------------------------------------------------------

    def _key(self, target: str) -> str:
        return step_key(self._step, target) if self.runbook is not None and self._step is not None else target

    def on_start(self, plan: "Plan") -> None:
        self.screen.post_message(RunStarted(self.plan.run_id, tuple(self._key(t) for t in plan.target_names),
                                            plan.run_id))

    def on_output(self, chunk: "Chunk") -> None:
        self.buffer.feed(self._key(chunk.target), chunk.stream, chunk.data)

    @property
    def tail(self) -> tuple[int, int] | None:
        """What the output pane draws of a stream per update (lines, bytes): all a worker process sends."""
        return None if self.buffer is None else (self.buffer.max_pending, self.buffer.max_bytes)

    def on_skipped(self, target: str, stream: str, lines: int) -> None:
        """The run's worker process dropped ``lines`` of this stream to keep up (the recording has them)."""
        self.buffer.skip(self._key(target), stream, lines)

    def on_target_done(self, result: "TargetResult") -> None:
        key = self._key(result.target)
        self.buffer.finish(key)
        self.screen.post_message(TargetDone(self.plan.run_id, result, key))

    # -- runbooks ---------------------------------------------------------------------------------

    def on_step(self, step: "StepPlan", status: str, detail: str = "") -> None:
        index = step.step.index
        if status == "running":
            self._step = index  # set before the step's fan-out starts: its output is keyed by it
        elif status != "waiting":
            self._done_steps.add(index)
        self.screen.post_message(StepChanged(self.plan.run_id, index, status, detail))

    def ask_pause(self, step: "Step") -> bool:
        """Ask on the screen and block this worker until Continue (True) or Stop, cancel, or exit (False)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._pause = future
        self.screen.post_message(PauseAsked(self.plan.run_id, step.index, step.pause or "", step.skippable, future))
        worker = get_current_worker()
        try:
            while True:
                try:
                    return bool(future.result(timeout=0.2))
                except concurrent.futures.TimeoutError:
                    if worker.is_cancelled:
                        return False
        finally:
            self._pause = None

    def answer_pause(self, go_on: bool) -> None:
        """The operator's answer to the pause being asked, if one is (thread-safe, first answer wins)."""
        future = self._pause
        if future is not None and not future.done():
            try:
                future.set_result(go_on)
            except concurrent.futures.InvalidStateError:
                pass
