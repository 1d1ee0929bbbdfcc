"""Live output of a run: one tab per target, fed from worker threads in batches.

A runbook run adds a step list beside the tabs: each step with its status, and the selected step's
own tabs (one per target) with its output. Panes are keyed by target for an action and by
``"STEP:target"`` (``step_key``) for a runbook.

The run's thread calls ``OutputBuffer.feed`` (thread-safe, no widget access, no work per line: it keeps
complete raw lines) with the bounded tails the run's worker process sends (``console/runner.py``), and
``skip`` with the lines the worker dropped to keep them bounded. A 100 ms timer on the UI side drains the
visible tab's pending output, sanitises it a block at a time and writes it with one ``Log.write_lines``: at
most 10 updates a second, whatever arrives.
Hidden tabs are not written: each keeps its last ``MAX_PENDING`` lines in the buffer (raw), written when
the tab is shown and when the run ends. A 50 MB flood costs bounded memory and bounded UI work (older lines
are counted and the pane says how many it skipped); the recording on disk still holds every byte.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.reactive import Reactive
from textual.widgets import ContentSwitcher, Log, OptionList, Static, TabbedContent, TabPane
from textual.widgets.option_list import Option

from opsgate.actions.display import escape_line, escape_stream
from opsgate.console.durations import format_clock
from opsgate.screens.badges import STATUS_MARKS

FLUSH_INTERVAL = 0.1
MAX_LINES = 5000  # per target pane; the recording keeps everything
MAX_PENDING = 400  # lines per target per flush: more than anyone reads in 0.1 s, cheap to draw
MAX_PENDING_BYTES = 1024 * 1024  # and at most about this much of it (lines can be up to LINE_MAX long)
BIG_BLOCK = 64 * 1024  # a read this big with more than MAX_PENDING lines is cut to them when it arrives
STDERR_PREFIX = "[err] "

LINE_MAX = 64 * 1024  # a line without end is shown in pieces rather than held


def clean_lines(block: bytes, prefix: str = "") -> list[str]:
    """Complete remote lines (``block`` ends with a newline) as safe, printable text, each after ``prefix``,
    one chunk at a time: the sanitiser's stream policy without colours (``^[`` for an ESC that is not a
    colour, ``^M`` for a CR inside a line, ``\\x9b`` for a C1 control, as UTF-8 or as a raw 8-bit byte)."""
    text = escape_stream(block, sgr=False)[:-1]
    if prefix:
        text = prefix + text.replace("\n", "\n" + prefix)
    return text.split("\n")


@dataclass
class _Pending:
    """A pane's output not yet shown: blocks of complete raw lines, oldest first."""

    blocks: deque  # (stream, bytes ending with a newline, lines in it)
    lines: int = 0  # in blocks
    size: int = 0  # bytes in blocks
    skipped: int = 0  # lines dropped since the last drain


def skipped_marker(skipped: int) -> str:
    """The line a pane shows where lines were skipped to keep up."""
    return f"… {skipped:,} lines skipped here to keep up (the recording has them all)"


