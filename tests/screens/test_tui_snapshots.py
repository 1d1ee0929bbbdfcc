"""Snapshots (pytest-textual-snapshot) of the console at 120x40: main screen, OTP modal, FIDO2 modal,
a finished run, a finished runbook run. Deterministic: a fixed clock and TOTP secret, fixed run ids and
audit times, animations off, cursor blink off (the audit pane's compact lines show no volatile fields)."""

from __future__ import annotations

import pytest
from textual.widgets import Input

import opsgate.console.audit.trail as audit_trail
import opsgate.console.run as run_module
from opsgate.console.catalog.loader import parse_config
from opsgate.screens.audit_pane import AuditPane
from opsgate.screens.output import OutputPanel
from opsgate.screens.stepup_modals import ConfirmModal, OtpModal, TouchModal

from tests.helpers.tui_fixtures import FIXED_SECRET, FIXED_TIME, SIZE, app_for, choose, confirm_run, start_demo, wait_for



@pytest.fixture
def frozen(monkeypatch, tmp_path):
    monkeypatch.setattr(run_module, "new_run_id", lambda: "20260101T000000Z-5a7e11")
    monkeypatch.setattr(audit_trail, "utc_now", lambda: "2026-01-01T00:00:00.000000Z")
    demo = start_demo(tmp_path, clock=lambda: FIXED_TIME, totp_secret=FIXED_SECRET)
    # One target at a time: the audit records of a run come in the same order every time.
    text = demo.config_text().replace('operator = "demo"', 'operator = "demo"\nmax_parallel = 1', 1)
    config = parse_config(text.encode(), "demo.toml")
    app = app_for(demo, config=config, clock=lambda: FIXED_TIME, monotonic=lambda: 0.0)
    app.animation_level = "none"  # the LoadingIndicator draws one still frame
    try:
        yield demo, app
    finally:
        demo.close()


async def settle(pilot) -> None:
    """No blinking cursor, no toasts, and the audit badge in place."""
    app = pilot.app
    pane = app.main_screen.query_one(AuditPane)
    await wait_for(pilot, lambda: pane.verified is not None, what="the audit badge")
    # The detail pane follows the cursor once it rests (and is first filled after the first paint).
    await wait_for(pilot, app.main_screen.detail_current, what="the detail pane on the highlighted action")
    for field in app.screen.query(Input):
        field.cursor_blink = False
    app.clear_notifications()
    await pilot.pause(0.2)


def test_main_screen(snap_compare, frozen):
    demo, app = frozen

    async def run_before(pilot):
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_otp_modal(snap_compare, frozen):
    demo, app = frozen

    async def run_before(pilot):
        screen = app.main_screen
        screen.select_action("restart-service")
        await wait_for(pilot, lambda: screen.query("#param-service"))
        await choose(pilot, screen, "service", "nginx")
        await wait_for(pilot, lambda: "restart nginx" in str(screen.query_one("#preview").render()))
        await pilot.press("r")
        await confirm_run(pilot)
        await wait_for(pilot, lambda: isinstance(app.screen, OtpModal), what="the OTP modal")
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_fido2_modal(snap_compare, frozen):
    demo, app = frozen

    async def run_before(pilot):
        app.main_screen.select_action("db-failover")
        await pilot.pause()
        await pilot.press("r")
        await confirm_run(pilot)
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
        await pilot.press(*"db-primary", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TouchModal), what="the touch modal")
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
    demo.touch()  # let the worker thread finish


def test_finished_run(snap_compare, frozen):
    demo, app = frozen

    async def run_before(pilot):
        screen = app.main_screen
        screen.select_action("tail-log")
        await wait_for(pilot, lambda: screen.query("#param-lines"))
        field = screen.query_one("#param-lines")
        field.focus()
        await pilot.press("backspace", "backspace", "5")
        await wait_for(pilot, lambda: "tail -n 5 " in str(screen.query_one("#preview").render()), what="the preview")
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.last_report is not None and not screen.running, what="the run")
        pane = screen.query_one(AuditPane)
        await wait_for(pilot, lambda: any(r["event"] == "action.end" for r in pane.last_records))
        await wait_for(pilot, lambda: pane.verified is True and "7 records" in str(pane.query_one("#audit-badge").render()))
        screen.query_one("#actions").focus()
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_finished_runbook(snap_compare, frozen):
    demo, app = frozen  # the pipeline checks a grant's age with the step-up's own (frozen) clock

    async def run_before(pilot):
        screen = app.main_screen
        await _runbook_to_the_touch(pilot, app)
        await pilot.press("t")
        await wait_for(pilot, lambda: screen.pause is not None, timeout=60, what="the pause")
        await pilot.click("#pause-continue")
        await wait_for(pilot, lambda: screen.last_report is not None and not screen.running, timeout=60,
                       what="the runbook")
        output = screen.query_one(OutputPanel)
        assert output.step_statuses == {i: "ok" for i in range(1, 7)}
        pane = screen.query_one(AuditPane)
        await wait_for(pilot, lambda: any(r["event"] == "runbook.end" for r in pane.last_records))
        await wait_for(pilot, lambda: pane.verified is True and f"{pane.last_seq} records"
                       in str(pane.query_one("#audit-badge").render()))
        screen.query_one("#actions").focus()
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


# -- 80x24 and 120x40: the main screen at 80x24, the step-up modal with a runbook's whole plan at both sizes ------

SMALL = (80, 24)


def test_main_screen_80x24(snap_compare, frozen):
    demo, app = frozen

    async def run_before(pilot):
        await settle(pilot)

    assert snap_compare(app, terminal_size=SMALL, run_before=run_before)


async def _runbook_touch_modal(pilot, app) -> None:
    await _runbook_to_the_touch(pilot, app)
    await settle(pilot)


async def _runbook_to_the_touch(pilot, app) -> None:
    """The failover runbook, run and confirmed, up to its security-key touch."""
    screen = app.main_screen
    screen.select_action("failover")
    await wait_for(pilot, lambda: getattr(screen.query_one("#detail").action, "id", None) == "failover",
                   what="the runbook in the detail pane")
    await pilot.press("r")
    await confirm_run(pilot)
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
    await pilot.press(*"failover", "enter")
    await wait_for(pilot, lambda: isinstance(app.screen, TouchModal), what="the touch modal")


@pytest.mark.parametrize("size", [SMALL, SIZE], ids=["80x24", "120x40"])
def test_runbook_plan_in_the_step_up_modal(snap_compare, frozen, size):
    """The whole plan, counted ("6 steps"): every step on screen at 80x24 too."""
    demo, app = frozen

    async def run_before(pilot):
        await _runbook_touch_modal(pilot, app)
        shown = str(app.screen.query_one(".modal-summary").render())
        assert "6 steps" in shown and "6. db-primary, db-replica: ./bin/pg status" in shown

    assert snap_compare(app, terminal_size=size, run_before=run_before)
    demo.touch()  # let the worker thread go on (the app has exited: the run is cancelled)
