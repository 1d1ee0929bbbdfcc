"""Include, HostKeyAlias, CertificateFile and IdentityAgent (a socket path) against real OpenSSH servers on
loopback, with a real ssh-agent (no paramiko mocks)."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import os
from pathlib import Path

import pytest

from opsgate.actions.ssh import AuthFailed, Endpoint, HostKeyUnknown, HostCertificateInvalid, connect
from tests.helpers.sshd import keygen

pytestmark = pytest.mark.system


def endpoint(config: Path, *known: str, host: str = "target", **fields) -> Endpoint:
    fields = {"allow_agent": False, "look_for_keys": False, "connect_timeout": 5.0, **fields}
    return Endpoint(name="web1", host=host, known_hosts=known, ssh_config=str(config), **fields)


def ok(ep: Endpoint) -> None:
    with connect(ep) as c:
        assert c.run("true", lambda chunk: None).outcome == "ok"


def block(server, *extra: str, address: str = "127.0.0.1", identity: bool = True) -> str:
    lines = ["Host target", f"  HostName {address}", f"  Port {server.port}", f"  User {server.user}"]
    lines += [f"  IdentityFile {server.identity_file}"] if identity else []
    return "\n".join(lines + [f"  {e}" for e in extra]) + "\n"


@pytest.fixture
def config(tmp_path) -> Path:
    return tmp_path / "ssh_config"


# --- Include -------------------------------------------------------------------------------


def test_target_defined_in_an_included_file_relative_to_dot_ssh(sshd, config, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh" / "config.d").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    (home / ".ssh" / "config.d" / "prod.conf").write_text(block(sshd, address="127.0.0.9"))
    config.write_text("Include config.d/*.conf\n")
    with connect(endpoint(config, sshd.known_hosts)) as c:
        out: list[bytes] = []
        assert c.run("echo $SSH_CONNECTION", lambda chunk: out.append(chunk.data)).outcome == "ok"
    assert b"".join(out).split()[2] == b"127.0.0.9"


# --- HostKeyAlias --------------------------------------------------------------------------


def test_host_key_is_looked_up_under_the_alias(sshd, config, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(f"web1.prod {sshd.host_key_pub}\n")  # not under [127.0.0.1]:port
    config.write_text(block(sshd, "HostKeyAlias web1.prod"))
    ok(endpoint(config, str(known)))
    config.write_text(block(sshd))
    with pytest.raises(HostKeyUnknown):
        connect(endpoint(config, str(known)))


def test_with_an_alias_the_real_name_is_not_enough(sshd, config):
    config.write_text(block(sshd, "HostKeyAlias web1.prod"))
    with pytest.raises(HostKeyUnknown) as info:
        connect(endpoint(config, sshd.known_hosts))  # lists [127.0.0.1]:port only
    assert f"web1.prod (HostKeyAlias of [127.0.0.1]:{sshd.port})" in str(info.value)
    assert "sed 's/^[^ ]*/web1.prod/'" in str(info.value)


def test_host_certificate_principal_is_the_alias(start_sshd, config, tmp_path):
    ca = tmp_path / "host_ca"
    keygen(ca)

    def sign(pub: Path) -> str:
        subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-h", "-I", "web1", "-n", "web1.prod", "-V", "-5m:+1h",
                        str(pub)], check=True, capture_output=True)
        return str(pub)[: -len(".pub")] + "-cert.pub"

    server = start_sshd(addresses=("127.0.0.1",), host_certificate=sign)
    known = tmp_path / "known_hosts"
    known.write_text(f"@cert-authority web1.prod,[127.0.0.1]:{server.port} {Path(f'{ca}.pub').read_text()}")
    config.write_text(block(server, "HostKeyAlias web1.prod"))
    ok(endpoint(config, str(known)))
    config.write_text(block(server))  # checked as 127.0.0.1: not a principal of the certificate
    with pytest.raises(HostCertificateInvalid, match="not for 127.0.0.1"):
        connect(endpoint(config, str(known)))


# --- CertificateFile -------------------------------------------------------------------------


@pytest.fixture
def user_ca(tmp_path) -> Path:
    ca = tmp_path / "user_ca"
    keygen(ca)
    return ca


@pytest.fixture
def cert_only(start_sshd, user_ca, tmp_path):
    """An sshd that accepts only certificates signed by `user_ca` (no authorized_keys)."""
    (tmp_path / "keys").mkdir()
    key = tmp_path / "keys" / "id_user"
    keygen(key)
    return start_sshd(addresses=("127.0.0.1",), user_key=key,
                      options={"TrustedUserCAKeys": f"{user_ca}.pub", "AuthorizedKeysFile": "none"})


def user_cert(ca: Path, key: str, user: str, out: Path, validity: str = "-5m:+1h") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "operator", "-n", user, "-V", validity, f"{key}.pub"],
                   check=True, capture_output=True)
    made = Path(f"{key}-cert.pub")
    if made != out:
        made.rename(out)
    return out


def test_certificate_file_is_offered_with_its_identity(cert_only, user_ca, config, tmp_path):
    server = cert_only
    config.write_text(block(server))
    with pytest.raises(AuthFailed):  # the plain key is not authorized
        connect(endpoint(config, server.known_hosts))
    cert = user_cert(user_ca, server.identity_file, server.user, tmp_path / "prod.cert")
    config.write_text(block(server, f"CertificateFile {cert}"))
    ok(endpoint(config, server.known_hosts))


def test_identity_cert_pub_beside_the_key_is_used_as_openssh_does(cert_only, user_ca, config):
    server = cert_only
    user_cert(user_ca, server.identity_file, server.user, Path(f"{server.identity_file}-cert.pub"))
    config.write_text(block(server))
    ok(endpoint(config, server.known_hosts))


def test_rejected_certificate_is_named_in_what_was_tried(cert_only, user_ca, config, tmp_path):
    server = cert_only
    cert = user_cert(user_ca, server.identity_file, "someone-else", tmp_path / "other.cert")
    config.write_text(block(server, f"CertificateFile {cert}", f"CertificateFile {tmp_path / 'missing.cert'}"))
    with pytest.raises(AuthFailed) as info:
        connect(endpoint(config, server.known_hosts))
    message = str(info.value)
    assert f"{server.identity_file} with certificate {cert} (rejected)" in message
    assert f"{tmp_path / 'missing.cert'} (certificate file missing)" in message


# --- IdentityAgent with a socket path ----------------------------------------------------------


@pytest.fixture
def agent(tmp_path):
    """A private ssh-agent on tmp_path/agent/sock; `agent.add(path)` adds a key. SSH_AUTH_SOCK is not set."""
    if shutil.which("ssh-agent") is None:
        pytest.skip("no ssh-agent")
    (tmp_path / "agent").mkdir()
    sock = tmp_path / "agent" / "sock"
    out = subprocess.run(["ssh-agent", "-s", "-a", str(sock)], capture_output=True, text=True, check=True).stdout
    pid = int(re.search(r"SSH_AGENT_PID=(\d+)", out).group(1))  # it listens before it prints this

    class Agent:
        path = sock

        @staticmethod
        def add(key: str | Path) -> None:
            subprocess.run(["ssh-add", "-q", str(key)], check=True, capture_output=True, stdin=subprocess.DEVNULL,
                           env={**os.environ, "SSH_AUTH_SOCK": str(sock)})

    try:
        yield Agent
    finally:
        os.kill(pid, signal.SIGTERM)


def test_identityagent_socket_path_is_used(sshd, agent, config, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    agent.add(sshd.identity_file)
    config.write_text(block(sshd, identity=False))
    with pytest.raises(AuthFailed, match="SSH_AUTH_SOCK not set"):
        connect(endpoint(config, sshd.known_hosts, allow_agent=True))
    config.write_text(block(sshd, f"IdentityAgent {agent.path}", identity=False))
    ok(endpoint(config, sshd.known_hosts, allow_agent=True))
    monkeypatch.setenv("AGENT_DIR", str(agent.path.parent))
    config.write_text(block(sshd, "IdentityAgent ${AGENT_DIR}/sock", identity=False))
    ok(endpoint(config, sshd.known_hosts, allow_agent=True))


def test_identityagent_socket_that_is_not_there_says_so(sshd, config, tmp_path):
    config.write_text(block(sshd, f"IdentityAgent {tmp_path / 'nothing.sock'}", identity=False))
    with pytest.raises(AuthFailed, match=r"ssh-agent at .*nothing.sock \(IdentityAgent\) \(unreachable"):
        connect(endpoint(config, sshd.known_hosts, allow_agent=True))


def test_certificate_for_a_key_held_only_by_the_agent(cert_only, user_ca, agent, config, tmp_path):
    server = cert_only
    cert = user_cert(user_ca, server.identity_file, server.user, tmp_path / "prod.cert")
    agent.add(server.identity_file)
    config.write_text(block(server, f"IdentityAgent {agent.path}", f"CertificateFile {cert}", "IdentitiesOnly yes",
                            identity=False))
    ok(endpoint(config, server.known_hosts, allow_agent=True))
