"""The live audit pane: the newest records as compact lines and a badge saying whether the chain verifies.

A thread worker polls ``AuditTrail.read_new(offset)``, so records written by another console or by
``opsgate run`` on the same trail show up too. The chain is verified in full once at start (and on
``v``), then only the new records after each poll (``console.audit.verify.verify_from``), so a large trail
costs its full verify once, not after every record. Enter (or a click) on a line shows the whole record.

The recordings the records name are checked against their sha256 in the trail too. At start that goes through
``console.audit.checked`` (``STATE/recordings.checked``): a file unchanged since the console hashed it (same size,
mtime, ctime, inode) is not read again, so a start costs a stat per recording, not a read of the archive; and
the recordings are looked at only after the first paint, the files that must be read (new or changed) with
the badge saying so. ``v`` reads every recording again, as ``opsgate audit verify`` always does.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import NoActiveWorker, get_current_worker

from opsgate.actions.display import escape_json, escape_line
from opsgate.console.audit.checked import Cancelled, RecordingChecks
from opsgate.console.audit.format import format_record_short
from opsgate.console.audit.trail import AuditTrail
from opsgate.console.audit.verify import VerifyReport, check_recordings_of, verify, verify_from
from opsgate.console.events import CONFIG_LOADED, RUNBOOK_STEP

BURST_SETTLE = 0.25  # seconds a poke waits for the rest of a burst of records before the pane reads them
POLL_INTERVAL = 0.25
SHOWN = 300  # lines kept in the pane; `opsgate audit show/tail` has the rest
PAINT_WAIT = 5.0  # the start's recording check waits for the first paint at most this long


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


@dataclass
class AuditChecking(Message):
    """The chain verified; recordings new or changed since the last check are being read."""

    count: int  # records in the chain


RED, YELLOW, GREEN = "bold #e5484d", "#d4a72c", "#3fa45b"
_BAD_ENDINGS = (".failure", ".denied", ".lockout", ".replay", ".clone_suspected", ".recovered", ".cancelled")


def record_style(record: dict) -> str:
    """Denials and failures red, step-ups yellow, good ends green; the words say it without colour too."""
    event = str(record.get("event", ""))
    if event.endswith(_BAD_ENDINGS):
        return RED
    if event.endswith(".target") and record.get("outcome") not in (None, "ok"):
        return RED
    if event == RUNBOOK_STEP and record.get("status") in ("failed", "cancelled"):
        return RED
    if event.endswith(".end"):
        return GREEN if record.get("exit_code") == 0 else RED
    if event.startswith(("stepup.", "approval.")):
        return YELLOW
    if event == CONFIG_LOADED:
        return "dim"
    return ""


class AuditRecordModal(ModalScreen[None]):
    """One record in full: every field, as stored (never markup; JSON escapes, the rest through the sanitiser)."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("enter", "close", "Close", show=False)]

    def __init__(self, record: dict):
        super().__init__()
        self.record = record

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="record-body"):
            yield Static(Text(format_record_short(self.record), style="bold " + record_style(self.record)),
                         id="record-title")
            yield Static(Text(escape_json(json.dumps(self.record, indent=2, ensure_ascii=False))), id="record-json")
        yield Footer()

    def on_mount(self) -> None:
        seq = escape_line(self.record.get("seq", "?"), 24)
        self.query_one("#record-body").border_title = Text(f"Audit record #{seq}")  # Text: never markup

    def action_close(self) -> None:
        self.dismiss(None)


