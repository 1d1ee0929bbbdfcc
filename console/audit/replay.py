"""Playback of asciicast v2 recordings, for ``opsgate replay`` and (later) the TUI's replay screen.

``Cast`` opens a recording: its header, an iterator over ``Event(time, kind, text)`` that can
start at any second, and an index of the byte offset of the first event of each second, so seeking
reads only from that point. ``play`` writes the output events to a stream with the original timing,
scaled by ``speed``, with idle gaps capped (2 s by default, as ``asciinema play`` does with the
header's ``idle_time_limit``). Checking a recording against the audit trail, and deciding whether it
may be played, is the caller's job (``console.audit.verify.check_recording``).

A recording holds what a remote command printed, so it is never trusted with the reviewer's
terminal: ``play`` sends it through the sanitiser's ``ReplayFilter`` (no OSC, DCS, APC, PM, title,
clipboard, hyperlinks, queries or input modes; C1 controls shown as text), and ``text_lines`` renders
it as escaped plain text, each line prefixed, for review and diff (``opsgate replay --text``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from opsgate.actions.display import ReplayFilter, escape_line, escape_text
from opsgate.console.errors import EXIT_FAILED, OpsgateError

IDLE_LIMIT = 2.0


class ReplayError(OpsgateError):
    """A recording cannot be replayed (missing, not asciicast v2, or it does not verify)."""

    exit_code = EXIT_FAILED


class Event(NamedTuple):
    time: float  # seconds since the recording started
    kind: str  # "o" output, "m" marker (others, like "i" or "r", are passed through)
    text: str


class Cast:
    """An asciicast v2 file opened for playback."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                first = f.readline()
        except OSError as e:
            raise ReplayError(f"{self.path}: cannot open the recording: {e.strerror or e}") from None
        try:
            self.header: dict = json.loads(first)
        except ValueError:
            raise ReplayError(f"{self.path}: not an asciicast file (bad header)") from None
        if not isinstance(self.header, dict) or self.header.get("version") != 2:
            raise ReplayError(f"{self.path}: not an asciicast v2 file")
        self._start = len(first)
        self._index: list[int] | None = None
        self._duration = 0.0

    @property
    def title(self) -> str:
        return str(self.header.get("title", self.path.name))

    def _scan(self) -> None:
        # One pass that parses only each line's timestamp: enough for the index and the duration.
        index: list[int] = []
        offset = self._start
        with open(self.path, "rb") as f:
            f.seek(offset)
            for line in f:
                if line.endswith(b"\n") and line.startswith(b"["):
                    try:
                        t = float(line[1:line.index(b",")])
                    except ValueError:
                        t = None
                    if t is not None:
                        while len(index) <= int(t):
                            index.append(offset)
                        self._duration = t
                offset += len(line)
        index.append(offset)  # seeking past the end lands at the end
        self._index = index

    @property
    def index(self) -> list[int]:
        """``index[s]`` is the byte offset of the first event at or after second ``s``."""
        if self._index is None:
            self._scan()
        return self._index

    @property
    def duration(self) -> float:
        """The time of the last event, in seconds."""
        self.index
        return self._duration

    def events(self, start: float = 0.0) -> Iterator[Event]:
        """Events at or after ``start`` seconds, in order; seeks by the index rather than reading from the top.

        A truncated last line (a recording cut by a crash) ends the iteration; a bad line elsewhere raises.
        """
        offset = self._start
        if start > 0:
            second = int(start)
            offset = self.index[min(second, len(self.index) - 1)]
        with open(self.path, "rb") as f:
            f.seek(offset)
            for line in f:
                if not line.endswith(b"\n"):
                    return
                try:
                    t, kind, text = json.loads(line)
                    t = float(t)
                except (ValueError, TypeError):
                    raise ReplayError(f"{self.path}: bad event at byte {offset}: {line[:60]!r}") from None
                offset += len(line)
                if t >= start:
                    yield Event(t, str(kind), str(text))


def play(events: Iterator[Event], out: BinaryIO, *, speed: float = 1.0, idle_limit: float = IDLE_LIMIT,
         sleep: Callable[[float], object] = time.sleep, clock: Callable[[], float] = time.monotonic) -> float:
    """Write the ``"o"`` events to ``out`` (UTF-8, through a ``ReplayFilter``) with their timing; return the
    idle-capped time played.

    Each gap between events is capped at ``idle_limit`` and then divided by ``speed``. Timing follows
    a schedule from the start, so slow writes do not add up into drift.
    """
    if speed <= 0:
        raise ValueError("speed must be positive")
    screen = ReplayFilter()
    begin = clock()
    schedule = 0.0
    last = None
    for event in events:
        if event.kind != "o":
            continue
        gap = 0.0 if last is None else min(max(event.time - last, 0.0), idle_limit)
        last = event.time
        schedule += gap / speed
        delay = begin + schedule - clock()
        if delay > 0.001:
            out.flush()
            sleep(delay)
        out.write(screen.feed(event.text).encode("utf-8", "replace"))
    out.write(screen.flush().encode("utf-8", "replace"))
    out.flush()
    return schedule * speed


TEXT_LINE_MAX = 1 << 20  # a line without end is shown in pieces of this size


def text_lines(events: Iterator[Event], label: str) -> Iterator[str]:
    """A recording as escaped plain text, in blocks of whole lines (each ending with a newline).

    Output lines read ``LABEL | text``, markers ``LABEL # marker``: no recorded text can start a line
    of its own or pass for a header. Every control character is visible (``^[[31m``, ``^M``, ``\\x9b``);
    the recording's ``\\r\\n`` is a newline. Works on whole events, never character by character.
    """
    prefix, carry = f"{label} | ", ""
    for event in events:
        if event.kind == "m":
            if carry:
                yield prefix + escape_text(carry) + "\n"
                carry = ""
            yield f"{label} # {escape_line(event.text)}\n"
            continue
        if event.kind != "o":
            continue
        data = carry + event.text
        cut = data.rfind("\n") + 1
        if cut == 0 and len(data) > TEXT_LINE_MAX:
            cut, data = len(data) + 1, data + "\n"
        carry = data[cut:]
        if cut:
            yield prefix + escape_text(data[:cut])[:-1].replace("\n", "\n" + prefix) + "\n"
    if carry:
        yield prefix + escape_text(carry) + "\n"
