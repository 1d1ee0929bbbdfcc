"""The TUI's side of the run pipeline: a ``console.run.Frontend`` called from the run's worker thread.

It never touches widgets. Questions (code, confirmation, approver) push a modal on the UI thread and
wait on a Future for its result; output goes into the panel's thread-safe ``OutputBuffer``, which a
UI timer flushes; run events are posted as small messages.
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

from .output import OutputBuffer
from .stepup_modals import ApproverModal, ConfirmModal, OtpModal, RunSummary, TouchModal

if TYPE_CHECKING:
    from textual.app import App

    from actions.ssh import Chunk, TargetResult
    from console.run import Plan
    from console.stepup import Prompt


@dataclass
class RunStarted(Message):
    run_id: str


@dataclass
class TargetDone(Message):
    run_id: str
    result: "TargetResult"


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
        self.summary = None if plan is None else RunSummary(
            plan.action.id, plan.action.title, plan.action.risk, plan.target_names, plan.command.redacted,
            plan.requirement.describe())
        self._touch_modal: TouchModal | None = None
        self._touch_cancel: threading.Event | None = None
        self.asked: list[str] = []  # what was asked, in order ("otp", "fido2", "confirm", "approver")

    # -- questions --------------------------------------------------------------------------------

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
        hint = self.otp_hint(prompt.operator) if self.otp_hint else None
        return self._ask(lambda: OtpModal(self.summary, operator=prompt.operator, purpose=prompt.purpose,
                                          attempts_left=prompt.attempts_left, error=prompt.error,
                                          locked_until=locked, clock=self.clock, hint=hint))

    def touch_started(self, prompt: "Prompt", cancel: threading.Event) -> None:
        self.asked.append("fido2")
        modal = TouchModal(self.summary, operator=prompt.operator, cancel=cancel, timeout=self.touch_timeout,
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
        return self._ask(lambda: ConfirmModal(self.summary, expected=expected, clock=self.clock))

    def ask_approver(self, candidates: list[str], prompt: "Prompt") -> str | None:
        self.asked.append("approver")
        return self._ask(lambda: ApproverModal(self.summary, candidates=candidates, requester=prompt.operator,
                                               clock=self.clock))

    def abort(self) -> None:
        """The console is closing: stop waiting for a touch (thread-safe)."""
        if self._touch_cancel is not None:
            self._touch_cancel.set()

    # -- the run ----------------------------------------------------------------------------------

    def on_start(self, plan: "Plan") -> None:
        self.screen.post_message(RunStarted(plan.run_id))

    def on_output(self, chunk: "Chunk") -> None:
        self.buffer.feed(chunk.target, chunk.stream, chunk.data)

    def on_target_done(self, result: "TargetResult") -> None:
        self.buffer.finish(result.target)
        self.screen.post_message(TargetDone(self.plan.run_id, result))
