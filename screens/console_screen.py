"""The main screen: action list, detail pane, output tabs and the live audit pane."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Static

from opsgate.actions.display import escape_line, escape_text
from opsgate.console.durations import format_clock
from opsgate.console.errors import OpsgateError
from opsgate.console.catalog.policy import FACTOR_WORDS, RISKS, satisfies, seconds_left

from opsgate.screens.audit_pane import AuditPane, AuditVerified
from opsgate.screens.badges import fit_parts, risk_badge
from opsgate.screens.catalog import ActionFilter, ActionTable, catalog_entries, filter_actions
from opsgate.screens.detail import ActionDetail, ConsoleInput
from opsgate.screens.output import OutputPanel, StepView, status_word

if TYPE_CHECKING:
    from opsgate.console.run import Plan, RunbookPlan, RunReport

    from opsgate.screens.app import DemoHooks, OpsgateApp
    # The front end (and with it the run pipeline, step-up and its modals) is imported when a run or a
    # step-up starts: the console's first paint does not wait for it. Its messages reach the handlers below
    # by name (on_run_started, ...).
    from opsgate.screens.frontend import PauseAsked, RunStarted, StepChanged, TargetDone, TuiFrontend

WORKER_PREWARM = 1.0  # seconds after the first paint: its imports do not compete with the detail pane's
DETAIL_SETTLE = 0.12  # seconds the cursor rests before the detail pane follows it (each move restarts the wait)


@dataclass
class RunFinished(Message):
    plan: "Plan | RunbookPlan | None"
    report: "RunReport | None"
    error: str | None = None
    denied: bool = False


@dataclass
class StepUpFinished(Message):
    factor: str | None
    error: str | None


def demo_banner(demo: "DemoHooks", now: float, width: int = 200) -> Text:
    """The demo's banner, one line that fits ``width``: its operator's TOTP code now (and next), how the software
    key is touched, and what the demo is not (the least needed parts go first on a narrow terminal)."""
    code, nxt, left = demo.codes(now)
    parts = [
        (0, Text.assemble((" DEMO ", "bold #ffffff on #b3123a"), " OTP ", (f"{code[:3]} {code[3:]}", "bold"),
                          f" ({left:2d}s, next {nxt})")),
        (1, Text("key: t in its dialog")),
        *([(2, Text("in-process gate: no boundary"))] if getattr(demo, "gate", False) else []),
        (3, Text("state deleted on exit")),
    ]
    return fit_parts(width, parts, sep=" · ")


def initial_classes(app) -> str:
    """The screen's classes from the start: the breakpoint classes its first resize would give it at the app's
    size now. A class changed once the screen is mounted restyles every widget on it (tens of ms with the
    console's tree, before the first paint); an unchanged one costs nothing."""
    classes = []
    width, height = app.size
    for dimension, breakpoints in ((width, app.HORIZONTAL_BREAKPOINTS), (height, app.VERTICAL_BREAKPOINTS)):
        for edge, name in sorted(breakpoints or (), reverse=True):
            if dimension >= edge:
                classes.append(name)
                break
    return " ".join(classes)


GLOBAL_KEYS = frozenset({"x", "q", "question_mark", "h", "v", "o"})  # bound on the screen with priority
GLOBAL_ACTIONS = frozenset({"cancel_run", "quit", "help", "history", "verify_audit", "toggle_audit"})


class ConsoleScreen(Screen):
    """Everything the operator works with. The app owns config, pipeline, step-up and the trail."""

    # The footer shows these in this order (what the operator needs at 3 a.m. first). The global ones are
    # priority bindings: they work wherever the focus is. In a field (the filter, a parameter) a printable
    # key is a character while no run is live (Textual leaves it to the field); while a run is live, x, q,
    # ?, h, v and o are the console's keys there too (ConsoleInput.check_consume_key asks key_is_global).
    BINDINGS = [
        Binding("x", "cancel_run", "Cancel run", priority=True),
        Binding("question_mark", "help", "Help", priority=True),
        Binding("q", "quit", "Quit", priority=True),
        Binding("h", "history", "History", priority=True),
        Binding("v", "verify_audit", "Verify", priority=True),
        Binding("r", "run", "Run"),
        Binding("o", "toggle_audit", "Audit", priority=True),
        # priority: handled as the key arrives, so the rest of "/fail⏎" typed in one burst lands in the filter
        Binding("slash", "focus_filter", "Filter", priority=True),
        Binding("escape", "leave_field", "Back to list"),
        Binding("s", "step_up", "Step up"),
        Binding("f", "cycle_risk", "Risk"),
        Binding("g", "cycle_tag", "Tag"),
        Binding("d", "dry_run", "Dry run", show=False),
        Binding("a", "approvals", "Approvals", show=False),
    ]

    AUTO_FOCUS = "#actions"  # the list from the start (not the filter field first, then the list: two restyles)

    def __init__(self, app: "OpsgateApp"):
        super().__init__(classes=initial_classes(app))
        self.ctx = app
        self.config = app.config
        self.risk: str | None = None
        self.tag: str | None = None
        self.query_text = ""
        self.plan: "Plan | RunbookPlan | None" = None
        self._run_live = False
        self.last_report: "RunReport | None" = None
        self._run_worker = None
        self._frontend: TuiFrontend | None = None
        self.pause: PauseAsked | None = None  # the runbook pause waiting for the operator
        self.waiting_approvals = 0  # gate mode: requests of others waiting at the gate
        self._ticks = 0
        self._chain_state: bool | None = None  # the last chain state seen: a toast when it turns broken
        self._chain_problem: str | None = None
        self._detail_timer = None  # the wait for the cursor to rest (DETAIL_SETTLE), restarted by each move
        self._first_paint = False  # the detail pane is filled after the console's first paint

    @property
    def running(self) -> bool:
        """A run is live (from its start through step-up, its steps and pauses, until it finishes)."""
        return self._run_live

    @running.setter
    def running(self, value: bool) -> None:
        self._run_live = value
        self.refresh_bindings()  # the footer: x Cancel while a run is live, r Run otherwise

    def key_is_global(self, key: str) -> bool:
        """Whether ``key`` typed in a field is the console's key rather than a character: only while a run is live."""
        return self._run_live and key in GLOBAL_KEYS

    # -- layout ------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="topbar")
        if self.ctx.demo is not None:
            yield Static(id="demo-banner")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield ConsoleInput(placeholder="/ filter: words, risk:high, tag:db", id="filter")
                yield Static(id="filter-state")
                yield ActionTable(self.config, id="actions")
            yield ActionDetail(self.config, plan_runbook=self._plan_runbook, id="detail")
        yield Horizontal(id="pause-bar")  # its text and buttons are mounted at the first runbook pause
        with Horizontal(id="bottom", classes="no-run"):  # on the pane it shapes: its removal restyles only that
            yield OutputPanel(id="output", clock=self.ctx.monotonic)
            yield AuditPane(self.ctx.audit, self.ctx.state_dir, id="audit")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#left").border_title = "Actions"
        self.query_one("#detail").border_title = "Detail"
        self.query_one("#output").border_title = "Output"
        self._apply_filter()
        self.query_one(ActionTable).focus()
        self._tick()
        self.set_interval(1.0, self._tick, name="clock")
        self.call_after_refresh(self._painted)

    def _painted(self) -> None:
        """The first frame is on the terminal: now fill the detail pane (its form is the costliest part)."""
        self._first_paint = True
        if not gc.isenabled():  # the command turned it off for the start (cli/tui.py): what was made so far stays
            gc.freeze()
            gc.enable()
        self.call_later(self._show_selected)
        prewarm = getattr(self.ctx.pipeline.executor, "prewarm", None)
        if prewarm is not None:  # the run's worker process, loaded once the panes are filled, before a run
            self.set_timer(WORKER_PREWARM, prewarm, name="worker-prewarm")

    def on_unmount(self) -> None:
        # Closing the console stops what it started: remote processes, a pending key touch, a pause.
        if self.running:
            self.ctx.pipeline.cancel()
        if self._frontend is not None:
            self._frontend.abort()

    def on_resize(self) -> None:
        self.query_one(ActionTable).set_narrow(self.size.width < 100)
        # The palette's hint would cover the footer's keys on a narrow terminal (ctrl+p still opens it).
        self.query_one(Footer).show_command_palette = self.size.width >= 100
        self._update_topbar()
        self._update_banner()

    # -- the top bar, the banner and the grant line, every second ---------------------------------------

    def _tick(self) -> None:
        self._ticks += 1
        if self.ctx.config.gate is not None and self._ticks % 5 == 1:
            self._poll_approvals()
        self._update_topbar()
        self._update_grant_line()
        self.query_one(OutputPanel).tick()
        self._update_banner()

    def _update_banner(self) -> None:
        if self.ctx.demo is not None:
            self.query_one("#demo-banner", Static).update(
                demo_banner(self.ctx.demo, self.ctx.clock(), self.size.width or 200))

    def chain_text(self) -> Text:
        """The audit chain's state for the top bar: it is never dropped, and a broken chain is loud."""
        audit = self.query_one(AuditPane)
        if audit.verified is False:
            return Text(" ✗ CHAIN BROKEN ", style="bold #ffffff on #b3123a")
        if audit.verified is None:
            return Text("audit …", style="dim")
        return Text("audit ✓", style="bold")

    def _update_topbar(self) -> None:
        """One line that fits the width: the chain's state first (never cut), then the grant, what waits for
        you, forwarding, the operator and the catalog, the last dropped first on a narrow terminal."""
        grant = self.ctx.stepup.grant_for(self.ctx.operator) if self.ctx.stepup else None
        grant_text = "no grant"
        if grant is not None:
            age = self.ctx.clock() - grant.auth_time
            grant_text = f"grant {FACTOR_WORDS[grant.factor]} {format_clock(age)} ago"
        if self.ctx.config.gate is not None:  # the grants are the gate's
            grant_text = "gate mode"
        runbooks = f", {len(self.config.runbooks)} runbooks" if self.config.runbooks else ""
        parts = [(0, Text(" opsgate ", style="bold reverse")), (0, self.chain_text())]
        if self.waiting_approvals:
            parts.append((1, Text(f"⚑ {self.waiting_approvals} waiting: a", style="bold reverse")))
        parts.append((2, Text(grant_text)))
        forwarding = self.forward_status_text()
        if forwarding is not None:
            parts.append((3, forwarding))
        parts.append((4, Text.assemble("operator ", (self.ctx.operator, "bold"))))
        parts.append((5, Text(f"{len(self.config.actions)} actions{runbooks}, {len(self.config.targets)} targets")))
        # One line whatever it says (height 1, the screen's width): repainted, never a layout of the screen.
        self.query_one("#topbar", Static).update(fit_parts(self.size.width or 200, parts), layout=False)

    def forward_status_text(self) -> Text | None:
        """"fwd ✓", "fwd backlog 12" (records not yet at the collector), or None without [audit.forward]."""
        forwarder = self.ctx.forwarder
        if forwarder is None:
            return None
        status = forwarder.status()
        if forwarder.error is not None:
            return Text(f"fwd ✗ {escape_line(forwarder.error)}", style="bold")
        if status.waiting_for_lock:
            return Text("fwd: another opsgate forwards", style="dim")
        backlog = max(0, self.query_one(AuditPane).last_seq - status.cursor.seq)
        if backlog == 0 and (status.connected or status.last_error is None):
            return Text("fwd ✓", style="bold")
        text = Text(f"fwd backlog {backlog}", style="bold")
        if not status.connected and status.last_error:
            text.append(" (collector down)", style="")
        return text

    def grant_text(self, action) -> str:
        """Whether the current grant satisfies the action, and for how long."""
        req = self.config.requirement_for(action)
        if not req.needs_stepup:
            return "runs without step-up"
        now = self.ctx.clock()
        stepup = self.ctx.stepup
        locked = stepup.totp.locked_until(self.ctx.operator) if stepup is not None and req.factor == "otp" else None
        if locked:
            return f"OTP locked for {format_clock(locked - now)} after wrong codes"
        record = stepup.grants.get(self.ctx.operator) if stepup is not None else None
        grant = record.grant if record else None
        if req.max_age == 0:
            return f"asks for the {FACTOR_WORDS[req.factor]} at every run"
        if satisfies(grant, req, now, used=record.used if record else False):
            return f"✓ current grant ({FACTOR_WORDS[grant.factor]}) valid for {format_clock(seconds_left(grant, req, now))}"
        return f"you will be asked for the {FACTOR_WORDS[req.factor]}"

    def _update_grant_line(self) -> None:
        detail = self.query_one(ActionDetail)
        if detail.action is not None:
            detail.set_grant_text(self.grant_text(detail.action))

    def on_audit_verified(self, message: AuditVerified) -> None:
        self._update_topbar()  # the chain badge in the top bar follows the pane's at once
        self._chain_changed(message.ok, message.problem)

    def on_audit_unreadable(self, message) -> None:
        self._update_topbar()
        self._chain_changed(False, f"the trail cannot be read: {message.error}")

    def _chain_changed(self, ok: bool, problem: str | None) -> None:
        """A toast (and the bell) when the chain turns broken, whatever the terminal's width."""
        was, self._chain_state = self._chain_state, ok
        if ok or was is False:
            return
        self._chain_problem = problem
        self.say(f"{problem or 'the chain does not verify'}\nv verifies again; opsgate audit verify has the details.",
                 title="Audit trail: CHAIN BROKEN", severity="error", timeout=60)
        self.app.bell()

    # -- filtering ---------------------------------------------------------------------------------

    @property
    def action_filter(self) -> ActionFilter:
        return ActionFilter.parse(self.query_text, risk=self.risk, tag=self.tag)

    def _apply_filter(self) -> None:
        flt = self.action_filter
        actions = filter_actions(self.config, flt)
        table = self.query_one(ActionTable)
        table.show_actions(actions)
        state = Text.assemble(("showing ", "dim"), f"{len(actions)}/{len(catalog_entries(self.config))}",
                              (" · ", "dim"), flt.describe(), ("   f risk · g tag", "dim"))
        self.query_one("#filter-state", Static).update(state)
        self._detail_later()

    # -- the detail pane follows the cursor once it rests ----------------------------------------------
    #
    # Rebuilding the pane (its target list and parameter form) on every step of a held arrow key is what
    # made the list lag: each move restarts a short wait, and the pane is filled when the cursor rests.
    # Whatever acts on the pane's action (run, dry run, a field of the form) first brings the pane to the
    # highlighted action (detail_current / _catch_up_then), so it never acts on another one.

    def _detail_later(self) -> None:
        if self._detail_timer is not None:
            self._detail_timer.stop()
        self._detail_timer = self.set_timer(DETAIL_SETTLE, self._detail_settled, name="detail-settle")

    async def _detail_settled(self) -> None:
        self._detail_timer = None
        if self._first_paint:
            await self._show_selected()

    def _selected_entry(self):
        action_id = self.query_one(ActionTable).selected_id
        return (self.config.actions.get(action_id) or self.config.runbooks.get(action_id)) if action_id else None

    def detail_current(self) -> bool:
        """Whether the detail pane shows the highlighted action (or nothing, when nothing is listed)."""
        return self.query_one(ActionDetail).action is self._selected_entry()

    async def _show_selected(self) -> None:
        if self._detail_timer is not None:  # shown now: the pending wait has nothing left to do
            self._detail_timer.stop()
            self._detail_timer = None
        detail = self.query_one(ActionDetail)
        await detail.show_action(self._selected_entry())
        self._update_grant_line()

    def _catch_up_then(self, act) -> bool:
        """If the detail pane lags behind the cursor, show the highlighted action first and then ``act()``
        (True: deferred); False when the pane is current and the caller can go on."""
        if self.detail_current():
            return False

        async def catch_up() -> None:
            await self._show_selected()
            if self.detail_current():
                act()
            else:  # the cursor moved again meanwhile: the operator sees what is highlighted now
                self.say("The list moved: press again to act on the action shown.", severity="warning")

        self.call_later(catch_up)
        return True

    def on_descendant_focus(self, event) -> None:
        # Into the form from the list before the pane followed the cursor: the highlighted action's form.
        detail = self.query_one(ActionDetail)
        if event.widget is not detail and detail in event.widget.ancestors and not self.detail_current():
            self.call_later(self._show_selected)

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.query_text = event.value
        self._apply_filter()

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        # Enter applies the filter and goes to the list; it never runs anything by itself.
        event.stop()
        self.query_text = event.value
        self._apply_filter()
        self.set_focus(self.query_one(ActionTable))

    def on_data_table_row_highlighted(self, event) -> None:
        self._detail_later()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        in_field = isinstance(self.focused, Input)
        if action == "focus_filter" and in_field:
            return False  # "/" typed into a field (the filter, a parameter) is a character, not the binding
        if action in GLOBAL_ACTIONS and in_field and not self._run_live:
            return False  # a character in the field (Textual already leaves printable keys to a focused Input)
        if action == "cancel_run":
            return self._run_live  # shown (and first in the footer) only while a run is live
        if action == "run":
            return not self._run_live
        if action == "leave_field":
            return self.focused is not None and self.focused is not self.query_one(ActionTable)
        if action == "approvals":
            return self.ctx.config.gate is not None
        return True

    def action_focus_filter(self) -> None:
        # set_focus now, not focus() (deferred): "/fail" typed in one burst lands in the filter.
        self.set_focus(self.query_one("#filter", Input))

    def action_leave_field(self) -> None:
        """Escape: back to the action list from a field, the target list, the output or a button (the filter
        and the values typed stay; ctrl+u clears a field)."""
        self.set_focus(self.query_one(ActionTable))

    def set_risk(self, risk: str | None) -> None:
        self.risk = risk
        self._apply_filter()

    def set_tag(self, tag: str | None) -> None:
        self.tag = tag
        self._apply_filter()

    def action_cycle_risk(self) -> None:
        order = [None, *RISKS]
        self.set_risk(order[(order.index(self.risk) + 1) % len(order)])

    def all_tags(self) -> list[str]:
        return sorted({tag for t in self.config.targets.values() for tag in t.tags})

    def action_cycle_tag(self) -> None:
        order = [None, *self.all_tags()]
        self.set_tag(order[(order.index(self.tag) + 1) % len(order)] if self.tag in order else None)

    def select_action(self, action_id: str) -> None:
        """Show ``action_id`` (clearing filters that hide it)."""
        if action_id not in [a.id for a in self.query_one(ActionTable).actions]:
            self.risk = self.tag = None
            self.query_one("#filter", Input).value = ""
            self.query_text = ""
            self._apply_filter()
        table = self.query_one(ActionTable)
        ids = [a.id for a in table.actions]
        if action_id in ids:
            table.move_cursor(row=ids.index(action_id), animate=False)
            table.focus()

    # -- running -----------------------------------------------------------------------------------

    def on_action_table_chosen(self, message: ActionTable.Chosen) -> None:
        self.action_run()

    def on_action_detail_submitted(self, message: ActionDetail.Submitted) -> None:
        self.action_run()

    def _plan_runbook(self, runbook_id: str, params: dict):
        """The runbook's steps rendered with ``params`` (the detail pane's preview; nothing is audited)."""
        from opsgate.console.run import RunRequest

        return self.ctx.pipeline.plan(RunRequest(runbook_id, (), dict(params), self.ctx.operator))

    def _request(self):
        from opsgate.console.run import RunRequest

        detail = self.query_one(ActionDetail)
        draft = detail.draft
        if draft is None:
            return None
        targets = () if draft.is_runbook else tuple(draft.targets)  # a runbook's steps name their targets
        return RunRequest(draft.action.id, targets, dict(draft.request_params()), self.ctx.operator, draft.reason)

    def action_run(self) -> None:
        if self.running:
            self.say("A run is in progress: x cancels it.", severity="warning")
            return
        if self._catch_up_then(self.action_run):
            return
        request = self._request()
        if request is None:
            self.say("No action selected.", severity="warning")
            return
        draft = self.query_one(ActionDetail).draft
        problems = draft.problems() if draft else []
        if problems:
            detail = self.query_one(ActionDetail)
            hint = " Type it in the highlighted field, then press enter." if detail.focus_first_problem() else ""
            self.say("; ".join(problems) + hint, title="Not ready to run", severity="error")
            return
        try:
            plan = self.ctx.pipeline.plan(request)
        except OpsgateError as e:
            self.say(str(e), title="Not ready to run", severity="error")
            return
        if self._risk_of(plan) == "low":
            self._start(plan)
            return
        # Medium risk and above: the whole plan and one key, as the CLI's "Run? [y/N]" (step-up comes after).
        from opsgate.screens.confirm import RunConfirmModal
        from opsgate.screens.frontend import plan_summary

        def answered(yes: bool | None) -> None:
            if yes and not self.running:
                self._start(plan)
            elif not yes:
                self.say("Not run.", title=self._name_of(plan))

        self.app.push_screen(RunConfirmModal(plan_summary(plan)), callback=answered)

    @staticmethod
    def _risk_of(plan) -> str:
        return plan.runbook.risk if hasattr(plan, "runbook") else plan.action.risk

    @staticmethod
    def _name_of(plan) -> str:
        return plan.runbook.id if hasattr(plan, "runbook") else plan.action.id

    def _start(self, plan: "Plan | RunbookPlan") -> None:
        self.running = True
        self.plan = plan
        self.query_one("#bottom").remove_class("no-run")
        # Out of the field the run was started from: x, q, h, ? are the console's keys now, not characters.
        if isinstance(self.focused, Input) or self.focused is None:
            self.set_focus(self.query_one(ActionTable))
        self._follow_focus = self.focused
        self.run_worker(self._prepare_and_execute(plan), exclusive=True, group="prepare")

    async def _prepare_and_execute(self, plan: "Plan | RunbookPlan") -> None:
        from opsgate.console.run import RunbookPlan

        output = self.query_one(OutputPanel)
        waiting = "waiting for step-up" if plan.requirement.needs_stepup else "pending"
        if isinstance(plan, RunbookPlan):
            steps = [StepView(sp.step.index, sp.step.title, sp.step.kind, sp.plan.target_names if sp.plan else (),
                              sp.plan.command.redacted if sp.plan else None, sp.step.pause) for sp in plan.steps]
            await output.start_runbook(f"runbook {plan.runbook.id} · run {plan.run_id} · {len(steps)} steps", steps)
            if plan.requirement.needs_stepup:
                output.headline += " · waiting for step-up"
                output.tick()
        else:
            headline = f"{plan.action.id} · run {plan.run_id} · {len(plan.targets)} target" + (
                "s" if len(plan.targets) != 1 else "")
            await output.start_run(headline, list(plan.target_names))
            for name in plan.target_names:
                output.set_status(name, waiting, outcome="pending")
        if self.focused is None or self.focused is getattr(self, "_follow_focus", None):
            output.focus_run()  # the operator watches the output; Escape goes back to the list
        from opsgate.screens.frontend import TuiFrontend

        demo = self.ctx.demo
        frontend = TuiFrontend(
            self.app, self, plan, output.buffer, clock=self.ctx.clock,
            touch_timeout=self.ctx.touch_timeout,
            demo_touch=demo.touch if demo is not None else None,
            otp_hint=demo.otp_hint if demo is not None else None,
        )
        self._frontend = frontend
        self._run_worker = self._execute(plan, frontend)

    @work(thread=True, exclusive=True, group="run", exit_on_error=False)
    def _execute(self, plan: "Plan | RunbookPlan", frontend: TuiFrontend) -> None:
        from opsgate.console.errors import StepUpDenied

        try:
            report = self.ctx.pipeline.execute(plan, frontend)
        except StepUpDenied as e:
            self.post_message(RunFinished(plan, None, str(e), denied=True))
            return
        except OpsgateError as e:
            self.post_message(RunFinished(plan, None, str(e)))
            return
        except Exception as e:  # a bug must not leave the console stuck in "running"
            self.post_message(RunFinished(plan, None, f"{type(e).__name__}: {e}"))
            return
        self.post_message(RunFinished(plan, report))

    def _is_current(self, run_id: str) -> bool:
        return self.plan is not None and run_id == self.plan.run_id

    def on_run_started(self, message: RunStarted) -> None:
        if not self._is_current(message.run_id):
            return
        output = self.query_one(OutputPanel)
        if output.steps:
            output.headline = output.headline.removesuffix(" · waiting for step-up")
        recorded = message.executing.split(".")[0]  # a runbook step's id is RUN.N
        if recorded and recorded != self.plan.run_id:  # gate mode: the gate's trail names the run, say that id
            output.headline = output.headline.replace(f"run {self.plan.run_id}", f"run {recorded}", 1)
            output.tick()
        for key in message.keys or list(output.statuses):
            output.set_status(key, "running", outcome="running")
        self.query_one(AuditPane).poke()

    def on_target_done(self, message: TargetDone) -> None:
        if not self._is_current(message.run_id):
            return
        result = message.result
        key = message.key or result.target
        output = self.query_one(OutputPanel)
        output.flush()
        word = status_word(result.outcome, result.exit_code)
        output.set_status(key, word, outcome=result.outcome)
        if result.error:
            try:
                output.log_for(key).write_line(f"── {escape_line(result.error)}")
            except Exception:
                pass
        self.query_one(AuditPane).poke()

    def on_step_changed(self, message: StepChanged) -> None:
        if not self._is_current(message.run_id):
            return
        output = self.query_one(OutputPanel)
        output.flush()
        output.set_step_status(message.step, message.status, message.detail)
        if message.status in ("running", "waiting"):
            output.select_step(message.step)  # follow the run; the operator can look back with the step list
        if message.status != "waiting" and self.pause is not None and self.pause.step == message.step:
            self._hide_pause()
        self.query_one(AuditPane).poke()

    # -- runbook pauses: the worker waits until the operator answers ------------------------------

    async def on_pause_asked(self, message: PauseAsked) -> None:
        if not self._is_current(message.run_id) or message.answer.done():
            return
        bar = self.query_one("#pause-bar", Horizontal)
        if not bar.children:  # the first pause of this console: its parts, not composed at start-up
            await bar.mount_all([Static(id="pause-text"),
                                 Button("Continue", variant="warning", id="pause-continue", compact=True),
                                 Button("Stop", variant="error", id="pause-stop", compact=True)])
            if not self._is_current(message.run_id) or message.answer.done() or not self.is_attached:
                return
        self.pause = message
        text = Text.assemble((" ⏸ waiting for you ", "bold #2e2300 on #f2c94c"), "  ", (message.text, "bold"))
        text.append(f"  (step {message.step}" + (", skippable)" if message.skippable else ")"), style="dim")
        self.query_one("#pause-text", Static).update(text)
        self.add_class("paused")
        self.set_focus(self.query_one("#pause-continue", Button))
        self.say(f"Runbook paused at step {message.step}: {message.text}", title="Waiting for you")
        self.app.bell()

    def answer_pause(self, go_on: bool) -> None:
        """Continue (True) or Stop (False) the paused runbook."""
        pause = self.pause
        if pause is None:
            return
        self._hide_pause()
        if self._frontend is not None:
            self._frontend.answer_pause(go_on)
        if not pause.answer.done():
            pause.answer.set_result(go_on)

    def _hide_pause(self) -> None:
        self.pause = None
        self.remove_class("paused")
        if self.focused is None or self.focused.id in ("pause-continue", "pause-stop"):
            self.query_one(ActionTable).focus()

    @on(Button.Pressed, "#pause-continue")
    def _pause_continue(self) -> None:
        self.answer_pause(True)

    @on(Button.Pressed, "#pause-stop")
    def _pause_stop(self) -> None:
        self.answer_pause(False)

    def on_run_finished(self, message: RunFinished) -> None:
        from opsgate.console.run import RunbookPlan

        self.running = False
        if self.pause is not None:
            self._hide_pause()
        output = self.query_one(OutputPanel)
        plan = message.plan
        is_runbook = isinstance(plan, RunbookPlan)
        name = (plan.runbook.id if is_runbook else plan.action.id) if plan else "?"
        if message.report is not None and is_runbook:
            report = message.report
            self.last_report = report
            steps = output.step_statuses
            ok = sum(1 for v in steps.values() if v == "ok")
            stopped = next((i for i, v in steps.items() if v in ("failed", "cancelled")), None)
            if report.cancelled:
                word = "cancelled" + (f" at step {stopped}" if stopped else "")
            elif report.exit_code == 0:
                word = "ok"
            else:
                word = "failed" + (f" at step {stopped}" if stopped else "")
            output.finish_run(f"{name} · {word} · {ok}/{len(steps)} steps ok · exit {report.exit_code}"
                              f" · runbook run {report.run_id}")
            self.say(f"{name}: {word} ({ok}/{len(steps)} steps ok)",
                     severity="information" if report.exit_code == 0 else "warning")
        elif message.report is not None:
            report = message.report
            self.last_report = report
            ok = sum(1 for r in report.results if r.outcome == "ok")
            word = "cancelled" if report.cancelled else ("ok" if report.exit_code == 0 else "finished with failures")
            output.finish_run(f"{name} · run {report.run_id} · {word} · {ok}/{len(report.results)} ok"
                              f" · exit {report.exit_code}")
            severity = "information" if report.exit_code == 0 else "warning"
            self.say(f"{name}: {word} ({ok}/{len(report.results)} ok)", severity=severity)
        else:
            what = "denied" if message.denied else "not run"
            for key in list(output.statuses):
                output.set_status(key, what, outcome="denied")
            for index, status in output.step_statuses.items():
                if status in ("pending", "running", "waiting"):
                    output.set_step_status(index, "not run")
            output.finish_run(f"{name} · {what}: {escape_line(message.error)}")
            self.say(message.error or what, title=f"{name}: {what}", severity="error")
        self.query_one(AuditPane).poke()
        self._tick()

    def action_cancel_run(self) -> None:
        if not self.running:
            self.say("Nothing is running.")
            return
        self.ctx.pipeline.cancel()
        if self.pause is not None:
            self.answer_pause(False)  # a runbook waiting at a pause stops there
        self.query_one(OutputPanel).headline += "  ·  cancelling…"
        self.say("Cancelling: stopping the remote processes; no further step starts.")

    def action_dry_run(self) -> None:
        """Record in the trail that the operator previewed this exact command; nothing runs."""
        from opsgate.console.run import RunbookPlan

        if self._catch_up_then(self.action_dry_run):
            return
        request = self._request()
        if request is None:
            return
        try:
            plan = self.ctx.pipeline.plan(request)
            self.ctx.pipeline.dry_run(plan)
        except OpsgateError as e:
            self.say(str(e), title="Dry run", severity="error")
            return
        if isinstance(plan, RunbookPlan):
            self.say(plan.describe_steps(), title=f"Dry run of {plan.runbook.id} (audited)")
        else:
            self.say(f"$ {plan.command.redacted}\non {', '.join(plan.target_names)}", title="Dry run (audited)")
        self.query_one(AuditPane).poke()

    # -- step up now, verify -----------------------------------------------------------------------

    def action_step_up(self) -> None:
        if self.running:
            self.say("A run is in progress.", severity="warning")
            return
        if self.ctx.stepup is None:
            self.say("Step-up is not configured.", severity="error")
            return
        self._step_up_now()

    @work(thread=True, exclusive=True, group="run", exit_on_error=False)
    def _step_up_now(self) -> None:
        from opsgate.screens.frontend import TuiFrontend

        demo = self.ctx.demo
        frontend = self._frontend = TuiFrontend(
            self.app, self, None, None, clock=self.ctx.clock, touch_timeout=self.ctx.touch_timeout,
            demo_touch=demo.touch if demo is not None else None,
            otp_hint=demo.otp_hint if demo is not None else None)
        try:
            grant = self.ctx.pipeline.step_up_now(self.ctx.operator, None, frontend)
        except OpsgateError as e:
            self.post_message(StepUpFinished(None, str(e)))
            return
        except Exception as e:
            self.post_message(StepUpFinished(None, f"{type(e).__name__}: {e}"))
            return
        self.post_message(StepUpFinished(grant.factor, None))

    def on_step_up_finished(self, message: StepUpFinished) -> None:
        if message.error:
            self.say(message.error, title="Step-up", severity="error")
        else:
            self.say(f"Stepped up with {FACTOR_WORDS[message.factor]}.", title="Step-up")
        self.query_one(AuditPane).poke()
        self._tick()

    def action_verify_audit(self) -> None:
        self._verify()

    @work(thread=True, exclusive=True, group="verify", exit_on_error=False)
    def _verify(self) -> None:
        """The whole chain and every recording, now (polls after this verify only the new records)."""
        report = self.query_one(AuditPane).verify_full()
        if report is None:
            return
        problem = report.problems[0] if report.problems else None
        self.app.call_from_thread(
            self.notify,
            f"{report.count} records, chain intact" + (f", {report.recordings_checked} recordings checked"
                                                       if report.recordings_checked else "")
            if report.ok else f"BROKEN: {escape_line(problem)}",
            title="Audit verify", severity="information" if report.ok else "error", markup=False)

    # -- misc --------------------------------------------------------------------------------------

    def say(self, message: str, *, title: str = "", severity: str = "information",
            timeout: float | None = None) -> None:
        """A notification; never markup, every control character shown as text (errors quote config
        patterns and remote text)."""
        self.notify(escape_text(message), title=escape_line(title), severity=severity, markup=False,
                    **({"timeout": timeout} if timeout is not None else {}))

    def action_approvals(self) -> None:
        if self.ctx.config.gate is None:
            self.say("Approvals live at a gate: this config has no [gate].", severity="warning")
            return
        from opsgate.screens.approvals import ApprovalsScreen

        self.app.push_screen(ApprovalsScreen(self))

    @work(thread=True, exclusive=True, group="approvals-poll", exit_on_error=False)
    def _poll_approvals(self) -> None:
        """How many requests of other operators wait at the gate (the top bar's badge)."""
        from opsgate.console.gate.client import GateClient
        from opsgate.console.gate.protocol import GateError

        try:
            client = GateClient(self.ctx.config.gate, timeout=self.ctx.config.settings.connect_timeout)
            try:
                me = client.hello["operator"]
                count = sum(1 for p in client.request("approvals", {}) if p["requester"] != me)
            finally:
                client.close()
        except GateError:
            return
        self.app.call_from_thread(setattr, self, "waiting_approvals", count)

    def action_history(self) -> None:
        from opsgate.screens.history import HistoryScreen

        self.app.push_screen(HistoryScreen(self.ctx.audit.path, self.ctx.state_dir, operator=self.ctx.operator,
                                           clock=self.ctx.clock))

    def action_help(self) -> None:
        from opsgate.screens.help import HelpScreen

        self.app.push_screen(HelpScreen())

    def action_quit(self) -> None:
        """Quit; while a run is live, ask first (quitting cancels it)."""
        if not self.running:
            self.app.exit()
            return
        from opsgate.screens.confirm import QuitModal

        if isinstance(self.app.screen, QuitModal):
            return

        def answered(yes: bool | None) -> None:
            if yes:
                if self.running:
                    self.ctx.pipeline.cancel()
                self.app.exit()

        self.app.push_screen(QuitModal(self.query_one(OutputPanel).headline or "a run"), callback=answered)

    def action_toggle_audit(self) -> None:
        """o: on a narrow terminal, the audit pane over the output (o again hides it); on a wide one, into and
        out of the audit pane."""
        pane = self.query_one(AuditPane)
        log = self.query_one("#audit-log")
        if self.size.width >= 100:
            if log.has_focus:
                self.query_one(ActionTable).focus()
            else:
                log.focus()
            return
        bottom = self.query_one("#bottom")
        bottom.toggle_class("show-audit")
        self.refresh_bindings()
        if bottom.has_class("show-audit"):
            # Hidden, the pane could not follow new records: show the newest now.
            self.call_after_refresh(pane.follow_newest)
        elif log.has_focus:
            self.query_one(ActionTable).focus()

    def action_toggle_bottom(self) -> None:  # the old name (palette, muscle memory)
        self.action_toggle_audit()

    def badge_for(self, risk: str) -> Text:
        return risk_badge(risk)
