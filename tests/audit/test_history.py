"""Run history: console/history.py without the app, the history and detail screens, `opsgate audit export`,
and the reviewer's acceptance path (yesterday's failover approved by bob -> history -> detail -> replay)."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import DataTable, Input, Static

from opsgate.console.audit.trail import AuditTrail
from opsgate.console.audit.verify import verify

from opsgate.console.paths import AUDIT_FILE
from opsgate.console.audit.history import (HistoryFilter, build_history, chain_state, check_recordings, export_run,
                             filter_history, find_summary, parse_when)
from opsgate.console.errors import UsageError
from opsgate.screens.history import HistoryScreen, RunDetailScreen
from opsgate.screens.replay_screen import ReplayScreen

from tests.helpers.cli import run_opsgate
from tests.helpers.history_fixtures import DIGEST, NOW, NOW_TS, reviewer_state
from tests.helpers.tui_fixtures import wait_for

FAILOVER = "20261127T033000Z-f41010"
FAILED = "20261128T063000Z-aa0001"
DENIED = "20261128T073000Z-dd0002"
TAIL = "20261128T083000Z-cc0003"


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    return reviewer_state(tmp_path, monkeypatch)


def history(state: Path):
    return build_history(AuditTrail(state / AUDIT_FILE).records())


# -- console/history.py ---------------------------------------------------------------------------------


def test_runs_newest_first_with_outcomes(state):
    runs = history(state)
    assert [s.run for s in runs] == [TAIL, DENIED, FAILED, FAILOVER]
    by = {s.run: s for s in runs}
    assert by[TAIL].outcome == "ok" and by[TAIL].factor == "none" and by[TAIL].operator == "carol"
    assert by[FAILED].outcome == "failed" and by[FAILED].exit_code == 1 and by[FAILED].factor == "otp"
    assert [(r.target, r.outcome) for r in by[FAILED].recordings] == [("web-1", "ok"), ("web-2", "failed")]
    assert by[DENIED].outcome == "denied" and by[DENIED].reason == "OTP cancelled by dave"
    assert by[DENIED].name == "rotate-cert" and by[DENIED].risk == "high" and by[DENIED].operator == "dave"


def test_runbook_run_is_one_entry_with_its_steps(state):
    rb = find_summary(history(state), FAILOVER)
    assert rb.kind == "runbook" and rb.name == "db-failover-plan" and rb.risk == "critical"
    assert rb.operator == "alice"  # the requester, not the approver whose records share the run
    assert [(a.approver, a.factor, a.digest) for a in rb.approvals] == [("bob", "fido2", DIGEST)]
    assert rb.factor == "fido2" and rb.fresh is True and rb.fido2_digest == DIGEST
    assert [(s.index, s.status, s.run) for s in rb.steps] == [(1, "ok", f"{FAILOVER}.1"), (2, "ok", f"{FAILOVER}.2")]
    assert [(r.step, r.target) for r in rb.recordings] == [(1, "db-replica"), (2, "db-primary")]
    events = [r["event"] for r in rb.records]
    assert events[:4] == ["stepup.success", "stepup.success", "approval.granted", "runbook.start"]
    assert events[-1] == "runbook.end" and events.count("action.start") == 2
    assert rb.outcome == "ok" and rb.started.startswith("2026-11-27T03:30")
    # A step's run id names its runbook.
    assert find_summary(history(state), f"{FAILOVER}.2").run == FAILOVER


def test_filter_terms(state):
    runs = history(state)

    def ids(text: str) -> list[str]:
        flt = HistoryFilter.parse(text, now=NOW)
        assert not flt.errors, flt.errors
        return [s.run for s in filter_history(runs, flt)]

    assert ids("op:alice") == [FAILED, FAILOVER]
    assert ids("risk:critical") == [FAILOVER]
    assert ids("risk:high+") == [DENIED, FAILOVER]
    assert ids("outcome:failed,denied") == [DENIED, FAILED]
    assert ids("since:2026-11-28") == [TAIL, DENIED, FAILED]
    assert ids("until:2026-11-27") == [FAILOVER]  # a bare date as an end bound: the end of that day
    assert ids("since:yesterday until:yesterday") == [FAILOVER]  # until a day: to its end
    assert len(ids("since:yesterday until:today")) == 4
    assert ids("since:90m") == [TAIL]
    assert ids("op:alice failover") == [FAILOVER]  # free words: name, targets, commands, approvers
    assert ids("bob") == [FAILOVER]
    assert ids("target:web-2") == [FAILED]
    bad = HistoryFilter.parse("risk:severe outcome:meh since:someday", now=NOW)
    assert len(bad.errors) == 3 and "risk" in bad.errors[0]


def test_parse_when():
    assert parse_when("2026-11-27T14:00", NOW).hour == 14
    assert parse_when("7d", NOW) == NOW - timedelta(days=7)
    with pytest.raises(ValueError):
        parse_when("soon", NOW)


def test_chain_state_and_recording_checks(state):
    report = verify(state / AUDIT_FILE)
    assert report.ok and chain_state(report) == f"chain verified up to record {report.count}"
    rb = find_summary(history(state), FAILOVER)
    assert [p for _, p in check_recordings(rb, state)] == [None, None]
    (state / rb.recordings[1].path).write_bytes(b"tampered\n")
    problems = [p for _, p in check_recordings(rb, state)]
    assert problems[0] is None and problems[1].startswith("changed since the run")


def break_chain(state: Path, seq: int) -> None:
    """Edit record ``seq`` in place (the operator's name), as a tamperer would."""
    path = state / AUDIT_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    lines[seq - 1] = lines[seq - 1].replace(b'"operator":"alice"', b'"operator":"mallory"', 1)
    path.write_bytes(b"".join(lines))


def test_chain_state_names_the_broken_record(state):
    break_chain(state, 5)
    text = chain_state(verify(state / AUDIT_FILE))
    assert text.startswith("chain BROKEN at record 5: line 5 (seq 5") and "hash mismatch" in text
    assert "(4 records verified before it)" in text


def test_find_summary_prefixes(state):
    runs = history(state)
    assert find_summary(runs, "20261128T0830").run == TAIL
    with pytest.raises(UsageError, match="ambiguous"):
        find_summary(runs, "20261128T")
    with pytest.raises(UsageError, match="no run"):
        find_summary(runs, "nope")


def test_export_document(state):
    doc, ok = export_run(state / AUDIT_FILE, state, FAILOVER)
    assert ok and doc["run"] == FAILOVER and doc["kind"] == "runbook"
    assert doc["chain"]["ok"] and doc["chain"]["run_records_verified"]
    seqs = [r["seq"] for r in doc["records"]]
    assert seqs == sorted(seqs) and len(seqs) == 4 + 2 * (3 + 1) + 1  # step-up, approval, start; per step: start, target, end, step; end
    assert [(r["step"], r["target"], r["verified"]) for r in doc["recordings"]] == [
        (1, "db-replica", True), (2, "db-primary", True)]
    assert doc["approvals"][0]["approver"] == "bob" and doc["approvals"][0]["factor"] == "fido2"
    json.dumps(doc)  # JSON-ready


# -- opsgate audit export --------------------------------------------------------------------------------


def opsgate(state: Path, *args: str) -> subprocess.CompletedProcess:
    # A bare environment, no config anywhere: --state-dir alone must be enough for an export.
    return run_opsgate(*args, "--state-dir", state, env={"PATH": "/usr/bin:/bin", "HOME": str(state.parent),
                                                          "LANG": "C.UTF-8", "XDG_CONFIG_HOME": str(state.parent / "nocfg")})


def test_cli_export_json(state):
    result = opsgate(state, "audit", "export", FAILED[:16], "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["run"] == FAILED and doc["outcome"] == "failed"
    assert [r["event"] for r in doc["records"]] == ["stepup.success", "action.start", "action.target",
                                                   "action.target", "action.end"]
    assert all(r["verified"] and len(r["sha256"]) == 64 for r in doc["recordings"])
    assert Path(doc["recordings"][0]["absolute_path"]).is_file()
    # A tampered recording: the document says which, and the exit code says something does not verify.
    (state / doc["recordings"][1]["path"]).write_bytes(b"{}\n")
    result = opsgate(state, "audit", "export", FAILED, "--format", "json")
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert [r["verified"] for r in doc["recordings"]] == [True, False]
    assert "changed since the run" in doc["recordings"][1]["problem"]
    assert "does not verify" in result.stderr


def test_cli_export_unknown_run(state):
    result = opsgate(state, "audit", "export", "nosuchrun", "--format", "json")
    assert result.returncode == 2 and "no run 'nosuchrun'" in result.stderr


# -- the screens -----------------------------------------------------------------------------------------


class HistoryApp(App):
    """Only the history screen, on a state dir written by the fixtures (no demo server needed)."""

    def __init__(self, state: Path):
        super().__init__()
        self.state = state

    def on_mount(self) -> None:
        self.push_screen(HistoryScreen(self.state / AUDIT_FILE, self.state, operator="alice",
                                       clock=lambda: NOW_TS))


def rows(screen: HistoryScreen) -> list[str]:
    return [s.run for s in screen.shown]


async def open_history(pilot) -> HistoryScreen:
    screen = await wait_for(pilot, lambda: isinstance(pilot.app.screen, HistoryScreen) and pilot.app.screen,
                            what="the history screen")
    await wait_for(pilot, lambda: screen.loaded and screen.report is not None, what="history and verify")
    return screen


async def test_history_filter_keys_and_text(state):
    app = HistoryApp(state)
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await open_history(pilot)
        assert rows(screen) == [TAIL, DENIED, FAILED, FAILOVER]
        assert screen.query_one(DataTable).row_count == 4
        chain = str(screen.query_one("#history-chain", Static).render())
        assert "chain verified up to record" in chain
        await pilot.press("f", "f", "f", "f")  # all -> low -> medium -> high -> critical
        assert screen.query_one("#history-filter", Input).value == "risk:critical"
        await wait_for(pilot, lambda: rows(screen) == [FAILOVER], what="critical only")
        await pilot.press("slash", *" outcome:ok", "enter")
        await wait_for(pilot, lambda: rows(screen) == [FAILOVER], timeout=2, what=repr(screen.query_one("#history-filter", Input).value) + repr(rows(screen)))
        screen.query_one("#history-filter", Input).value = ""
        await pilot.press("slash", *"op:alice since:2026-11-28", "enter")
        await wait_for(pilot, lambda: rows(screen) == [FAILED], what="alice today")
        state_line = str(screen.query_one("#history-state", Static).render())
        assert "1 of 4 runs" in state_line and "op alice" in state_line
        await pilot.press("escape")
        assert not isinstance(app.screen, HistoryScreen)


async def test_history_shows_where_the_chain_breaks(state):
    break_chain(state, 6)
    app = HistoryApp(state)
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await open_history(pilot)
        chain = str(screen.query_one("#history-chain", Static).render())
        assert "chain BROKEN at record 6" in chain and "hash mismatch" in chain
        screen.query_one(DataTable).focus()
        await pilot.press("down", "down", "down", "enter")  # the oldest run: the failover, across the break
        detail = await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen)
        records = str(detail.query_one("#run-records", Static).render())
        assert "✓ #2 " in records and "✗ #6 " in records and "✗ #7 " in records
        assert "chain BROKEN at record 6" in str(detail.query_one("#run-summary", Static).render())


async def test_reviewer_acceptance_yesterdays_failover(state):
    """Yesterday's critical failover approved by bob: found in the history, its approver and factor in
    the detail, its recordings verified and replayed to the end."""
    app = HistoryApp(state)
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await open_history(pilot)
        await pilot.press("slash", *"since:yesterday until:yesterday risk:critical", "enter")
        await wait_for(pilot, lambda: rows(screen) == [FAILOVER], what="yesterday's failover")
        table = screen.query_one(DataTable)
        row = [str(c) for c in table.get_row(FAILOVER)]
        assert row[0] == "2026-11-27 03:30:01" and row[1] == "alice" and row[2] == "▤ db-failover-plan (2 steps)"
        assert "CRITICAL" in row[3] and "ok" in row[5] and row[6] == "KEY" and row[7] == "bob (KEY)"
        await pilot.press("enter")
        detail = await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen)
        summary = str(detail.query_one("#run-summary", Static).render())
        assert "approved by bob with security key" in summary
        assert DIGEST in summary and "./bin/failover --promote db-replica" in summary
        assert "✓ every record of this run verifies" in summary
        await wait_for(pilot, lambda: detail.checked, what="recording checks")
        recs = detail.query_one(DataTable)
        assert [str(recs.get_row(k)[4]) for k in ("0", "1")] == ["✓ sha256 matches"] * 2
        recs.move_cursor(row=1)
        await pilot.press("enter")
        replay = await wait_for(pilot, lambda: isinstance(app.screen, ReplayScreen) and app.screen)
        await wait_for(pilot, lambda: replay.verified is True, what="verified")
        await pilot.press("plus", "plus")  # 1x -> 2x -> 4x
        await wait_for(pilot, lambda: replay.duration and replay.position >= replay.duration and not replay.playing,
                       timeout=10, what="played to the end")
        assert any("db-primary is primary" in line for line in replay.lines)
        assert "VERIFIED" in str(replay.query_one("#replay-banner", Static).render())
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is detail)