class AuditPane(Vertical):
    """Badge + one compact line per record (``format_record_short``), newest at the bottom."""

    def __init__(self, trail: AuditTrail, state_dir: Path, *, initial: int = 50, **kwargs):
        super().__init__(**kwargs)
        self.trail = trail
        self.state_dir = state_dir
        self.initial = initial
        self.records_seen = 0
        self.last_records: list[dict] = []
        self.last_seq = 0  # the newest record seen (for the forwarder's backlog in the top bar)
        self.verified: bool | None = None
        self.full_verifies = 0  # full verifies done (start, v); the rest are incremental
        self._wake = threading.Event()
        self._unmounted = threading.Event()
        # Where the chain is verified up to: a full verify sets it, each poll verifies only what follows.
        self._chain_lock = threading.Lock()
        self._chain: VerifyReport | None = None
        self._chain_count = 0
        self.checks = RecordingChecks.for_state_dir(state_dir)  # what the recordings hashed to, while unchanged
        self._painted = threading.Event()  # the start's recording check waits for this
        self._checking = False  # the start's check is reading recordings (AuditChecking posted)

    def compose(self) -> ComposeResult:
        yield Static(Text("audit  … verifying", style="dim"), id="audit-badge")
        yield OptionList(id="audit-log")

    def on_mount(self) -> None:
        self.border_title = "Audit trail"
        self.query_one("#audit-log", OptionList).tooltip = "enter or click: the whole record"
        # After the callbacks of the first paint (the screen's own included), not among them.
        self.call_after_refresh(self.call_after_refresh, self._painted.set)
        self.poll()

    def on_unmount(self) -> None:
        self._painted.set()  # an app gone before its first paint: the start's check need not wait for it
        self._unmounted.set()

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
        self.verify_full(cached=True)
        while not worker.is_cancelled:
            if self._wake.wait(POLL_INTERVAL):
                # Woken by a run's record: let the records written with it (the other targets') come too,
                # so a burst makes one update of the pane, one layout, rather than one per record.
                self._unmounted.wait(BURST_SETTLE)
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
                self._verify_new()

    def verify_full(self, *, cached: bool = False) -> VerifyReport | None:
        """The whole chain and its recordings (blocking: call from a thread). Sets where polls go on from.

        ``cached`` (the start): the recordings are checked after the first paint, and a file unchanged since the
        console hashed it is not read again (``self.checks``). Without it (``v``) every recording is read.
        """
        try:
            worker = get_current_worker()
        except NoActiveWorker:
            worker = None
        cancelled = (lambda: worker.is_cancelled) if worker is not None else None
        try:
            report = verify(self.trail.path, state_dir=self.state_dir, check_recordings=False)
        except Exception as e:
            self.post_message(AuditVerified(False, 0, str(e)))
            return None
        if report.count == 0 and not self.trail.path.exists():
            report = VerifyReport(ok=True, count=0, head=None)  # no trail yet: nothing to break
        chain_ok = report.ok
        if report.recordings:
            if not chain_ok:  # broken already: say so now, whatever the recordings say
                self.post_message(AuditVerified(False, report.count, report.problems[0]))
            if cached:
                self._painted.wait(PAINT_WAIT)  # a stat per recording, and maybe reads: not while the app starts
                if cancelled is not None and cancelled():
                    return None
                digest, known = partial(self._digest, report.count, cancelled), self.checks.known
            else:
                digest, known = partial(self.checks.rehash, cancelled=cancelled), None
            try:
                check_recordings_of(report, self.state_dir, digest=digest, known=known)
            except Cancelled:
                return None
            except Exception as e:  # as for the chain: a badge that says so, and polls go on
                self.post_message(AuditVerified(False, report.count, str(e)))
                return None
            self.checks.save(prune=cached and chain_ok)  # every recording the trail names was looked up
        with self._chain_lock:
            self.full_verifies += 1
            self._chain = report
            self._chain_count = report.count
        self.post_message(AuditVerified(report.ok, report.count, report.problems[0] if report.problems else None))
        return report

    def _digest(self, count: int, cancelled, path: Path) -> str:
        """A recording's sha256 at start: the cached one for an unchanged file, else read (the badge says so)."""
        known = self.checks.known(path)
        if known is not None:
            return known
        if not self._checking:
            self._checking = True
            self.post_message(AuditChecking(count))
        return self.checks.rehash(path, cancelled=cancelled)

    def _verify_new(self) -> None:
        """Only the records after the last verified one. A broken chain stays broken until a full verify."""
        with self._chain_lock:
            chain = self._chain
            if chain is None or not chain.ok:
                return
            try:
                report = verify_from(self.trail.path, chain.end_offset, chain.last_seq, chain.head,
                                     state_dir=self.state_dir, recording_digest=self.checks.digest)
            except Exception as e:
                report = VerifyReport(ok=False, count=0, head=chain.head, problems=[str(e)])
            if report.recordings:
                self.checks.save()
            self._chain_count += report.count
            self._chain = report
            count = self._chain_count
        self.post_message(AuditVerified(report.ok, count, report.problems[0] if report.problems else None))

    def on_audit_records(self, message: AuditRecords) -> None:
        self.records_seen += len(message.records)
        self.last_records = (self.last_records + message.records)[-SHOWN:]
        self.last_seq = max([self.last_seq] + [r.get("seq", 0) for r in message.records
                                               if isinstance(r.get("seq"), int)])
        log = self.query_one("#audit-log", OptionList)
        follow = self.following
        log.add_options([self._line(r) for r in message.records])
        extra = log.option_count - SHOWN
        if extra > 0:
            # Rebuild from the kept records rather than remove one by one (one refresh).
            log.clear_options()
            log.add_options([self._line(r) for r in self.last_records])
        if follow:
            self.follow_newest()

    @property
    def following(self) -> bool:
        """Whether new records scroll into view: always, unless the operator is in the pane looking back (a
        line above the last highlighted, or the view scrolled up)."""
        log = self.query_one("#audit-log", OptionList)
        if not log.has_focus:
            return True
        if log.highlighted is not None:
            return log.highlighted >= log.option_count - 1
        return log.is_vertical_scroll_end

    def follow_newest(self) -> None:
        """Show the newest record (highlighted when the pane has the focus)."""
        log = self.query_one("#audit-log", OptionList)
        log.highlighted = log.option_count - 1 if log.has_focus and log.option_count else None
        log.scroll_end(animate=False)  # after the next layout: the new lines are counted by then

    def _line(self, record: dict) -> Option:
        width = self.query_one("#audit-log", OptionList).size.width - 2  # the scrollbar
        text = format_record_short(record, width if width >= 30 else None)
        return Option(Text(text, style=record_style(record), no_wrap=True, overflow="ellipsis"))

    @on(OptionList.OptionSelected, "#audit-log")
    def _show_record(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        index = event.option_index - (event.option_list.option_count - len(self.last_records))
        if 0 <= index < len(self.last_records):
            self.app.push_screen(AuditRecordModal(self.last_records[index]))

    def on_audit_verified(self, message: AuditVerified) -> None:
        self.verified = message.ok
        badge = self.query_one("#audit-badge", Static)
        if message.ok:
            text = Text.assemble((" ✓ CHAIN OK ", "bold #0b2e13 on #7ccf8a"), f"  {message.count} records")
        else:
            text = Text.assemble((" ✗ CHAIN BROKEN ", "bold #ffffff on #b3123a"), f"  {escape_line(message.problem or '')}")
        badge.update(text, layout=False)  # one line (height 1): repainted, not a layout of the screen
        self.set_class(not message.ok, "broken")

    def on_audit_checking(self, message: AuditChecking) -> None:
        if self.verified is None:
            self.query_one("#audit-badge", Static).update(Text(
                f"audit  … {message.count} records chained; reading the recordings new or changed since the last "
                "check", style="dim"), layout=False)

    def on_audit_unreadable(self, message: AuditUnreadable) -> None:
        self.verified = False
        self.query_one("#audit-badge", Static).update(
            Text.assemble((" ✗ UNREADABLE ", "bold #ffffff on #b3123a"), f"  {escape_line(message.error)}"))
