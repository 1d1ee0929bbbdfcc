"""opsgate.actions.fanout against a real sshd reached through several loopback addresses."""

from __future__ import annotations

import threading
import time

import pytest

from opsgate.actions.fanout import ConnectionPool, FanOut, PoolClosed
from opsgate.actions.ssh import Chunk, TargetResult
from tests.helpers.ssh import endpoint, marker, wait_gone
from tests.helpers.sshd import free_port


class Recorder:
    """Collects callbacks from worker threads and tracks how many targets run at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.chunks: list[Chunk] = []
        self.started: list[str] = []
        self.results: list[TargetResult] = []
        self.running = 0
        self.max_running = 0

    def sink(self, chunk: Chunk) -> None:
        with self.lock:
            self.chunks.append(chunk)

    def on_start(self, name: str) -> None:
        with self.lock:
            self.started.append(name)
            self.running += 1
            self.max_running = max(self.max_running, self.running)

    def on_result(self, result: TargetResult) -> None:
        with self.lock:
            self.results.append(result)
            if result.target in self.started:
                self.running -= 1

    def output(self, target: str) -> bytes:
        return b"".join(c.data for c in self.chunks if c.target == target and c.stream == "stdout")


def targets(sshd, count: int, **overrides):
    """`count` endpoints spread over the sshd's loopback addresses, named t00, t01, ..."""
    return [endpoint(sshd, name=f"t{i:02d}", host=sshd.addresses[i % len(sshd.addresses)], **overrides)
            for i in range(count)]


def test_twenty_targets_two_unreachable_results_in_order(sshd):
    endpoints = targets(sshd, 20)
    closed = free_port()
    for i in (5, 13):
        endpoints[i] = endpoint(sshd, name=f"t{i:02d}", host="127.0.0.1", port=closed)
    rec = Recorder()
    results = FanOut(endpoints, "echo $SSH_CONNECTION", sink=rec.sink,
                     on_start=rec.on_start, on_result=rec.on_result).run()
    assert [r.target for r in results] == [e.name for e in endpoints]
    outcomes = [r.outcome for r in results]
    assert outcomes.count("ok") == 18
    assert outcomes[5] == outcomes[13] == "unreachable"
    assert "refused" in results[5].error and results[5].exit_code is None
    assert sorted(rec.started) == sorted(e.name for e in endpoints if e.port != closed)
    assert len(rec.results) == 20
    for ep, result in zip(endpoints, results):
        if result.outcome == "ok":  # each target's output came from the address it names
            assert rec.output(ep.name).split()[2].decode() == ep.host


def test_max_parallel_is_respected(sshd):
    rec = Recorder()
    start = time.monotonic()
    results = FanOut(targets(sshd, 9), "sleep 0.3", max_parallel=3, sink=rec.sink,
                     on_start=rec.on_start, on_result=rec.on_result).run()
    assert [r.outcome for r in results] == ["ok"] * 9
    assert rec.max_running == 3
    assert time.monotonic() - start >= 0.9  # three waves of 0.3 s


def test_threads_are_bounded_by_max_parallel_not_by_the_targets(sshd):
    """At most a worker and an SSH transport thread per open connection (no timer thread per handshake,
    no transport thread left behind a closed connection), however many targets the run has."""
    before = set(threading.enumerate())
    peak: set[threading.Thread] = set()
    done = threading.Event()

    def sample():
        while not done.wait(0.002):
            now = set(threading.enumerate()) - before
            if len(now) > len(peak):
                peak.clear()
                peak.update(now)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    results = FanOut(targets(sshd, 12), "true", max_parallel=3, sink=lambda chunk: None).run()
    done.set()
    sampler.join()
    assert [r.outcome for r in results] == ["ok"] * 12
    peak.discard(sampler)
    assert len(peak) <= 2 * 3, sorted(type(t).__name__ for t in peak)
    assert not [t for t in peak if isinstance(t, threading.Timer)]


def test_one_bad_target_does_not_stop_the_others(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    endpoints = targets(sshd, 4)
    endpoints[1] = endpoint(sshd, name="t01", known_hosts=(str(empty),))
    endpoints[2] = endpoint(sshd, name="t02", host="no-such-host.invalid")
    rec = Recorder()
    results = FanOut(endpoints, "sleep 5", timeout=0.5, sink=rec.sink, on_result=rec.on_result).run()
    assert [r.outcome for r in results] == ["timeout", "hostkey", "unreachable", "timeout"]
    assert sshd.host_fingerprint in results[1].error
    assert "ssh-keyscan" in results[1].error


def test_cancel_stops_running_targets_and_skips_the_rest(sshd):
    rec = Recorder()
    two_started = threading.Event()

    def sink(chunk: Chunk) -> None:
        rec.sink(chunk)
        with rec.lock:
            if sum(b"started" in c.data for c in rec.chunks) >= 2:
                two_started.set()

    a = marker()
    fan = FanOut(targets(sshd, 6), f"echo started; sleep {a}", max_parallel=2, sink=sink,
                 on_start=rec.on_start, on_result=rec.on_result)
    results: list[list[TargetResult]] = []
    worker = threading.Thread(target=lambda: results.append(fan.run()))
    worker.start()
    try:
        assert two_started.wait(10)
    finally:
        cancelled_at = time.monotonic()
        fan.cancel()
        worker.join(10)
    assert [r.outcome for r in results[0]] == ["cancelled"] * 6
    assert len(rec.started) == 2
    assert wait_gone(f"sleep {a}", 10) == []
    assert time.monotonic() - cancelled_at < 10  # not the sleep itself (minutes); slack for a loaded machine


def test_shared_pool_reuses_one_connection_per_target(sshd):
    endpoints = targets(sshd, 3)
    with ConnectionPool() as pool:
        first = [pool.get(e) for e in endpoints]
        for step in ("echo one", "echo two"):
            results = FanOut(endpoints, step, sink=lambda chunk: None, pool=pool).run()
            assert [r.outcome for r in results] == ["ok"] * 3
        assert [pool.get(e) for e in endpoints] == first
        assert all(c.is_active() for c in first)
    assert not any(c.is_active() for c in first)
    with pytest.raises(PoolClosed):
        pool.get(endpoints[0])


def test_concurrent_gets_connect_once(sshd):
    calls: list[str] = []
    from opsgate.actions.ssh import connect

    def counting_connect(ep):
        calls.append(ep.name)
        return connect(ep)

    ep = endpoint(sshd)
    with ConnectionPool(connect=counting_connect) as pool:
        got: list = []
        threads = [threading.Thread(target=lambda: got.append(pool.get(ep))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(calls) == 1 and len({id(c) for c in got}) == 1


def test_failing_sink_is_reported_not_raised(sshd):
    def sink(chunk: Chunk) -> None:
        raise ValueError("sink broke")

    results = FanOut(targets(sshd, 2), "echo hi", sink=sink).run()
    assert [r.outcome for r in results] == ["failed", "failed"]
    assert "sink broke" in results[0].error
