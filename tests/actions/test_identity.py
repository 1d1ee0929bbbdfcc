"""Passphrase-protected identity files: their ssh-agent copy is used, else the next identity; a real
ssh-agent and sshd (no paramiko mocks)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from opsgate.actions.fanout import FanOut
from opsgate.actions.ssh import AuthFailed, Endpoint, connect
from tests.helpers.sshd import keygen

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(shutil.which("ssh-agent") is None, reason="no ssh-agent")]


@pytest.fixture
def agent(tmp_path, monkeypatch):
    """A private ssh-agent; SSH_AUTH_SOCK points at it for the test. `agent(path)` adds a key."""
    sock = tmp_path / "agent.sock"
    out = subprocess.run(["ssh-agent", "-s", "-a", str(sock)], capture_output=True, text=True, check=True).stdout
    pid = int(re.search(r"SSH_AGENT_PID=(\d+)", out).group(1))  # it listens before it prints this
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))

    def add(path: Path) -> None:
        subprocess.run(["ssh-add", "-q", str(path)], check=True, env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
                       stdin=subprocess.DEVNULL, capture_output=True)

    try:
        yield add
    finally:
        os.kill(pid, signal.SIGTERM)


def encrypt(path: Path, passphrase: str = "correct horse") -> None:
    subprocess.run(["ssh-keygen", "-q", "-p", "-P", "", "-N", passphrase, "-f", str(path)], check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)


@pytest.fixture
def server(start_sshd, tmp_path):
    """An sshd that authorizes the key tmp_path/keys/id_prod (unencrypted for now)."""
    (tmp_path / "keys").mkdir()
    key = tmp_path / "keys" / "id_prod"
    keygen(key)
    return start_sshd(addresses=("127.0.0.1",), user_key=key)


def endpoint(server, tmp_path, **fields) -> Endpoint:
    config = tmp_path / "ssh_config"
    if not config.exists():
        config.write_text(f"Host prod\n  HostName {server.host}\n  Port {server.port}\n  User {server.user}\n"
                          f"  IdentityFile {server.identity_file}\n")
    fields = {"allow_agent": True, "look_for_keys": False, "connect_timeout": 5.0, **fields}
    return Endpoint(name="prod", host="prod", known_hosts=(server.known_hosts,), ssh_config=str(config), **fields)


def test_encrypted_identity_file_uses_its_copy_in_the_agent(server, agent, tmp_path):
    agent(Path(server.identity_file))
    encrypt(Path(server.identity_file))
    with connect(endpoint(server, tmp_path)) as c:
        assert c.is_active()


def test_encrypted_identity_file_without_agent_says_what_was_tried(server, tmp_path, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    encrypt(Path(server.identity_file))
    with pytest.raises(AuthFailed) as info:
        connect(endpoint(server, tmp_path))
    message = str(info.value)
    assert f"{server.identity_file} (passphrase-protected and not in ssh-agent" in message
    assert "ssh-agent (SSH_AUTH_SOCK not set)" in message


def test_encrypted_identity_falls_through_to_the_next_identity(server, tmp_path):
    good = tmp_path / "keys" / "id_good"
    shutil.copyfile(server.identity_file, good)
    shutil.copyfile(f"{server.identity_file}.pub", f"{good}.pub")
    os.chmod(good, 0o600)
    encrypt(Path(server.identity_file))
    config = tmp_path / "ssh_config"
    config.write_text(f"Host prod\n  HostName {server.host}\n  Port {server.port}\n  User {server.user}\n"
                      f"  IdentityFile {server.identity_file}\n  IdentityFile {good}\n")
    with connect(endpoint(server, tmp_path, allow_agent=False)) as c:
        assert c.is_active()


def test_agent_is_tried_after_an_encrypted_key_it_does_not_hold(server, agent, tmp_path):
    other = tmp_path / "keys" / "id_other"
    keygen(other)
    agent(other)  # not authorized on the server
    agent_only = tmp_path / "keys" / "id_agent_only"
    shutil.copyfile(server.identity_file, agent_only)  # the authorized key, only in the agent
    os.chmod(agent_only, 0o600)
    agent(agent_only)
    unrelated = tmp_path / "keys" / "id_unrelated"
    keygen(unrelated)
    encrypt(unrelated)
    config = tmp_path / "ssh_config"
    config.write_text(f"Host prod\n  HostName {server.host}\n  Port {server.port}\n  User {server.user}\n"
                      f"  IdentityFile {unrelated}\n")
    with connect(endpoint(server, tmp_path)) as c:
        assert c.is_active()
    # IdentitiesOnly yes: the agent's keys that are not a configured identity are not offered
    config.write_text(config.read_text() + "  IdentitiesOnly yes\n")
    with pytest.raises(AuthFailed, match="passphrase-protected and not in ssh-agent"):
        connect(endpoint(server, tmp_path))


def test_fanout_reports_auth_not_an_internal_error(server, tmp_path, monkeypatch):
    """The reported bug: paramiko 5's TypeError for an encrypted key ended as `internal error`."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    encrypt(Path(server.identity_file))
    marker = tmp_path / "ran"
    [result] = FanOut([endpoint(server, tmp_path)], f"touch {marker}", sink=lambda chunk: None).run()
    assert result.outcome == "auth" and "passphrase-protected" in result.error, result
    assert not marker.exists()
