"""Start-up and the detail pane: the first frame does not wait for the detail pane, the pane follows the
cursor once it rests (one rebuild for a burst of moves, not one per step), and whatever acts on the pane's
action first brings the pane to the highlighted one."""

from __future__ import annotations

import pytest

import opsgate.screens.console_screen as console_screen
from opsgate.screens.audit_pane import AuditPane
from opsgate.screens.catalog import ActionTable
from opsgate.screens.console_screen import ConsoleScreen
from opsgate.screens.detail import ActionDetail

from tests.helpers.tui_fixtures import SIZE, app_for, trail_records, wait_for


@pytest.fixture
def rebuilds(monkeypatch) -> list[str]:
    """The actions the detail pane was filled for, in order."""
    shown: list[str] = []
    original = ActionDetail._show_action

    async def counting(self, action):
        shown.append(action.id if action is not None else None)
        await original(self, action)

    monkeypatch.setattr(ActionDetail, "_show_action", counting)
    return shown


def highlighted(screen: ConsoleScreen) -> str:
    return screen.query_one(ActionTable).selected_id


async def test_the_first_frame_does_not_wait_for_the_detail_pane(demo, monkeypatch):
    at_first_paint = []
    original = ConsoleScreen.on_mount

    def on_mount(self):
        original(self)
        # As benchmarks/startup.py measures it: the first refresh after the screen mounted.
        self.call_after_refresh(lambda: at_first_paint.append(
            (self.query_one(ActionDetail).action, len(self.query_one(ActionDetail).children))))

    monkeypatch.setattr(ConsoleScreen, "on_mount", on_mount)
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.main_screen
        await wait_for(pilot, lambda: at_first_paint, what="the first paint")
        assert at_first_paint == [(None, 0)]  # painted before the pane was built or filled
        await wait_for(pilot, screen.detail_current, what="the detail pane")
        assert screen.query_one(ActionDetail).action.id == highlighted(screen) == "tail-log"
        assert "tail-log" in str(screen.query_one("#detail-title").render())


async def test_a_burst_of_moves_rebuilds_the_pane_once_it_rests(demo, rebuilds, monkeypatch):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.main_screen
        await wait_for(pilot, screen.detail_current, what="the detail pane")
        assert rebuilds == ["tail-log"]
        monkeypatch.setattr(console_screen, "DETAIL_SETTLE", 3600.0)  # the cursor never rests in this part
        await pilot.press("down", "down", "down", "down", "up")
        assert highlighted(screen) == "flood-output"
        assert rebuilds == ["tail-log"]  # nothing rebuilt while the cursor moves
        assert not screen.detail_current()
        monkeypatch.setattr(console_screen, "DETAIL_SETTLE", 0.01)
        await pilot.press("up")  # the last move of the burst: its wait is short
        await wait_for(pilot, screen.detail_current, what="the pane on the highlighted action")
        assert rebuilds == ["tail-log", "watch-traffic"]  # one rebuild, for where the cursor rested
        assert screen.query_one(ActionDetail).action.id == highlighted(screen) == "watch-traffic"


async def test_acting_while_the_pane_lags_acts_on_the_highlighted_action(demo, rebuilds, monkeypatch):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.main_screen
        await wait_for(pilot, screen.detail_current, what="the detail pane")
        monkeypatch.setattr(console_screen, "DETAIL_SETTLE", 3600.0)
        await pilot.press("down", "down", "up")
        assert highlighted(screen) == "disk-usage" and screen.query_one(ActionDetail).action.id == "tail-log"
        await pilot.press("d")  # a dry run, from the list, before the pane followed the cursor
        pane = screen.query_one(AuditPane)
        await wait_for(pilot, lambda: any(r.get("event") == "action.dry_run" for r in pane.last_records),
                       what="the dry run record")
        dry = [r for r in trail_records(demo) if r["event"] == "action.dry_run"]
        assert [r["action"] for r in dry] == ["disk-usage"]
        assert screen.query_one(ActionDetail).action.id == "disk-usage" and screen.detail_current()
        assert rebuilds == ["tail-log", "disk-usage"]


async def test_moving_into_the_form_brings_the_pane_to_the_highlighted_action(demo, monkeypatch):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.main_screen
        await wait_for(pilot, screen.detail_current, what="the detail pane")
        monkeypatch.setattr(console_screen, "DETAIL_SETTLE", 3600.0)
        await pilot.press("down")
        assert not screen.detail_current()
        screen.query_one("#targets").focus()  # the previous action's target list
        await wait_for(pilot, screen.detail_current, what="the pane on the highlighted action")
        assert screen.query_one(ActionDetail).action.id == "disk-usage"


@pytest.mark.parametrize("theme", ["opsgate-dark", "opsgate-light"])
async def test_the_theme_set_at_start_is_the_one_textual_would_set(demo, theme):
    """OpsgateApp puts its theme in place without Textual's watcher (which parses every stylesheet again once
    the app runs); the app must look exactly as if the watcher had run."""
    from opsgate.screens.app import OpsgateApp

    async def looks(app) -> tuple:
        async with app.run_test(size=SIZE) as pilot:
            screen = app.main_screen
            await wait_for(pilot, screen.detail_current, what="the detail pane")
            styles = {w.id: (w.styles.background, w.styles.color, w.styles.border) for w in screen.query("*") if w.id}
            return (app.theme, set(app.classes), dict(app.stylesheet._variables), styles,
                    screen.query_one("#topbar").render_line(0).text)

    quiet = app_for(demo, theme=theme)
    assert quiet.theme == theme
    watched = app_for(demo, theme=theme)
    OpsgateApp.theme._set(watched, "textual-dark")  # another theme, then ours through the watcher
    watched.theme = theme
    assert await looks(quiet) == await looks(watched)
