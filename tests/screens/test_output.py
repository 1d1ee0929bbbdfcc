"""The output panel's buffer and its tabs: feeds keep raw complete lines (bounded, older lines counted), drains
cut to the last lines and sanitise; only the shown tab is written while a run streams, a hidden tab gets its
tail when it is shown, and every tab ends with its target's last lines."""

from __future__ import annotations

import random

import pytest

from textual.app import App, ComposeResult
from textual.widgets import Log, TabbedContent

from opsgate.screens.output import STDERR_PREFIX, OutputBuffer, OutputPanel, StepView, skipped_marker, step_key

from tests.helpers.hostile import assert_inert


def numbered(start: int, stop: int, width: int = 0) -> bytes:
    return b"".join(b"line %d%s\n" % (i, b"x" * width) for i in range(start, stop))


def texts(start: int, stop: int, width: int = 0) -> list[str]:
    return [f"line {i}{'x' * width}" for i in range(start, stop)]


# -- the buffer ---------------------------------------------------------------------------------------------


def test_a_flood_keeps_exactly_the_last_lines_and_counts_the_rest():
    buffer = OutputBuffer(max_pending=50)
    data = numbered(0, 1000, width=7)
    for i in range(0, len(data), 997):  # chunks that end mid-line
        buffer.feed("t", "stdout", data[i:i + 997])
    assert buffer.drain()["t"] == (texts(950, 1000, width=7), 950)
    assert buffer.drain() == {}


def test_one_big_chunk_is_cut_to_the_last_lines():
    buffer = OutputBuffer(max_pending=10)
    buffer.feed("t", "stdout", numbered(0, 500))
    buffer.feed("t", "stdout", numbered(500, 50_000) + b"part")  # more than BIG_BLOCK: cut when it arrives
    assert buffer._pending["t"].lines == 10
    buffer.feed("t", "stdout", b"ial\n")
    assert buffer.drain()["t"] == (texts(49_991, 50_000) + ["partial"], 49_991)


def test_a_hidden_pane_keeps_a_bounded_tail():
    buffer = OutputBuffer(max_pending=400, max_bytes=10_000)
    for start in range(0, 100_000, 100):  # 1.3 MB in 100-line chunks, never drained
        buffer.feed("t", "stdout", numbered(start, start + 100))
        assert buffer._pending["t"].lines < 400 + 100
    assert buffer.drain()["t"] == (texts(99_600, 100_000), 99_600)
    for start in range(0, 100, 10):  # long lines: bounded by bytes
        buffer.feed("t", "stdout", numbered(start, start + 10, width=5000))
        assert buffer._pending["t"].size < 10_000 + 10 * 5010
    lines, skipped = buffer.drain()["t"]
    assert lines == texts(100 - len(lines), 100, width=5000) and skipped == 100 - len(lines) and len(lines) >= 10


@pytest.mark.parametrize("seed", range(20))
def test_every_drain_shows_the_newest_lines_without_a_gap_and_counts_the_lines_before_them(seed):
    rng = random.Random(seed)
    buffer = OutputBuffer(max_pending=rng.choice([1, 5, 50, 400]), max_bytes=rng.choice([10, 300, 5000, 1 << 20]))
    lines = [b"%d %s" % (i, b"z" * rng.choice([0, 3, 40, 400])) for i in range(3000)]
    data = b"".join(line + b"\n" for line in lines)
    shown_upto = 0  # lines before this index were shown or skipped
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 7, 100, 5000, 70_000])
        buffer.feed("t", "stdout", data[pos:pos + step])
        pos += step
        if rng.random() < 0.3 or pos >= len(data):
            complete = data.count(b"\n", 0, min(pos, len(data)))
            got = buffer.drain().get("t", ([], 0))
            if complete == shown_upto:
                assert got == ([], 0)
                continue
            shown, skipped = got
            assert shown and len(shown) <= buffer.max_pending
            first = complete - len(shown)
            assert shown == [line.decode() for line in lines[first:complete]]
            assert skipped == first - shown_upto
            shown_upto = complete


def test_the_last_line_is_kept_whole_even_when_longer_than_the_bound():
    buffer = OutputBuffer(max_pending=10, max_bytes=100)
    buffer.feed("t", "stdout", b"short\n")
    buffer.feed("t", "stdout", b"y" * 500 + b"\n")
    assert buffer.drain()["t"] == (["y" * 500], 1)


def test_streams_keep_their_order_and_the_bound_cuts_inside_a_block():
    buffer = OutputBuffer(max_pending=6)
    buffer.feed("t", "stdout", numbered(0, 4))
    buffer.feed("t", "stderr", b"oops 1\noops 2\n")
    buffer.feed("t", "stdout", numbered(4, 7))
    lines, skipped = buffer.drain()["t"]
    assert lines == ["line 3", f"{STDERR_PREFIX}oops 1", f"{STDERR_PREFIX}oops 2", "line 4", "line 5", "line 6"]
    assert skipped == 3