class OutputBuffer:
    """Output waiting to be shown, per pane. ``feed`` from any thread; ``drain`` from the UI.

    ``feed`` splits off complete lines and keeps them raw: a ``rfind``, a ``count``, a slice and an append,
    nothing per line in Python. A pane drops its oldest blocks once the newer ones hold ``max_pending``
    lines (or ``max_bytes``, for very long lines) and counts their lines as skipped. ``drain`` (for the
    panes drained: the visible one while a run streams) cuts what it takes to the last ``max_pending``
    lines and sanitises them, a block at a time.
    """

    def __init__(self, max_pending: int = MAX_PENDING, max_bytes: int = MAX_PENDING_BYTES):
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._partial: dict[tuple[str, str], bytes] = {}

    def _slot(self, target: str) -> _Pending:
        """``target``'s pending output, made on first use. Holds the lock."""
        slot = self._pending.get(target)
        if slot is None:
            slot = self._pending[target] = _Pending(deque())
        return slot

    def _add(self, target: str, stream: str, block: bytes) -> None:
        """Complete lines (``block`` ends with a newline) to ``target``'s pending output. Holds the lock."""
        slot = self._slot(target)
        blocks = slot.blocks
        count = block.count(b"\n")
        limit = self.max_pending
        if count > limit and len(block) > BIG_BLOCK:  # one big read: its last lines, nothing before them
            block = block[len(block.rsplit(b"\n", limit + 1)[0]) + 1:]
            slot.skipped += count - limit + slot.lines
            blocks.clear()
            slot.lines = slot.size = 0
            count = limit
        blocks.append((stream, block, count))
        slot.lines += count
        slot.size += len(block)
        while len(blocks) > 1 and (slot.lines - blocks[0][2] >= limit
                                   or slot.size - len(blocks[0][1]) >= self.max_bytes):
            _stream, old, old_count = blocks.popleft()  # the newer blocks hold enough to show
            slot.lines -= old_count
            slot.size -= len(old)
            slot.skipped += old_count

    def feed(self, target: str, stream: str, data: bytes) -> None:
        key = (target, stream)
        with self._lock:
            partial = self._partial.pop(key, None)
            head = partial + data if partial else data
            cut = head.rfind(b"\n") + 1
            if len(head) - cut > LINE_MAX:  # a line without end: show it in pieces rather than hold it
                head, cut = head + b"\n", len(head) + 1
            if cut < len(head):
                self._partial[key] = head[cut:]
                head = head[:cut]
            if cut:
                self._add(target, stream, head)

    def skip(self, target: str, stream: str, lines: int) -> None:
        """``lines`` of ``target``'s ``stream`` were dropped before they got here: count them as skipped.
        The unterminated line held for that stream ended among them (counted there), so it is dropped."""
        with self._lock:
            self._partial.pop((target, stream), None)
            self._slot(target).skipped += lines

    def finish(self, target: str) -> None:
        """The target is done: its unterminated last lines become lines."""
        with self._lock:
            for stream in ("stdout", "stderr"):
                tail = self._partial.pop((target, stream), b"").rstrip(b"\r")
                if tail:
                    self._add(target, stream, tail + b"\n")

    def drain(self, targets=None) -> dict[str, tuple[list[str], int]]:
        """What is pending for ``targets`` (every pane if None): target -> (its last ``max_pending`` lines,
        sanitised; lines skipped before them since the last drain). Other panes keep theirs (bounded)."""
        with self._lock:
            taken = []
            for target in self._pending if targets is None else targets:
                slot = self._pending.get(target)
                if slot is not None and (slot.blocks or slot.skipped):
                    taken.append((target, list(slot.blocks), slot.lines, slot.skipped))
                    slot.blocks.clear()
                    slot.lines = slot.size = slot.skipped = 0
        out = {}
        limit = self.max_pending
        for target, blocks, count, skipped in taken:  # cut and sanitised outside the lock: the readers go on
            lines: list[str] = []
            for i, (stream, block, block_count) in enumerate(blocks):
                if i == 0 and count > limit:  # the oldest block: only its last lines are shown
                    keep = block_count - (count - limit)
                    block = block[len(block.rsplit(b"\n", keep + 1)[0]) + 1:]
                    skipped += count - limit
                lines.extend(clean_lines(block, STDERR_PREFIX if stream == "stderr" else ""))
            out[target] = (lines, skipped)
        return out


class FollowLog(Log):
    """A Log that keeps following the newest line through a resize.

    Textual's Log scrolls to the end on a write only when the view was at the end just before it; a resize
    (the terminal, or the panes around it) changes where the end is without moving the view, so a log
    that was following stopped. This one also follows when the view is still where the last follow put
    it: the operator did not scroll away, only the size changed. Scrolling up stops following; End (or
    scrolling back to the bottom) follows again.
    """

    # New lines change only this log's scrollable size, never its place on the screen: a repaint and its
    # scrollbars, not a layout of the whole screen (which a flood would ask for every flush while the log
    # grows to MAX_LINES). A scrollbar that appears or goes still asks for a layout (``_scroll_update``).
    virtual_size = Reactive(Size(0, 0), layout=False)

    _followed_y: float | None = None

    def watch_virtual_size(self, size: Size) -> None:
        self._scroll_update(size)

    @property
    def following(self) -> bool:
        return self.auto_scroll and (self.is_vertical_scroll_end or self.scroll_y == self._followed_y)

    def write_lines(self, lines, scroll_end: bool | None = None):
        follow = self.following if scroll_end is None else scroll_end
        super().write_lines(lines, scroll_end=False)
        if follow and not self.is_vertical_scrollbar_grabbed:
            self._follow()
        return self

    def _follow(self) -> None:
        self.scroll_end(animate=False, immediate=True, x_axis=False)
        self._followed_y = self.scroll_y

    def on_resize(self) -> None:
        if self.scroll_y == self._followed_y or self.is_vertical_scroll_end:
            self.call_after_refresh(self._follow_if_still)

    def _follow_if_still(self) -> None:
        if self.scroll_y == self._followed_y or self.is_vertical_scroll_end:
            self._follow()


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


