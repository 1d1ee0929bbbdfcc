"""Pilot tests of the console against the embedded demo SSH server (and one against the real sshd)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from textual import events

from opsgate.console.paths import AUDIT_FILE
from opsgate.console.catalog.loader import parse_config
from opsgate.screens.audit_pane import AuditPane
from opsgate.screens.catalog import ActionTable
from opsgate.screens.console_screen import ConsoleScreen
from opsgate.screens.detail import ActionDetail
from opsgate.screens.help import HelpScreen
from opsgate.screens.output import OutputPanel
from opsgate.screens.stepup_modals import ConfirmModal, OtpModal, TouchModal

from tests.helpers import ROOT
from tests.helpers.cli import clean_env, popen_opsgate
from tests.helpers.tui_fixtures import (SIZE, app_for, choose, confirm_run, current_code, trail_events,
                                        trail_records, wait_for, wrong_code)


def console(app) -> ConsoleScreen:
    return app.main_screen


def log_text(app, target: str) -> str:
    return "\n".join(console(app).query_one(OutputPanel).log_for(target).lines)


async def select(pilot, action_id: str) -> None:
    screen = console(pilot.app)
    screen.select_action(action_id)
    await wait_for(pilot, lambda: screen.query_one(ActionDetail).action is not None
                   and screen.query_one(ActionDetail).action.id == action_id, what=f"{action_id} selected")


async def type_param(pilot, name: str, value: str) -> None:
    field = console(pilot.app).query_one(f"#param-{name}")
    field.focus()
    field.value = ""
    await pilot.press(*value)


async def finished(pilot) -> OutputPanel:
    screen = console(pilot.app)
    await wait_for(pilot, lambda: not screen.running and screen.last_report is not None, what="the run to finish")
    return screen.query_one(OutputPanel)


async def test_low_action_runs_output_and_audit(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, "tail-log")
        console(app).query_one(ActionTable).focus()
        await pilot.press("enter")
        output = await finished(pilot)
        report = console(app).last_report
        assert report.exit_code == 0 and {r.outcome for r in report.results} == {"ok"}
        assert "web-1 INFO request" in log_text(app, "web-1")
        assert "db-replica" in log_text(app, "db-replica")
        assert output.statuses == {"web-1": "ok", "web-2": "ok", "db-primary": "ok", "db-replica": "ok"}
        pane = console(app).query_one(AuditPane)
        await wait_for(pilot, lambda: any(r["event"] == "action.end" for r in pane.last_records),
                       what="action.end in the audit pane")
        await wait_for(pilot, lambda: pane.verified is True, what="the chain badge")
    assert trail_events(demo)[-1] == "action.end"


async def test_medium_action_wrong_code_then_right_code(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, "restart-service")
        await choose(pilot, console(app), "service", "nginx")
        await pilot.press("r")  # r runs from the list of choices (enter opens it)
        await confirm_run(pilot)
        modal = await wait_for(pilot, lambda: isinstance(app.screen, OtpModal) and app.screen, what="the OTP modal")
        summary = str(modal.summary.renderable())
        assert "restart-service" in summary and "web-1, web-2" in summary
        assert "./bin/service restart nginx" in summary  # the operator approves what they see
        await pilot.press(*wrong_code(demo), "enter")
        retry = await wait_for(pilot, lambda: isinstance(app.screen, OtpModal) and app.screen is not modal
                               and app.screen, what="the OTP modal again")
        assert "wrong code" in retry.error and retry.attempts_left == 4
        status = str(retry.query_one("#otp-status").render())
        assert "wrong code, 4 attempts left" in status
        await pilot.press(*current_code(demo), "enter")
        await finished(pilot)
        assert console(app).last_report.exit_code == 0
        assert "nginx restarted on web-2" in log_text(app, "web-2")
    events = trail_events(demo)
    assert events.index("stepup.failure") < events.index("stepup.success") < events.index("action.start")
    # The grant now covers medium actions for 15 minutes: the detail pane says so.


async def test_grant_shown_in_detail_after_step_up(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, "maintenance-mode")
        await choose(pilot, console(app), "mode", "on")
        await type_param(pilot, "token", "s3cretTOKEN42")
        preview = str(console(app).query_one("#preview").render())
        assert "<secret>" in preview and "s3cretTOKEN42" not in preview
        await pilot.press("enter")
        modal = await confirm_run(pilot)
        assert "s3cretTOKEN42" not in str(modal.summary.renderable())
        await wait_for(pilot, lambda: isinstance(app.screen, OtpModal), what="the OTP modal")
        await pilot.press(*current_code(demo), "enter")
        await finished(pilot)
        await select(pilot, "restart-service")
        detail = console(app).query_one(ActionDetail)
        await wait_for(pilot, lambda: "valid for 1" in detail.grant_text, what="the grant line")
        assert "current grant (OTP) valid for 14:" in detail.grant_text or "valid for 15:00" in detail.grant_text
    records = trail_records(demo)
    start = next(r for r in records if r["event"] == "action.start")
    assert "s3cretTOKEN42" not in (demo.state_dir / AUDIT_FILE).read_text()
    assert start["params"]["token"] == "<secret>"
    # the token reached the (fake) tool on its stdin: every target accepted it
    assert {r["outcome"] for r in records if r["event"] == "action.target" and r["run"] == start["run"]} == {"ok"}


async def test_escape_in_modal_denies_and_runs_nothing(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, "rotate-cert")
        await pilot.press("r")
        await confirm_run(pilot)
        await wait_for(pilot, lambda: isinstance(app.screen, OtpModal), what="the OTP modal")
        await pilot.press("escape")
        screen = console(app)
        await wait_for(pilot, lambda: not screen.running, what="the denial")
        assert app.screen is screen
        output = screen.query_one(OutputPanel)
        assert set(output.statuses.values()) == {"denied"}
        assert "denied" in output.headline
    records = trail_records(demo)
    assert [r["event"] for r in records if r["event"].startswith("action.")] == ["action.denied"]
    denied = records[-1]
    assert denied["operator"] == "demo" and "cancelled by demo" in denied["reason"]
    assert not list((demo.hosts_dir / "web-1").glob("certs/*"))  # nothing ran


async def test_critical_action_security_key_and_typed_confirmation(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, "db-failover")
        await pilot.press("r")
        await confirm_run(pilot)
        # the typed confirmation first: nothing is asked of the key for a run not confirmed
        confirm = await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal) and app.screen,
                                 what="the confirmation modal")
        await pilot.press(*"db-prim", "enter")  # not the name yet: the modal stays, and says why
        assert app.screen is confirm
        assert "that is not 'db-primary'" in str(confirm.query_one("#confirm-status").render())
        await pilot.press(*"ary", "enter")
        touch = await wait_for(pilot, lambda: isinstance(app.screen, TouchModal) and app.screen,
                               what="the touch modal")
        assert touch.query_one("#touch-spinner")  # LoadingIndicator while waiting
        assert "./bin/failover --promote db-replica" in str(touch.summary.renderable())
        await pilot.press("t")  # DEMO software key: a key press is the touch
        await finished(pilot)
        assert console(app).last_report.exit_code == 0
        assert "db-replica is now primary" in log_text(app, "db-primary")
    events = trail_events(demo)
    assert "stepup.success" in events and events[-1] == "action.end"
    success = next(r for r in trail_records(demo) if r["event"] == "stepup.success")
    assert success.get("digest")  # the touch signed the request digest


async def test_touch_cancel_denies(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, "db-failover")
        await pilot.press("r")
        await confirm_run(pilot)
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
        await pilot.press(*"db-primary", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TouchModal), what="the touch modal")
        await pilot.click("#cancel")
        await wait_for(pilot, lambda: not console(app).running, what="the denial")
        assert app.screen is console(app)
    assert "action.denied" in trail_events(demo) and "action.start" not in trail_events(demo)


async def test_cancel_long_running_command(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, "watch-traffic")
        await pilot.press("r")
        screen = console(app)
        await wait_for(pilot, lambda: screen.running and screen.query_one(OutputPanel).statuses.get("web-1")
                       == "running" and "GET" in log_text(app, "web-1"), what="streaming output")
        started = time.monotonic()
        await pilot.press("x")
        output = await finished(pilot)
        assert time.monotonic() - started < 15
        assert screen.last_report.cancelled
        assert set(output.statuses.values()) == {"cancelled"}
    # The remote processes are gone, not only the local reader.
    deadline = time.monotonic() + 5
    while subprocess.run(["pgrep", "-f", "bin/traffic"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "bin/traffic still running after cancel"
        time.sleep(0.1)
    assert "action.cancelled" in trail_events(demo)


async def test_flood_of_output_keeps_keys_responsive(demo, monkeypatch):
    """Keys pressed while a flood streams are handled while it streams, not queued until it ends (how fast:
    benchmarks/ui.py)."""
    handled: list[tuple[float, bool]] = []  # when, and whether the run was still going
    real_set_risk = ConsoleScreen.set_risk

    def set_risk(self, risk):
        handled.append((time.monotonic(), self.running))
        real_set_risk(self, risk)

    monkeypatch.setattr(ConsoleScreen, "set_risk", set_risk)
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, "flood-output")  # 50 MiB by default
        # Not pilot.press: it also waits until every queue is idle, which under a flood is the end of the run.
        app.post_message(events.Key("r", "r"))
        screen = console(app)
        output = screen.query_one(OutputPanel)
        await wait_for(pilot, lambda: screen.running and output.statuses.get("web-1") == "running"
                       and output.log_for("web-1").line_count > 0, what="the flood to start")
        latencies = []
        while screen.running and len(latencies) < 5:
            before, sent = len(handled), time.monotonic()
            app.post_message(events.Key("f", "f"))
            await wait_for(pilot, lambda: len(handled) > before, timeout=60, what="the key to be handled")
            latencies.append(handled[-1][0] - sent)
        assert latencies, "the flood finished before a key could be pressed"
        # The first key was sent once the flood streamed; a UI that only gets to keys after it is handled too late.
        assert handled[0][1], f"the first key was handled only after the flood ended (seconds per key: {latencies})"
        await finished(pilot)
        assert screen.last_report.exit_code == 0
        log = output.log_for("web-1")
        assert 0 < log.line_count <= log.max_lines
    target = next(r for r in trail_records(demo) if r["event"] == "action.target")
    assert target["bytes_out"] == 50 * 1048576  # every byte reached the recording


async def test_filter_by_typing_risk_and_tag(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        screen = console(app)
        table = screen.query_one(ActionTable)
        await pilot.press("slash", *"db-fail")
        assert [a.id for a in table.actions] == ["db-failover"]
        await wait_for(pilot, lambda: screen.query_one(ActionDetail).action.id == "db-failover")
        await pilot.press("escape")
        assert screen.focused is table
        screen.query_one("#filter").value = ""
        await pilot.press("slash", *"risk:medium", "enter")
        assert [a.id for a in table.actions] == ["restart-service", "maintenance-mode"]
        screen.query_one("#filter").value = ""
        await pilot.pause()
        await pilot.press("f", "f", "f")  # all -> low -> medium -> high
        assert [a.id for a in table.actions] == ["rotate-cert"]
        await pilot.press("f", "f")  # -> critical -> all
        await pilot.press("g")  # first tag: db
        assert screen.tag == "db"
        assert "watch-traffic" not in [a.id for a in table.actions]
        assert "db-failover" in [a.id for a in table.actions]


async def test_param_form_validates_as_you_type(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, "tail-log")
        await type_param(pilot, "lines", "5000")
        note = console(app).query_one("#param-note-lines")
        assert note.has_class("invalid") and "above the maximum 1000" in str(note.render())
        assert "not ready" in str(console(app).query_one("#preview").render())
        await pilot.press("enter")
        assert not console(app).running and console(app).last_report is None
        await type_param(pilot, "lines", "3")
        assert not note.has_class("invalid")
        assert "tail -n 3 log/app.log" in str(console(app).query_one("#preview").render())
    assert "action.start" not in trail_events(demo)


async def test_target_picker_tags_and_single_target(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, "tail-log")
        targets = console(app).query_one("#targets")
        detail = console(app).query_one(ActionDetail)
        values = [targets.get_option_at_index(i).value for i in range(targets.option_count)]
        assert values[:2] == ["tag:db", "tag:web"]  # tags first, then the targets
        targets.focus()
        targets.highlighted = values.index("tag:web")
        await pilot.press("space")  # untick tag:web: both web targets go
        await wait_for(pilot, lambda: detail.draft.targets == ("db-primary", "db-replica"), what="tag:web dropped")
        await pilot.press("r")
        await finished(pilot)
        assert [r.target for r in console(app).last_report.results] == ["db-primary", "db-replica"]


async def test_record_from_another_process_shows_up(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        pane = console(app).query_one(AuditPane)
        await wait_for(pilot, lambda: pane.verified is not None, what="the first poll")
        code = ("import sys; from pathlib import Path; from opsgate.console.audit.trail import AuditTrail; "
                "AuditTrail(Path(sys.argv[1])).append('note.external', operator='bob', run=None, text='hello')")
        subprocess.run([sys.executable, "-c", code, str(demo.state_dir / AUDIT_FILE)], check=True)
        await wait_for(pilot, lambda: any(r["event"] == "note.external" for r in pane.last_records),
                       what="the other process's record")
        await wait_for(pilot, lambda: pane.verified is True, what="the chain badge")


async def test_broken_chain_badge(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        pane = console(app).query_one(AuditPane)
        trail = app.audit
        trail.append("note", operator="demo", text="one")
        trail.append("note", operator="demo", text="two")
        await wait_for(pilot, lambda: pane.records_seen >= 2 and pane.verified is True)
        data = trail.path.read_text().replace('"text":"one"', '"text":"0ne"')
        trail.path.write_text(data)
        await pilot.press("v")
        await wait_for(pilot, lambda: pane.verified is False, what="the broken badge")
        assert pane.has_class("broken")


async def test_help_palette_and_step_up_now(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConsoleScreen), what="back")
        # Every binding explains itself (Footer, help, palette).
        for binding in ConsoleScreen.BINDINGS:
            assert binding.description
        await pilot.press("ctrl+p")
        await pilot.press(*"step up now")
        await wait_for(pilot, lambda: app.screen.query("CommandList Option") or True)
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, (OtpModal, TouchModal)), what="the step-up modal")
        if isinstance(app.screen, TouchModal):
            await pilot.press("t")
        else:
            await pilot.press(*current_code(demo), "enter")
        await wait_for(pilot, lambda: app.stepup.grant_for("demo") is not None, what="a grant")
    assert "stepup.success" in trail_events(demo)


async def test_small_terminal_80x24(demo):
    app = app_for(demo)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = console(app)
        assert screen.has_class("-narrow") and screen.has_class("-short")
        assert not screen.query_one(ActionTable).show_titles
        await pilot.press("enter")
        await finished(pilot)
        assert screen.last_report.exit_code == 0
        assert not screen.query_one(AuditPane).display
        await pilot.press("o")
        assert screen.query_one(AuditPane).display


async def test_real_sshd_target(sshd, tmp_path):
    from opsgate.console.catalog.loader import load_config
    from opsgate.screens.app import make_app
    from tests.helpers.run_fixtures import write_config

    config = load_config(write_config(tmp_path, sshd))
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    app = make_app(config, state, operator="alice", theme="opsgate-dark")
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, "hello")
        await pilot.press("r")
        await finished(pilot)
        assert console(app).last_report.exit_code == 0
        assert "hello from" in log_text(app, "t1")
        assert "[err] warn" in log_text(app, "t1")


# -- runbooks ---------------------------------------------------------------------------------------


def step_history(monkeypatch) -> dict[int, list[str]]:
    """Every status each runbook step shows, in order (after the initial "pending")."""
    seen: dict[int, list[str]] = {}
    real = OutputPanel.set_step_status

    def record(self, index, status, detail=""):
        seen.setdefault(index, []).append(status)
        real(self, index, status, detail)

    monkeypatch.setattr(OutputPanel, "set_step_status", record)
    return seen


async def failover_until_pause(pilot, demo) -> OutputPanel:
    """Run the demo's failover runbook through its one step-up up to the pause at step 5."""
    app = pilot.app
    screen = console(app)
    await select(pilot, "failover")
    steps_text = str(screen.query_one("#detail-steps").render())
    assert "./bin/pg repoint db-replica" in steps_text and "pause" in steps_text
    assert not screen.query_one("#targets-box").display  # a runbook's steps name their own targets
    await pilot.press("r")
    modal = await confirm_run(pilot)
    assert "6 steps" in str(modal.summary.renderable())  # the whole plan, counted
    await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the confirmation")
    await pilot.press(*"failover", "enter")  # the runbook's name, not a list of hosts
    touch = await wait_for(pilot, lambda: isinstance(app.screen, TouchModal) and app.screen, what="the touch modal")
    output = screen.query_one(OutputPanel)
    assert set(output.step_statuses.values()) == {"pending"} and len(output.step_statuses) == 6
    shown = str(touch.summary.renderable())  # the whole plan, one step a line
    for line in ("1. db-replica: ./bin/pg lag", "2. db-primary: ./bin/pg fence", "3. db-replica: ./bin/pg promote",
                 "4. db-primary, db-replica: ./bin/pg repoint db-replica", "5. pause: Check the dashboards",
                 "6. db-primary, db-replica: ./bin/pg status"):
        assert any(line in row for row in shown.splitlines()), line
    await pilot.press("t")
    await wait_for(pilot, lambda: screen.pause is not None, timeout=60, what="the pause")
    assert output.step_statuses == {1: "ok", 2: "ok", 3: "ok", 4: "ok", 5: "waiting", 6: "pending"}
    assert screen.query_one("#pause-bar").display
    assert "waiting for you" in str(screen.query_one("#pause-text").render())
    assert "Check the dashboards" in str(screen.query_one("#pause-text").render())
    assert "db-replica is now primary" in log_text(app, "3:db-replica")  # each step keeps its own output
    assert "fenced (read-only)" in log_text(app, "2:db-primary")
    return output


