"""One-key questions: "run this plan?" (medium risk and above, as the CLI's ``Run? [y/N]``) and "quit while a
run is live?". Enter or y says yes to running; Escape (or n) says no. Quitting needs y: Enter stays."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Label, Static

from opsgate.screens.stepup_modals import RunSummary, compact_buttons


class RunConfirmModal(ModalScreen[bool]):
    """The whole plan and one key: Enter or y runs it, Escape or n does not (nothing is audited: nothing ran)."""

    DEFAULT_CLASSES = "stepup-modal"
    BINDINGS = [
        Binding("y", "answer(True)", "Run"),
        Binding("enter", "answer(True)", "Run", show=False),  # a focused button takes its own enter first
        Binding("escape,n", "answer(False)", "Cancel"),
    ]

    def __init__(self, summary: RunSummary):
        super().__init__()
        self.summary = summary

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="modal-body"):
            yield Label(Text(f"Run {self.summary.action_id}? ({self.summary.risk.upper()} risk)"),
                        classes="modal-title")
            yield Static(self.summary.renderable(), classes="modal-summary")
            yield Static(Text.assemble(("enter", "bold"), " or ", ("y", "bold"), " runs it (step-up follows if "
                                       "needed) · ", ("escape", "bold"), " or ", ("n", "bold"), " cancels"),
                         classes="modal-status")
            with Horizontal(classes="modal-buttons"):
                yield Button("Run (y)", variant="warning", id="run-yes")
                yield Button("Cancel (esc)", id="run-no")
        yield Footer()

    def on_mount(self) -> None:
        compact_buttons(self)
        self.query_one("#run-yes", Button).focus()

    def on_resize(self) -> None:
        compact_buttons(self)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed, "#run-yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#run-no")
    def _no(self) -> None:
        self.dismiss(False)


class QuitModal(ModalScreen[bool]):
    """A run is live: quitting cancels it (its remote processes are stopped). y quits; Enter, n or Escape stay."""

    DEFAULT_CLASSES = "stepup-modal"
    BINDINGS = [
        Binding("y", "answer(True)", "Quit, cancel the run"),
        Binding("escape,n", "answer(False)", "Stay"),
    ]

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="modal-body"):
            yield Label("Quit while a run is live?", classes="modal-title")
            yield Static(Text.assemble(("Running  ", "bold"), self.what, "\n",
                                       "Quitting cancels it: the remote processes are stopped and the "
                                       "cancellation is written to the audit trail."), classes="modal-summary")
            with Horizontal(classes="modal-buttons"):
                yield Button("Quit (y)", variant="error", id="quit-yes")
                yield Button("Stay (n)", variant="primary", id="quit-no")
        yield Footer()

    def on_mount(self) -> None:
        compact_buttons(self)
        self.query_one("#quit-no", Button).focus()  # Enter stays

    def on_resize(self) -> None:
        compact_buttons(self)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed, "#quit-yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#quit-no")
    def _no(self) -> None:
        self.dismiss(False)
