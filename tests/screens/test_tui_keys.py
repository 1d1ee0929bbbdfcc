"""The console at 3 a.m.: keys that work wherever the focus is, the one-key run confirmation, quitting during a
run, the demo's OTP hint that stays right, live output that keeps following through a resize, and the
chain's state that a narrow terminal never hides."""

from __future__ import annotations

import time

from textual import events
from textual.widgets import Input, Select

from opsgate.screens.audit_pane import AuditPane
from opsgate.screens.catalog import ActionTable
from opsgate.screens.confirm import QuitModal, RunConfirmModal
from opsgate.screens.console_screen import ConsoleScreen
from opsgate.screens.detail import ActionDetail
from opsgate.screens.help import HelpScreen
from opsgate.screens.history import HistoryScreen
from opsgate.screens.output import FollowLog, OutputPanel
from opsgate.screens.stepup_modals import OtpModal

from tests.helpers.tui_fixtures import (SIZE, app_for, choose, confirm_run, current_code, start_demo, trail_events,
                                        wait_for)


async def select(pilot, action_id: str) -> ConsoleScreen:
    screen = pilot.app.main_screen
    screen.select_action(action_id)
    await wait_for(pilot, lambda: screen.query_one(ActionDetail).action is not None
                   and screen.query_one(ActionDetail).action.id == action_id
                   and screen.query("#params > *"), what=f"{action_id} selected")
    return screen


def log_of(screen, target: str) -> FollowLog:
    return screen.query_one(OutputPanel).log_for(target)


async def streaming(pilot, screen, target: str = "web-1") -> None:
    output = screen.query_one(OutputPanel)
    await wait_for(pilot, lambda: screen.running and output.statuses.get(target) == "running"
                   and log_of(screen, target).line_count > 0, what="streaming output")


# -- 1. keys wherever the focus is --------------------------------------------------------------------------


