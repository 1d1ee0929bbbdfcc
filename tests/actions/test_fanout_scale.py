"""A fan-out over many more targets than it runs at once: known_hosts read once for the whole run, at most
max_parallel SSH connections (each with its transport thread) open at any time, none left at the end."""

from __future__ import annotations

import threading

import paramiko

from opsgate.actions import hostkeys
from opsgate.actions.fanout import ConnectionPool, FanOut
from tests.helpers.ssh import endpoint


def active_transports() -> list[paramiko.Transport]:
    return [t for t in threading.enumerate() if isinstance(t, paramiko.Transport) and t.is_active()]


def test_many_targets_read_known_hosts_once_and_keep_at_most_max_parallel_connections(sshd, monkeypatch):
    reads = []
    real = hostkeys.KnownHosts.load.__func__
    monkeypatch.setattr(hostkeys.KnownHosts, "load", classmethod(lambda cls, p: reads.append(p) or real(cls, p)))
    before = {id(t) for t in active_transports()}
    lock = threading.Lock()
    seen = []

    def started(name: str) -> None:
        with lock:
            seen.append(len([t for t in active_transports() if id(t) not in before]))

    endpoints = [endpoint(sshd, name=f"t{i:02d}", host=sshd.addresses[i % len(sshd.addresses)]) for i in range(24)]
    results = FanOut(endpoints, "true", max_parallel=3, sink=lambda chunk: None, on_start=started).run()
    assert [r.outcome for r in results] == ["ok"] * 24, [r.error for r in results if r.outcome != "ok"]
    assert len(reads) == 1
    assert len(seen) == 24 and max(seen) <= 3
    assert not [t for t in active_transports() if id(t) not in before]  # every connection closed


def test_a_shared_pool_reads_known_hosts_once_across_runs(sshd, monkeypatch):
    reads = []
    real = hostkeys.KnownHosts.load.__func__
    monkeypatch.setattr(hostkeys.KnownHosts, "load", classmethod(lambda cls, p: reads.append(p) or real(cls, p)))
    endpoints = [endpoint(sshd, name=f"t{i}", host=sshd.addresses[i]) for i in range(4)]
    with ConnectionPool() as pool:
        for command in ("true", "echo again"):
            results = FanOut(endpoints, command, max_parallel=2, sink=lambda chunk: None, pool=pool).run()
            assert [r.outcome for r in results] == ["ok"] * 4
    assert len(reads) == 1


def test_close_ends_the_transport_thread_even_when_its_read_has_no_timeout(sshd):
    """close() shuts the socket down, which wakes the transport thread's blocked read: with paramiko's 0.1 s
    read timeout removed, closing the descriptor alone would leave the thread reading after close() returned."""
    from opsgate.actions.ssh import connect

    connection = connect(endpoint(sshd))
    transport = connection._transport
    transport.sock.settimeout(None)  # from its next read on, the reader blocks in recv until the socket says otherwise
    assert connection.run("true", lambda chunk: None).outcome == "ok"  # the reader's reads since are such reads
    connection.close()
    assert not transport.is_alive()