async def test_runbook_runs_with_one_step_up_and_a_pause(demo, monkeypatch):
    history = step_history(monkeypatch)
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        output = await failover_until_pause(pilot, demo)
        await pilot.click("#pause-continue")
        await finished(pilot)
        screen = console(app)
        assert output.step_statuses == {i: "ok" for i in range(1, 7)}
        assert screen.last_report.exit_code == 0
        assert screen._frontend.asked == ["confirm", "fido2"]  # one step-up for the whole plan
        for index in (1, 2, 3, 4, 6):
            assert history[index] == ["running", "ok"], (index, history[index])
        assert history[5] == ["waiting", "ok"]
        assert "ok · 6/6 steps ok · exit 0" in output.headline
        assert "vip=db-replica" in log_text(app, "6:db-primary")
        output.select_step(3)
        assert output.selected_step == 3
        assert not screen.query_one("#pause-bar").display
    events = trail_events(demo)
    assert events.count("runbook.start") == 1 and events.count("runbook.step") == 6
    assert events[-1] == "runbook.end" and events.count("stepup.success") == 1
    steps = [r for r in trail_records(demo) if r["event"] == "runbook.step"]
    assert [(r["step"], r["status"]) for r in steps] == [(i, "ok") for i in range(1, 7)]


async def test_runbook_stopped_at_the_pause(demo, monkeypatch):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        output = await failover_until_pause(pilot, demo)
        await pilot.click("#pause-stop")
        await finished(pilot)
        assert output.step_statuses == {1: "ok", 2: "ok", 3: "ok", 4: "ok", 5: "cancelled", 6: "cancelled"}
        assert "cancelled at step 5" in output.headline and "exit 130" in output.headline
        status_line = str(console(app).query_one("#run-status").render())
        assert "cancelled at step 5" in status_line
    records = trail_records(demo)
    assert not [r for r in records if r["event"] == "action.start" and r.get("step") == 6]  # never started
    end = records[-1]
    assert end["event"] == "runbook.end" and end["exit_code"] == 130 and end["steps"]["6"] == "cancelled"


