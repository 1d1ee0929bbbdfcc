"""The replay index built by a fast scan (runs of one second at once) and only as far as a seek needs, against the
one-line-at-a-time reference it replaced: the same offsets, duration and events for any file."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import opsgate.console.audit.replay as replay
from opsgate.console.audit.replay import MAX_TIME, Cast, ReplayError

HEADER = (json.dumps({"version": 2, "width": 80, "height": 24}) + "\n").encode()


def reference(data: bytes) -> tuple[list[int], float]:
    """The scan as it was (per line, a list entry per second), with one rule added: a time that is not finite or
    not below MAX_TIME in size is no event time (it crashed the old scan, or made a list of 10**12 entries)."""
    start = data.index(b"\n") + 1
    index: list[int] = []
    duration = 0.0
    offset = start
    for line in data[start:].splitlines(keepends=True):
        if line.endswith(b"\n") and line.startswith(b"["):
            try:
                t = float(line[1:line.index(b",")])
            except ValueError:
                t = None
            if t is not None and math.isfinite(t) and abs(t) < MAX_TIME:
                while len(index) <= int(t):
                    index.append(offset)
                duration = t
        offset += len(line)
    index.append(offset)
    return index, duration


def reference_events(data: bytes, index: list[int], start: float) -> list[tuple[float, str, str]] | str:
    offset = data.index(b"\n") + 1
    if start > 0:
        offset = index[min(int(start), len(index) - 1)]
    out = []
    for line in data[offset:].splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            t, kind, text = json.loads(line)
            t = float(t)
        except (ValueError, TypeError):
            return "bad event"
        if t >= start:
            out.append((t, str(kind), str(text)))
    return out


def events_of(cast: Cast, start: float):
    try:
        return [tuple(e) for e in cast.events(start)]
    except ReplayError:
        return "bad event"


# Lines of every shape the scan meets: the recorder's, JSON's float forms, and what an edit or a crash leaves.
TIMES = st.one_of(st.floats(0, 40, allow_nan=False), st.integers(0, 40).map(float),
                  st.floats(-3, 3, allow_nan=False))


@st.composite
def event_line(draw, t: float) -> bytes:
    shape = draw(st.sampled_from(["recorder", "recorder", "recorder", "json", "int", "zeros", "space", "exp",
                                  "long", "round-up", "nan", "huge", "no-comma", "garbage", "empty", "marker"]))
    text = draw(st.sampled_from(["x", "a, b", "[1.5, ", "\\n", ""]))
    body = json.dumps(text)
    whole = int(abs(t))
    return {
        "recorder": b'[%.6f, "o", %s]\n' % (t, body.encode()),
        "json": json.dumps([t, "o", text]).encode() + b"\n",
        "int": b'[%d, "o", %s]\n' % (whole, body.encode()),
        "zeros": b'[00%.3f, "o", %s]\n' % (abs(t), body.encode()),
        "space": b'[ %.2f , "o", %s]\n' % (t, body.encode()),
        "exp": b'[%.3e, "o", %s]\n' % (t, body.encode()),
        "long": b'[%.9f, "o", %s]\n' % (abs(t), body.encode()),
        "round-up": b'[%d.99999999999999999, "o", "r"]\n' % whole,  # parses as whole + 1
        "nan": b'[NaN, "o", "n"]\n',
        "huge": b'[1e12, "o", "h"]\n',
        "no-comma": b'[%.1f]\n' % t,
        "garbage": b"not an event\n",
        "empty": b"\n",
        "marker": b'[%.6f, "m", "exit 0"]\n' % t,
    }[shape]


@st.composite
def cast_bytes(draw) -> bytes:
    times = draw(st.lists(TIMES, max_size=40))
    if draw(st.booleans()):
        times.sort()  # the recorder's case; unsorted files are edited ones
    lines = [draw(event_line(t)) for t in times]
    tail = draw(st.sampled_from([b"", b'[41.5, "o", "cut', b"[", b'[3.0, "o"']))  # a crash's last line
    return HEADER + b"".join(lines) + tail


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=cast_bytes(), block=st.sampled_from([16, 64, 4 * 1024 * 1024]),
       seeks=st.lists(st.floats(-1, 45, allow_nan=False), max_size=4))
def test_the_index_duration_and_events_match_the_reference(tmp_path, monkeypatch, data, block, seeks):
    """Blocks as small as 16 bytes cut lines and runs anywhere (a line longer than the buffer grows it); seeks in
    any order build the index part by part before it is read whole."""
    monkeypatch.setattr(replay, "_SCAN_BLOCK", block)
    path = tmp_path / "r.cast"
    path.write_bytes(data)
    index, duration = reference(data)
    cast = Cast(path)
    for t in seeks:
        assert events_of(cast, t) == reference_events(data, index, t), t
    assert cast.index == index
    assert list(cast.index) == index and len(cast.index) == len(index)
    assert cast.duration == duration
    assert Cast(path).duration == duration  # from the end, without the forward scan
    for t in [0, 0.5, 1, 2.5, 7, 39.9, 40, 100]:
        assert events_of(cast, t) == reference_events(data, index, t), t


def test_a_first_seek_scans_only_as_far_as_it_needs(tmp_path, monkeypatch):
    monkeypatch.setattr(replay, "_SCAN_BLOCK", 4096)
    lines = [b'[%.6f, "o", "line %d\\r\\n"]\n' % (i / 10, i) for i in range(10_000)]  # 1,000 s
    path = tmp_path / "r.cast"
    path.write_bytes(HEADER + b"".join(lines))
    cast = Cast(path)
    first = next(cast.events(100.0))
    assert first.time == 100.0 and first.text == "line 1000\r\n"
    assert cast._end is None and cast._scanned < path.stat().st_size // 5  # a block or so past second 100
    assert cast.duration == 999.9 and cast._end is None  # read from the end
    assert next(cast.events(999.95), None) is None and cast._end is None  # second 999 is in the index
    assert next(cast.events(1000.5), None) is None  # past the last second: the scan reaches the end
    assert cast._end == path.stat().st_size
    assert cast.index == reference(path.read_bytes())[0]


def test_a_hostile_time_does_not_make_an_entry_per_second(tmp_path):
    path = tmp_path / "r.cast"
    path.write_bytes(HEADER + b'[1.0, "o", "a"]\n[999999999.5, "o", "b"]\n[1e300, "o", "c"]\n[Infinity, "o", "d"]\n'
                     + b'[' + b"9" * 5000 + b'.5, "o", "e"]\n')
    cast = Cast(path)
    assert len(cast.index) == 1_000_000_001 and cast.index[5] == cast.index[999_999_999] == len(HEADER) + 16
    assert cast.index[-1] == path.stat().st_size and cast.duration == 999999999.5
    assert [e.text for e in cast.events(2)] == ["b", "c", "d", "e"]  # json reads them; only the index skips them


def test_a_recorder_file_of_many_seconds(tmp_path):
    rng = random.Random(5)
    t, lines = 0.0, []
    for i in range(20_000):
        t += rng.choice([0.0, 0.001, 0.02, 0.3, 2.5])
        lines.append(b'[%.6f, "o", "%s"]\n' % (t, b"x" * rng.randrange(0, 300)))
    data = HEADER + b"".join(lines)
    path = tmp_path / "r.cast"
    path.write_bytes(data)
    index, duration = reference(data)
    cast = Cast(path)
    assert cast.index == index and cast.duration == duration


@pytest.mark.parametrize("tail", [b"", b'[9.0, "o", "cut'])
def test_duration_reads_back_past_lines_without_a_time(tmp_path, monkeypatch, tail):
    monkeypatch.setattr(replay, "_SCAN_BLOCK", 64)
    path = tmp_path / "r.cast"
    path.write_bytes(HEADER + b'[2.5, "o", "a"]\n' + b"garbage " * 40_000 + b"\n" + b"\n" * 100 + tail)
    assert Cast(path).duration == 2.5
