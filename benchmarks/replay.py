"""Replay seek in a 100 MB recording: console/replay.py's per-second index.

    .venv/bin/python benchmarks/replay.py [--mb 100] [--seeks 50]

Writes a recording with the real ``Recording`` class (an hour of output, 256-byte chunks spread over
3,600 s), then opens it with ``Cast`` and measures (a) the first seek of a freshly opened recording, which
indexes the file as far as the second it asks for: to the middle (half the file) and to the last second (all
of it), each from a fresh ``Cast``, and (b) seeks to random seconds with the index built: the time from
``cast.events(t)`` to the first event at or after ``t`` (goal < 200 ms anywhere). Every seek's first
event is checked to be at or after ``t`` and within the second that was asked for (when the
recording has output then). Then (c) the TUI replay screen's path: ``screens.terminal.TerminalPlayer``
seeks to random times (forwards and backwards) and renders the pyte screen, as a seek key does.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import Row, cli, emit, log

from opsgate.console.audit.recording import Recording
from opsgate.console.audit.replay import Cast

DURATION = 3600.0


def make_recording(path: Path, mb: int) -> int:
    chunk = (os.urandom(256).hex()[:255] + "\n").encode()  # 256-byte lines: many small events, a slow scan
    count = mb * 1_000_000 // len(chunk)
    rec = Recording(path, run="bench", action="flood", target="t0", command="flood")
    t0 = rec._t0  # event times are relative to the recording's start: place them across an hour
    for i in range(count):
        rec.output("stdout", chunk, t0 + DURATION * i / count)
    rec.close()
    return path.stat().st_size


def first_event(cast: Cast, t: float):
    return next(cast.events(t), None)


def screen_seeks(cast: Cast, rng: random.Random, seeks: int) -> tuple[float, list[float]]:
    """The replay screen's seek: TerminalPlayer.seek (snapshot or window) plus rendering pyte's buffer."""
    from opsgate.screens.terminal import TerminalPlayer, render_screen

    start = time.perf_counter()
    player = TerminalPlayer(cast)  # scans the markers (the index is built already)
    opened = time.perf_counter() - start
    times = []
    try:
        for _ in range(seeks):
            t = rng.uniform(0, DURATION)
            start = time.perf_counter()
            player.seek(t)
            render_screen(player.screen)
            times.append(time.perf_counter() - start)
            assert abs(player.position - t) < 1e-6 and any(line.strip() for line in player.display()), t
    finally:
        player.close()
    return opened, times


def main() -> None:
    parser = cli(__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--seeks", type=int, default=50)
    args = parser.parse_args()
    mb = 20 if args.quick else args.mb
    work = Path(tempfile.mkdtemp(prefix="opsgate-bench-replay-"))
    try:
        path = work / "flood.cast"
        size = make_recording(path, mb)
        log(f"replay: recording of {size / 1e6:.0f} MB, {DURATION:.0f} s")
        cold, cold_cpu = {}, {}
        for name, at in (("end", DURATION - 0.5), ("middle", DURATION / 2)):  # the middle's Cast is used below
            cast = Cast(path)
            start, cpu = time.perf_counter(), time.process_time()
            first_event(cast, at)
            cold[name], cold_cpu[name] = time.perf_counter() - start, time.process_time() - cpu
        cast.index  # the rest of the index: the seeks below measure seeking with it built
        rng = random.Random(8)
        times = []
        for _ in range(args.seeks):
            t = rng.uniform(0, DURATION)
            start = time.perf_counter()
            event = first_event(cast, t)
            times.append(time.perf_counter() - start)
            assert event is not None and t <= event.time < int(t) + 2, (t, event and event.time)
        start = time.perf_counter()
        assert first_event(cast, DURATION + 10) is None  # past the end: nothing, quickly
        times.append(time.perf_counter() - start)
        screen_open, screen_times = screen_seeks(cast, rng, args.seeks)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    worst = max(times)
    emit([
        Row(f"replay seek, {size / 1e6:.0f} MB recording, index built", f"p50 {statistics.median(times) * 1e3:.1f} ms, "
            f"max {worst * 1e3:.1f} ms", target="< 200 ms anywhere", met=worst < 0.2,
            note=f"{len(times)} random seeks"),
        Row(f"replay first seek, {size / 1e6:.0f} MB (indexes as far as it needs)",
            f"middle {cold['middle'] * 1e3:.0f} ms, end {cold['end'] * 1e3:.0f} ms", target="< 200 ms anywhere",
            met=max(cold.values()) < 0.2, note=f"a fresh Cast each; to the end is the whole file's scan; CPU "
            f"{cold_cpu['middle'] * 1e3:.0f} and {cold_cpu['end'] * 1e3:.0f} ms"),
        Row(f"replay screen seek + render, {size / 1e6:.0f} MB (pyte)",
            f"p50 {statistics.median(screen_times) * 1e3:.1f} ms, max {max(screen_times) * 1e3:.1f} ms",
            target="well under 1 s", met=max(screen_times) < 0.5,
            note=f"{len(screen_times)} random seeks; opening took {screen_open * 1e3:.0f} ms"),
    ], args.json)


if __name__ == "__main__":
    main()
