"""Terminal playback for the replay screen: an asciicast fed through ``pyte``, with fast seeking.

What pyte gets of a recording goes through the sanitiser's ``ReplayFilter`` first (OSC, DCS, APC, PM,
title, clipboard and hyperlinks removed; C1 controls such as U+009B, which pyte would execute as CSI,
shown as text), so a recording drives pyte no further than a reviewer's terminal in ``opsgate replay``.

``TerminalPlayer`` owns a ``pyte.Screen`` of the recording's size and feeds it the ``"o"`` events up to
a position. It never imports Textual (the benchmark drives it directly); ``render_screen`` turns pyte's
buffer into Rich ``Text`` with a ``Style`` per run of equally styled cells.

Seeking, in a recording of any size:
- ``Cast.index`` gives the byte offset of each second; a few lines from there give the exact offset of
  the first event after the wanted time.
- Every ``SNAPSHOT_EVERY`` seconds of recording fed (and after each seek) a copy of pyte's state is kept
  (an LRU of ``SNAPSHOT_CACHE``); a seek restores the nearest snapshot before the target and feeds what
  lies between, when that is at most ``FEED_LIMIT`` bytes.
- Farther from any snapshot, feeding everything before the target through pyte (about 1 MB/s) would take
  minutes in a 100 MB recording, so the screen is rebuilt from a blank terminal fed the last ``WINDOW``
  bytes before the target. For line output (commands run without a PTY) that is exactly the visible
  screen; output that paints with absolute cursor moves may differ until the next clear. ``exact``
  says which one is shown.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pyte
from rich.style import Style
from rich.text import Text

from opsgate.actions.display import ReplayFilter, escape_line
from opsgate.console.audit.replay import Cast

SNAPSHOT_EVERY = 5.0
SNAPSHOT_CACHE = 48
FEED_LIMIT = 96 * 1024
WINDOW = 24 * 1024
IDLE_LIMIT = 2.0
_MARKER = b', "m", '


@dataclass(frozen=True)
class Marker:
    time: float
    label: str


def scan_markers(path: Path, start: int) -> list[Marker]:
    """The ``"m"`` events of a recording, found by a byte search (JSON text never holds a bare ``, "m", ``)."""
    markers: list[Marker] = []
    carry = b""
    with open(path, "rb") as f:
        f.seek(start)
        while block := f.read(1 << 20):
            data = carry + block
            end = data.rfind(b"\n") + 1
            carry = data[end:]
            pos = data.find(_MARKER, 0, end)
            while pos >= 0:
                line_start = data.rfind(b"\n", 0, pos) + 1
                line_end = data.find(b"\n", pos)
                try:
                    t, kind, label = json.loads(data[line_start:line_end])
                    if kind == "m":
                        markers.append(Marker(float(t), escape_line(label, 80)))
                except (ValueError, TypeError):
                    pass
                pos = data.find(_MARKER, line_end, end)
    return markers


class _Snapshot:
    """pyte's screen state and where in the file it stands."""

    __slots__ = ("offset", "time", "exact", "state")

    def __init__(self, offset: int, time: float, exact: bool, state: tuple):
        self.offset, self.time, self.exact, self.state = offset, time, exact, state


def _capture(sc: pyte.Screen) -> tuple:
    c = sc.cursor
    return ({y: dict(line) for y, line in sc.buffer.items()}, (c.x, c.y, c.attrs, c.hidden), list(sc.savepoints),
            set(sc.mode), sc.margins, set(sc.tabstops), sc.charset, sc.g0_charset, sc.g1_charset, sc.title,
            sc.icon_name, sc.saved_columns, sc.columns, sc.lines)


def _restore(state: tuple) -> pyte.Screen:
    (buffer, cursor, savepoints, mode, margins, tabstops, charset, g0, g1, title, icon, saved, cols, lines) = state
    sc = pyte.Screen(cols, lines)
    sc.mode, sc.margins, sc.tabstops = set(mode), margins, set(tabstops)
    sc.charset, sc.g0_charset, sc.g1_charset, sc.title, sc.icon_name = charset, g0, g1, title, icon
    sc.saved_columns, sc.savepoints = saved, list(savepoints)
    sc.cursor = pyte.screens.Cursor(cursor[0], cursor[1], cursor[2])
    sc.cursor.hidden = cursor[3]
    for y, line in buffer.items():
        sc.buffer[y].update(line)
    return sc


