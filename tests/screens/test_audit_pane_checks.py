"""The audit pane's recording check at start: after the first paint, through the console's cache (an unchanged
recording is not read again, a changed one is and breaks the badge); `v` reads every recording."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Static

import opsgate.console.audit.checked as checked
from opsgate.console.audit.checked import RecordingChecks
from opsgate.console.audit.trail import AuditTrail
from opsgate.console.paths import AUDIT_FILE, RECORDING_CHECKS
from opsgate.screens.audit_pane import AuditPane

from tests.helpers.tui_fixtures import wait_for

RECORDINGS = 5


class PaneApp(App):
    def __init__(self, state: Path):
        super().__init__()
        self.state = state

    def compose(self) -> ComposeResult:
        yield AuditPane(AuditTrail(self.state / AUDIT_FILE), self.state, id="audit")


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    """A trail naming RECORDINGS recordings of 2 MB; files count as settled at once (no 2 s to wait)."""
    monkeypatch.setattr(checked, "SETTLED_NS", -(10 ** 18))
    monkeypatch.setattr(RecordingChecks, "_shared", {})  # each test: a cache as a new process loads it
    trail = AuditTrail(tmp_path / AUDIT_FILE)
    for i in range(RECORDINGS):
        rel = f"recordings/run{i}/web-{i}.cast"
        (tmp_path / rel).parent.mkdir(parents=True)
        data = bytes([i]) * 2_000_000
        (tmp_path / rel).write_bytes(data)
        trail.append("action.target", operator="alice", run=f"run{i}", target=f"web-{i}", outcome="ok",
                     recording=rel, recording_sha256=hashlib.sha256(data).hexdigest())
    return tmp_path


def new_process() -> None:
    """What a new console process sees: the cache as saved in the state dir, nothing in memory."""
    RecordingChecks._shared.clear()


def badge(pane: AuditPane) -> str:
    return str(pane.query_one("#audit-badge", Static).render())


async def test_recordings_are_read_after_the_first_paint_once_then_only_stat(state, monkeypatch):
    painted_at_read = []
    rehash = RecordingChecks.rehash

    def watched(self, path, **kwargs):
        painted_at_read.append(pane._painted.is_set())
        return rehash(self, path, **kwargs)

    monkeypatch.setattr(RecordingChecks, "rehash", watched)
    checking = []
    on_checking = AuditPane.on_audit_checking

    def counted(self, message):
        checking.append((message.count, badge(self)))
        on_checking(self, message)

    monkeypatch.setattr(AuditPane, "on_audit_checking", counted)
    app = PaneApp(state)
    async with app.run_test(size=(120, 30)) as pilot:
        pane = app.query_one(AuditPane)
        await wait_for(pilot, lambda: pane.verified is not None, what="the start's verify")
        assert pane.verified is True and "CHAIN OK" in badge(pane)
        assert painted_at_read == [True] * RECORDINGS  # every read after the first paint
        assert [count for count, _ in checking] == [RECORDINGS]  # the badge said the recordings were being read
        assert "verifying" in checking[0][1]  # and nothing had said the chain was fine before
        assert pane.checks.hashed == RECORDINGS
    assert (state / RECORDING_CHECKS).exists()

    new_process()
    painted_at_read.clear()
    app = PaneApp(state)
    async with app.run_test(size=(120, 30)) as pilot:
        pane = app.query_one(AuditPane)
        await wait_for(pilot, lambda: pane.verified is not None, what="the second start's verify")
        assert pane.verified is True and pane.checks.hashed == 0 and painted_at_read == []
        assert pane._chain.recordings_checked == RECORDINGS


async def test_a_changed_recording_is_read_again_and_breaks_the_badge(state):
    app = PaneApp(state)
    async with app.run_test(size=(120, 30)) as pilot:
        pane = app.query_one(AuditPane)
        await wait_for(pilot, lambda: pane.verified is not None, what="the start's verify")
        assert pane.verified is True
    edited = state / "recordings/run3/web-3.cast"
    with open(edited, "r+b") as f:
        f.write(b"EDIT")

    new_process()
    app = PaneApp(state)
    async with app.run_test(size=(120, 30)) as pilot:
        pane = app.query_one(AuditPane)
        await wait_for(pilot, lambda: pane.verified is not None, what="the second start's verify")
        assert pane.verified is False and pane.checks.hashed == 1  # only the edited file was read
        assert "CHAIN BROKEN" in badge(pane) and "web-3.cast" in badge(pane) and "changed since the run" in badge(pane)


async def test_v_reads_every_recording_and_new_runs_are_checked_as_they_arrive(state):
    app = PaneApp(state)
    async with app.run_test(size=(120, 30)) as pilot:
        pane = app.query_one(AuditPane)
        await wait_for(pilot, lambda: pane.verified is not None and pane.full_verifies == 1, what="the start's verify")
        assert pane.checks.hashed == RECORDINGS
        report = await asyncio.to_thread(pane.verify_full)  # blocking: in a thread, as the console's v runs it
        assert report.ok and report.recordings_checked == RECORDINGS
        assert pane.checks.hashed == 2 * RECORDINGS  # v trusts no cache

        data = b"new run"
        (state / "recordings/new").mkdir()
        (state / "recordings/new/web-9.cast").write_bytes(data)
        pane.trail.append("action.target", operator="alice", run="new", target="web-9", outcome="ok",
                          recording="recordings/new/web-9.cast", recording_sha256="0" * 64)
        pane.poke()
        await wait_for(pilot, lambda: pane.verified is False, what="the new record's recording checked")
        assert "web-9.cast" in badge(pane) and pane.full_verifies == 2


async def test_a_recording_path_the_os_refuses_breaks_the_badge_and_polling_goes_on(state):
    trail = AuditTrail(state / AUDIT_FILE)
    trail.append("action.target", operator="mallory", run="x", target="web-0", outcome="ok",
                 recording="recordings/a\u0000b.cast", recording_sha256="0" * 64)
    app = PaneApp(state)
    async with app.run_test(size=(120, 30)) as pilot:
        pane = app.query_one(AuditPane)
        await wait_for(pilot, lambda: pane.verified is not None, what="the start's verify")
        assert pane.verified is False and "NUL byte" in badge(pane)
        seen = pane.records_seen
        trail.append("note", operator="alice", text="later")
        pane.poke()
        await wait_for(pilot, lambda: pane.records_seen > seen, what="the next poll")
