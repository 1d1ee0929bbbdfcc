"""The console in gate mode, as ``opsgate demo`` runs it: a gate in-process with a throwaway CA, demo targets
that accept only that CA's certificates and run only their force-command. (The boundary itself, with separate
OS users and a real sshd, is tested in tests/gate/.)"""

from __future__ import annotations

import pytest

from opsgate.console.audit.trail import AuditTrail
from opsgate.screens.catalog import ActionTable
from opsgate.screens.console_screen import ConsoleScreen
from opsgate.screens.history import HistoryScreen, RunDetailScreen
from opsgate.screens.output import OutputPanel
from opsgate.screens.stepup_modals import ConfirmModal, TouchModal
from tests.helpers.tui_fixtures import SIZE, choose, confirm_run, start_demo, wait_for


@pytest.fixture
def gate_demo(tmp_path):
    demo = start_demo(tmp_path, gate=True)
    try:
        yield demo
    finally:
        demo.close()


def gate_app(demo):
    from opsgate.screens.app import make_app

    return make_app(demo.config, demo.state_dir, operator=demo.operator, pipeline=demo.parts.pipeline,
                    audit=demo.parts.audit, demo=demo, theme="opsgate-dark")


def gate_records(demo) -> list[dict]:
    return AuditTrail(demo.gate_dir / "audit.jsonl").records()


async def test_a_run_through_the_in_process_gate_shows_its_certificates(gate_demo):
    app = gate_app(gate_demo)
    async with app.run_test(size=SIZE) as pilot:
        screen = next(s for s in app.screen_stack if isinstance(s, ConsoleScreen))
        screen.select_action("disk-usage")
        screen.query_one(ActionTable).focus()
        output = screen.query_one(OutputPanel)
        shown: list[str] = []  # the status line each time it is drawn while the run is live
        draw = output._refresh_status
        output._refresh_status = lambda: (shown.append(output.headline) if output.running else None, draw())
        await pilot.press("enter")
        await wait_for(pilot, lambda: not screen.running and screen.last_report is not None, what="the run")
        report = screen.last_report
        assert report.exit_code == 0 and {r.outcome for r in report.results} == {"ok"}
        assert {c["target"] for c in report.certificates} == {"web-1", "web-2", "db-primary", "db-replica"}
        # while it runs, the console names the run by the id the gate's trail records it under
        assert f"run {report.run_id}" in shown[-1], shown
        events = [r["event"] for r in gate_records(gate_demo)]
        assert events.count("gate.certificate") == 4 and events[-1] == "action.end"
        await pilot.press("h")
        history = await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen, what="history")
        await wait_for(pilot, lambda: history.summaries, what="the runs")
        await pilot.press("enter")  # the newest run is the first row
        detail = await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen, what="detail")
        text = detail._summary_text().plain
        assert text.count("certificate") == 4 and f"key id {report.run_id} demo" in text and "valid" in text


async def test_a_critical_runbook_step_through_the_gate_relays_the_touch_to_the_key(gate_demo):
    app = gate_app(gate_demo)
    async with app.run_test(size=SIZE) as pilot:
        screen = next(s for s in app.screen_stack if isinstance(s, ConsoleScreen))
        screen.select_action("db-failover")
        await pilot.pause()
        await pilot.press("r")
        await confirm_run(pilot)
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
        await pilot.press(*"db-primary", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TouchModal), what="the touch modal")
        await pilot.press("t")  # the demo key, reached by the gate through the console (CTAP relay)
        await wait_for(pilot, lambda: not screen.running and screen.last_report is not None, timeout=30, what="the run")
        assert screen.last_report.exit_code == 0
    success = next(r for r in gate_records(gate_demo) if r["event"] == "stepup.success")
    assert success["factor"] == "fido2" and success.get("digest")  # the gate verified the assertion


async def test_the_approvals_panel_lists_a_waiting_request_and_the_gate_refuses_self_approval(tmp_path):

    from opsgate.console.catalog.policy import Requirement
    from opsgate.screens.approvals import ApprovalsScreen
    from opsgate.screens.stepup_modals import OtpModal
    from tests.helpers.tui_fixtures import current_code

    demo = start_demo(tmp_path, gate=True)
    try:
        # the gate's policy asks one approval for medium (the service shares the config object in the demo)
        policy = dict(demo.config.policy, medium=Requirement("otp", 900, approvals=1))
        object.__setattr__(demo.config, "policy", policy)
        app = gate_app(demo)
        async with app.run_test(size=SIZE) as pilot:
            screen = next(s for s in app.screen_stack if isinstance(s, ConsoleScreen))
            screen.select_action("restart-service")
            await wait_for(pilot, lambda: screen.query("#param-service"), what="the param form")
            await choose(pilot, screen, "service", "nginx")
            await pilot.press("r")
            await confirm_run(pilot)
            otp = await wait_for(pilot, lambda: isinstance(app.screen, OtpModal) and app.screen, what="the OTP modal")
            await wait_for(pilot, lambda: app.focused is not None and app.focused.screen is otp, what="the code field")
            await pilot.press(*current_code(demo), "enter")
            await wait_for(pilot, lambda: any(r["event"] == "approval.pending" for r in gate_records(demo)),
                           what="the request waiting at the gate")
            app.screen.action_approvals() if isinstance(app.screen, ConsoleScreen) else None
            panel = await wait_for(pilot, lambda: isinstance(app.screen, ApprovalsScreen) and app.screen.loaded
                                   and app.screen, what="the approvals panel")
            assert len(panel.pending) == 1 and panel.pending[0]["requester"] == "demo"
            await pilot.press("enter")
            await wait_for(pilot, lambda: panel.last_answer, what="the gate's answer")
            assert "cannot approve their own request" in panel.last_answer
            await pilot.press("escape")
            screen.action_cancel_run()
            await wait_for(pilot, lambda: not screen.running, timeout=30, what="the run to end")
        assert otp is not None
        denied = [r for r in gate_records(demo) if r["event"] == "approval.denied"]
        assert denied and denied[0]["operator"] == "demo"
    finally:
        demo.close()
