"""opsgate.actions.ssh.probe (what `opsgate check --ssh` uses) against real sshd servers with LogLevel VERBOSE,
whose logs show each login ("Accepted publickey") and each session started ("Starting session")."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from opsgate.actions.ssh import probe
from tests.helpers.ssh import endpoint
from tests.helpers.sshd import keygen

pytestmark = pytest.mark.system

VERBOSE = {"LogLevel": "VERBOSE"}


def test_probe_logs_in_through_the_jump_host_and_runs_nothing(start_sshd, tmp_path):
    target = start_sshd(addresses=("127.0.0.2",), options=VERBOSE)
    bastion = start_sshd(addresses=("127.0.0.1",), options=VERBOSE)
    config = tmp_path / "ssh_config"
    config.write_text(f"Host bastion\n  HostName 127.0.0.1\n  Port {bastion.port}\n  User {bastion.user}\n"
                      f"  IdentityFile {bastion.identity_file}\n")
    ep = endpoint(target, known_hosts=(target.known_hosts, bastion.known_hosts), ssh_config=str(config),
                  jump="bastion")
    proxy, hops = probe(ep)
    assert proxy is None
    assert [(h.alias, h.where, h.identity, h.host_key) for h in hops] == [
        ("bastion", f"{bastion.user}@127.0.0.1:{bastion.port}", bastion.identity_file,
         f"ssh-ed25519 {bastion.host_fingerprint}"),
        ("127.0.0.2", f"{target.user}@127.0.0.2:{target.port}", target.identity_file,
         f"ssh-ed25519 {target.host_fingerprint}"),
    ]
    assert target.log().count("Accepted publickey") == 1 and "Starting session" not in target.log()


def test_probe_without_authenticating_checks_the_host_key_only(start_sshd):
    target = start_sshd(addresses=("127.0.0.1",), options=VERBOSE)
    _, [hop] = probe(endpoint(target), authenticate=False)
    assert (hop.identity, hop.host_key) == ("not tried", f"ssh-ed25519 {target.host_fingerprint}")
    assert "Accepted publickey" not in target.log()


def test_probe_names_the_host_certificate_and_its_ca(start_sshd, tmp_path):
    ca = tmp_path / "ca"
    keygen(ca)

    def sign(pub: Path) -> str:
        subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-h", "-I", "t", "-n", "127.0.0.1", "-V", "-5m:+1h",
                        str(pub)], check=True, capture_output=True)
        return str(pub)[: -len(".pub")] + "-cert.pub"

    target = start_sshd(addresses=("127.0.0.1",), host_certificate=sign)
    known = tmp_path / "known_hosts"
    known.write_text(f"@cert-authority * {Path(f'{ca}.pub').read_text()}")
    ca_fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", f"{ca}.pub"], capture_output=True, text=True,
                                    check=True).stdout.split()[1]
    _, [hop] = probe(endpoint(target, known_hosts=(str(known),)))
    assert hop.host_key == (f"ssh-ed25519-cert-v01@openssh.com {target.host_fingerprint} "
                            f"(certificate by CA {ca_fingerprint})")