async def test_enter_in_a_field_starts_the_run_and_x_cancels_it_not_typed(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        screen = await select(pilot, "watch-traffic")
        field = screen.query_one("#param-seconds", Input)
        field.focus()
        field.value = ""
        await pilot.press(*"120", "enter")  # enter in the field: run
        await streaming(pilot, screen)
        assert not isinstance(screen.focused, Input)  # out of the field: the output has the focus
        assert isinstance(screen.focused, FollowLog)
        await pilot.press("x")
        await wait_for(pilot, lambda: not screen.running and screen.last_report is not None, what="the cancel")
        assert screen.last_report.cancelled
        assert field.value == "120"  # nothing typed into the field
    assert "action.cancelled" in trail_events(demo)


async def test_in_a_field_keys_are_characters_while_no_run_is_live(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.main_screen
        await pilot.press("slash")
        field = screen.query_one("#filter", Input)
        assert screen.focused is field
        await pilot.press("x", "q", "h", "question_mark", "v", "o", "r")
        assert field.value == "xqh?vor"
        assert app.screen is screen and app.is_running and not screen.running
        await pilot.press("escape")  # back to the list
        assert screen.focused is screen.query_one(ActionTable)


async def test_escape_from_any_field_returns_to_the_action_list(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        screen = await select(pilot, "maintenance-mode")
        table = screen.query_one(ActionTable)
        for selector in ("#param-token", "#param-mode", "#targets"):
            screen.query_one(selector).focus()
            await pilot.pause()
            await pilot.press("escape")
            assert screen.focused is table, selector
        # The footer says how to get out of a field, and hides what would be typed into it.
        screen.query_one("#param-token").focus()
        await pilot.pause()
        keys = {b.binding.key for b in screen.active_bindings.values()}
        assert "escape" in keys and "q" not in keys and "h" not in keys


async def test_while_a_run_is_live_the_global_keys_work_in_a_field_too(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        screen = await select(pilot, "watch-traffic")
        screen.query_one(ActionTable).focus()
        await pilot.press("r")
        await streaming(pilot, screen)
        field = screen.query_one("#param-seconds", Input)
        before = field.value
        field.focus()  # the operator clicked back into the form during the run
        await pilot.pause()
        await pilot.press("h")
        history = await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen, what="history")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, what="back from history")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, what="back from help")
        assert screen.focused is field
        await pilot.press("x")
        await wait_for(pilot, lambda: not screen.running, what="the cancel")
        assert field.value == before and history is not None
        assert screen.last_report.cancelled


async def test_q_during_a_live_run_asks_before_quitting(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        screen = await select(pilot, "watch-traffic")
        screen.query_one(ActionTable).focus()
        await pilot.press("r")
        await streaming(pilot, screen)
        await pilot.press("q")
        modal = await wait_for(pilot, lambda: isinstance(app.screen, QuitModal) and app.screen, what="the question")
        assert "watch-traffic" in str(modal.query_one(".modal-summary").render())
        await pilot.press("enter")  # enter stays (the focused button is Stay)
        await wait_for(pilot, lambda: app.screen is screen, what="back to the console")
        assert screen.running and app.is_running
        await pilot.press("ctrl+q")  # the app's quit key asks too
        await wait_for(pilot, lambda: isinstance(app.screen, QuitModal), what="the question again")
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.is_running, what="the app to exit")
    # the run's thread records the cancellation as it stops the remote command, after the app has gone
    deadline = time.monotonic() + 30
    while "action.cancelled" not in trail_events(demo):
        assert time.monotonic() < deadline, "the cancellation was never recorded"
        time.sleep(0.05)


async def test_medium_run_asks_one_key_with_the_plan_and_escape_runs_nothing(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        screen = await select(pilot, "restart-service")
        field = screen.query_one("#param-service", Select)
        assert field.value is Select.NULL  # no default: nothing picked for the operator
        await choose(pilot, screen, "service", "haproxy")
        await pilot.press("r")
        modal = await wait_for(pilot, lambda: isinstance(app.screen, RunConfirmModal) and app.screen,
                               what="the one-key confirmation")
        shown = str(modal.query_one(".modal-summary").render())
        assert "./bin/service restart haproxy" in shown and "2: web-1, web-2" in shown
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, what="back")
        assert not screen.running and screen.last_report is None
        await pilot.press("r")
        await confirm_run(pilot, "enter")  # enter runs too
        await wait_for(pilot, lambda: isinstance(app.screen, OtpModal), what="the step-up after it")
        await pilot.press(*current_code(demo), "enter")
        await wait_for(pilot, lambda: not screen.running and screen.last_report is not None, what="the run")
        assert screen.last_report.exit_code == 0
    events = trail_events(demo)
    assert events.count("action.start") == 1 and "action.denied" not in events  # the escape was not a run


async def test_choices_are_a_select_with_the_default_picked(tmp_path):
    from opsgate.console.catalog.loader import parse_config

    demo = start_demo(tmp_path)
    try:
        text = demo.config_text().replace('description = "on or off"\nchoices = ["on", "off"]',
                                          'description = "on or off"\nchoices = ["on", "off"]\ndefault = "off"', 1)
        assert 'default = "off"' in text
        app = app_for(demo, config=parse_config(text.encode(), "demo.toml"))
        async with app.run_test(size=SIZE) as pilot:
            screen = await select(pilot, "maintenance-mode")
            field = screen.query_one("#param-mode", Select)
            assert field.value == "off"
            assert screen.query_one(ActionDetail).draft.params["mode"] == "off"
            field.focus()
            await pilot.press("enter")  # the list opens; typing jumps to a choice
            await pilot.press("o", "n")
            await pilot.press("enter")
            await wait_for(pilot, lambda: field.value == "on", what="the typed choice")
            assert screen.query_one(ActionDetail).draft.params["mode"] == "on"
    finally:
        demo.close()


# -- 2. the demo's OTP hint stays right ------------------------------------------------------------------------


async def test_the_demo_otp_hint_in_the_modal_follows_the_clock(tmp_path):
    now = [1_767_225_600.0 + 5]
    demo = start_demo(tmp_path, clock=lambda: now[0])
    try:
        app = app_for(demo, clock=lambda: now[0])
        async with app.run_test(size=SIZE) as pilot:
            screen = await select(pilot, "rotate-cert")
            screen.query_one(ActionTable).focus()
            await pilot.press("r")
            await confirm_run(pilot)
            modal = await wait_for(pilot, lambda: isinstance(app.screen, OtpModal) and app.screen, what="the OTP modal")
            first = current_code(demo)
            hint = modal.query_one("#otp-hint")
            assert f"the code now is {first}" in str(hint.render())
            now[0] += 60  # two steps later: the first code is wrong now
            second = current_code(demo)
            assert second != first
            await wait_for(pilot, lambda: f"the code now is {second}" in str(hint.render()), what="the new code")
            await pilot.press(*second, "enter")
            await wait_for(pilot, lambda: not screen.running and screen.last_report is not None, what="the run")
            assert screen.last_report.exit_code == 0
    finally:
        demo.close()


# -- 4. live output keeps following through a resize ------------------------------------------------------------


ENDLESS_FLOOD = """
[actions.endless-flood]
title = "Flood until cancelled"
risk = "low"
targets = ["web-1"]
command = "while :; do seq 1 3000; sleep 0.05; done"
timeout = "5m"
"""


async def test_output_keeps_following_through_resizes_during_a_flood(demo, monkeypatch):
    """Tens of thousands of lines a second (more than a flush shows) until cancelled; resized three times."""
    from opsgate.console.catalog.loader import parse_config

    writes = [0]
    real = FollowLog.write_lines

    def counted(self, lines, scroll_end=None):
        writes[0] += 1
        return real(self, lines, scroll_end)

    monkeypatch.setattr(FollowLog, "write_lines", counted)
    app = app_for(demo, config=parse_config((demo.config_text() + ENDLESS_FLOOD).encode(), "demo.toml"))
    async with app.run_test(size=SIZE) as pilot:
        screen = await select(pilot, "endless-flood")
        # Not pilot.press: it waits until every queue is idle, which under a flood may take long.
        screen.query_one(ActionTable).focus()
        app.post_message(events.Key("r", "r"))
        await streaming(pilot, screen)
        log = log_of(screen, "web-1")
        await wait_for(pilot, lambda: log.line_count > 200 and log.is_vertical_scroll_end, what="a full pane")
        for size in ((80, 24), (100, 30), SIZE):
            assert screen.running
            before = log.size
            await pilot.resize_terminal(*size)
            await wait_for(pilot, lambda: log.size != before, what="the new layout")
            seen = writes[0]
            await wait_for(pilot, lambda: writes[0] > seen + 2, what=f"lines written after the resize to {size}")
            await wait_for(pilot, lambda: log.is_vertical_scroll_end,
                           what=f"the view at the newest line after resizing to {size}")
        app.post_message(events.Key("x", "x"))
        await wait_for(pilot, lambda: not screen.running, timeout=60, what="the cancel")
        assert screen.last_report.cancelled
        # Scrolling up stops following; End follows again.
        log.focus()
        await pilot.press("pageup")
        top = log.scroll_y
        log.write_lines(["one more line"])
        await pilot.pause()
        assert log.scroll_y == top and not log.is_vertical_scroll_end
        await pilot.press("end")
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        log.write_lines(["and another"])
        await wait_for(pilot, lambda: log.is_vertical_scroll_end, timeout=5, what="following again")


# -- 3. the chain's state on a narrow terminal -----------------------------------------------------------------


async def test_a_broken_chain_shows_at_80_columns_and_toasts(demo):
    app = app_for(demo)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.main_screen
        pane = screen.query_one(AuditPane)
        app.audit.append("note", operator="demo", text="one")
        app.audit.append("note", operator="demo", text="two")
        await wait_for(pilot, lambda: pane.records_seen >= 2 and pane.verified is True)
        topbar = screen.query_one("#topbar")
        assert "audit ✓" in str(topbar.render())
        data = app.audit.path.read_text().replace('"text":"one"', '"text":"0ne"')
        app.audit.path.write_text(data)
        await pilot.press("v")
        await wait_for(pilot, lambda: pane.verified is False, what="the broken chain")
        line = str(topbar.render())
        assert "✗ CHAIN BROKEN" in line and len(line) <= 80
        toasts = [n for n in app._notifications if "CHAIN BROKEN" in n.title]
        assert toasts and toasts[0].severity == "error"
        # Whatever else the top line would say (approvals waiting, forwarding), the chain's state stays.
        screen.waiting_approvals = 3
        screen._update_topbar()
        assert "✗ CHAIN BROKEN" in str(topbar.render())


# -- 5. a grant made with `opsgate auth` --------------------------------------------------------------------------


async def test_a_grant_from_opsgate_auth_is_used_by_the_tui_and_never_written(demo, tmp_path):
    from opsgate.console.paths import GRANTS_FILE
    from tests.helpers.cli import run_opsgate

    config = tmp_path / "demo.toml"
    config.write_text(demo.config_text())
    auth = run_opsgate("auth", "--factor", "otp", config=config, state=demo.state_dir,
                       stdin=current_code(demo) + "\n")
    assert auth.returncode == 0, auth.stderr
    grants = (demo.state_dir / GRANTS_FILE).read_bytes()
    app = app_for(demo, stepup=None)  # the TUI's own step-up, from the state dir, as `opsgate` starts it
    async with app.run_test(size=SIZE) as pilot:
        screen = await select(pilot, "restart-service")
        detail = screen.query_one(ActionDetail)
        await wait_for(pilot, lambda: "current grant (OTP)" in detail.grant_text, what="the grant in the detail")
        assert "grant OTP" in str(screen.query_one("#topbar").render())
        await choose(pilot, screen, "service", "nginx")
        await pilot.press("r")
        await confirm_run(pilot)
        await wait_for(pilot, lambda: not screen.running and screen.last_report is not None, what="the run")
        assert screen.last_report.exit_code == 0
        assert screen._frontend.asked == []  # no code asked: the kept grant covered it
    assert (demo.state_dir / GRANTS_FILE).read_bytes() == grants  # read, never written
    starts = [r for r in trail_records_of(demo) if r["event"] == "action.start"]
    assert starts[-1]["grant"]["factor"] == "otp" and starts[-1]["grant"]["fresh"] is False


def trail_records_of(demo) -> list[dict]:
    from tests.helpers.tui_fixtures import trail_records

    return trail_records(demo)
