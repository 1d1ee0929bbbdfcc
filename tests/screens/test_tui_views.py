"""What the screens say: the history at 80 columns, a runbook dry run's steps, the run detail's labels, the action
list's Home and End, the audit pane following the newest record (and as an overlay at 80x24)."""

from __future__ import annotations

from textual.app import App
from textual.widgets import DataTable

from opsgate.console.audit.history import RunSummary
from opsgate.console.paths import AUDIT_FILE
from opsgate.screens.audit_pane import AuditPane
from opsgate.screens.catalog import ActionTable
from opsgate.screens.detail import ActionDetail
from opsgate.screens.history import HistoryScreen, RunDetailScreen

from tests.helpers.history_fixtures import NOW_TS, reviewer_state
from tests.helpers.tui_fixtures import app_for, wait_for


class HistoryApp(App):
    def __init__(self, state):
        super().__init__()
        self.state = state

    def on_mount(self) -> None:
        self.push_screen(HistoryScreen(self.state / AUDIT_FILE, self.state, operator="alice", clock=lambda: NOW_TS))


async def test_history_at_80_columns_shows_the_outcome(tmp_path, monkeypatch):
    state = reviewer_state(tmp_path, monkeypatch)
    app = HistoryApp(state)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen)
        await wait_for(pilot, lambda: screen.loaded and screen.report is not None)
        table = screen.query_one(DataTable)
        labels = [str(c.label) for c in table.columns.values()]
        assert labels[:3] == ["time (UTC)", "action / runbook", "outcome"]
        right_edge = sum(c.width for c in list(table.columns.values())[:3])
        assert right_edge <= 80
        outcomes = [str(table.get_row_at(i)[2]) for i in range(table.row_count)]
        assert any("failed" in o for o in outcomes) and any("denied" in o for o in outcomes)
        await pilot.resize_terminal(120, 40)  # wide again: every column in its usual place
        await wait_for(pilot, lambda: not screen.narrow, what="the wide columns")
        assert [str(c.label) for c in table.columns.values()][:2] == ["time (UTC)", "operator"]
        assert table.row_count == len(screen.shown)


async def test_a_runbook_dry_run_counts_its_steps_in_the_history(demo):
    app = app_for(demo)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.main_screen
        screen.select_action("failover")
        await wait_for(pilot, lambda: screen.query_one(ActionDetail).action is not None
                       and screen.query_one(ActionDetail).action.id == "failover")
        screen.query_one(ActionTable).focus()
        await pilot.press("d")
        await wait_for(pilot, lambda: any(r.get("event") == "action.dry_run" for r in
                                          screen.query_one(AuditPane).last_records), what="the dry run record")
        await pilot.press("h")
        history = await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen, what="history")
        await wait_for(pilot, lambda: history.loaded and history.shown, what="the runs")
        run = history.shown[0]
        assert run.outcome == "dry-run" and len(run.steps) == 6
        name = str(history.query_one(DataTable).get_row_at(0)[2])
        assert "failover (6 steps)" in name or "failover (6 step" in name


def test_run_detail_labels_never_run_into_their_values(tmp_path):
    summary = RunSummary(run="r1", name="db-failover", kind="action", operator="alice", started="2026-11-28T06:30:00Z",
                         ended="2026-11-28T06:30:05Z", fido2_digest="9a2b" + "0" * 60, factor="fido2", fresh=True,
                         records=[{"seq": 1}])
    text = RunDetailScreen(summary, tmp_path)._summary_text().plain
    line = next(line for line in text.splitlines() if line.startswith("FIDO2 digest"))
    assert line.startswith("FIDO2 digest 9a2b")
    assert all(len(line) < 13 or line[11] == " " or line[12] == " " for line in text.splitlines())


async def test_home_and_end_move_through_the_action_list_not_sideways(demo):
    app = app_for(demo)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.main_screen.query_one(ActionTable)
        table.focus()
        await pilot.press("end")
        assert table.cursor_row == table.row_count - 1 and table.scroll_x == 0
        await pilot.press("home")
        assert table.cursor_row == 0 and table.scroll_x == 0
        assert table.max_scroll_x == 0  # the columns fit the pane: nothing to scroll sideways


