"""Step-up modals: OTP code, security-key touch, typed confirmation, approver choice.

Each one states exactly what will run (action, targets, command) so the operator approves what they
see. Every exit, Escape included, calls ``dismiss``: ``None`` (or ``False``) means the operator said no.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from dataclasses import dataclass
from typing import Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, LoadingIndicator, OptionList, Static

from opsgate.console.durations import format_clock
from opsgate.screens.badges import risk_badge


@dataclass(frozen=True)
class RunSummary:
    """What the operator is approving, as shown in every modal."""

    action_id: str
    title: str
    risk: str
    targets: tuple[str, ...]
    command: str  # redacted; for a runbook, one line per step
    requirement: str  # in words
    kind: str = "action"  # "action" | "runbook"

    def renderable(self) -> Text:
        """The whole plan, with counts: "4 targets", "6 steps" (the modal scrolls when it does not fit)."""
        targets = Text.assemble(("Targets  ", "bold"), *([f"{len(self.targets)}: "] if len(self.targets) > 1 else []),
                                ", ".join(self.targets) or "-", "\n")
        if self.kind == "runbook":
            # Every step on its own line, indented under the label, so the whole plan reads at a glance.
            steps = self.command.splitlines() or [""]
            text = Text.assemble(
                ("Runbook  ", "bold"), self.action_id, "  ", risk_badge(self.risk, pad=False), f"  {self.title}\n",
                targets,
                ("Steps    ", "bold"), (f"{len(steps)} step{'s' if len(steps) != 1 else ''}", "bold"),
                ", approved together; each is audited as it runs\n")
            for line in steps:
                number, _, rest = line.partition(". ")
                text.append(f"  {number:>2}. ", style="bold")
                text.append(rest + "\n")
            text.append("Needs    ", style="bold")
            text.append(self.requirement)
            return text
        return Text.assemble(
            ("Action   ", "bold"), self.action_id, "  ", risk_badge(self.risk, pad=False), f"  {self.title}\n",
            targets,
            ("Command  ", "bold"), ("$ ", "dim"), self.command, "\n",
            ("Needs    ", "bold"), self.requirement,
        )


def compact_buttons(screen) -> None:
    """One-line buttons on a short terminal (under 32 rows), so a modal with a long plan still fits."""
    short = screen.app.size.height < 32
    for button in screen.query(Button):
        button.compact = short


class StepUpModal(ModalScreen):
    """Shared frame: a title, the run summary, then the factor-specific body."""

    BINDINGS = [Binding("escape", "cancel", "Cancel (deny)")]
    DEFAULT_CLASSES = "stepup-modal"

    def __init__(self, summary: RunSummary | None, *, heading: str, who: str = "", clock=time.time):
        super().__init__()
        self.summary = summary
        self.heading = heading
        self.who = who
        self.clock = clock

    def compose(self) -> ComposeResult:
        # The whole body scrolls when it does not fit (a long plan on a small terminal): nothing is cut.
        with VerticalScroll(classes="modal-body"):
            yield from self.compose_head()
            yield from self.body()
        yield Footer()

    def on_mount(self) -> None:  # Textual calls this as well as a subclass's own on_mount
        compact_buttons(self)

    def on_resize(self) -> None:
        compact_buttons(self)

    def body(self) -> ComposeResult:
        yield from ()

    def compose_head(self) -> ComposeResult:
        yield Label(self.heading, classes="modal-title")
        if self.who:
            yield Label(self.who, classes="modal-who")
        if self.summary is not None:
            with Vertical(classes="modal-summary-box"):
                yield Static(self.summary.renderable(), classes="modal-summary")

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()


class OtpModal(StepUpModal):
    """A 6-digit code, the attempts left, the last error, and a lockout countdown when locked."""

    def __init__(self, summary: RunSummary | None, *, operator: str, purpose: str = "step-up",
                 attempts_left: int | None = None, error: str | None = None, locked_until: float | None = None,
                 clock=time.time, hint: "str | Callable[[], str | None] | None" = None):
        heading = "Approval: one-time code" if purpose == "approval" else "Step-up: one-time code"
        super().__init__(summary, heading=heading, who=f"Code from {operator}'s authenticator app", clock=clock)
        self.operator = operator
        self.attempts_left = attempts_left
        self.error = error
        self.locked_until = locked_until
        self.hint = hint  # the demo's "the code now is ...": a callable is asked again every second

    def body(self) -> ComposeResult:
        yield Input(placeholder="6-digit code", max_length=6, restrict=r"[0-9]*", id="code",
                    classes="code-input")
        yield Static(id="otp-status", classes="modal-status")
        if self._hint_text():
            yield Static(Text(self._hint_text()), id="otp-hint", classes="demo-hint")
        with Horizontal(classes="modal-buttons"):
            yield Button("Verify", variant="primary", id="verify")
            yield Button("Cancel", id="cancel")

    def _hint_text(self) -> str:
        hint = self.hint() if callable(self.hint) else self.hint
        return hint or ""

    def on_mount(self) -> None:
        self._refresh()
        if self.locked_until is not None or callable(self.hint):
            self.set_interval(1.0, self._refresh, name="lockout-and-hint")
        self.query_one("#code", Input).focus()

    def _refresh(self) -> None:
        status = Text()
        locked = self.locked_until is not None and self.locked_until > self.clock()
        if self.error:
            status.append(f"✗ {self.error}\n", style="bold")
        if locked:
            status.append(f"Locked out: try again in {format_clock(self.locked_until - self.clock(), round_up=True)}")
        elif self.attempts_left is not None and not (self.error and "attempt" in self.error):
            status.append(f"{self.attempts_left} attempt{'s' if self.attempts_left != 1 else ''} left "
                          "before a lockout")
        self.query_one("#otp-status", Static).update(status)
        if callable(self.hint):
            for hint in self.query("#otp-hint").results(Static):
                hint.update(Text(self._hint_text()))
        self.query_one("#code", Input).disabled = locked
        self.query_one("#verify", Button).disabled = locked
        self.set_class(bool(self.error), "has-error")

    @on(Input.Submitted, "#code")
    @on(Button.Pressed, "#verify")
    def _submit(self) -> None:
        code = self.query_one("#code", Input).value.strip()
        if len(code) != 6:
            self.query_one("#otp-status", Static).update(Text("✗ enter the 6 digits shown by your app",
                                                              style="bold"))
            return
        self.dismiss(code)


class TouchModal(StepUpModal):
    """'Touch your security key' with a spinner, a timeout and a cancel button.

    The touch itself runs in the pipeline's worker thread; cancelling sets its ``cancel`` event.
    ``demo_touch``, when given (software key of ``opsgate demo``), is what the ``t`` key calls.
    When the key needs its PIN, ``ask_pin`` shows a masked PIN field above the spinner; Enter answers the
    worker's future (the PIN is never kept here: the field is cleared as soon as it is handed on).
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel (deny)"),
        Binding("t", "demo_touch", "Touch (DEMO key)", show=False),
    ]

    def __init__(self, summary: RunSummary | None, *, operator: str, cancel: threading.Event,
                 timeout: float | None = None, purpose: str = "step-up", clock=time.time,
                 demo_touch: Callable[[], None] | None = None):
        heading = "Approval: touch the security key" if purpose == "approval" else "Touch your security key"
        super().__init__(summary, heading=heading, who=f"{operator}'s FIDO2 key · the touch approves exactly this",
                         clock=clock)
        self.cancel_event = cancel
        self.deadline = None if timeout is None else clock() + timeout
        self.demo_touch = demo_touch
        self._finished = False
        self._pin_answer: concurrent.futures.Future | None = None

    def body(self) -> ComposeResult:
        yield Static(id="pin-status", classes="modal-status")
        yield Input(placeholder="security key PIN", password=True, id="pin", classes="code-input")
        yield LoadingIndicator(id="touch-spinner")
        yield Static(id="touch-status", classes="modal-status")
        if self.demo_touch is not None:
            yield Static(Text(" DEMO  software security key: press t to touch it ", style="bold reverse"),
                         classes="demo-hint")
        with Horizontal(classes="modal-buttons"):
            if self.demo_touch is not None:
                yield Button("Touch (t)", variant="warning", id="touch")
            yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#pin", Input).display = False
        self.query_one("#pin-status", Static).display = False
        self._refresh()
        self.set_interval(1.0, self._refresh, name="touch-timeout")
        self.query_one("#cancel", Button).focus()

    def ask_pin(self, answer: concurrent.futures.Future, attempts_left: int | None, error: str | None) -> None:
        """Show the masked PIN field; ``answer`` gets the PIN on Enter, or None on cancel (UI thread)."""
        self._answer_pin(None)
        self._pin_answer = answer
        status = Text()
        if error:
            status.append(f"✗ {error}\n", style="bold")
        status.append("Enter the security key's PIN")
        if attempts_left is not None and not (error and "attempt" in error):
            status.append(f" ({attempts_left} attempt{'s' if attempts_left != 1 else ''} left before it is blocked)")
        pin_status = self.query_one("#pin-status", Static)
        pin_status.update(status)
        pin_status.display = True
        field = self.query_one("#pin", Input)
        field.value = ""
        field.display = True
        field.focus()

    def _answer_pin(self, pin: str | None) -> None:
        answer, self._pin_answer = self._pin_answer, None
        if answer is not None and not answer.done():
            answer.set_result(pin)

    @on(Input.Submitted, "#pin")
    def _pin_submitted(self) -> None:
        field = self.query_one("#pin", Input)
        pin, field.value = field.value, ""
        if not pin:
            return
        field.display = False
        self.query_one("#pin-status", Static).display = False
        self.query_one("#cancel", Button).focus()
        self._answer_pin(pin)

    def _refresh(self) -> None:
        text = "Waiting for a touch…"
        if self.deadline is not None:
            text += f"  times out in {format_clock(self.deadline - self.clock(), round_up=True)}"
        self.query_one("#touch-status", Static).update(text)

    def action_cancel(self) -> None:
        self.cancel_event.set()  # stops the touch in the worker thread
        self._answer_pin(None)
        if not self._finished:
            self._finished = True
            self.dismiss(False)

    def finish(self) -> None:
        """The touch is over (accepted, refused or timed out): close, now or when back on top."""
        if self._finished:
            return
        if self.is_current:
            self._finished = True
            self.dismiss(True)
        else:
            self._close_on_resume = True

    def on_screen_resume(self) -> None:
        if getattr(self, "_close_on_resume", False):
            self.finish()

    def action_demo_touch(self) -> None:
        if self.demo_touch is not None:
            self.demo_touch()
            self.query_one("#touch-status", Static).update("Touched. Checking…")

    @on(Button.Pressed, "#touch")
    def _touch_pressed(self) -> None:
        self.action_demo_touch()