STEP_MARKS = {**STATUS_MARKS, "waiting": "⏸", "skipped": "↷", "not run": "✗"}
STEP_WORDS = {"waiting": "waiting for you"}


def step_key(step: int, target: str) -> str:
    """The pane key of ``target`` in runbook step ``step``."""
    return f"{step}:{target}"


@dataclass
class StepView:
    """A runbook step as the output panel shows it."""

    index: int
    title: str
    kind: str  # "action" | "command" | "pause"
    targets: tuple[str, ...]
    command: str | None = None  # redacted
    pause: str | None = None
    status: str = "pending"
    detail: str = ""


class OutputPanel(Vertical):
    """A status line for the run and one tab per target with its live output (per step for a runbook)."""

    def __init__(self, *, clock=time.monotonic, **kwargs):
        super().__init__(**kwargs)
        self.buffer = OutputBuffer()
        self.clock = clock
        self._panes: dict[str, tuple[str, str]] = {}  # pane key -> (tabs id, pane id)
        self._keys_by_pane: dict[str, str] = {}  # pane id -> pane key
        self.statuses: dict[str, str] = {}  # pane key -> status word
        self.steps: dict[int, StepView] = {}  # runbook runs only
        self.headline = ""
        self.running = False
        self._started = 0.0
        self._generation = 0  # ids of a new run never clash with the previous run's widgets being removed

    def compose(self) -> ComposeResult:
        yield Static(Text("No run yet. Select an action and press enter (or r).", style="italic"),
                      id="run-status")
        with Horizontal(id="run-body"):
            yield OptionList(id="steps")
            with ContentSwitcher(initial="output-tabs", id="step-outputs"):
                yield TabbedContent(id="output-tabs")

    def on_mount(self) -> None:
        self.add_class("idle")
        self.query_one("#steps", OptionList).border_title = "Steps"
        self.set_interval(FLUSH_INTERVAL, self.flush, name="output-flush")

    @property
    def step_statuses(self) -> dict[int, str]:
        return {i: v.status for i, v in self.steps.items()}

    def focus_run(self) -> None:
        """Focus the run: a runbook's step list, or the first target's output (arrows scroll it)."""
        if self.steps:
            self.query_one("#steps", OptionList).focus()
            return
        for log in self.query(FollowLog):
            if log.is_attached:
                log.focus()
                return

    def log_for(self, key: str) -> Log:
        """The log of a target (an action run) or of ``step_key(step, target)`` (a runbook run), with
        everything that arrived for it written first (a line written after it goes after its output)."""
        tabs_id, pane_id = self._panes[key]
        self._write((key,))
        return self.query_one(f"#{pane_id}-log", Log)

    def _reset(self) -> None:
        self.buffer = OutputBuffer()  # what the previous run left unshown is in its recordings
        self.remove_class("idle")
        self._panes = {}
        self._keys_by_pane = {}
        self.statuses = {}
        self._generation += 1

    async def _add_tabs(self, tabs: TabbedContent, keys: list[tuple[str, str]], prefix: str) -> None:
        """One tab per (pane key, target)."""
        for i, (key, target) in enumerate(keys):
            pane_id = f"{prefix}-{i}"
            self._panes[key] = (tabs.id, pane_id)
            self._keys_by_pane[pane_id] = key
            self.statuses[key] = "pending"
            log = FollowLog(max_lines=MAX_LINES, auto_scroll=True, id=f"{pane_id}-log", classes="output-log")
            await tabs.add_pane(TabPane(self._tab_label(target), log, id=pane_id))
            log.can_focus = True
        if keys:
            tabs.active = f"{prefix}-0"

    async def start_run(self, headline: str, targets: list[str]) -> None:
        """New tabs for a new run; the previous run's output goes (it is in the recordings)."""
        self._reset()
        self.remove_class("runbook")
        self.steps = {}
        switcher = self.query_one("#step-outputs", ContentSwitcher)
        await self._remove_step_views()
        switcher.current = "output-tabs"
        tabs = self.query_one("#output-tabs", TabbedContent)
        await tabs.clear_panes()
        await self._add_tabs(tabs, [(t, t) for t in targets], f"out{self._generation}")
        self._begin(headline)

    async def _remove_step_views(self) -> None:
        switcher = self.query_one("#step-outputs", ContentSwitcher)
        await switcher.remove_children([w for w in switcher.children if w.id != "output-tabs"])

    async def start_runbook(self, headline: str, steps: list[StepView]) -> None:
        """The step list and, per step, its own tabs (one per target) or, for a pause, its question."""
        self._reset()
        self.add_class("runbook")
        self.steps = {s.index: s for s in steps}
        switcher = self.query_one("#step-outputs", ContentSwitcher)
        await self._remove_step_views()
        await self.query_one("#output-tabs", TabbedContent).clear_panes()
        gen = self._generation
        for step in steps:
            box = Vertical(Static(self._step_info(step), id=f"g{gen}-step-{step.index}-info", classes="step-info"),
                           id=f"g{gen}-step-{step.index}", classes="step-view")
            box.display = False  # the switcher shows one step at a time (select_step)
            await switcher.mount(box)
            if step.kind != "pause":
                tabs = TabbedContent(id=f"g{gen}-step-{step.index}-tabs", classes="step-tabs")
                await box.mount(tabs)
                await self._add_tabs(tabs, [(step_key(step.index, t), t) for t in step.targets],
                                     f"g{gen}-s{step.index}")
        step_list = self.query_one("#steps", OptionList)
        step_list.clear_options()
        step_list.add_options([Option(self._step_line(s), id=str(s.index)) for s in steps])
        self.select_step(steps[0].index if steps else None)
        self._begin(headline)

    def _begin(self, headline: str) -> None:
        self.headline = headline
        self.running = True
        self._started = self.clock()
        self._refresh_status()

    # -- runbook steps ------------------------------------------------------------------------------

    def _step_line(self, step: StepView):
        word = STEP_WORDS.get(step.status, step.status)
        grid = Table.grid(expand=True)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(no_wrap=True, justify="right")
        style = {"ok": "#3fa45b", "failed": "bold #e5484d", "cancelled": "bold #e5484d", "running": "bold",
                 "waiting": "bold #d4a72c", "skipped": "dim", "pending": "dim"}.get(step.status, "")
        grid.add_row(Text(f"{STEP_MARKS.get(step.status, '?')} {step.index} {step.title}"), Text(word, style=style))
        return grid

    def _step_info(self, step: StepView) -> Text:
        word = STEP_WORDS.get(step.status, step.status)
        info = Text.assemble((f"{step.index}. {step.title}", "bold"), "  ·  ", (word, "bold"))
        if step.detail and step.detail != step.status:
            info.append(f" ({escape_line(step.detail)})")
        if step.kind == "pause":
            info.append(f"\n⏸ {step.pause}")
        else:
            info.append(f"\non {', '.join(step.targets)}  ", style="dim")
            if step.command:
                info.append("$ " + step.command, style="dim")
        return info

    def set_step_status(self, index: int, status: str, detail: str = "") -> None:
        step = self.steps.get(index)
        if step is None:
            return
        step.status, step.detail = status, detail
        step_list = self.query_one("#steps", OptionList)
        try:
            step_list.replace_option_prompt(str(index), self._step_line(step))
        except Exception:  # a newer run replaced the list
            pass
        for info in self.query(f"#g{self._generation}-step-{index}-info"):
            info.update(self._step_info(step))
        # Targets of a step that never started show it on their tabs too.
        if status in ("skipped", "cancelled", "not run"):
            for target in step.targets:
                key = step_key(index, target)
                if self.statuses.get(key) in ("pending", "waiting for step-up"):
                    self.set_status(key, status, outcome="cancelled" if status != "skipped" else "pending")
        self._refresh_status()

    def select_step(self, index: int | None) -> None:
        """Show ``index``'s output (and highlight it in the step list)."""
        if index is None or index not in self.steps:
            return
        step_list = self.query_one("#steps", OptionList)
        position = list(self.steps).index(index)
        if step_list.highlighted != position:
            step_list.highlighted = position
        self.query_one("#step-outputs", ContentSwitcher).current = f"g{self._generation}-step-{index}"
        self.flush()  # the step's shown tab, with what arrived while it was hidden

    @property
    def selected_step(self) -> int | None:
        current = self.query_one("#step-outputs", ContentSwitcher).current or ""
        prefix = f"g{self._generation}-step-"
        return int(current[len(prefix):]) if current.startswith(prefix) else None

    @on(OptionList.OptionHighlighted, "#steps")
    def _step_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        if event.option.id is not None:
            self.select_step(int(event.option.id))

    def _tab_label(self, target: str) -> str:
        return f"{status_mark('pending')} {target} · pending"

    def set_status(self, key: str, status: str, *, outcome: str | None = None) -> None:
        """``status`` is the word shown ("running", "ok", "exit 3", ...); ``outcome`` picks the mark.

        ``key`` is the target (an action run) or ``step_key(step, target)`` (a runbook run).
        """
        if key not in self._panes:
            return
        self.statuses[key] = status
        mark = status_mark(outcome or status)
        tabs_id, pane_id = self._panes[key]
        target = key.split(":", 1)[1] if self.steps else key
        try:
            self.query_one(f"#{tabs_id}", TabbedContent).get_tab(pane_id).label = f"{mark} {target} · {status}"
        except Exception:  # the pane went with a newer run
            pass
        self._refresh_status()

    def finish_run(self, summary: str) -> None:
        self.flush(everything=True)  # every tab ends with its target's last lines
        self.running = False
        self.headline = summary
        self._refresh_status()

    def tick(self) -> None:
        if self.running:
            self._refresh_status()

    def _refresh_status(self) -> None:
        line = Text(self.headline, style="bold")
        if self.running:
            line.append(f"  ·  running {format_clock(self.clock() - self._started)}  ·  x cancels", style="")
        counts: dict[str, int] = {}
        for status in (self.step_statuses if self.steps else self.statuses).values():
            status = STEP_WORDS.get(status, status)
            counts[status] = counts.get(status, 0) + 1
        if counts:
            line.append("  ·  " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), style="dim")
        # One line high (app.tcss) and as wide as the panel: a new text needs a repaint, not a new layout of
        # the screen (which, during a flood, costs every key press its share of the GIL).
        self.query_one("#run-status", Static).update(line, layout=False)

    def _visible_key(self) -> str | None:
        """The pane key of the tab shown now: the active tab of the run's tabs, or of the shown step's tabs."""
        try:
            current = self.query_one("#step-outputs", ContentSwitcher).current
            tabs_id = "output-tabs" if current == "output-tabs" else f"{current}-tabs"
            tabs = self.query_one(f"#{tabs_id}", TabbedContent)
        except Exception:  # a pause step (no tabs), or a run being replaced
            return None
        return self._keys_by_pane.get(tabs.active)

    def flush(self, everything: bool = False) -> None:
        """Write what arrived since the last flush into the visible tab (into every tab if ``everything``).

        A hidden tab is not written while it is hidden: its output waits in the buffer (its last
        ``MAX_PENDING`` lines at most) and is written when the tab is shown (``TabActivated``,
        ``select_step``), when ``log_for`` hands its log out, and when the run finishes.
        """
        if everything:
            keys = None
        else:
            key = self._visible_key()
            if key is None:
                return
            keys = (key,)
        self._write(keys)

    def _write(self, keys) -> None:
        for key, (lines, dropped) in self.buffer.drain(keys).items():
            if key not in self._panes:
                continue
            try:
                log = self.query_one(f"#{self._panes[key][1]}-log", Log)
            except Exception:
                continue
            if dropped:
                lines = [skipped_marker(dropped)] + lines
            log.write_lines(lines)

    @on(TabbedContent.TabActivated)
    def _tab_shown(self, event: TabbedContent.TabActivated) -> None:
        """A tab is shown: write what its target sent while it was hidden."""
        key = self._keys_by_pane.get(event.pane.id)
        if key is not None:
            self._write((key,))