class TerminalPlayer:
    """A recording being played into a pyte screen. Not thread-safe: one thread drives it."""

    def __init__(self, cast: Cast):
        self.cast = cast
        self.width = max(int(cast.header.get("width") or 80), 1)
        self.height = max(int(cast.header.get("height") or 24), 1)
        self.duration = cast.duration  # builds the index: one scan of the file
        self.markers = scan_markers(cast.path, cast._start)
        self._first = cast._start  # the first event's offset
        self._f = open(cast.path, "rb")
        self._snapshots: OrderedDict[int, _Snapshot] = OrderedDict()
        self.version = 0  # grows whenever the screen may have changed
        self._reset(self._first, exact=True)

    def close(self) -> None:
        self._f.close()

    # -- state ---------------------------------------------------------------------------------------

    def _reset(self, offset: int, *, exact: bool) -> None:
        self.screen = pyte.Screen(self.width, self.height)
        self.stream = pyte.Stream(self.screen)
        self.filter = ReplayFilter()  # what pyte may see of the recording (no OSC, DCS, APC, PM; C1 as text)
        self.offset = offset  # the next event not fed yet
        self.position = 0.0  # the recording time shown
        self.last_event = 0.0  # time of the last event fed
        self.exact = exact
        self._next_snapshot = SNAPSHOT_EVERY
        self._next_time: float | None = None
        self.version += 1

    def _save(self) -> None:
        if not self.stream._taking_plain_text or not self.filter.idle:
            return  # inside an escape sequence: a fresh parser (or filter) could not pick it up
        snap = _Snapshot(self.offset, self.last_event, self.exact, _capture(self.screen))
        self._snapshots[self.offset] = snap
        self._snapshots.move_to_end(self.offset)
        while len(self._snapshots) > SNAPSHOT_CACHE:
            self._snapshots.popitem(last=False)

    def _load(self, snap: _Snapshot) -> None:
        self.screen = _restore(snap.state)
        self.stream = pyte.Stream(self.screen)
        self.filter = ReplayFilter()  # snapshots are only taken where the filter holds nothing
        self.offset, self.last_event, self.exact = snap.offset, snap.time, snap.exact
        self._next_snapshot = snap.time + SNAPSHOT_EVERY
        self._next_time = None
        self._snapshots.move_to_end(snap.offset)
        self.version += 1

    # -- reading -------------------------------------------------------------------------------------

    def _lines(self, offset: int):
        """(start, end, line) of complete event lines from ``offset``."""
        f = self._f
        f.seek(offset)
        while True:
            line = f.readline()
            if not line.endswith(b"\n"):
                return
            yield offset, offset + len(line), line
            offset += len(line)

    @staticmethod
    def _time_of(line: bytes) -> float | None:
        try:
            return float(line[1:line.index(b",")])
        except ValueError:
            return None

    def _offset_after(self, t: float) -> int:
        """Byte offset of the first event later than ``t`` (the file's end if none)."""
        index = self.cast.index
        second = int(t)
        offset = index[second] if second < len(index) else index[-1]
        for start, end, line in self._lines(offset):
            et = self._time_of(line)
            if et is not None and et > t:
                return start
            offset = end
        return offset

    def next_event_time(self) -> float | None:
        """Time of the next event not fed yet, or None at the end."""
        if self._next_time is None:
            for _, _, line in self._lines(self.offset):
                self._next_time = self._time_of(line)
                break
        return self._next_time

    # -- playing -------------------------------------------------------------------------------------

    def _feed_until(self, t: float) -> None:
        fed = False
        for start, end, line in self._lines(self.offset):
            et = self._time_of(line)
            if et is None or et > t:
                break
            try:
                _, kind, text = json.loads(line)
            except (ValueError, TypeError):
                break  # a damaged line ends the playable part
            if kind == "o":
                self.stream.feed(self.filter.feed(str(text)))
                fed = True
            self.offset, self.last_event = end, et
            if et >= self._next_snapshot:
                self._save()
                self._next_snapshot = et + SNAPSHOT_EVERY
        self._next_time = None
        self.position = min(max(t, 0.0), self.duration)
        if fed:
            self.version += 1

    def advance_to(self, t: float) -> None:
        """Show the screen at recording time ``t``: feed forward, or seek when that is far or backwards."""
        t = min(max(t, 0.0), self.duration)
        index = self.cast.index
        bound = index[min(int(t) + 1, len(index) - 1)]
        if t >= self.position and bound - self.offset <= FEED_LIMIT:
            self._feed_until(t)
        else:
            self.seek(t)

    def advance(self, dt: float, idle_limit: float | None = IDLE_LIMIT) -> None:
        """Play ``dt`` seconds of recording; with ``idle_limit``, a quiet gap lasts at most that long."""
        target = self.position + dt
        if idle_limit is not None:
            nxt = self.next_event_time()
            if nxt is not None and nxt > target and target >= self.last_event + idle_limit:
                target = nxt
        self.advance_to(target)

    def seek(self, t: float) -> None:
        """Show the screen at recording time ``t`` (anywhere, in well under a second)."""
        t = min(max(t, 0.0), self.duration)
        end = self._offset_after(t)
        # Start from whichever known state is closest before the target: a snapshot, the current screen or the top.
        best = None
        for snap in self._snapshots.values():
            if snap.offset <= end and (best is None or snap.offset > best.offset):
                best = snap
        here = self.offset if self.offset <= end else -1
        top = self._first
        start = max(best.offset if best else -1, here, top)
        if end - start > FEED_LIMIT:
            self._reset(self._window_start(end), exact=False)
        elif start == here and here >= 0:
            pass  # feed on from the current screen
        elif best is not None and start == best.offset:
            self._load(best)
        else:
            self._reset(top, exact=True)
        self._feed_until(t)
        self.version += 1
        near = any(abs(s.time - self.last_event) < SNAPSHOT_EVERY / 2 for s in self._snapshots.values())
        if not near:
            self._save()

    def _window_start(self, end: int) -> int:
        """The first event line starting at or after ``end - WINDOW``."""
        start = max(self._first, end - WINDOW)
        if start == self._first:
            return start
        self._f.seek(start - 1)
        data = self._f.read(end - start + 1)
        nl = data.find(b"\n")
        return start + nl if nl >= 0 else end

    def marker_after(self, t: float) -> Marker | None:
        return next((m for m in self.markers if m.time > t + 1e-6), None)

    def marker_before(self, t: float) -> Marker | None:
        # Half a second of grace: pressing M just after a marker goes to the one before it, like a player.
        return next((m for m in reversed(self.markers) if m.time < t - 0.5), None)

    @property
    def ended(self) -> bool:
        return self.position >= self.duration

    def display(self) -> list[str]:
        """The screen as plain lines (pyte's ``display``)."""
        return list(self.screen.display)


