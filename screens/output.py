"""Live output of a run: one tab per target, fed from worker threads in batches.

Fan-out threads call ``OutputBuffer.feed`` (thread-safe, no widget access). A 100 ms timer on the UI
side drains the buffer with one ``Log.write_lines`` per target. The buffer keeps at most
``max_pending`` lines per target between flushes: a 50 MB flood costs bounded memory and bounded UI
work, and the recording on disk still holds every byte.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Log, Static, TabbedContent, TabPane

from .badges import STATUS_MARKS

FLUSH_INTERVAL = 0.1
MAX_LINES = 5000  # per target pane; the recording keeps everything
STDERR_PREFIX = "[err] "

# Remote bytes are not ours to interpret: strip colour codes and show other control characters.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROLS = {c: 0x2400 + c for c in range(32) if c not in (9,)}
_CONTROLS[127] = 0x2421


def clean_line(raw: bytes) -> str:
    """One remote line as safe, printable text (UTF-8 with replacement, no escape sequences)."""
    text = raw.decode("utf-8", "replace").rstrip("\r")
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    return text.translate(_CONTROLS)


@dataclass
class _Pending:
    lines: deque
    dropped: int = 0
    bytes: int = 0


class OutputBuffer:
    """Lines waiting to be shown, per target. ``feed`` from any thread; ``drain`` from the UI."""

    def __init__(self, max_pending: int = MAX_LINES):
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._partial: dict[tuple[str, str], bytes] = {}

    def _slot(self, target: str) -> _Pending:
        slot = self._pending.get(target)
        if slot is None:
            slot = self._pending[target] = _Pending(deque(maxlen=self.max_pending))
        return slot

    def feed(self, target: str, stream: str, data: bytes) -> None:
        key = (target, stream)
        with self._lock:
            head = self._partial.pop(key, b"") + data
            parts = head.split(b"\n")
            tail = parts.pop()
            if len(tail) > 64 * 1024:  # a line without end: show it in pieces rather than hold it
                parts.append(tail)
                tail = b""
            if tail:
                self._partial[key] = tail
            slot = self._slot(target)
            slot.bytes += len(data)
            if not parts:
                return
            overflow = len(slot.lines) + len(parts) - self.max_pending
            if overflow > 0:
                slot.dropped += overflow
            if len(parts) > self.max_pending:
                parts = parts[-self.max_pending:]
            prefix = STDERR_PREFIX if stream == "stderr" else ""
            slot.lines.extend(prefix + clean_line(p) for p in parts)

    def finish(self, target: str) -> None:
        """The target is done: its unterminated last lines become lines."""
        with self._lock:
            for stream in ("stdout", "stderr"):
                tail = self._partial.pop((target, stream), b"")
                if tail:
                    prefix = STDERR_PREFIX if stream == "stderr" else ""
                    self._slot(target).lines.append(prefix + clean_line(tail))

    def drain(self) -> dict[str, tuple[list[str], int]]:
        """Everything pending: target -> (lines, lines dropped since the last drain)."""
        with self._lock:
            out = {}
            for target, slot in self._pending.items():
                if slot.lines or slot.dropped:
                    out[target] = (list(slot.lines), slot.dropped)
                    slot.lines.clear()
                    slot.dropped = 0
            return out


STATUS_WORDS = {
    "ok": "ok",
    "failed": "exit {code}",
    "timeout": "timeout",
    "cancelled": "cancelled",
    "unreachable": "unreachable",
    "auth": "auth refused",
    "hostkey": "host key refused",
}


def status_word(outcome: str, exit_code: int | None = None) -> str:
    """The per-target status the operator reads: running / ok / exit N / timeout / unreachable."""
    return STATUS_WORDS.get(outcome, outcome).format(code=exit_code)


def status_mark(outcome: str) -> str:
    if outcome in ("auth", "hostkey"):
        return STATUS_MARKS["unreachable"]
    return STATUS_MARKS.get(outcome, "?")


class OutputPanel(Vertical):
    """A status line for the run and one tab per target with its live output."""

    def __init__(self, *, clock=time.monotonic, **kwargs):
        super().__init__(**kwargs)
        self.buffer = OutputBuffer()
        self.clock = clock
        self._panes: dict[str, str] = {}  # target -> pane id
        self.statuses: dict[str, str] = {}
        self.headline = ""
        self.running = False
        self._started = 0.0

    def compose(self) -> ComposeResult:
        yield Static(Text("No run yet. Select an action and press enter (or r).", style="italic"),
                      id="run-status")
        yield TabbedContent(id="output-tabs")

    def on_mount(self) -> None:
        self.add_class("idle")
        self.set_interval(FLUSH_INTERVAL, self.flush, name="output-flush")

    def log_for(self, target: str) -> Log:
        return self.query_one(f"#{self._panes[target]}-log", Log)

    async def start_run(self, headline: str, targets: list[str]) -> None:
        """New tabs for a new run; the previous run's output goes (it is in the recordings)."""
        self.buffer.drain()
        self.buffer = OutputBuffer()
        self.remove_class("idle")
        tabs = self.query_one(TabbedContent)
        await tabs.clear_panes()
        self._panes = {}
        self.statuses = {}
        for i, target in enumerate(targets):
            pane_id = f"out-{i}"
            self._panes[target] = pane_id
            self.statuses[target] = "pending"
            log = Log(max_lines=MAX_LINES, auto_scroll=True, id=f"{pane_id}-log", classes="output-log")
            await tabs.add_pane(TabPane(self._tab_label(target), log, id=pane_id))
            log.can_focus = True
        if targets:
            tabs.active = self._panes[targets[0]]
        self.headline = headline
        self.running = True
        self._started = self.clock()
        self._refresh_status()

    def _tab_label(self, target: str) -> str:
        return f"{status_mark('pending')} {target} · pending"

    def set_status(self, target: str, status: str, *, outcome: str | None = None) -> None:
        """``status`` is the word shown ("running", "ok", "exit 3", ...); ``outcome`` picks the mark."""
        if target not in self._panes:
            return
        self.statuses[target] = status
        mark = status_mark(outcome or status)
        tabs = self.query_one(TabbedContent)
        try:
            tabs.get_tab(self._panes[target]).label = f"{mark} {target} · {status}"
        except Exception:  # the pane went with a newer run
            pass
        self._refresh_status()

    def finish_run(self, summary: str) -> None:
        self.flush()
        self.running = False
        self.headline = summary
        self._refresh_status()

    def tick(self) -> None:
        if self.running:
            self._refresh_status()

    def _refresh_status(self) -> None:
        line = Text(self.headline, style="bold")
        if self.running:
            elapsed = int(self.clock() - self._started)
            line.append(f"  ·  running {elapsed // 60:02d}:{elapsed % 60:02d}  ·  x cancels", style="")
        counts: dict[str, int] = {}
        for status in self.statuses.values():
            counts[status] = counts.get(status, 0) + 1
        if counts:
            line.append("  ·  " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), style="dim")
        self.query_one("#run-status", Static).update(line)

    def flush(self) -> None:
        """Write what arrived since the last flush: one write_lines per target pane."""
        for target, (lines, dropped) in self.buffer.drain().items():
            if target not in self._panes:
                continue
            try:
                log = self.log_for(target)
            except Exception:
                continue
            if dropped:
                lines = [f"… {dropped} lines skipped here to keep up (the recording has them all)"] + lines
            log.write_lines(lines)