RUNBOOK_EXTRA = """
[runbooks.watch-then-report]
title = "Follow the traffic, then report"
steps = [
  { title = "Follow traffic", command = "./bin/traffic 60", targets = ["web-1"], risk = "low" },
  { title = "Report", command = "touch report-ran", targets = ["web-1"], risk = "low" },
]
"""


async def test_cancel_stops_the_running_step_and_no_further_step_starts(demo):
    config = parse_config((demo.config_text() + RUNBOOK_EXTRA).encode(), "demo.toml")
    app = app_for(demo, config=config)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, "watch-then-report")
        await pilot.press("r")
        screen = console(app)
        output = screen.query_one(OutputPanel)
        await wait_for(pilot, lambda: output.step_statuses.get(1) == "running" and "GET" in log_text(app, "1:web-1"),
                       what="step 1 streaming")
        await pilot.press("x")
        await finished(pilot)
        assert output.step_statuses == {1: "cancelled", 2: "cancelled"}
        assert screen.last_report.cancelled
    assert not (demo.hosts_dir / "web-1" / "report-ran").exists()
    assert not [r for r in trail_records(demo) if r["event"] == "action.start" and r.get("step") == 2]


# -- audit pane, filter burst, forwarding -------------------------------------------------------------


async def test_audit_pane_compact_lines_full_record_and_incremental_verify(demo):
    from opsgate.screens.audit_pane import AuditRecordModal

    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        pane = console(app).query_one(AuditPane)
        await wait_for(pilot, lambda: pane.verified is not None, what="the start-up verify")
        assert pane.full_verifies == 1
        await select(pilot, "tail-log")
        console(app).query_one(ActionTable).focus()
        await pilot.press("enter")
        await finished(pilot)
        await wait_for(pilot, lambda: any(r["event"] == "action.end" for r in pane.last_records), what="action.end")
        total = len(trail_records(demo))
        await wait_for(pilot, lambda: f"{total} records" in str(pane.query_one("#audit-badge").render()),
                       what="the incremental count")
        assert pane.verified is True and pane.full_verifies == 1  # new records: verified incrementally only
        log = pane.query_one("#audit-log")
        lines = [str(log.get_option_at_index(i).prompt) for i in range(log.option_count)]
        target_lines = [line for line in lines if " action.target " in line]
        # "HH:MM:SS demo action.target tail-log web-2 ok"; a narrow pane shortens the action name, never the end.
        assert any("demo action.target tail-" in line and line.endswith(" web-2 ok") for line in target_lines), \
            target_lines
        assert all(len(line) < 80 for line in lines)  # compact, not the long record format
        log.focus()
        log.highlighted = lines.index(target_lines[0])
        await pilot.press("enter")
        modal = await wait_for(pilot, lambda: isinstance(app.screen, AuditRecordModal) and app.screen,
                               what="the record modal")
        assert "recording_sha256" in str(modal.query_one("#record-json").render())
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConsoleScreen), what="back")
        await pilot.press("v")
        await wait_for(pilot, lambda: pane.full_verifies == 2, what="the full verify on v")


