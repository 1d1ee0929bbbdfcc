"""Pilot tests: hostile remote output, a MITM's version line, edited records and hostile recordings reach the
TUI's panes, modals and replay only as text. Each test checks the widgets' own text and everything on the
screen (``screen_text``: what Textual's driver would write, styles aside)."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsgate.console.audit.history import build_history, find_summary
from opsgate.console.audit.trail import AuditTrail
from opsgate.console.audit.verify import verify
from opsgate.console.catalog.loader import parse_config
from opsgate.console.paths import AUDIT_FILE
from opsgate.screens.audit_pane import AuditPane, AuditRecordModal
from opsgate.screens.catalog import ActionTable
from opsgate.screens.history import HistoryScreen, RunDetailScreen
from opsgate.screens.output import OutputBuffer, OutputPanel
from opsgate.screens.replay_screen import ReplayScreen
from opsgate.screens.terminal import TerminalPlayer

from opsgate.console.audit.replay import Cast
from tests.helpers.history_fixtures import record_action_run
from tests.helpers.hostile import (CLIPBOARD, CORPUS, HOSTILE_BANNER, OSC52, SCENARIO, BannerServer, assert_inert,
                                   rechain, screen_text)
from tests.helpers.tui_fixtures import SIZE, app_for, start_demo, wait_for

TARGET = "db-primary"
OUT = SCENARIO + b"\n" + b"".join(CORPUS[k] + b"\n" for k in sorted(CORPUS))


@pytest.fixture
def hostile(tmp_path):
    demo = start_demo(tmp_path)
    with BannerServer(HOSTILE_BANNER) as banner:
        (demo.hosts_dir / TARGET / "out.bin").write_bytes(OUT)
        text = demo.config_text() + f"""
[targets.mitm]
host = "127.0.0.1"
port = {banner.port}
user = "x"
identity_file = "{demo.key_path}"

[actions.evil]
title = "Hostile output"
risk = "low"
targets = ["{TARGET}"]
command = "cat out.bin; cat out.bin >&2; exit 3"

