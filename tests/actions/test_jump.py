"""ProxyJump, ProxyCommand and refused ssh_config directives against real OpenSSH servers on loopback.

The target is the session sshd (127.0.0.1-16); jump hosts are extra sshd servers with keys of their own.
A jump host whose authorized key carries `no-port-forwarding` refuses direct-tcpip (as AllowTcpForwarding
no does): a target behind it must fail, which proves the connection really goes through it.
"""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path

import pytest

from opsgate.actions.fanout import FanOut
from opsgate.actions.ssh import Chunk, Endpoint, HostKeyUnknown, SSHConfigError, Unreachable, connect
from tests.helpers.sshd import free_port

pytestmark = pytest.mark.system


class Sink:
    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self.lock = threading.Lock()

    def __call__(self, chunk: Chunk) -> None:
        with self.lock:
            self.chunks.append(chunk)

    def stdout(self) -> bytes:
        return b"".join(c.data for c in self.chunks if c.stream == "stdout")


def host_block(alias: str, server, address: str | None = None, **extra: str) -> str:
    lines = [f"Host {alias}", f"  HostName {address or server.host}", f"  Port {server.port}",
             f"  User {server.user}", f"  IdentityFile {server.identity_file}"]
    lines += [f"  {k} {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def forbid_forwarding(server) -> None:
    """The jump host's key may log in but not open direct-tcpip channels (sshd re-reads it per login)."""
    path = Path(server.workdir, "authorized_keys")
    path.write_text("no-port-forwarding " + path.read_text())


def target_endpoint(sshd, config: Path, *servers, name: str = "web1", host: str = "target", **fields) -> Endpoint:
    fields = {"connect_timeout": 5.0, "allow_agent": False, "look_for_keys": False, **fields}
    return Endpoint(name=name, host=host, ssh_config=str(config),
                    known_hosts=tuple(s.known_hosts for s in (sshd, *servers)), **fields)


def run(endpoint: Endpoint, command: str):
    sink = Sink()
    results = FanOut([endpoint], command, sink=sink).run()
    return results[0], sink


@pytest.fixture
def bastion(start_sshd):
    return start_sshd(addresses=("127.0.0.1",))


@pytest.fixture
def config(tmp_path) -> Path:
    return tmp_path / "ssh_config"


def test_target_is_reached_through_the_bastion(sshd, bastion, config):
    config.write_text(host_block("target", sshd, "127.0.0.3", ProxyJump="bastion") + host_block("bastion", bastion))
    with connect(target_endpoint(sshd, config, bastion)) as c:
        sink = Sink()
        result = c.run("echo $SSH_CONNECTION", sink)
    assert result.outcome == "ok", result
    assert sink.stdout().split()[2] == b"127.0.0.3"


def test_bastion_that_refuses_forwarding_fails_the_target_and_nothing_runs(sshd, bastion, config, tmp_path):
    forbid_forwarding(bastion)
    config.write_text(host_block("target", sshd, "127.0.0.3", ProxyJump="bastion") + host_block("bastion", bastion))
    marker = tmp_path / "ran"
    result, _ = run(target_endpoint(sshd, config, bastion), f"touch {marker}")
    assert result.outcome == "unreachable"
    assert "jump host bastion" in result.error and "prohibited" in result.error.lower(), result.error
    assert not marker.exists()


def test_missing_bastion_fails_like_openssh_and_nothing_runs(sshd, config, tmp_path):
    """The reported bug: ProxyJump to a bastion that does not exist must not reach the host directly."""
    config.write_text(host_block("target", sshd, "127.0.0.3", ProxyJump=f"127.0.0.1:{free_port()}"))
    marker = tmp_path / "ran"
    result, _ = run(target_endpoint(sshd, config), f"touch {marker}")
    assert result.outcome == "unreachable" and "connection refused" in result.error, result.error
    assert not marker.exists()


def test_bastion_host_key_is_checked_like_a_target(sshd, bastion, config, tmp_path):
    config.write_text(host_block("target", sshd, "127.0.0.3", ProxyJump="bastion") + host_block("bastion", bastion))
    marker = tmp_path / "ran"
    endpoint = target_endpoint(sshd, config)  # the bastion's key is in no known_hosts file
    with pytest.raises(HostKeyUnknown, match=rf"^web1: jump host bastion: host key for \[127.0.0.1\]:{bastion.port}"):
        connect(endpoint)
    result, _ = run(endpoint, f"touch {marker}")
    assert result.outcome == "hostkey" and not marker.exists()


def test_bastion_authenticates_with_its_own_identity(sshd, bastion, config):
    # the target's key is not authorized on the bastion: a wrong identity there must fail
    config.write_text(host_block("target", sshd, "127.0.0.3", ProxyJump="bastion")
                      + host_block("bastion", bastion, IdentityFile=sshd.identity_file).replace(
                          f"  IdentityFile {bastion.identity_file}\n", ""))
    result, _ = run(target_endpoint(sshd, config, bastion), "true")
    assert result.outcome == "auth" and "jump host bastion" in result.error, result.error


def test_user_at_host_port_form(sshd, bastion, config):
    config.write_text(host_block("target", sshd, "127.0.0.4", ProxyJump=f"{bastion.user}@127.0.0.1:{bastion.port}")
                      + f"Host 127.0.0.1\n  IdentityFile {bastion.identity_file}\n")
    result, sink = run(target_endpoint(sshd, config, bastion), "echo $SSH_CONNECTION")
    assert result.outcome == "ok", result
    assert sink.stdout().split()[2] == b"127.0.0.4"


@pytest.mark.parametrize("blocked", [None, "outer", "inner"])
def test_two_hops(sshd, start_sshd, config, blocked):
    outer = start_sshd(addresses=("127.0.0.1",))
    inner = start_sshd(addresses=("127.0.0.2",))
    if blocked:
        forbid_forwarding({"outer": outer, "inner": inner}[blocked])
    config.write_text(host_block("target", sshd, "127.0.0.5", ProxyJump="outer,inner")
                      + host_block("outer", outer) + host_block("inner", inner))
    result, sink = run(target_endpoint(sshd, config, outer, inner), "echo $SSH_CONNECTION")
    if blocked is None:
        assert result.outcome == "ok", result
        assert sink.stdout().split()[2] == b"127.0.0.5"
    else:
        assert result.outcome == "unreachable" and f"jump host {blocked}" in result.error, result.error
        assert sink.stdout() == b""


def test_opsgate_jump_field_routes_through_the_bastion(sshd, bastion, config):
    config.write_text(host_block("target", sshd, "127.0.0.6") + host_block("bastion", bastion))
    assert run(target_endpoint(sshd, config, bastion, jump="bastion"), "true")[0].outcome == "ok"
    forbid_forwarding(bastion)
    result, _ = run(target_endpoint(sshd, config, bastion, jump="bastion"), "true")
    assert result.outcome == "unreachable" and "jump host bastion" in result.error


def test_proxycommand_false_fails_at_once(sshd, config, tmp_path):
    config.write_text(host_block("target", sshd, "127.0.0.3", ProxyCommand="/bin/false"))
    marker = tmp_path / "ran"
    result, _ = run(target_endpoint(sshd, config, connect_timeout=30.0), f"touch {marker}")
    assert result.outcome == "unreachable" and "ProxyCommand '/bin/false' exited with status 1" in result.error
    assert result.duration < 10  # EOF is seen, not waited out
    assert not marker.exists()


@pytest.fixture
def openssh_client_config(bastion, tmp_path) -> Path:
    """A config for the real `ssh` client that the ProxyCommand runs (its own known_hosts, batch mode)."""
    path = tmp_path / "client_config"
    path.write_text(host_block("bastion", bastion, UserKnownHostsFile=bastion.known_hosts,
                               StrictHostKeyChecking="yes", BatchMode="yes", IdentitiesOnly="yes",
                               LogLevel="ERROR"))
    return path


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client")
def test_proxycommand_through_the_openssh_client(sshd, bastion, config, openssh_client_config):
    config.write_text(host_block("target", sshd, "127.0.0.7",
                                 ProxyCommand=f"ssh -F {openssh_client_config} -W %h:%p bastion"))
    with connect(target_endpoint(sshd, config)) as c:
        sink = Sink()
        result = c.run("echo $SSH_CONNECTION", sink)
    assert result.outcome == "ok", result
    assert sink.stdout().split()[2] == b"127.0.0.7"


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client")
def test_proxycommand_route_is_used(sshd, bastion, config, openssh_client_config, tmp_path):
    forbid_forwarding(bastion)
    config.write_text(host_block("target", sshd, "127.0.0.7",
                                 ProxyCommand=f"ssh -F {openssh_client_config} -W %h:%p bastion"))
    marker = tmp_path / "ran"
    result, _ = run(target_endpoint(sshd, config), f"touch {marker}")
    assert result.outcome == "unreachable" and "ProxyCommand" in result.error, result.error
    assert "stdio forwarding failed" in result.error, result.error  # ssh -W's own stderr
    assert not marker.exists()


@pytest.mark.parametrize("directive", ["SetEnv FOO=bar", "LocalForward 8080 127.0.0.1:80",
                                       "PKCS11Provider /usr/lib/opensc-pkcs11.so", "ProxyJmp bastion"])
def test_unsupported_directive_is_refused_before_connecting(sshd, config, tmp_path, directive):
    with socket.socket() as listener:  # the "host": it must never see a connection
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        config.write_text(f"Host target\n  HostName 127.0.0.1\n  Port {port}\n  {directive}\n")
        with pytest.raises(SSHConfigError):
            connect(target_endpoint(sshd, config))
        with pytest.raises(BlockingIOError):
            listener.accept()


@pytest.mark.parametrize("directive", ["SetEnv FOO=bar", "RemoteCommand id", "LocalForward 8080 127.0.0.1:80"])
def test_unsupported_directive_fails_the_target_and_nothing_runs(sshd, config, tmp_path, directive):
    config.write_text(host_block("target", sshd, "127.0.0.3") + f"  {directive}\n")
    marker = tmp_path / "ran"
    result, _ = run(target_endpoint(sshd, config), f"touch {marker}")
    name = directive.split()[0]
    assert result.outcome == "unreachable", result
    assert name in result.error and "host target" in result.error and str(config) in result.error
    assert not marker.exists()
    # the same target without the directive runs: the refusal, not the rest of the config, stopped it
    config.write_text(host_block("target", sshd, "127.0.0.3"))
    assert run(target_endpoint(sshd, config), f"touch {marker}")[0].outcome == "ok" and marker.exists()


def test_unreachable_through_a_jump_reports_the_hop(sshd, bastion, config):
    config.write_text(host_block("target", sshd, "127.0.0.3", ProxyJump="bastion")
                      .replace(f"Port {sshd.port}", f"Port {free_port()}") + host_block("bastion", bastion))
    with pytest.raises(Unreachable, match="jump host bastion .* could not open a connection to 127.0.0.3"):
        connect(target_endpoint(sshd, config, bastion))