async def test_from_the_console_run_then_history_then_replay(tmp_path):
    """The real pipeline against the demo server: run tail-log, press h, open the run, replay web-1."""
    from opsgate.screens.catalog import ActionTable
    from tests.helpers.tui_fixtures import SIZE, app_for, start_demo

    demo = start_demo(tmp_path)
    try:
        app = app_for(demo)
        async with app.run_test(size=SIZE) as pilot:
            main = app.main_screen
            main.select_action("tail-log")
            await wait_for(pilot, lambda: main.query_one("#detail").action is not None)
            main.query_one(ActionTable).focus()
            await pilot.press("enter")
            await wait_for(pilot, lambda: not main.running and main.last_report is not None, what="the run")
            run = main.last_report.run_id
            await pilot.press("h")
            screen = await open_history(pilot)
            assert rows(screen)[0] == run and screen.shown[0].outcome == "ok"
            await pilot.press("enter")
            detail = await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen)
            await wait_for(pilot, lambda: detail.checked, what="recording checks")
            assert len(detail.summary.recordings) == 4 and set(detail.checks.values()) == {None}
            await pilot.press("enter")
            replay = await wait_for(pilot, lambda: isinstance(app.screen, ReplayScreen) and app.screen)
            await wait_for(pilot, lambda: replay.verified is True, what="verified")
            await pilot.press("end")
            await wait_for(pilot, lambda: any("INFO request" in line for line in replay.lines), what="the output")
            await pilot.press("escape", "escape", "escape")
            await wait_for(pilot, lambda: app.screen is main, what="back to the console")
    finally:
        demo.close()