class ConfirmModal(StepUpModal):
    """Type a short text to confirm: the target's name, the runbook's name, or the number of targets."""

    def __init__(self, summary: RunSummary | None, *, expected: str, hint: str | None = None, clock=time.time):
        super().__init__(summary, heading=f"Confirm: type {hint or 'the text below'}", clock=clock)
        self.expected = expected

    def body(self) -> ComposeResult:
        yield Label(Text.assemble("Type ", (self.expected, "bold underline"), " to run it:"))
        yield Input(placeholder=self.expected, id="confirm-input")
        yield Static(id="confirm-status", classes="modal-status")
        with Horizontal(classes="modal-buttons"):
            yield Button("Confirm", variant="error", id="confirm")
            yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#confirm-input", Input).focus()
        self._check("")

    @on(Input.Changed, "#confirm-input")
    def _changed(self, event: Input.Changed) -> None:
        self._check(event.value)

    def _check(self, value: str) -> bool:
        ok = value.strip() == self.expected
        self.query_one("#confirm", Button).disabled = not ok
        self.query_one("#confirm-status", Static).update("✓ matches" if ok else "")
        return ok

    @on(Input.Submitted, "#confirm-input")
    @on(Button.Pressed, "#confirm")
    def _submit(self) -> None:
        value = self.query_one("#confirm-input", Input).value
        if self._check(value):
            self.dismiss(value)
        else:  # say why nothing happens
            self.query_one("#confirm-status", Static).update(
                Text(f"✗ that is not {self.expected!r}: type it exactly", style="bold"))


class ApproverModal(StepUpModal):
    """Two-person rule: the approver picks their name, then passes their own factor."""

    def __init__(self, summary: RunSummary | None, *, candidates: list[str], requester: str, clock=time.time):
        super().__init__(summary, heading="Approval by a second operator",
                         who=f"Requested by {requester}. The approver picks their name, then uses their own factor.",
                         clock=clock)
        self.candidates = candidates

    def body(self) -> ComposeResult:
        yield OptionList(*self.candidates, id="approvers")
        with Horizontal(classes="modal-buttons"):
            yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#approvers", OptionList).focus()

    @on(OptionList.OptionSelected, "#approvers")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.candidates[event.option_index])
