"""The live audit pane: the newest records as readable lines and a badge saying whether the chain verifies.

A thread worker polls ``AuditTrail.read_new(offset)``, so records written by another console or by
``opsgate run`` on the same trail show up too. Verification runs in a thread worker after new records.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import RichLog, Static
from textual.worker import get_current_worker

from console.audit import AuditTrail, format_record, verify

POLL_INTERVAL = 0.25
SHOWN = 500  # lines kept in the pane; `opsgate audit show/tail` has the rest


@dataclass
class AuditRecords(Message):
    records: list[dict]


@dataclass
class AuditVerified(Message):
    ok: bool
    count: int
    problem: str | None


@dataclass
class AuditUnreadable(Message):
    error: str


def _event_style(event: str) -> str:
    """Denials and failures stand out; the word in the line says it without colour too."""
    if event.endswith((".failure", ".denied", ".lockout", ".replay", ".clone_suspected", ".recovered")):
        return "bold #e5484d"
    if event.endswith(".success") or event == "approval.granted":
        return "#3fa45b"
    if event in ("action.start", "action.end"):
        return "bold"
    return ""


class AuditPane(Vertical):
    """Badge + Log of ``format_record`` lines, newest at the bottom."""

    def __init__(self, trail: AuditTrail, state_dir: Path, *, initial: int = 50, **kwargs):
        super().__init__(**kwargs)
        self.trail = trail
        self.state_dir = state_dir
        self.initial = initial
        self.records_seen = 0
        self.last_records: list[dict] = []
        self.verified: bool | None = None
        self._wake = threading.Event()
        self._dirty = threading.Event()

    def compose(self) -> ComposeResult:
        yield Static(Text("audit  … verifying", style="dim"), id="audit-badge")
        # Wrapped, so a record reads whole in a narrow pane; plain Text, never markup.
        yield RichLog(max_lines=SHOWN, wrap=True, markup=False, highlight=False, auto_scroll=True, id="audit-log")

    def on_mount(self) -> None:
        self.border_title = "Audit trail"
        self.poll()

    def poke(self) -> None:
        """Read now rather than at the next poll (after our own run wrote records)."""
        self._wake.set()

    @work(thread=True, exclusive=True, group="audit-poll", exit_on_error=False)
    def poll(self) -> None:
        worker = get_current_worker()
        try:
            records, offset = self.trail.tail(self.initial)
        except Exception as e:  # a broken trail still gets a visible badge, not a crash
            self.post_message(AuditUnreadable(str(e)))
            records, offset = [], 0
        if records:
            self.post_message(AuditRecords(records))
        self._verify_now()
        while not worker.is_cancelled:
            self._wake.wait(POLL_INTERVAL)
            self._wake.clear()
            if worker.is_cancelled:
                return
            try:
                records, offset = self.trail.read_new(offset)
            except Exception as e:
                self.post_message(AuditUnreadable(str(e)))
                self._wake.wait(2.0)
                continue
            if records:
                self.post_message(AuditRecords(records))
                self._verify_now()

    def _verify_now(self) -> None:
        try:
            report = verify(self.trail.path, state_dir=self.state_dir)
        except Exception as e:
            self.post_message(AuditVerified(False, 0, str(e)))
            return
        if report.count == 0 and not self.trail.path.exists():
            self.post_message(AuditVerified(True, 0, None))  # no trail yet: nothing to break
            return
        self.post_message(AuditVerified(report.ok, report.count, report.problems[0] if report.problems else None))

    def on_audit_records(self, message: AuditRecords) -> None:
        self.records_seen += len(message.records)
        self.last_records = (self.last_records + message.records)[-SHOWN:]
        log = self.query_one("#audit-log", RichLog)
        for record in message.records:
            log.write(Text(format_record(record), style=_event_style(str(record.get("event", "")))))

    def on_audit_verified(self, message: AuditVerified) -> None:
        self.verified = message.ok
        badge = self.query_one("#audit-badge", Static)
        if message.ok:
            text = Text.assemble((" ✓ CHAIN OK ", "bold #0b2e13 on #7ccf8a"), f"  {message.count} records")
        else:
            text = Text.assemble((" ✗ CHAIN BROKEN ", "bold #ffffff on #b3123a"), f"  {message.problem or ''}")
        badge.update(text)
        self.set_class(not message.ok, "broken")

    def on_audit_unreadable(self, message: AuditUnreadable) -> None:
        self.verified = False
        self.query_one("#audit-badge", Static).update(
            Text.assemble((" ✗ UNREADABLE ", "bold #ffffff on #b3123a"), f"  {message.error}"))
