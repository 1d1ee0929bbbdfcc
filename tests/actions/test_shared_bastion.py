"""A fan-out through one bastion logs in to it once: every target is a channel of that one connection.

The bastion is an extra sshd with LogLevel VERBOSE, whose log has one "Accepted publickey" line per login;
the targets are the session sshd's 16 loopback addresses (20 targets, so some addresses serve two).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from opsgate.actions import fanout
from opsgate.actions.fanout import ConnectionPool, FanOut
from opsgate.actions.ssh import Chunk, Endpoint

pytestmark = pytest.mark.system

TARGETS = [f"t{i:02d}" for i in range(1, 21)]


def address(name: str) -> str:
    return f"127.0.0.{int(name[1:]) % 16 + 1}"


@pytest.fixture
def bastion(start_sshd):
    return start_sshd(addresses=("127.0.0.1",), options={"LogLevel": "VERBOSE"})


@pytest.fixture
def endpoints(sshd, bastion, tmp_path) -> list[Endpoint]:
    config = tmp_path / "ssh_config"
    text = (f"Host bastion\n  HostName 127.0.0.1\n  Port {bastion.port}\n  User {bastion.user}\n"
            f"  IdentityFile {bastion.identity_file}\n"
            f"Host t*\n  Port {sshd.port}\n  User {sshd.user}\n  IdentityFile {sshd.identity_file}\n"
            f"  ProxyJump bastion\n")
    text += "".join(f"Host {name}\n  HostName {address(name)}\n" for name in TARGETS)
    config.write_text(text)
    return [Endpoint(name=name, host=name, ssh_config=str(config), known_hosts=(sshd.known_hosts, bastion.known_hosts),
                     allow_agent=False, look_for_keys=False, connect_timeout=10.0) for name in TARGETS]


def logins(server) -> int:
    return server.log().count("Accepted publickey")


class Outputs:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, bytes] = {}

    def __call__(self, chunk: Chunk) -> None:
        if chunk.stream == "stdout":
            with self.lock:
                self.data[chunk.target] = self.data.get(chunk.target, b"") + chunk.data


def test_twenty_targets_behind_one_bastion_log_in_to_it_once(endpoints, bastion):
    out = Outputs()
    results = FanOut(endpoints, "echo $SSH_CONNECTION", max_parallel=8, sink=out).run()
    assert [r.outcome for r in results] == ["ok"] * 20, [r.error for r in results if r.outcome != "ok"]
    assert logins(bastion) == 1, bastion.log()
    for name in TARGETS:  # each target reached at its own address, from the bastion
        client, _, server, _ = out.data[name].split()
        assert (client, server) == (b"127.0.0.1", address(name).encode())


def test_at_most_max_parallel_targets_are_open_through_the_bastion(endpoints, bastion, monkeypatch):
    lock = threading.Lock()
    open_now: set[str] = set()
    peak = [0]

    class Counting(ConnectionPool):
        def get(self, endpoint):
            connection = super().get(endpoint)
            with lock:
                open_now.add(endpoint.name)
                peak[0] = max(peak[0], len(open_now))
            return connection

        def release(self, endpoint):
            with lock:
                open_now.discard(endpoint.name)
            super().release(endpoint)

    monkeypatch.setattr(fanout, "ConnectionPool", Counting)
    results = FanOut(endpoints, "true", max_parallel=3, sink=lambda chunk: None).run()
    assert [r.outcome for r in results] == ["ok"] * 20, [r.error for r in results if r.outcome != "ok"]
    assert 1 <= peak[0] <= 3 and not open_now
    assert logins(bastion) == 1


def test_a_runbook_pool_keeps_the_one_bastion_connection_across_steps(endpoints, bastion):
    with ConnectionPool() as pool:
        for step in ("true", "echo second step"):
            results = FanOut(endpoints, step, max_parallel=8, sink=lambda chunk: None, pool=pool).run()
            assert [r.outcome for r in results] == ["ok"] * 20
    assert logins(bastion) == 1


def test_a_bastion_that_refuses_forwarding_fails_every_target_under_its_own_name(endpoints, bastion, tmp_path):
    path = Path(bastion.workdir, "authorized_keys")
    path.write_text("no-port-forwarding " + path.read_text())
    marker = tmp_path / "ran"
    results = FanOut(endpoints, f"touch {marker}", max_parallel=8, sink=lambda chunk: None).run()
    for name, result in zip(TARGETS, results):
        assert result.outcome == "unreachable", result
        assert result.error.startswith(f"{name}: jump host bastion"), result.error
    assert logins(bastion) == 1 and not marker.exists()


def test_a_bastion_with_an_unknown_host_key_fails_every_target_under_its_own_name(endpoints, bastion, sshd):
    endpoints = [Endpoint(**{**e.__dict__, "known_hosts": (sshd.known_hosts,)}) for e in endpoints]
    results = FanOut(endpoints, "true", max_parallel=8, sink=lambda chunk: None).run()
    for name, result in zip(TARGETS, results):
        assert result.outcome == "hostkey", result
        assert result.error.startswith(f"{name}: jump host bastion: host key for [127.0.0.1]:{bastion.port}")
    assert logins(bastion) == 0