async def test_filter_typed_in_one_burst_with_enter_runs_nothing(demo):
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        screen = console(app)
        table = screen.query_one(ActionTable)
        # As a terminal sends "/db-fail⏎" in one read: every key queued before the first is handled.
        for key, char in [("slash", "/"), *[(c if c != "-" else "minus", c) for c in "db-fail"], ("enter", "\r")]:
            app.post_message(events.Key(key, char))
        await wait_for(pilot, lambda: [a.id for a in table.actions] == ["db-failover"], what="the filter")
        await wait_for(pilot, lambda: screen.focused is table, what="focus back on the list")
        await pilot.pause(0.3)
        assert not screen.running and screen.last_report is None and app.screen is screen
        assert screen.query_one("#filter").value == "db-fail"
        # "/" inside a field is a character, not the filter key.
        await select(pilot, "tail-log")
        screen.query_one("#filter").focus()
        await pilot.press("a", "slash")
        assert screen.query_one("#filter").value == "a/"  # select() cleared the filter hiding tail-log


async def test_forwarding_to_a_down_collector_keeps_the_console_running(demo):
    import socket

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = demo.config_text() + f'\n[audit.forward]\nurl = "syslog+tcp://127.0.0.1:{port}"\n'
    config = parse_config(text.encode(), "demo.toml")
    app = app_for(demo, config=config)
    async with app.run_test(size=SIZE) as pilot:
        assert app.forwarder is not None
        await select(pilot, "tail-log")
        console(app).query_one(ActionTable).focus()
        await pilot.press("enter")
        await finished(pilot)
        assert console(app).last_report.exit_code == 0
        topbar = console(app).query_one("#topbar")

        def backlog() -> int | None:  # the top bar's count, refreshed every second
            text = str(topbar.render())
            return int(text.split("fwd backlog ")[1].split()[0]) if "fwd backlog " in text else None

        # nothing reached the (absent) collector: the backlog comes to every record, action.end included
        await wait_for(pilot, lambda: backlog() == len(trail_records(demo)), what="the whole trail in the backlog")
        forwarder = app.forwarder
    assert app.forwarder is None and not forwarder._thread.is_alive()  # stopped with the console