[actions.via-mitm]
title = "Through a MITM"
risk = "low"
targets = ["mitm"]
command = "true"
"""
        try:
            yield demo, parse_config(text.encode(), "hostile.toml")
        finally:
            demo.close()


async def run_action(pilot, action_id: str):
    screen = pilot.app.main_screen
    screen.select_action(action_id)
    await wait_for(pilot, lambda: screen.query_one("ActionDetail").action is not None
                   and screen.query_one("ActionDetail").action.id == action_id, what=f"{action_id} selected")
    screen.query_one(ActionTable).focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: not screen.running and screen.last_report is not None, timeout=30, what="the run")
    output = screen.query_one(OutputPanel)
    output.flush()
    await pilot.pause()
    return output


def test_output_buffer_shows_every_trick_as_text():
    buffer = OutputBuffer()
    buffer.feed("t", "stdout", OUT[:5000])
    buffer.feed("t", "stdout", OUT[5000:])
    buffer.feed("t", "stderr", b"\x1b]0;x\x07err\r\n\x9b2J")
    buffer.finish("t")
    lines, dropped = buffer.drain()["t"]
    for line in lines:
        assert_inert(line, where="output pane line")
    assert lines[0] == "ERROR: replication broken^M^[[2K^[[1A^[[2Kweb-1 | replication healthy"
    assert "[err] ^[]0;x^Gerr" in lines and lines[-1] == "[err] \\x9b2J"
    assert any("\\x9b2J" in line for line in lines)  # U+009B, which pyte and some terminals execute as CSI


async def test_output_pane_and_the_whole_screen_stay_inert(hostile):
    demo, config = hostile
    app = app_for(demo, config=config)
    async with app.run_test(size=SIZE) as pilot:
        output = await run_action(pilot, "evil")
        assert output.statuses[TARGET] == "exit 3"
        lines = output.log_for(TARGET).lines
        assert lines and all(_inert(line) for line in lines)
        text = "\n".join(lines)
        assert "^[]52;c;" in text and "rm: deleted" in text and "[err] " in text
        assert CLIPBOARD.decode() not in text
        assert_inert(screen_text(app), where="the screen")


async def test_a_mitm_version_line_in_the_error_line_and_the_notification(hostile):
    demo, config = hostile
    app = app_for(demo, config=config)
    async with app.run_test(size=SIZE) as pilot:
        output = await run_action(pilot, "via-mitm")
        lines = output.log_for("mitm").lines
        error = next(line for line in lines if "Incompatible version" in line)
        assert_inert(error)
        assert "^[]52;c;" in error and "\\x9b2J" in error
        assert_inert(screen_text(app), where="the screen")
        record = next(r for r in reversed(list(AuditTrail(demo.state_dir / AUDIT_FILE).records()))
                      if r["event"] == "action.target")
        assert_inert(record["error"], where="the audit record")


def _inert(text: str) -> bool:
    assert_inert(text)
    return True


async def test_audit_pane_modal_and_badge_show_edited_records_as_text(hostile):
    demo, config = hostile
    app = app_for(demo, config=config)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.main_screen.query_one(AuditPane)
        await wait_for(pilot, lambda: pane.verified is not None, what="the first verify")
        app.audit.append("note.evil", operator="\u009b2J" + OSC52.decode(), run=None,
                         text="\r\x1b[2K\x1b[8m", exit_code="\x1b[1A\x1b[2Kexit 0")
        await wait_for(pilot, lambda: any(r["event"] == "note.evil" for r in pane.last_records), what="the record")
        log = pane.query_one("#audit-log")
        for i in range(log.option_count):
            assert_inert(str(log.get_option_at_index(i).prompt), where="audit pane line")
        log.focus()
        log.highlighted = log.option_count - 1
        await pilot.press("enter")
        modal = await wait_for(pilot, lambda: isinstance(app.screen, AuditRecordModal) and app.screen,
                               what="the record modal")
        await pilot.pause()
        assert_inert(str(modal.query_one("#record-json").render()), where="the record modal")
        assert_inert(screen_text(app), where="the modal on screen")
        await pilot.press("escape")
        # Someone edits the file: a seq that is text (it would print a fake OK line), chain rebuilt.
        records = list(app.audit.records())
        records[-1]["seq"] = "\r\x1b[2KOK: 12 records\x1b[8m"
        rechain(app.audit.path, records)
        await pilot.press("v")
        await wait_for(pilot, lambda: pane.verified is False, what="the broken badge")
        badge = str(pane.query_one("#audit-badge").render())
        assert "BROKEN" in badge or "UNREADABLE" in badge  # the poll may read the rewritten file first
        assert_inert(badge, where="the badge")
        problem = verify(app.audit.path).problems[0]
        assert "seq is not an integer" in problem
        assert_inert(problem, where="the verify problem")
        await pilot.pause(0.3)
        assert_inert(screen_text(app), where="the screen with the broken chain")


# -- history and replay ----------------------------------------------------------------------------------

RUN = "20261128T083000Z-ee0005"
HOSTILE_EVENTS = [
    (0.0, "m", "start \x1b]0;marker title\x07"),
    (0.1, "o", "before\n"),
    (0.2, "o", "\u009b2J\u009b1;1H"),  # pyte takes U+009B as CSI: it would clear the screen
    (0.3, "o", "\x1b]0;pwned title\x07\x1b]2;again\x1b\\" + OSC52.decode() + "\x1b]8;;https://evil\x1b\\link\n"),
    (0.4, "o", "\x1bP$qm\x1b\\\x1b_apc\x1b\\\x1b^pm\x1b\\after\n"),
    (0.5, "m", "end failed exit 3"),
]


@pytest.fixture
def reviewer(tmp_path) -> Path:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    record_action_run(state, RUN, operator="\u009b2Jmallory\x1b]0;t\x07", action="evil\x1b[8m", targets=("web-1",),
                      command="cat \x1b]52;c;QUJD\x07", exit_codes={"web-1": 3}, events={"web-1": HOSTILE_EVENTS})
    return state


def test_terminal_player_never_lets_pyte_execute_a_string_or_a_c1(reviewer):
    summary = find_summary(build_history(AuditTrail(reviewer / AUDIT_FILE).records()), RUN)
    player = TerminalPlayer(Cast(reviewer / summary.recordings[0].path))
    try:
        player.advance_to(player.duration)
        shown = "\n".join(player.display())
        assert player.screen.title == "" and player.screen.icon_name == ""
        assert "before" in shown and "after" in shown  # U+009B 2J cleared nothing
        assert "\\x9b2J" in shown and "link" in shown
        assert CLIPBOARD.decode() not in shown
        assert_inert(shown)
        assert all(_inert(m.label) for m in player.markers)
        player.seek(0.25)
        player.seek(player.duration)  # seeking rebuilds through the same filter
        assert player.screen.title == "" and "before" in "\n".join(player.display())
    finally:
        player.close()


async def test_history_detail_and_replay_show_records_and_recording_as_text(reviewer):
    from textual.app import App

    class HistoryApp(App):
        def on_mount(self) -> None:
            self.push_screen(HistoryScreen(reviewer / AUDIT_FILE, reviewer))

    app = HistoryApp()
    async with app.run_test(size=SIZE) as pilot:
        history = await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen.loaded
                                 and app.screen, what="the history")
        await pilot.pause(0.3)
        assert_inert(screen_text(app), where="the history")
        history.open_run(history.shown[0])
        detail = await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen, what="detail")
        await wait_for(pilot, lambda: detail.checked, what="the recordings checked")
        await pilot.pause(0.2)
        assert_inert(screen_text(app), where="the run detail")
        replay = detail.replay(0, autoplay=True)
        await wait_for(pilot, lambda: replay.verified is not None and replay.frames > 0, what="the replay")
        await wait_for(pilot, lambda: replay.position >= replay.duration, timeout=10, what="the end")
        await pilot.pause(0.3)
        assert isinstance(app.screen, ReplayScreen)
        assert replay.verified is True
        assert any("before" in line for line in replay.lines) and any("after" in line for line in replay.lines)
        assert_inert(replay.text.plain, where="the replayed terminal")
        assert_inert(screen_text(app), where="the replay screen")
