"""Run history for reviewers (h): every run in the audit trail, newest first, with the chain's state on top.

Enter opens a run's detail: its records in order, the exact command as recorded, the FIDO2 digest,
who approved with which factor, and its recordings with their verification state; enter on a
recording replays it. Reading the trail, verifying it and hashing recordings run in thread workers. The
chain's verify at the top checks every recording through the console's cache (``console.audit.checked``: a
file unchanged since the console hashed it is not read again); a run's detail and its replay read the files.

Every value shown comes from the trail, which anyone who can edit it controls: each goes through the
sanitiser (``clean``: ``opsgate.actions.display.escape_line``) and into a ``Text``, never markup.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static
from textual.worker import get_current_worker

from opsgate.actions.display import escape_line as clean
from opsgate.console.audit.checked import Cancelled, RecordingChecks
from opsgate.console.audit.format import format_record
from opsgate.console.audit.trail import AuditTrail
from opsgate.console.audit.verify import VerifyReport, check_recordings_of, verify
from opsgate.console.errors import OpsgateError
from opsgate.console.audit.history import (OUTCOMES, HistoryFilter, RecordingRef, RunSummary, build_history, chain_ok,
                             chain_state, check_recordings, filter_history, record_verified)
from opsgate.console.catalog.policy import FACTOR_SHORT, FACTOR_WORDS, RISKS

from opsgate.screens.badges import STATUS_MARKS, risk_badge

if TYPE_CHECKING:  # imported when a recording is replayed
    from opsgate.screens.replay_screen import ReplayScreen

RED, YELLOW, GREEN, DIM = "bold #e5484d", "#d4a72c", "#3fa45b", "dim"
OUTCOME_STYLES = {"ok": GREEN, "failed": RED, "denied": RED, "cancelled": YELLOW, "dry-run": DIM, "running": YELLOW}
OUTCOME_MARKS = {**STATUS_MARKS, "dry-run": "◇", "running": "◔"}


def outcome_text(outcome: str) -> Text:
    return Text(f"{OUTCOME_MARKS.get(outcome, '?')} {clean(outcome, 24)}", style=OUTCOME_STYLES.get(outcome, ""))


def factor_text(s: RunSummary) -> str:
    if s.factor is None:
        return "-"
    word = FACTOR_SHORT.get(s.factor) or clean(s.factor, 24)
    return word if s.fresh is not False else f"{word} (grant)"


def approvals_text(s: RunSummary) -> str:
    return ", ".join(f"{clean(a.approver)} ({FACTOR_SHORT.get(a.factor or '') or clean(a.factor or '?')})"
                     for a in s.approvals) or "-"


COLUMNS = (("time (UTC)", 19), ("operator", 8), ("action / runbook", 28), ("risk", 12), ("targets", 14),
           ("outcome", 11), ("factor", 10), ("approvals", 12), ("run", 24))
# Under 100 columns: what a reviewer scans first (when, what, how it ended) fits 80; the rest scrolls.
COLUMNS_NARROW = (("time (UTC)", 11), ("action / runbook", 24), ("outcome", 11), ("risk", 12), ("operator", 8),
                  ("targets", 14), ("factor", 10), ("approvals", 12), ("run", 24))
NARROW_BELOW = 100


def short_time(text: str, narrow: bool = False) -> str:
    """"2026-11-28 06:30:00", or narrow "11-28 06:30"."""
    if narrow:
        return text[5:10] + " " + text[11:16] if len(text) >= 16 else text
    return text[:10] + " " + text[11:19] if len(text) >= 19 else text


def _clip(text: str, width: int) -> Text:
    text = clean(text)
    return Text(text if len(text) <= width else text[: width - 1] + "…")


def chain_banner(report: VerifyReport | None) -> Text:
    if report is None:
        return Text(" ◌ verifying the audit chain…", style=DIM)
    if chain_ok(report):
        return Text.assemble((" ✓ ", GREEN), (clean(chain_state(report)), "bold" if report.ok else RED))
    return Text.assemble((" ✗ ", RED), (clean(chain_state(report)), RED))


@dataclass
class HistoryLoaded(Message):
    summaries: list[RunSummary]
    error: str | None = None


@dataclass
class ChainVerified(Message):
    report: VerifyReport


@dataclass
class RecordingsChecked(Message):
    results: list[tuple[RecordingRef, str | None]]


class HistoryScreen(Screen[None]):
    """Runs from the audit trail with filters; the chain's verification state at the top."""

    DEFAULT_CSS = """
    HistoryScreen { layout: vertical; }
    #history-title { height: 1; background: $panel; }
    #history-chain { height: auto; padding: 0 1; }
    #history-filter { height: 1; border: none; padding: 0 1; background: $surface; }
    #history-filter:focus { background: $boost; }
    #history-state { height: 1; padding: 0 1; color: $text-muted; }
    #history-table { height: 1fr; }
    """

    BINDINGS = [
        Binding("escape,q", "close", "Back"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("f", "cycle_risk", "Risk"),
        Binding("o", "cycle_outcome", "Outcome"),
        Binding("p", "mine", "Mine"),
        Binding("r", "reload", "Reload"),
    ]

    def __init__(self, audit_path: Path, state_dir: Path, *, operator: str = "",
                 clock: Callable[[], float] = time.time, replay_clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.audit_path = Path(audit_path)
        self.state_dir = Path(state_dir)
        self.operator = operator
        self.clock = clock
        self.replay_clock = replay_clock
        self.summaries: list[RunSummary] = []
        self.shown: list[RunSummary] = []
        self.report: VerifyReport | None = None
        self.loaded = False
        self.error: str | None = None
        self.narrow: bool | None = None  # the column set in use (None: none yet)

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble((" opsgate ", "bold reverse"), " run history  ",
                                   ("newest first · enter opens a run · opsgate audit export RUN hands it on", "dim")),
                     id="history-title")
        yield Static(chain_banner(None), id="history-chain")
        yield Input(placeholder="/ filter: op:alice risk:critical outcome:failed since:2026-11-27 words",
                    id="history-filter", select_on_focus=False)
        yield Static(id="history-state")
        table = DataTable(id="history-table", cursor_type="row", zebra_stripes=True, cell_padding=0)
        yield table
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._columns()
        self.query_one(DataTable).focus()
        self._load()

    def on_resize(self) -> None:
        self._columns()
        self.query_one(Footer).show_command_palette = self.size.width >= NARROW_BELOW

    @property
    def columns(self) -> tuple[tuple[str, int], ...]:
        return COLUMNS_NARROW if self.narrow else COLUMNS

    def _columns(self) -> None:
        """The column set for the width: the outcome is on screen at 80 columns too."""
        narrow = (self.size.width or self.app.size.width) < NARROW_BELOW
        if narrow == self.narrow:
            return
        self.narrow = narrow
        table = self.query_one(DataTable)
        table.clear(columns=True)
        for label, width in self.columns:  # one cell of gap on the right of each (cell_padding 0): fits 120 columns
            table.add_column(label, width=width + 1)
        if self.loaded:
            self._apply()

    # -- loading ---------------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="history", exit_on_error=False)
    def _load(self) -> None:
        worker = get_current_worker()
        try:
            summaries = build_history(AuditTrail(self.audit_path).records())
        except (OpsgateError, OSError) as e:
            self.post_message(HistoryLoaded([], str(e)))
            return
        if worker.is_cancelled:
            return
        self.post_message(HistoryLoaded(summaries))
        checks = RecordingChecks.for_state_dir(self.state_dir)
        report = verify(self.audit_path, state_dir=self.state_dir, check_recordings=False)
        try:
            check_recordings_of(report, self.state_dir, known=checks.known,
                                digest=partial(checks.digest, cancelled=lambda: worker.is_cancelled))
        except Cancelled:
            return
        checks.save()
        if not worker.is_cancelled:
            self.post_message(ChainVerified(report))

    def on_history_loaded(self, message: HistoryLoaded) -> None:
        self.summaries, self.error, self.loaded = message.summaries, message.error, True
        self._apply()

    def on_chain_verified(self, message: ChainVerified) -> None:
        self.report = message.report
        self.query_one("#history-chain", Static).update(chain_banner(message.report))

    def action_reload(self) -> None:
        self.report = None
        self.query_one("#history-chain", Static).update(chain_banner(None))
        self._load()

    # -- filtering --------------------------------------------------------------------------------------

    @property
    def filter(self) -> HistoryFilter:
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        return HistoryFilter.parse(self.query_one("#history-filter", Input).value, now=now)

    def _apply(self) -> None:
        flt = self.filter
        self.shown = filter_history(self.summaries, flt)
        table = self.query_one(DataTable)
        table.clear()
        w = dict(self.columns)
        for s in self.shown:
            name = s.name if s.kind == "action" else f"▤ {s.name} ({len(s.steps)} steps)"
            cells = {"time (UTC)": _clip(short_time(s.started, bool(self.narrow)), 40),
                     "operator": _clip(s.operator, w["operator"]), "action / runbook": _clip(name, w["action / runbook"]),
                     "risk": risk_badge(s.risk) if s.risk else Text("-"),
                     "targets": _clip(", ".join(map(str, s.targets)) or "-", w["targets"]),
                     "outcome": outcome_text(s.outcome), "factor": Text(factor_text(s)),
                     "approvals": _clip(approvals_text(s), w["approvals"]), "run": _clip(s.run, 64)}
            table.add_row(*(cells[label] for label, _ in self.columns), key=s.run)
        state = Text.assemble(f"{len(self.shown)} of {len(self.summaries)} runs", (" · ", "dim"), flt.describe(),
                              ("   enter open · f risk · o outcome · p mine", "dim"))
        if self.error:
            state = Text(f"cannot read the audit trail: {clean(self.error)}", style=RED)
        elif flt.errors:
            state.append("   " + "; ".join(flt.errors), style=RED)
        self.query_one("#history-state", Static).update(state)

    @on(Input.Changed, "#history-filter")
    def _filter_changed(self) -> None:
        if self.loaded:
            self._apply()

    @on(Input.Submitted, "#history-filter")
    def _filter_done(self) -> None:
        self.query_one(DataTable).focus()

    def on_key(self, event) -> None:
        if event.key == "escape" and self.focused is self.query_one("#history-filter", Input):
            event.stop()
            self.query_one(DataTable).focus()

    def action_focus_filter(self) -> None:
        field = self.query_one("#history-filter", Input)
        field.cursor_position = len(field.value)  # typing adds a term
        self.set_focus(field)

    def set_term(self, key: str, value: str | None) -> None:
        """Replace the ``key:`` term of the filter line (None removes it)."""
        field = self.query_one("#history-filter", Input)
        terms = [t for t in field.value.split() if not t.lower().startswith(f"{key}:")]
        if value:
            terms.append(f"{key}:{value}")
        field.value = " ".join(terms)
        field.cursor_position = len(field.value)

    def _current(self, key: str) -> str | None:
        for term in self.query_one("#history-filter", Input).value.split():
            if term.lower().startswith(f"{key}:"):
                return term.split(":", 1)[1]
        return None

    def _cycle(self, key: str, order: list[str | None]) -> None:
        now = self._current(key)
        self.set_term(key, order[(order.index(now) + 1) % len(order)] if now in order else order[1])

    def action_cycle_risk(self) -> None:
        self._cycle("risk", [None, *RISKS])

    def action_cycle_outcome(self) -> None:
        self._cycle("outcome", [None, *OUTCOMES])

    def action_mine(self) -> None:
        self.set_term("op", None if self._current("op") == self.operator else self.operator)

    # -- opening ----------------------------------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        run = event.row_key.value
        summary = next((s for s in self.shown if s.run == run), None)
        if summary is not None:
            self.open_run(summary)

    def open_run(self, summary: RunSummary) -> None:
        self.app.push_screen(RunDetailScreen(summary, self.state_dir, report=self.report,
                                             replay_clock=self.replay_clock))

    def action_close(self) -> None:
        self.dismiss(None)


class RunDetailScreen(Screen[None]):
    """One run: what ran, who approved it, its records in order and its recordings (enter replays one)."""

    DEFAULT_CSS = """
    RunDetailScreen { layout: vertical; }
    #run-title { height: 1; background: $panel; }
    #run-body { height: 1fr; padding: 0 1; }
    #run-summary { height: auto; }
    #run-records { height: auto; margin-top: 1; }
    .run-section { text-style: bold; color: $primary; margin-top: 1; }
    #run-recordings { height: auto; max-height: 12; }
    """

    BINDINGS = [
        Binding("p", "replay_selected", "Replay recording"),
        Binding("escape,q", "close", "Back"),
    ]

    def __init__(self, summary: RunSummary, state_dir: Path, *, report: VerifyReport | None = None,
                 replay_clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.summary = summary
        self.state_dir = Path(state_dir)
        self.report = report
        self.replay_clock = replay_clock
        self.checks: dict[int, str | None] = {}  # recording index -> problem
        self.checked = False

    def compose(self) -> ComposeResult:
        s = self.summary
        yield Static(Text.assemble((" run ", "bold reverse"), " ", (clean(s.name), "bold"), f"  ·  {clean(s.run)}"),
                     id="run-title")
        with VerticalScroll(id="run-body"):
            yield Static(self._summary_text(), id="run-summary")
            yield Static("Recordings (enter or p replays)", classes="run-section")
            yield DataTable(id="run-recordings", cursor_type="row")
            yield Static("Audit records", classes="run-section")
            yield Static(self._records_text(), id="run-records")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label in ("step", "target", "outcome", "exit", "verification", "recording"):
            table.add_column(label)
        self._fill_recordings()
        table.focus()
        self._check()

    def _summary_text(self) -> Text:
        s = self.summary
        t = Text()

        def line(label: str, *value) -> None:
            t.append(f"{label:<11} ", style="bold")  # a space after the longest ("FIDO2 digest") too
            t.append_text(Text.assemble(*value))
            t.append("\n")

        line("what", risk_badge(s.risk) if s.risk else "-", f" {clean(s.kind)} ", (clean(s.name), "bold"))
        line("who", clean(s.operator), f"  ·  {clean(s.started)}" + (f" → {clean(s.ended)}" if s.ended != s.started
                                                                      else ""))
        line("outcome", outcome_text(s.outcome), f"  exit {clean(s.exit_code)}" if s.exit_code is not None else "",
             f"  ({clean(s.reason)})" if s.reason else "")
        line("targets", clean(", ".join(map(str, s.targets))) or "-")
        if s.command is not None:
            line("command", (clean(s.command), "bold"))
        for st in s.steps:
            what = st.command if st.command is not None else st.kind
            line(f"  step {clean(st.index)}", outcome_text(st.status) if st.status in OUTCOME_STYLES else clean(st.status),
                 f"  {clean(st.title)}: ", (clean(what), "bold"),
                 f" on {clean(', '.join(map(str, st.targets)))}" if st.targets else "",
                 (f"  ({clean(st.detail)})" if st.detail and st.detail not in ("ok", st.status) else "", "dim"))
        if s.params:
            line("params", clean(" ".join(f"{k}={v}" for k, v in s.params.items())))
        if s.requirement:
            line("requires", clean(s.requirement))
        factor = "no step-up" if s.factor in (None, "none") else FACTOR_WORDS.get(s.factor) or clean(s.factor)
        fresh = "" if s.factor in (None, "none") else ("  (stepped up for this run)" if s.fresh
                                                       else "  (an earlier grant)")
        line("step-up", factor, fresh)
        if s.fido2_digest:
            line("FIDO2 digest", (clean(s.fido2_digest), "bold"), ("  the touch signed this request", "dim"))
        for c in s.certificates:  # gate mode: the target's sshd ran this run with these, and only them
            window = "–".join(datetime.fromtimestamp(c[k], timezone.utc).strftime("%H:%M:%S")
                              for k in ("valid_after", "valid_before") if isinstance(c.get(k), int))
            step = f" (step {clean(c['step'])})" if c.get("step") is not None else ""
            line("certificate", f"{clean(c.get('target'))}{step}: key id ", (clean(c.get("key_id")), "bold"),
                 f", as {clean(c.get('principal'))}, valid {window} UTC")
        if s.approvals:
            for a in s.approvals:
                step = f" (step {clean(a.step)})" if a.step is not None else ""
                line("approved by", (clean(a.approver), "bold"),
                     f" with {FACTOR_WORDS.get(a.factor or '') or clean(a.factor)}",
                     f" at {clean(a.time)}{step}", (f"  digest {clean(str(a.digest)[:16])}…" if a.digest else "", "dim"))
        else:
            line("approvals", "none")
        if self.report is not None:
            ok = all(record_verified(r, self.report) for r in s.records)
            line("chain", Text("✓ every record of this run verifies", style=GREEN) if ok else
                 Text(f"✗ {clean(chain_state(self.report))}", style=RED))
        return t

    def _records_text(self) -> Text:
        t = Text()
        for r in self.summary.records:
            ok = record_verified(r, self.report)
            mark, style = {True: ("✓", GREEN), False: ("✗", RED), None: ("·", DIM)}[ok]
            t.append(f"{mark} ", style=style)
            t.append(format_record(r), style="" if ok is not False else RED)
            t.append("\n")
        return t

    def _fill_recordings(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for i, ref in enumerate(self.summary.recordings):
            if not self.checked:
                state = Text("checking…", style=DIM)
            elif self.checks.get(i) is None:
                state = Text("✓ sha256 matches", style=GREEN)
            else:
                state = Text(f"✗ {clean(self.checks[i])}", style=RED)
            table.add_row(Text("-" if ref.step is None else clean(ref.step)), Text(clean(ref.target)),
                          outcome_text(ref.outcome or "?"), Text("-" if ref.exit_code is None else clean(ref.exit_code)),
                          state, Text(clean(ref.path or "-")), key=str(i))

    @work(thread=True, exclusive=True, group="recordings", exit_on_error=False)
    def _check(self) -> None:
        results = check_recordings(self.summary, self.state_dir)
        if not get_current_worker().is_cancelled:
            self.post_message(RecordingsChecked(results))

    def on_recordings_checked(self, message: RecordingsChecked) -> None:
        self.checks = {i: problem for i, (_, problem) in enumerate(message.results)}
        self.checked = True
        cursor = self.query_one(DataTable).cursor_row
        self._fill_recordings()
        self.query_one(DataTable).move_cursor(row=cursor)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.replay(int(event.row_key.value))

    def action_replay_selected(self) -> None:
        table = self.query_one(DataTable)
        if table.row_count:
            self.replay(table.cursor_row)

    def replay(self, index: int, **kwargs) -> "ReplayScreen":
        from opsgate.screens.replay_screen import ReplayScreen

        ref = self.summary.recordings[index]
        chain_problem = None
        if self.report is not None and ref.record and record_verified(ref.record, self.report) is False:
            chain_problem = f"its audit record (seq {clean(ref.seq, 24)}) lies after the chain breaks"
        step = f" step {ref.step}" if ref.step is not None else ""
        title = clean(f"{self.summary.name}{step} @ {ref.target}  ·  run {ref.run}  ·  {self.summary.operator}")
        kwargs.setdefault("clock", self.replay_clock)
        screen = ReplayScreen(self.state_dir, ref, title=title, chain_problem=chain_problem, **kwargs)
        self.app.push_screen(screen)
        return screen

    def action_close(self) -> None:
        self.dismiss(None)