@pytest.mark.parametrize("sig", ["SIGHUP", "SIGTERM", "no signal"])
def test_demo_cleans_up_on_hangup_and_terminate(tmp_path, sig):
    """`opsgate demo` in a terminal that goes away (SIGHUP) or is killed (SIGTERM) removes its directory. "no
    signal": the terminal goes and no SIGHUP comes (the kernel signals only the session's leader, and one that
    does not pass it on, as `make run`'s make, left the console spinning on the dead terminal, its demo
    directory and worker behind): the console sees the hangup itself."""
    import os
    import pty
    import select
    import signal

    master, slave = pty.openpty()
    env = clean_env(TMPDIR=str(tmp_path), TERM="xterm-256color", COLUMNS="120", LINES="40")
    proc = popen_opsgate("demo", stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while b"Audit trail" not in seen:  # the console is drawn
            assert time.monotonic() < deadline and proc.poll() is None, seen[-2000:]
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
        assert list(tmp_path.glob("opsgate-demo-*")), "the demo made no directory"
        if sig != "SIGTERM":  # the terminal window closes: the pty goes, then the hangup arrives (or not)
            os.close(master)
            master = None
        if sig != "no signal":
            proc.send_signal(getattr(signal, sig))
        deadline = time.monotonic() + 30
        while proc.poll() is None:
            assert time.monotonic() < deadline, "the demo did not stop"
            ready, _, _ = select.select([master], [], [], 0.2) if master is not None else (None, None, None)
            if ready:
                try:
                    os.read(master, 65536)
                except OSError:
                    pass
            elif master is None:
                time.sleep(0.1)
        assert not list(tmp_path.glob("opsgate-demo-*")), "the demo left its directory behind"
    finally:
        if proc.poll() is None:
            proc.kill()
        if master is not None:
            os.close(master)


def test_exit_signal_with_a_blocked_event_loop_runs_the_last_resort_and_exits(tmp_path):
    """After SIGHUP the loop may be stuck on a dead terminal's writer queue: the watchdog still ends it."""
    import signal

    marker = tmp_path / "cleaned"
    script = f"""
import asyncio, signal, threading
import opsgate.screens.app as m
m.FORCED_EXIT_AFTER = 0.5
app = m.OpsgateApp.__new__(m.OpsgateApp)
app.exit_on_signals(signal.SIGTERM, last_resort=lambda: open({str(marker)!r}, "w").write("x"))

async def main():
    app._install_signal_handlers()
    print("ready", flush=True)
    threading.Event().wait()  # the event loop itself is blocked, as on a dead terminal

asyncio.run(main())
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    assert marker.read_text() == "x"


async def test_the_garbage_collector_paused_for_the_start_is_on_again_after_the_first_paint(demo):
    """`opsgate` turns the cyclic collector off while it starts (cli/tui.py): the console's first paint freezes
    what the start made and turns it on again. A console started with it on (as here) freezes nothing."""
    import gc

    from opsgate.cli.tui import _no_gc_until_painted

    frozen = gc.get_freeze_count()
    app = app_for(demo)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: console(app)._first_paint, what="the first paint")
        assert gc.isenabled() and gc.get_freeze_count() == frozen
    _no_gc_until_painted()
    try:
        app = app_for(demo)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: console(app)._first_paint, what="the first paint")
            assert gc.isenabled() and gc.get_freeze_count() > frozen
    finally:
        gc.enable()
        gc.unfreeze()  # the rest of the test session collects as before
