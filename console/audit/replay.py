"""Playback of asciicast v2 recordings, for ``opsgate replay`` and (later) the TUI's replay screen.

``Cast`` opens a recording: its header, an iterator over ``Event(time, kind, text)`` that can
start at any second, and an index of the byte offset of the first event of each second, so seeking
reads only from that point. The index is built by a scan only as far as a seek needs, a second's run of
recorder-shaped lines matched at once (about 1 ms per MB); the duration is read from the file's end. ``play`` writes the output events to a stream with the original timing,
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
import os
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
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


# A run of event lines in the same second, as the recorder writes them: ``[S.ffffff, ...]`` lines whose whole
# seconds are the same digits (at most 6 decimals, so no line of the run rounds up into the next second). One match
# per second of recording, so the scan's Python work is per second, not per line; a line of any other shape ends
# the run and goes through ``_line_time`` (the reference rule) on its own.
_SECOND_RUN = re.compile(rb"\[(\d{1,10})\.\d{0,6}+,[^\n]*+\n(?:\[\1\.\d{0,6}+,[^\n]*+\n)*+")
_SCAN_BLOCK = 4 * 1024 * 1024  # read at a time by the scan; a seek scans no further than the block it needs
MAX_TIME = 1e9  # seconds (31 years): a later time is no event time (the index would be that many seconds long)


def _line_time(line: bytes) -> float | None:
    """The time of one event line (ending with its newline), or None when it has none the index can use."""
    if not line.startswith(b"["):
        return None
    try:
        t = float(line[1:line.index(b",")])
    except ValueError:
        return None
    return t if -MAX_TIME < t < MAX_TIME else None  # not nan or inf either


class SecondIndex(Sequence[int]):
    """``index[s]``: the byte offset of the first event line whose time is at or after second ``s`` (in file order:
    the first line whose whole seconds reach ``s``); the last item is the offset after the last line.

    Kept sparse (the seconds where the time first reached a new whole second), so a recording with a long quiet
    gap, or a hostile time of 10**8 s, does not take an entry per second.
    """

    def __init__(self, seconds: list[int], offsets: list[int], end: int):
        self._seconds, self._offsets, self._end = seconds, offsets, end

    def __len__(self) -> int:
        return self._seconds[-1] + 2 if self._seconds else 1

    def __getitem__(self, s):
        if isinstance(s, slice):
            return [self[i] for i in range(*s.indices(len(self)))]
        n = len(self)
        if s < 0:
            s += n
        if not 0 <= s < n:
            raise IndexError("index out of range")
        i = bisect_left(self._seconds, s)
        return self._offsets[i] if i < len(self._offsets) else self._end

    def __eq__(self, other) -> bool:
        return list(self) == list(other) if isinstance(other, (list, SecondIndex)) else NotImplemented

    def __repr__(self) -> str:
        return f"SecondIndex({len(self)} seconds, {len(self._seconds)} entries)"


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
        # The index, built as far as a seek needs it (``_scan_to``): the seconds where the time first reached a new
        # whole second and the offsets of those lines; the scan goes on from ``_scanned``, a line start.
        self._seconds: list[int] = []
        self._offsets: list[int] = []
        self._scanned = self._start
        self._end: int | None = None  # the file's size, once the scan reached the end
        self._duration: float | None = None

    @property
    def title(self) -> str:
        return str(self.header.get("title", self.path.name))

    def _scan_to(self, second: float) -> None:
        """Index the file until a line reaching whole second ``second`` (or the end) is indexed.

        The rule is the one-line-at-a-time reference in the tests: each complete line that starts with ``[`` and
        whose text up to the first comma is a float time ``t`` (finite, below ``MAX_TIME``) indexes the seconds up
        to ``int(t)`` not indexed yet at its own offset. Runs of recorder-shaped lines in one second are matched
        at once by ``_SECOND_RUN`` (they index nothing after their first line); others go through ``_line_time``.
        """
        if self._end is not None or (self._seconds and self._seconds[-1] >= second):
            return
        seconds, offsets = self._seconds, self._offsets
        top = seconds[-1] if seconds else -1
        match = _SECOND_RUN.match
        buf = bytearray(_SCAN_BLOCK)  # read into, again and again (a fresh block per read costs page faults)
        kept = 0  # buf[:kept] is the start of a line cut by the previous read
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self._scanned)
            base = self._scanned  # the offset of buf[0], a line start
            while True:
                if kept == len(buf):
                    buf.extend(bytes(len(buf)))  # a line longer than the buffer: make room for more of it
                with memoryview(buf) as view:
                    got = f.readinto(view[kept:])
                size = kept + got
                data = buf if size == len(buf) else buf[:size]
                pos = 0
                while pos < size:
                    m = match(data, pos)
                    if m is not None:
                        whole = int(m.group(1))
                        if whole > top and whole < MAX_TIME:
                            seconds.append(whole)
                            offsets.append(base + pos)
                            top = whole
                        pos = m.end()
                        continue
                    nl = data.find(b"\n", pos)
                    if nl < 0:
                        break  # a line not complete in this read (or, at the end, not complete at all)
                    t = _line_time(bytes(data[pos:nl + 1]))
                    if t is not None and int(t) > top:
                        seconds.append(int(t))
                        offsets.append(base + pos)
                        top = int(t)
                    pos = nl + 1
                base += pos
                kept = size - pos
                buf[:kept] = data[pos:size]
                self._scanned = base
                if not got:
                    self._end = base + kept  # the file's end (what is kept is a last line without its newline)
                    return
                if top >= second:
                    return

    @property
    def index(self) -> SecondIndex:
        """``index[s]`` is the byte offset of the first event at or after second ``s``; builds the whole index."""
        self._scan_to(float("inf"))
        return SecondIndex(self._seconds, self._offsets, self._end)

    def _offset_of(self, second: int) -> int:
        """``index[second]`` (the end past the last second), scanning no further than it needs."""
        self._scan_to(second)
        i = bisect_left(self._seconds, second)
        return self._offsets[i] if i < len(self._offsets) else self._end

    @property
    def duration(self) -> float:
        """The time of the last event, in seconds (the last complete line with a time: read from the end)."""
        if self._duration is None:
            self._duration = self._last_time()
        return self._duration

    def _last_time(self) -> float:
        # Backwards from the end, in growing blocks: the lines before the last newline, the last one first.
        with open(self.path, "rb") as f:
            pos = f.seek(0, os.SEEK_END)
            rest: bytes | None = None  # the start of a line cut by the block read last (None: no newline met yet)
            block = 64 * 1024
            while pos > self._start:
                begin = max(self._start, pos - block)
                block = min(block * 2, _SCAN_BLOCK)
                f.seek(begin)
                chunk = f.read(pos - begin)
                pos = begin
                if rest is None:
                    cut = chunk.rfind(b"\n")
                    if cut < 0:
                        continue  # all of it is a last line without its newline
                    chunk, rest = chunk[:cut + 1], b""
                lines = (chunk + rest).split(b"\n")[:-1]
                rest = b""
                if pos > self._start:
                    rest, lines = lines[0] + b"\n", lines[1:]  # its beginning is in the next block back
                for line in reversed(lines):
                    t = _line_time(line + b"\n")
                    if t is not None:
                        return t
        return 0.0

    def events(self, start: float = 0.0) -> Iterator[Event]:
        """Events at or after ``start`` seconds, in order; seeks by the index rather than reading from the top
        (the index is built only as far as ``start``).

        A truncated last line (a recording cut by a crash) ends the iteration; a bad line elsewhere raises.
        """
        offset = self._start
        if start > 0:
            offset = self._offset_of(int(min(start, MAX_TIME)))
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
