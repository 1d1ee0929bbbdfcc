"""The replay screen: one (run, target) recording, checked against the audit trail, then played.

A thread worker checks the file's sha256 against its ``action.target`` record first (a mismatch shows a
red UNVERIFIED banner; the reviewer may still look), opens it and then drives a ``TerminalPlayer``
(pyte) with the original timing: the UI only sends commands (pause, speed, seek, markers) through a
queue and shows the frames the worker renders, so a seek or a burst of output never blocks a key.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import ScrollableContainer
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from opsgate.actions.display import escape_line
from opsgate.console.audit.history import RecordingRef
from opsgate.console.audit.replay import Cast, ReplayError
from opsgate.console.audit.verify import check_recording

from opsgate.screens.terminal import IDLE_LIMIT, Marker, TerminalPlayer, render_screen

SPEEDS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
SEEK_STEP = 5.0
FRAME = 1 / 30
RED, GREEN = "bold #ffffff on #b3123a", "bold #0b2e13 on #7ccf8a"


def clock_text(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    m, s = divmod(seconds, 60)
    return f"{int(m)}:{s:04.1f}"


@dataclass
class ReplayOpened(Message):
    """The worker checked and opened the recording (or could not)."""

    problem: str | None  # why it does not verify (None: it does)
    error: str | None  # why it cannot be played at all
    width: int = 0
    height: int = 0
    duration: float = 0.0
    markers: tuple[Marker, ...] = ()


@dataclass
class ReplayFrame(Message):
    text: Text
    lines: list[str]
    position: float
    playing: bool
    speed: float
    skip_idle: bool
    exact: bool
    cursor_y: int


class TerminalView(Static):
    """pyte's screen as Rich text, at the recording's own width and height."""

    DEFAULT_CSS = """
    TerminalView { width: auto; height: auto; background: #0c0c0c; color: #d0d0d0; }
    """


class ReplayScreen(Screen[None]):
    """Plays one recording with pause, speed, idle skip, seeking and marker jumps."""

    DEFAULT_CSS = """
    ReplayScreen { layout: vertical; }
    #replay-title { height: 1; background: $panel; }
    #replay-banner { height: auto; padding: 0 1; }
    #replay-term { height: 1fr; background: #0c0c0c; }
    #replay-status { height: 1; padding: 0 1; background: $panel; }
    #replay-progress { height: 1; padding: 0 1; }
    """

    BINDINGS = [
        Binding("space", "toggle_play", "Play/pause"),
        Binding("plus,equals_sign", "faster", "Faster"),
        Binding("minus", "slower", "Slower"),
        Binding("left", "seek(-5)", "-5 s"),
        Binding("right", "seek(5)", "+5 s"),
        Binding("m", "marker(1)", "Next marker"),
        Binding("M", "marker(-1)", "Prev marker"),
        Binding("i", "toggle_idle", "Skip idle"),
        Binding("home", "seek_to(0)", "Start", show=False),
        Binding("end", "seek_to(-1)", "End", show=False),
        Binding("escape,q", "close", "Back"),
    ]

    def __init__(self, state_dir: Path, ref: RecordingRef, *, title: str = "", autoplay: bool = True,
                 speed: float = 1.0, chain_problem: str | None = None,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.state_dir = Path(state_dir)
        self.ref = ref
        self.heading = escape_line(title or f"{ref.run} @ {ref.target}")  # from the trail, not the recording
        self.autoplay = autoplay
        self.chain_problem = chain_problem  # the history's verify says this record is past a break
        self.clock = clock
        self._commands: queue.Queue = queue.Queue()
        self._frame_pending = False
        # What the reviewer sees (tests read these too).
        self.verified: bool | None = None
        self.problem: str | None = None
        self.error: str | None = None
        self.duration = 0.0
        self.markers: tuple[Marker, ...] = ()
        self.position = 0.0
        self.playing = False
        self.speed = speed
        self.skip_idle = True
        self.exact = True
        self.lines: list[str] = []
        self.text = Text()
        self.frames = 0

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble((" replay ", "bold reverse"), " ", self.heading), id="replay-title")
        yield Static(Text(" checking the recording against the audit trail…", style="dim"), id="replay-banner")
        with ScrollableContainer(id="replay-term", can_focus=False):  # arrows and home/end seek, not scroll
            yield TerminalView(id="replay-view")
        yield Static(id="replay-status")
        yield Static(id="replay-progress")
        yield Footer()

    def on_mount(self) -> None:
        self._play()

    def on_unmount(self) -> None:
        self._commands.put(("close",))

    # -- the worker: check, open, play ------------------------------------------------------------------

    def _check(self) -> tuple[str | None, str | None]:
        """(why it does not verify, why it cannot be opened)."""
        ref = self.ref
        check = check_recording(self.state_dir, ref.path, ref.sha256, record=ref.record)
        return check.problem or self.chain_problem, check.cannot_play

    @work(thread=True, exclusive=True, group="replay", exit_on_error=False)
    def _play(self) -> None:
        worker = get_current_worker()
        problem, error = self._check()
        player = None
        if error is None:
            try:
                player = TerminalPlayer(Cast(self.state_dir / self.ref.path))
            except (ReplayError, OSError, ValueError) as e:
                error = str(e)
        if worker.is_cancelled:
            return
        if player is None:
            self.post_message(ReplayOpened(problem, error))
            return
        self.post_message(ReplayOpened(problem, None, player.width, player.height, player.duration,
                                       tuple(player.markers)))
        try:
            self._loop(player, worker)
        finally:
            player.close()

    def _loop(self, player: TerminalPlayer, worker) -> None:
        playing, speed, skip_idle = self.autoplay, self.speed, True
        last = self.clock()
        shown = -1
        while not worker.is_cancelled:
            try:
                commands = [self._commands.get(timeout=FRAME if playing else 0.25)]
            except queue.Empty:
                commands = []
            while True:  # take every key pressed since the last frame at once
                try:
                    commands.append(self._commands.get_nowait())
                except queue.Empty:
                    break
            now = self.clock()
            if playing:
                player.advance((now - last) * speed, IDLE_LIMIT if skip_idle else None)
            last = now
            for command in commands:
                name, *arg = command
                if name == "close":
                    return
                if name == "toggle":
                    if not playing and player.ended:
                        player.seek(0.0)
                    playing = not playing
                elif name == "speed":
                    speed = arg[0]
                elif name == "idle":
                    skip_idle = not skip_idle
                elif name == "seek":
                    player.seek(arg[0] if arg[0] >= 0 else player.duration)
                elif name == "seek_rel":
                    player.seek(player.position + arg[0])
                elif name == "marker":
                    mark = player.marker_after(player.position) if arg[0] > 0 else player.marker_before(player.position)
                    if mark is not None:
                        player.seek(mark.time)
                shown = -1  # a command always shows a new frame (the status line changed)
            if playing and player.ended:
                playing = False
                shown = -1
            if player.version != shown and not self._frame_pending:
                shown = player.version
                self._frame_pending = True
                self.post_message(ReplayFrame(render_screen(player.screen), player.display(), player.position,
                                              playing, speed, skip_idle, player.exact, player.screen.cursor.y))

    # -- showing ----------------------------------------------------------------------------------------

    def on_replay_opened(self, message: ReplayOpened) -> None:
        self.problem, self.error = message.problem, message.error
        self.verified = message.problem is None
        banner = self.query_one("#replay-banner", Static)
        if message.problem is None:
            seq = f" (seq {escape_line(self.ref.seq, 24)})" if self.ref.seq is not None else ""
            banner.update(Text(f"✓ VERIFIED: the recording's sha256 matches its audit record{seq}", style=GREEN))
        else:
            banner.update(Text(f"✗ UNVERIFIED: {escape_line(message.problem)}. What plays here is not evidence: it does not "
                               "match the audit trail.", style=RED))
            banner.add_class("unverified")
        if message.error is not None:
            self.query_one(TerminalView).update(Text(f"\n  {escape_line(message.error)}\n", style="bold"))
            return
        self.duration, self.markers = message.duration, message.markers
        view = self.query_one(TerminalView)
        view.styles.width, view.styles.height = message.width, message.height
        self.playing = self.autoplay
        self._show_status()

    def on_replay_frame(self, message: ReplayFrame) -> None:
        self._frame_pending = False
        self.frames += 1
        self.position, self.playing, self.speed = message.position, message.playing, message.speed
        self.skip_idle, self.exact, self.lines = message.skip_idle, message.exact, message.lines
        self.text = message.text
        self.query_one(TerminalView).update(message.text)
        term = self.query_one("#replay-term", ScrollableContainer)
        visible = term.size.height
        if visible and not (term.scroll_y <= message.cursor_y < term.scroll_y + visible):
            term.scroll_to(y=max(0, message.cursor_y - visible + 1), animate=False)
        self._show_status()

    def _show_status(self) -> None:
        state = "▶ playing" if self.playing else ("■ ended" if self.duration and self.position >= self.duration
                                                   else "⏸ paused")
        parts = [(state, "bold"), f"  {self.speed:g}x", "  ·  idle ≤ 2 s" if self.skip_idle else "  ·  real gaps",
                 f"  ·  {clock_text(self.position)} / {clock_text(self.duration)}"]
        mark = next((m for m in reversed(self.markers) if m.time <= self.position + 1e-6), None)
        if mark is not None:
            parts.append(f"  ·  after marker “{mark.label}”")
        if not self.exact:
            parts.append(("  ·  rebuilt from the last 24 KiB", "dim"))
        self.query_one("#replay-status", Static).update(Text.assemble(*parts))
        self.query_one("#replay-progress", Static).update(self._bar())

    def _bar(self) -> Text:
        width = max(self.size.width - 2, 10)
        total = self.duration or 1.0
        filled = int(round(width * min(self.position / total, 1.0)))
        cells = ["━" if i < filled else "─" for i in range(width)]
        styles = ["#5fa8e8" if i < filled else "#555555" for i in range(width)]
        for m in self.markers:
            i = min(int(width * m.time / total), width - 1)
            cells[i], styles[i] = "◆", "bold #f2c94c"
        bar = Text()
        for ch, st in zip(cells, styles):
            bar.append(ch, st)
        return bar

    # -- keys ---------------------------------------------------------------------------------------------

    def _send(self, *command) -> None:
        self._commands.put(command)

    def action_toggle_play(self) -> None:
        self._send("toggle")

    def action_faster(self) -> None:
        self.speed = next((s for s in SPEEDS if s > self.speed), SPEEDS[-1])
        self._send("speed", self.speed)

    def action_slower(self) -> None:
        self.speed = next((s for s in reversed(SPEEDS) if s < self.speed), SPEEDS[0])
        self._send("speed", self.speed)

    def action_seek(self, seconds: float) -> None:
        self._send("seek_rel", float(seconds))

    def action_seek_to(self, t: float) -> None:
        self._send("seek", float(t))

    def action_marker(self, direction: int) -> None:
        self._send("marker", int(direction))

    def action_toggle_idle(self) -> None:
        self._send("idle")

    def action_close(self) -> None:
        self._send("close")
        self.dismiss(None)
