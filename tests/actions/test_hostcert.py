"""Host certificates: `@cert-authority` lines in known_hosts, against real OpenSSH sshd servers offering a
HostCertificate signed with ssh-keygen (no paramiko mocks).

Each server gets a fresh host key signed by a CA of the test; known_hosts trusts a CA, never the host's
plain key (unless a test says so), so a connection that succeeds proves the certificate was checked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
from pathlib import Path

import pytest

from opsgate.actions.fanout import FanOut
from opsgate.actions.hostkeys import KnownHosts, check_host_certificate
from opsgate.actions.ssh import HostCertificateInvalid, HostKeyRevoked, HostKeyUnknown, connect
from tests.helpers.ssh import endpoint
from tests.helpers.sshd import keygen

pytestmark = pytest.mark.system


def sign(ca: Path, pub: Path, *, principals: str = "127.0.0.1", validity: str = "-5m:+1h",
         host: bool = True) -> Path:
    """`ssh-keygen -s CA [-h] -n PRINCIPALS -V VALIDITY PUB`: the certificate PUB-cert.pub."""
    args = ["ssh-keygen", "-q", "-s", str(ca), "-I", "opsgate-test", "-V", validity]
    args += ["-h"] if host else []
    args += ["-n", principals] if principals else []
    subprocess.run([*args, str(pub)], check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return Path(str(pub)[: -len(".pub")] + "-cert.pub")


def pub(path: Path) -> str:
    return " ".join(Path(f"{path}.pub").read_text().split()[:2])


def hashed(name: str) -> str:
    salt = os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


@pytest.fixture
def cas(tmp_path) -> dict[str, Path]:
    """Two CAs: "ca" (trusted by the tests' known_hosts) and "other"."""
    (tmp_path / "cas").mkdir()
    paths = {name: tmp_path / "cas" / name for name in ("ca", "other")}
    for path in paths.values():
        keygen(path, "opsgate-test-ca")
    return paths


@pytest.fixture
def certified(start_sshd):
    """`certified(ca, **sign_args)`: an sshd on 127.0.0.1 offering a host certificate signed by `ca`."""

    def start(ca: Path, **kwargs):
        return start_sshd(addresses=("127.0.0.1",), host_certificate=lambda key: sign(ca, key, **kwargs))

    return start


def known(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "known_hosts"
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


def authority(server, ca: Path, pattern: str | None = None) -> str:
    return f"@cert-authority {pattern or f'[127.0.0.1]:{server.port}'} {pub(ca)}"


def refused(server, known_hosts: str, error=HostCertificateInvalid):
    with pytest.raises(error) as info:
        connect(endpoint(server, known_hosts=(known_hosts,)))
    assert info.value.outcome == "hostkey"
    return info.value


# --- accepted ----------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["exact", "*", "[127.0.0.?]:*", "hashed"])
def test_certificate_signed_by_a_trusted_ca_is_accepted(certified, cas, tmp_path, pattern):
    server = certified(cas["ca"])
    names = {"exact": None, "hashed": hashed(f"[127.0.0.1]:{server.port}")}.get(pattern, pattern)
    with connect(endpoint(server, known_hosts=(known(tmp_path, authority(server, cas["ca"], names)),))) as c:
        assert c.run("true", lambda chunk: None).outcome == "ok"
        assert c._transport.host_key_type == "ssh-ed25519-cert-v01@openssh.com"


def test_certificate_is_checked_for_a_jump_host_too(sshd, certified, cas, tmp_path):
    bastion = certified(cas["ca"])
    config = tmp_path / "ssh_config"
    config.write_text(f"Host bastion\n  HostName 127.0.0.1\n  Port {bastion.port}\n  User {bastion.user}\n"
                      f"  IdentityFile {bastion.identity_file}\n")
    kh = known(tmp_path, authority(bastion, cas["ca"]), Path(sshd.known_hosts).read_text().strip())
    target = endpoint(sshd, host="127.0.0.3", known_hosts=(kh,), ssh_config=str(config), jump="bastion")
    with connect(target) as c:
        assert c.run("true", lambda chunk: None).outcome == "ok"
    Path(kh).write_text(Path(kh).read_text().replace(pub(cas["ca"]), pub(cas["other"])))
    with pytest.raises(HostCertificateInvalid, match="jump host bastion: host certificate"):
        connect(target)


# --- refused, each with its reason -------------------------------------------------------


def test_certificate_from_another_ca_is_refused(certified, cas, tmp_path):
    server = certified(cas["other"])
    error = refused(server, known(tmp_path, authority(server, cas["ca"])))
    assert error.check == "ca" and "not trust" in str(error), error
    assert f"[127.0.0.1]:{server.port}" in str(error) and "refusing to connect" in str(error)


def test_expired_certificate_is_refused(certified, cas, tmp_path):
    server = certified(cas["ca"], validity="20200101:20200102")
    error = refused(server, known(tmp_path, authority(server, cas["ca"])))
    assert error.check == "expired" and "expired at 2020-01-02" in str(error), error


def test_certificate_not_yet_valid_is_refused(certified, cas, tmp_path):
    server = certified(cas["ca"], validity="+1d:+2d")
    error = refused(server, known(tmp_path, authority(server, cas["ca"])))
    assert error.check == "not-yet-valid" and "not valid before" in str(error), error


def test_certificate_for_another_principal_is_refused(certified, cas, tmp_path):
    server = certified(cas["ca"], principals="db1.example.com,127.0.0.2")
    error = refused(server, known(tmp_path, authority(server, cas["ca"])))
    assert error.check == "principal", error
    assert "valid for db1.example.com, 127.0.0.2, not for 127.0.0.1" in str(error)


def test_certificate_without_principals_is_refused(certified, cas, tmp_path):
    """OpenSSH accepts a host certificate with no principals for any host; opsgate does not."""
    server = certified(cas["ca"], principals="")
    error = refused(server, known(tmp_path, authority(server, cas["ca"])))
    assert error.check == "principal" and "lists no principals" in str(error), error


def test_revoked_ca_wins_over_the_cert_authority_line(certified, cas, tmp_path):
    server = certified(cas["ca"])
    error = refused(server, known(tmp_path, authority(server, cas["ca"]), f"@revoked * {pub(cas['ca'])}"),
                    HostKeyRevoked)
    assert "CA key" in str(error) and "@revoked" in str(error), error


def test_revoked_host_key_wins_over_its_certificate(certified, cas, tmp_path):
    server = certified(cas["ca"])
    error = refused(server, known(tmp_path, authority(server, cas["ca"]), f"@revoked * {server.host_key_pub}",
                                  f"[127.0.0.1]:{server.port} {server.host_key_pub}"), HostKeyRevoked)
    assert "@revoked" in str(error) and server.host_fingerprint in str(error), error


def test_refused_certificate_fails_the_target_and_nothing_runs(certified, cas, tmp_path):
    server = certified(cas["ca"], validity="20200101:20200102")
    marker = tmp_path / "ran"
    ep = endpoint(server, known_hosts=(known(tmp_path, authority(server, cas["ca"])),))
    [result] = FanOut([ep], f"touch {marker}", sink=lambda chunk: None).run()
    assert result.outcome == "hostkey" and "expired" in result.error, result
    assert not marker.exists()


# --- how certificates sit next to plain keys ---------------------------------------------


def test_a_bad_certificate_falls_back_to_its_plain_key_when_that_is_known(certified, cas, tmp_path):
    """As OpenSSH: a certificate that fails its checks is then looked up as the plain key it certifies."""
    server = certified(cas["ca"], validity="20200101:20200102")
    kh = known(tmp_path, authority(server, cas["ca"]), f"[127.0.0.1]:{server.port} {server.host_key_pub}")
    with connect(endpoint(server, known_hosts=(kh,))) as c:
        assert c.is_active()


def test_host_without_certificate_but_a_ca_on_record_says_so(sshd, cas, tmp_path):
    error = refused(sshd, known(tmp_path, authority(sshd, cas["ca"], "*")), HostKeyUnknown)
    assert "offered no host certificate" in str(error), error


def test_plain_known_host_does_not_negotiate_certificates(certified, cas, tmp_path):
    server = certified(cas["ca"])
    kh = known(tmp_path, f"[127.0.0.1]:{server.port} {server.host_key_pub}")
    with connect(endpoint(server, known_hosts=(kh,))) as c:
        assert c._transport.host_key_type == "ssh-ed25519"


def test_user_certificate_is_not_a_host_certificate(cas, tmp_path):
    """No sshd serves a user certificate as its host key, so this check is tested on the certificate."""
    key = tmp_path / "host_key"
    keygen(key)
    cert = sign(cas["ca"], Path(f"{key}.pub"), host=False)
    key_type, blob = cert.read_text().split()[:2]
    kh = KnownHosts.load([known(tmp_path, f"@cert-authority * {pub(cas['ca'])}")])
    problem = check_host_certificate(key_type, base64.b64decode(blob), "127.0.0.1", kh.authorities("x", 22), [])
    assert problem is not None and problem.check == "type" and "user certificate" in problem.detail
    good = sign(cas["ca"], Path(f"{key}.pub"))
    key_type, blob = good.read_text().split()[:2]
    assert check_host_certificate(key_type, base64.b64decode(blob), "127.0.0.1", kh.authorities("x", 22), []) is None