def test_finish_turns_the_unterminated_tails_into_lines():
    buffer = OutputBuffer()
    buffer.feed("t", "stdout", b"done\nno newline\r")
    buffer.feed("t", "stderr", b"warn")
    assert buffer.drain()["t"] == (["done"], 0)
    buffer.finish("t")
    assert buffer.drain()["t"] == (["no newline", f"{STDERR_PREFIX}warn"], 0)


def test_lines_the_worker_skipped_are_counted_and_a_line_cut_by_them_is_not_joined_to_another():
    buffer = OutputBuffer()
    buffer.feed("t", "stdout", b"one\ntwo-start")
    buffer.skip("t", "stdout", 41)  # two's end and 40 more lines never got here (console/runner.py)
    buffer.feed("t", "stdout", b"line 42\n")
    assert buffer.drain()["t"] == (["one", "line 42"], 41)


def test_drain_takes_only_the_panes_asked_for():
    buffer = OutputBuffer(max_pending=3)
    buffer.feed("a", "stdout", numbered(0, 2))
    buffer.feed("b", "stdout", numbered(0, 5))
    assert buffer.drain(["a"]) == {"a": (texts(0, 2), 0)}
    buffer.feed("b", "stdout", numbered(5, 6))
    assert buffer.drain() == {"b": (texts(3, 6), 3)}


def test_what_is_kept_raw_is_sanitised_when_drained():
    buffer = OutputBuffer(max_pending=2)
    buffer.feed("t", "stdout", b"\x1b]52;c;AAAA\x07copied\n\x1b[31mred\x1b[0m\r\n\xc2\x9b2J\n")
    lines, skipped = buffer.drain()["t"]
    assert skipped == 1 and lines == ["red", "\\x9b2J"]
    for line in lines:
        assert_inert(line)


def test_a_line_without_end_is_shown_in_pieces():
    from opsgate.screens.output import LINE_MAX

    buffer = OutputBuffer()
    buffer.feed("t", "stdout", b"a" * (LINE_MAX + 10))
    lines, _ = buffer.drain()["t"]
    assert lines == ["a" * (LINE_MAX + 10)]


# -- the panel ----------------------------------------------------------------------------------------------


class PanelApp(App):
    def compose(self) -> ComposeResult:
        yield OutputPanel(id="output")


def shown(panel: OutputPanel, key: str) -> list[str]:
    """What a tab's log holds now (``log_for`` would write what is pending first)."""
    _tabs, pane_id = panel._panes[key]
    return list(panel.query_one(f"#{pane_id}-log", Log).lines)


async def test_only_the_shown_tab_is_written_and_a_hidden_one_gets_its_tail_when_shown():
    app = PanelApp()
    async with app.run_test(size=(100, 30)) as pilot:
        panel = app.query_one(OutputPanel)
        await panel.start_run("run", ["a", "b"])
        await pilot.pause()
        panel.buffer = OutputBuffer(max_pending=20)
        panel.buffer.feed("a", "stdout", numbered(0, 5))
        panel.buffer.feed("b", "stdout", numbered(0, 100))
        panel.flush()
        assert shown(panel, "a") == texts(0, 5)
        assert shown(panel, "b") == []  # hidden: nothing written
        panel.query_one("#output-tabs", TabbedContent).active = panel._panes["b"][1]
        await pilot.pause()
        assert shown(panel, "b") == [skipped_marker(80)] + texts(80, 100)
        assert skipped_marker(80) == "… 80 lines skipped here to keep up (the recording has them all)"
        panel.buffer.feed("a", "stdout", numbered(5, 8))
        panel.flush()
        assert shown(panel, "a") == texts(0, 5)  # now a is hidden
        assert panel.log_for("a").lines[-3:] == texts(5, 8)  # handing the log out writes what is pending


async def test_every_tab_ends_with_its_targets_last_lines():
    app = PanelApp()
    async with app.run_test(size=(100, 30)) as pilot:
        panel = app.query_one(OutputPanel)
        await panel.start_run("run", ["a", "b", "c"])
        await pilot.pause()
        for n, target in enumerate(("a", "b", "c")):
            panel.buffer.feed(target, "stdout", numbered(0, 10 + n) + b"last")
            panel.buffer.finish(target)
        panel.finish_run("done")
        for n, target in enumerate(("a", "b", "c")):
            assert shown(panel, target) == texts(0, 10 + n) + ["last"]


async def test_a_runbook_writes_the_shown_steps_shown_tab():
    app = PanelApp()
    async with app.run_test(size=(100, 30)) as pilot:
        panel = app.query_one(OutputPanel)
        steps = [StepView(1, "one", "action", ("a", "b")), StepView(2, "two", "action", ("a",))]
        await panel.start_runbook("runbook", steps)
        await pilot.pause()
        for key in (step_key(1, "a"), step_key(1, "b"), step_key(2, "a")):
            panel.buffer.feed(key, "stdout", f"from {key}\n".encode())
        panel.flush()
        assert shown(panel, step_key(1, "a")) == ["from 1:a"]
        assert shown(panel, step_key(1, "b")) == [] and shown(panel, step_key(2, "a")) == []
        panel.select_step(2)
        await pilot.pause()
        assert shown(panel, step_key(2, "a")) == ["from 2:a"]
        assert shown(panel, step_key(1, "b")) == []
