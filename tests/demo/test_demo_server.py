"""The demo's loopback SSH server: real exec semantics, strict host keys, only the demo's client key."""

from __future__ import annotations

import time

import paramiko
import pytest

from opsgate.actions.ssh import Endpoint, connect
from opsgate.console.demo.server import DemoServer, generate_key, generate_key_file


@pytest.fixture
def server(tmp_path):
    key = generate_key_file(tmp_path / "id_ed25519")
    (tmp_path / "hosts" / "web-1").mkdir(parents=True)
    srv = DemoServer(tmp_path / "hosts", key).start()
    (tmp_path / "known_hosts").write_text(srv.known_hosts_line())
    try:
        yield srv
    finally:
        srv.stop()


def endpoint(tmp_path, server, *, identity="id_ed25519", known_hosts="known_hosts") -> Endpoint:
    return Endpoint("web-1", "127.0.0.1", server.port, "web-1", str(tmp_path / identity),
                    (str(tmp_path / known_hosts),), 5.0, ssh_config=None, allow_agent=False, look_for_keys=False)


def test_command_exit_status_and_separate_stderr(tmp_path, server):
    chunks = []
    with connect(endpoint(tmp_path, server)) as conn:
        result = conn.run("pwd; echo oops >&2; exit 3", chunks.append, timeout=10)
    out = b"".join(c.data for c in chunks if c.stream == "stdout")
    err = b"".join(c.data for c in chunks if c.stream == "stderr")
    assert result.outcome == "failed" and result.exit_code == 3
    assert out.decode().strip().endswith("hosts/web-1")  # the scratch dir named like the SSH user
    assert err == b"oops\n"


def test_pinned_host_key_passes_and_another_key_is_refused(tmp_path, server):
    with connect(endpoint(tmp_path, server)) as conn:
        assert conn.run("true", lambda c: None, timeout=10).outcome == "ok"
    # The same address with a different pinned key: a changed host key, refused.
    other = generate_key()
    (tmp_path / "wrong_known_hosts").write_text(f"[127.0.0.1]:{server.port} {other.get_name()} {other.get_base64()}\n")
    with pytest.raises(Exception) as e:
        connect(endpoint(tmp_path, server, known_hosts="wrong_known_hosts"))
    assert "HostKey" in type(e.value).__name__ or "host key" in str(e.value).lower()


def test_wrong_client_key_refused(tmp_path, server):
    generate_key_file(tmp_path / "intruder")
    with pytest.raises(Exception) as e:
        connect(endpoint(tmp_path, server, identity="intruder"))
    assert "auth" in (type(e.value).__name__ + str(e.value)).lower()


def test_no_password_auth(tmp_path, server):
    transport = paramiko.Transport(("127.0.0.1", server.port))
    try:
        transport.start_client(timeout=5)
        with pytest.raises(paramiko.AuthenticationException):
            transport.auth_password("web-1", "anything")
    finally:
        transport.close()


def test_closing_the_channel_kills_the_process_group(tmp_path, server):
    marker = tmp_path / "hosts" / "web-1" / "alive"
    client = paramiko.SSHClient()
    client.load_host_keys(str(tmp_path / "known_hosts"))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect("127.0.0.1", server.port, username="web-1", key_filename=str(tmp_path / "id_ed25519"),
                   look_for_keys=False, allow_agent=False)
    try:
        channel = client.get_transport().open_session()
        channel.exec_command("(while true; do date > alive; sleep 0.1; done) & sleep 60")
        deadline = time.monotonic() + 5
        while not marker.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        channel.close()
        time.sleep(2.0)  # TERM, grace, KILL
        before = marker.stat().st_mtime
        time.sleep(0.5)
        assert marker.stat().st_mtime == before, "the background loop survived the channel"
    finally:
        client.close()
