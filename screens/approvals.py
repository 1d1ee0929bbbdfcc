"""Gate mode: the requests waiting at the gate for a second operator, approved or denied with your own factor.

The gate decides who you are (your connection), so your own requests are listed but cannot be approved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from opsgate.actions.display import escape_line
from opsgate.console.gate.protocol import GateError


@dataclass
class PendingLoaded(Message):
    pending: list[dict]
    error: str | None = None


@dataclass
class Answered(Message):
    text: str
    error: bool


def pending_line(p: dict, now: float) -> Text:
    left = max(0, int(p["expires"] - now))
    clean = escape_line  # a requester's plan and reason: shown, never interpreted
    return Text.assemble((clean(p["id"]), "bold"), "  ", (clean(p["requester"]), "bold"), f" asks: {clean(p['summary'])}",
                         ("\n      why: ", "dim"), clean(p["reason"]) or "(no reason given)",
                         (f"  ·  {len(p['approved'])} of {p['needed']} approvals  ·  expires in {left} s", "dim"))


class ApprovalsScreen(ModalScreen[None]):
    """Pending requests at the gate: enter approves, d denies, r refreshes, escape closes."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("d", "deny", "Deny"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self, console) -> None:
        super().__init__()
        self.console = console  # the ConsoleScreen: its context has the gate and the front-end parts
        self.pending: list[dict] = []
        self.loaded = False
        self.last_answer: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="approvals-box"):
            yield Static(Text("Requests waiting for approval at the gate", style="bold"), id="approvals-title")
            yield OptionList(id="approvals-list")
            yield Static("loading …", id="approvals-state")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#approvals-box").border_title = "Approvals"
        self.query_one(OptionList).focus()
        self.action_refresh()

    def action_close(self) -> None:
        self.dismiss(None)

    def action_refresh(self) -> None:
        self._load()

    def _client(self):
        from opsgate.console.gate.client import GateClient

        ctx = self.console.ctx
        return GateClient(ctx.config.gate, timeout=ctx.config.settings.connect_timeout)

    @work(thread=True, exclusive=True, group="approvals", exit_on_error=False)
    def _load(self) -> None:
        try:
            client = self._client()
            try:
                pending = client.request("approvals", {})
            finally:
                client.close()
        except GateError as e:
            self.post_message(PendingLoaded([], str(e)))
            return
        self.post_message(PendingLoaded(pending))

    def on_pending_loaded(self, message: PendingLoaded) -> None:
        self.pending, self.loaded = message.pending, True
        options = self.query_one(OptionList)
        options.clear_options()
        now = time.time()
        options.add_options([Option(pending_line(p, now), id=p["id"]) for p in self.pending])
        if self.pending:
            options.highlighted = 0
        state = self.query_one("#approvals-state", Static)
        if message.error:
            state.update(Text(f"✗ {message.error}", style="bold"))
        elif not self.pending:
            state.update(Text("no requests are waiting", style="dim"))
        else:
            state.update(Text("enter approves, d denies: the gate asks for your own factor", style="dim"))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._answer("approve", str(event.option.id))

    def action_deny(self) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is not None and self.pending:
            self._answer("deny", self.pending[options.highlighted]["id"])

    @work(thread=True, exclusive=True, group="approvals-answer", exit_on_error=False)
    def _answer(self, op: str, request: str) -> None:
        from opsgate.console.gate.client import answers_for
        from opsgate.screens.frontend import TuiFrontend

        ctx = self.console.ctx
        demo = ctx.demo
        frontend = TuiFrontend(self.app, self, None, None, clock=ctx.clock, touch_timeout=ctx.touch_timeout,
                               demo_touch=demo.touch if demo is not None else None,
                               otp_hint=demo.otp_hint if demo is not None else None)
        device = ctx.stepup.key.device_factory if ctx.stepup is not None else None
        try:
            client = self._client()
            try:
                result = client.request(op, {"request": request}, answers_for(client, frontend, device))
            finally:
                client.close()
        except GateError as e:
            self.post_message(Answered(f"{op} {request}: {e}", True))
        else:
            verb = "approved" if op == "approve" else "denied"
            self.post_message(Answered(f"{verb} {result['id']} of {result['requester']}", False))

    def on_answered(self, message: Answered) -> None:
        self.last_answer = message.text
        self.app.notify(message.text, title="Approvals", severity="error" if message.error else "information")
        self.action_refresh()