async def test_the_audit_pane_follows_the_newest_record(demo):
    app = app_for(demo)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.main_screen
        pane = screen.query_one(AuditPane)
        log = pane.query_one("#audit-log")
        await wait_for(pilot, lambda: pane.verified is not None, what="the first poll")

        async def add(n: int, text: str) -> None:
            seen = pane.records_seen
            for i in range(n):
                app.audit.append("note", operator="demo", text=f"{text}-{i}")
            await wait_for(pilot, lambda: pane.records_seen >= seen + n, what="the new records")
            await wait_for(pilot, lambda: log.scroll_y == log.max_scroll_y > 0, timeout=5, what="the newest in view")

        await add(30, "first")
        # The operator looked at an older record, then went back to the list: new records show again.
        log.focus()
        await pilot.pause()
        log.highlighted = 2
        await pilot.pause()
        screen.query_one(ActionTable).focus()
        await pilot.pause()
        await add(3, "later")
        assert log.highlighted is None
        # In the pane, looking back: it stays where the operator is.
        log.focus()
        await pilot.pause()
        log.highlighted = 2
        await pilot.pause()
        top = log.scroll_y
        seen = pane.records_seen
        app.audit.append("note", operator="demo", text="while-looking")
        await wait_for(pilot, lambda: pane.records_seen > seen, what="the record")
        await pilot.pause(0.2)
        assert log.highlighted == 2 and log.scroll_y == top


async def test_at_80x24_the_audit_pane_is_an_overlay_toggled_by_o(demo):
    app = app_for(demo)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.main_screen
        pane = screen.query_one(AuditPane)
        output = screen.query_one("#output")
        assert not pane.display and "o" in {b.binding.key for b in screen.active_bindings.values()}
        await pilot.press("o")
        assert pane.display and output.display  # over the output, which stays laid out beneath it
        await wait_for(pilot, lambda: pane.region.width >= 78 and pane.region.y == output.region.y,
                       what="the overlay over the output")
        await pilot.press("o")
        assert not pane.display


async def test_showing_an_action_draws_its_preview_at_most_twice_not_once_per_echoed_target_event(demo, monkeypatch):
    """The target list's own select()/deselect() calls come back as SelectedChanged events; each used to
    redraw the preview (and lay the screen out again): 70 times during one benchmark run."""
    drawn = []
    real = ActionDetail._update_preview
    monkeypatch.setattr(ActionDetail, "_update_preview", lambda self: (drawn.append(self.draft), real(self)))
    app = app_for(demo)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.main_screen
        for action_id in ("tail-log", "restart-service"):
            drawn.clear()
            screen.select_action(action_id)
            detail = screen.query_one(ActionDetail)
            await wait_for(pilot, lambda: detail.action is not None and detail.action.id == action_id,
                           what=f"{action_id} shown")
            await pilot.pause()
            await pilot.pause()
            assert len(drawn) <= 2, len(drawn)  # shown, then the form's first Changed event (was 8)
            preview = str(screen.query_one("#preview").render())
            assert ("$ tail" if action_id == "tail-log" else "✗ not ready: param service") in preview


async def test_the_top_bar_and_audit_badge_repaint_without_laying_the_screen_out(demo):
    """The top bar is redrawn every second (grant countdowns, forward backlog) and the badge after each verify;
    both are one line high, so a new text never needs a layout of the whole screen (40-60 ms of CPU)."""
    app = app_for(demo)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.main_screen
        pane = screen.query_one(AuditPane)
        await wait_for(pilot, lambda: pane.verified is not None, what="the first verify")
        asked = []  # the layout flag of every refresh the two widgets ask for
        for widget in (screen.query_one("#topbar"), pane.query_one("#audit-badge")):
            real = widget.refresh
            widget.refresh = lambda *a, _real=real, **k: (asked.append(k.get("layout", False)), _real(*a, **k))[1]
        for _ in range(3):
            screen._update_topbar()
            pane.on_audit_verified(type("M", (), {"ok": True, "count": 7, "problem": None})())
            await pilot.pause()
        assert "7 records" in str(pane.query_one("#audit-badge").render())
        assert asked and not any(asked)
