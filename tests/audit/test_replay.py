"""Playback: events, the per-second seek index, timing with capped idle gaps."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from opsgate.console.audit.recording import Recording
from opsgate.console.audit.replay import Cast, Event, ReplayError, play

HEADER = {"version": 2, "width": 80, "height": 24, "timestamp": 0, "title": "r a@t"}
TIMES = [0.5, 1.2, 1.9, 3.5, 10.0]


def write_cast(path: Path, times=TIMES, tail: bytes = b"") -> list[int]:
    """A hand-made cast; returns the byte offset of each event line."""
    data = (json.dumps(HEADER) + "\n").encode()
    offsets = []
    for i, t in enumerate(times):
        offsets.append(len(data))
        data += json.dumps([t, "o", f"e{i} "]).encode() + b"\n"
    path.write_bytes(data + tail)
    return offsets


class FakeTime:
    """A clock that only moves when play sleeps, so timing is asserted exactly."""

    def __init__(self):
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_events_and_index(tmp_path):
    path = tmp_path / "a.cast"
    offsets = write_cast(path)
    cast = Cast(path)
    assert cast.title == "r a@t" and cast.duration == 10.0
    assert list(cast.events()) == [Event(t, "o", f"e{i} ") for i, t in enumerate(TIMES)]
    # index[s]: the first event at or after second s
    assert cast.index[:5] == [offsets[0], offsets[1], offsets[3], offsets[3], offsets[4]]
    assert cast.index[9] == offsets[4] and cast.index[-1] == path.stat().st_size
    assert [e.time for e in cast.events(start=3.0)] == [3.5, 10.0]
    assert [e.time for e in cast.events(start=1.5)] == [1.9, 3.5, 10.0]
    assert list(cast.events(start=11)) == []


def test_seek_reads_from_the_index_offset(tmp_path):
    path = tmp_path / "a.cast"
    offsets = write_cast(path)
    cast = Cast(path)
    cast.index  # build it, then break an early line: a seek past it must not read it
    data = bytearray(path.read_bytes())
    data[offsets[0]] = ord("x")
    path.write_bytes(bytes(data))
    assert [e.time for e in cast.events(start=3)] == [3.5, 10.0]
    with pytest.raises(ReplayError, match="bad event"):
        list(cast.events())


def test_truncated_last_event_ends_playback(tmp_path):
    path = tmp_path / "a.cast"
    write_cast(path, tail=b'[11.0, "o", "cut sho')
    assert [e.time for e in Cast(path).events()][-1] == 10.0


def test_not_asciicast_v2_is_refused(tmp_path):
    path = tmp_path / "v1.cast"
    path.write_text(json.dumps({"version": 1}) + "\n")
    with pytest.raises(ReplayError, match="v2"):
        Cast(path)
    with pytest.raises(ReplayError, match="cannot open"):
        Cast(tmp_path / "missing.cast")


def test_play_keeps_timing_scaled_by_speed_with_idle_gaps_capped(tmp_path):
    path = tmp_path / "a.cast"
    write_cast(path, times=[0.0, 1.0, 11.0, 11.5])
    fake, out = FakeTime(), io.BytesIO()
    played = play(Cast(path).events(), out, speed=2.0, sleep=fake.sleep, clock=fake.clock)
    assert out.getvalue() == b"e0 e1 e2 e3 "
    # gaps 1, 10 -> capped to 2, 0.5; halved by speed 2
    assert fake.sleeps == pytest.approx([0.5, 1.0, 0.25])
    assert played == pytest.approx(3.5)
    with pytest.raises(ValueError):
        play(iter([]), out, speed=0)


def test_play_of_a_real_recording(tmp_path):
    rec = Recording(tmp_path / "r.cast", run="r", action="a", target="t", command="c")
    t0 = time.monotonic()
    rec.output("stdout", "première ligne\n".encode(), t0)
    rec.marker("step-up otp", t0 + 0.1)
    rec.output("stderr", b"oops\n", t0 + 60)  # a long idle gap
    rec.close()
    fake, out = FakeTime(), io.BytesIO()
    play(Cast(rec.path).events(), out, speed=1.0, sleep=fake.sleep, clock=fake.clock)
    assert out.getvalue().decode() == "première ligne\r\n\x1b[31moops\r\n\x1b[0m"
    assert sum(fake.sleeps) == pytest.approx(2.0, abs=0.01)  # the 60 s gap plays as 2 s
