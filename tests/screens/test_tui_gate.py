"""The console in gate mode, as ``opsgate demo`` runs it: a gate in-process with a throwaway CA, demo targets
that accept only that CA's certificates and run only their force-command. (The boundary itself, with separate
OS users and a real sshd, is tested in tests/gate/.)"""

from __future__ import annotations

import pytest

from opsgate.console.audit.trail import AuditTrail
from opsgate.screens.catalog import ActionTable
from opsgate.screens.console_screen import ConsoleScreen
from opsgate.screens.history import HistoryScreen, RunDetailScreen
from opsgate.screens.stepup_modals import ConfirmModal, TouchModal
from tests.helpers.tui_fixtures import SIZE, start_demo, wait_for


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
        await pilot.press("enter")
        await wait_for(pilot, lambda: not screen.running and screen.last_report is not None, what="the run")
        report = screen.last_report
        assert report.exit_code == 0 and {r.outcome for r in report.results} == {"ok"}
        assert {c["target"] for c in report.certificates} == {"web-1", "web-2", "db-primary", "db-replica"}
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
        await wait_for(pilot, lambda: isinstance(app.screen, TouchModal), what="the touch modal")
        await pilot.press("t")  # the demo key, reached by the gate through the console (CTAP relay)
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
        await pilot.press(*"db-primary", "enter")
        await wait_for(pilot, lambda: not screen.running and screen.last_report is not None, timeout=30, what="the run")
        assert screen.last_report.exit_code == 0
    success = next(r for r in gate_records(gate_demo) if r["event"] == "stepup.success")
    assert success["factor"] == "fido2" and success.get("digest")  # the gate verified the assertion