# -- rendering -----------------------------------------------------------------------------------------

_NAMES = {"brown": "yellow"}


def _color(name: str) -> str | None:
    if not name or name == "default":
        return None
    if len(name) == 6 and all(c in "0123456789abcdefABCDEF" for c in name):
        return f"#{name}"
    if name.startswith("bright"):
        return "bright_" + _NAMES.get(name[6:], name[6:])
    return _NAMES.get(name, name)


_STYLES: dict[tuple, Style] = {}


def _style(ch) -> Style:
    key = (ch.fg, ch.bg, ch.bold, ch.italics, ch.underscore, ch.strikethrough, ch.reverse, ch.blink)
    style = _STYLES.get(key)
    if style is None:
        try:
            style = Style(color=_color(ch.fg), bgcolor=_color(ch.bg), bold=ch.bold or None,
                          italic=ch.italics or None, underline=ch.underscore or None,
                          strike=ch.strikethrough or None, reverse=ch.reverse or None, blink=ch.blink or None)
        except Exception:  # an unknown colour name: show the text, unstyled
            style = Style()
        if len(_STYLES) < 4096:
            _STYLES[key] = style
    return style


def render_screen(screen: pyte.Screen, *, cursor: bool = True) -> Text:
    """pyte's buffer as one Rich ``Text`` (a line per row), styled per run of equal cells."""
    out = Text(no_wrap=True, overflow="crop", end="")
    show_cursor = cursor and not screen.cursor.hidden
    cx, cy = screen.cursor.x, screen.cursor.y
    default = screen.default_char
    for y in range(screen.lines):
        row = screen.buffer.get(y)
        if y:
            out.append("\n")
        run: list[str] = []
        run_style = None
        for x in range(screen.columns):
            ch = row[x] if row is not None else default
            if ch.data == "":
                continue  # the second cell of a wide character
            style = _style(ch)
            if show_cursor and x == cx and y == cy:
                style = style + Style(reverse=not ch.reverse)
            if style is not run_style and style != run_style:
                if run:
                    out.append("".join(run), run_style)
                run, run_style = [], style
            run.append(ch.data)
        if run:
            out.append("".join(run), run_style)
    return out
