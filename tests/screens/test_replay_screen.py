"""The replay screen: verification banner, timing (4x to the end, pause, idle skip), seeking and markers,
pyte rendering of colours and cursor movement, seeking in a large recording; snapshots of the history and
replay screens (fixed record times and run ids, a frozen replay position)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rich.style import Style
from textual.app import App
from textual.widgets import DataTable, Static

from opsgate.console.audit.trail import AuditTrail

from opsgate.console.paths import AUDIT_FILE
from opsgate.console.audit.history import build_history, find_summary
from opsgate.console.audit.recording import Recording
from opsgate.console.audit.replay import Cast
from opsgate.screens.history import HistoryScreen
from opsgate.screens.replay_screen import ReplayScreen
from opsgate.screens.terminal import FEED_LIMIT, TerminalPlayer, render_screen

from tests.helpers.history_fixtures import NOW_TS, reviewer_state
from tests.helpers.tui_fixtures import wait_for

FAILED = "20261128T063000Z-aa0001"
TAIL = "20261128T083000Z-cc0003"
FAILOVER = "20261127T033000Z-f41010"
SIZE = (120, 40)


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    return reviewer_state(tmp_path, monkeypatch)


def ref_for(state: Path, run: str, index: int = 0):
    summary = find_summary(build_history(AuditTrail(state / AUDIT_FILE).records()), run)
    return summary.recordings[index]


class ReplayApp(App):
    def __init__(self, state: Path, ref, **kwargs):
        super().__init__()
        self.state, self.ref, self.kwargs = state, ref, kwargs

    def on_mount(self) -> None:
        self.push_screen(ReplayScreen(self.state, self.ref, **self.kwargs))


async def opened(pilot) -> ReplayScreen:
    screen = await wait_for(pilot, lambda: isinstance(pilot.app.screen, ReplayScreen) and pilot.app.screen)
    await wait_for(pilot, lambda: screen.verified is not None and screen.frames > 0, what="the recording opened")
    return screen


def banner(screen: ReplayScreen) -> str:
    return str(screen.query_one("#replay-banner", Static).render())


async def test_plays_at_4x_to_the_end_then_pause_and_markers(state):
    ref = ref_for(state, FAILED, 1)  # web-2: step-up, start, output, end failed exit 1 over 2 s
    app = ReplayApp(state, ref, autoplay=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        assert screen.verified is True and "VERIFIED" in banner(screen) and "UNVERIFIED" not in banner(screen)
        assert screen.duration == pytest.approx(2.0) and not screen.playing
        assert [m.label for m in screen.markers] == ["step-up", "start", "end failed exit 1"]
        await pilot.press("plus", "plus", "plus")  # 1x -> 2x -> 4x -> 8x
        await pilot.press("minus")  # back to 4x
        assert screen.speed == 4.0
        started = time.monotonic()
        await pilot.press("space")
        await wait_for(pilot, lambda: screen.position >= screen.duration and not screen.playing, timeout=10,
                       what="the end")
        elapsed = time.monotonic() - started
        assert 0.3 < elapsed < 3.0, elapsed  # 2 s of recording at 4x: about half a second
        assert any("web-2 is primary" in line for line in screen.lines)
        status = str(screen.query_one("#replay-status", Static).render())
        assert "ended" in status and "4x" in status and "0:02.0 / 0:02.0" in status
        # Markers: M goes back to "start", m forward to the end marker.
        await pilot.press("M")
        await wait_for(pilot, lambda: screen.position == pytest.approx(0.05), what="the start marker")
        assert not any("web-2 is primary" in line for line in screen.lines)
        assert "start" in str(screen.query_one("#replay-status", Static).render())
        await pilot.press("m")
        await wait_for(pilot, lambda: screen.position == pytest.approx(2.0), what="the end marker")
        # Space at the end plays again from the top; space again pauses.
        await pilot.press("space")
        await wait_for(pilot, lambda: screen.playing and screen.position < 2.0, what="playing again")
        await pilot.press("space")
        await wait_for(pilot, lambda: not screen.playing, what="paused")
        paused_at = screen.position
        await pilot.pause(0.3)
        assert screen.position == paused_at
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ReplayScreen), what="closed")


async def test_seek_left_right_by_five_seconds(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    trail = AuditTrail(state / AUDIT_FILE)
    rel = Path("recordings/r/t.cast")
    rec = Recording(state / rel, run="r", action="count", target="t", command="count", width=40, height=5)
    for i in range(31):
        rec.output("stdout", f"tick {i}\n".encode(), rec._t0 + i)
    sha = rec.close()
    trail.append("action.target", operator="alice", run="r", action="count", target="t", outcome="ok", exit_code=0,
                 recording=str(rel), recording_sha256=sha)
    app = ReplayApp(state, ref_for(state, "r"), autoplay=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        await pilot.press("right", "right")
        await wait_for(pilot, lambda: screen.position == pytest.approx(10.0), what="+10 s")
        assert "tick 10" in screen.lines[-1] or "tick 10" in "\n".join(screen.lines)
        await pilot.press("left")
        await wait_for(pilot, lambda: screen.position == pytest.approx(5.0), what="-5 s")
        text = "\n".join(screen.lines)
        assert "tick 5" in text and "tick 6" not in text


async def test_tampered_recording_shows_unverified_banner(state):
    ref = ref_for(state, FAILED, 0)
    path = state / ref.path
    path.write_bytes(path.read_bytes().replace(b"promoting replica", b"promoting REPLICA"))
    app = ReplayApp(state, ref, autoplay=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        assert screen.verified is False
        text = banner(screen)
        assert "UNVERIFIED" in text and "changed since the run" in text
        assert screen.query_one("#replay-banner").has_class("unverified")
        await pilot.press("end")  # the reviewer may still look
        await wait_for(pilot, lambda: any("promoting REPLICA" in line for line in screen.lines))


async def test_missing_recording_cannot_play(state):
    ref = ref_for(state, FAILED, 0)
    (state / ref.path).unlink()
    app = ReplayApp(state, ref)
    async with app.run_test(size=SIZE) as pilot:
        screen = await wait_for(pilot, lambda: isinstance(app.screen, ReplayScreen) and app.screen)
        await wait_for(pilot, lambda: screen.verified is False, what="checked")
        assert screen.error == "cannot play it: missing" and "UNVERIFIED: missing" in banner(screen)


async def test_colours_and_cursor_movement_render_as_they_looked(state):
    ref = ref_for(state, TAIL)
    app = ReplayApp(state, ref, autoplay=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await opened(pilot)
        await pilot.press("end")
        await wait_for(pilot, lambda: screen.position == pytest.approx(screen.duration), what="the end")
        lines = [line.rstrip() for line in screen.lines]
        # The progress bar redrew one line (\r, ESC[2K); the tick was written there after moving the cursor.
        assert lines[:4] == ["red and bold green", "[##########] 100% ✓", "done", ""]
        spans = {screen.text.plain[s.start:s.end]: s.style for s in screen.text.spans}
        assert spans["red"] == Style(color="red")
        assert spans["bold green"] == Style(color="green", bold=True)
        assert spans["✓"] == Style(color="green")
        await pilot.press("home")
        await wait_for(pilot, lambda: screen.position == 0.0 and not any(ln.strip() for ln in screen.lines))
    # Half way through the bar, before the tick:
    player = TerminalPlayer(Cast(state / ref.path))
    player.seek(0.9)
    assert [line.rstrip() for line in player.display()[:2]] == ["red and bold green", "[#####     ] 50%"]
    player.close()


class CountingFile:
    """A file that counts the bytes read through it: how much of the recording a seek reads."""

    def __init__(self, f):
        self.f, self.read_bytes = f, 0

    def seek(self, *args):
        return self.f.seek(*args)

    def readline(self):
        line = self.f.readline()
        self.read_bytes += len(line)
        return line

    def read(self, *args):
        data = self.f.read(*args)
        self.read_bytes += len(data)
        return data

    def close(self):
        self.f.close()


def test_seek_in_a_large_recording_reads_only_near_the_target(tmp_path):
    """10 MB over 10 minutes: any seek, forwards or back, reads a bounded window before the target, never the
    recording from its start (the time it takes is measured in benchmarks/replay.py, on 100 MB)."""
    path = tmp_path / "big.cast"
    rec = Recording(path, run="big", action="flood", target="t", command="flood", width=80, height=24)
    line = ("x" * 60 + "\n").encode()
    count = 10_000_000 // len(line)
    for i in range(count):
        rec.output("stdout", f"{i:08d} ".encode() + line, rec._t0 + 600.0 * i / count)
    rec.close()
    player = TerminalPlayer(Cast(path))
    player.cast.index  # the per-second index is built once, on first use: not part of a seek
    per_second = path.stat().st_size / 600
    counting = player._f = CountingFile(player._f)
    try:
        for t in (550.0, 20.0, 300.0, 299.0, 599.9, 0.5):
            counting.read_bytes = 0
            player.seek(t)
            render_screen(player.screen)
            # at most what the player feeds on from a known state, plus the second of events the index
            # points into: 10 MB / 600 s is ~17 kB a second, so reading from the start would be megabytes
            assert counting.read_bytes <= FEED_LIMIT + 2 * per_second + 1024, (t, counting.read_bytes)
            shown = [ln for ln in player.display() if ln.strip()]
            last = int(shown[-1].split()[0])
            assert abs(last * 600.0 / count - t) < 0.05, (t, last)  # the screen shows the output up to t
    finally:
        player.close()


# -- snapshots --------------------------------------------------------------------------------------------


class HistoryApp(App):
    def __init__(self, state: Path):
        super().__init__()
        self.state = state

    def on_mount(self) -> None:
        self.push_screen(HistoryScreen(self.state / AUDIT_FILE, self.state, operator="alice", clock=lambda: NOW_TS))


def test_history_snapshot(snap_compare, state):
    app = HistoryApp(state)

    async def run_before(pilot):
        screen = await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen)
        await wait_for(pilot, lambda: screen.loaded and screen.report is not None)
        screen.query_one(DataTable).move_cursor(row=3)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_replay_snapshot(snap_compare, state):
    app = ReplayApp(state, ref_for(state, TAIL), autoplay=False, title="tail-log @ web-1  ·  run " + TAIL)

    async def run_before(pilot):
        screen = await opened(pilot)
        await pilot.press("m")  # the next marker: "end ok exit 0"
        await wait_for(pilot, lambda: screen.position == pytest.approx(1.6))
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_history_snapshot_80x24(snap_compare, state):
    """At 80 columns: when, what and how it ended are on screen; the other columns scroll."""
    app = HistoryApp(state)

    async def run_before(pilot):
        screen = await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen)
        await wait_for(pilot, lambda: screen.loaded and screen.report is not None)
        screen.query_one(DataTable).move_cursor(row=3)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_replay_snapshot_80x24(snap_compare, state):
    app = ReplayApp(state, ref_for(state, TAIL), autoplay=False, title="tail-log @ web-1  ·  run " + TAIL)

    async def run_before(pilot):
        screen = await opened(pilot)
        await pilot.press("m")  # the next marker: "end ok exit 0"
        await wait_for(pilot, lambda: screen.position == pytest.approx(1.6))
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_idle_gaps_are_capped_at_two_seconds(tmp_path):
    path = tmp_path / "idle.cast"
    rec = Recording(path, run="r", action="a", target="t", command="c", width=20, height=3)
    rec.output("stdout", b"before\n", rec._t0 + 0.5)
    rec.output("stdout", b"after\n", rec._t0 + 60.5)  # a minute of silence
    rec.close()
    player = TerminalPlayer(Cast(path))
    try:
        player.advance(2.4)  # 1.9 s after "before": still waiting
        assert player.position == pytest.approx(2.4) and "after" not in "".join(player.display())
        player.advance(0.2)  # the gap reached 2 s: on to the next event
        assert player.position == pytest.approx(60.5) and "after" in "".join(player.display())
        player.seek(1.0)
        player.advance(5.0, idle_limit=None)  # without the cap the silence plays as recorded
        assert player.position == pytest.approx(6.0) and "after" not in "".join(player.display())
    finally:
        player.close()
