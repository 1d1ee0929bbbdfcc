"""Start a real OpenSSH sshd on loopback for tests and benchmarks.

Usable without pytest: the benchmarks call `start_sshd` too (the pytest fixtures are in fixtures.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

SSHD = "/usr/sbin/sshd"
# sshd listens on these loopback addresses so a fan-out can reach "different" hosts.
DEFAULT_ADDRESSES = tuple(f"127.0.0.{i}" for i in range(1, 17))


class SshdUnavailable(RuntimeError):
    """sshd or ssh-keygen is not installed."""


@dataclass(frozen=True)
class SshServer:
    """A running sshd and the client-side files needed to reach it."""

    host: str
    port: int
    user: str
    identity_file: str
    known_hosts: str
    host_key_pub: str  # "ssh-ed25519 AAAA..." (no comment)
    host_fingerprint: str  # "SHA256:..." as ssh-keygen -l prints it
    addresses: tuple[str, ...]
    workdir: str
    process: subprocess.Popen = field(repr=False, compare=False)

    def stop(self) -> None:
        """Stop sshd and wait for it (connections it forked die with their clients)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log(self) -> str:
        """What sshd wrote to its log so far (LogLevel ERROR)."""
        path = Path(self.workdir, "sshd.log")
        return path.read_text(errors="replace") if path.exists() else ""


def sshd_available() -> bool:
    """True when sshd and ssh-keygen can be run."""
    return os.access(SSHD, os.X_OK) and shutil.which("ssh-keygen") is not None


def keygen(path: Path, comment: str = "opsgate-test", key_type: str = "ed25519") -> str:
    """Generate an unencrypted key at `path`; return the public key "type base64"."""
    if path.exists():
        path.unlink()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return " ".join(Path(f"{path}.pub").read_text().split()[:2])


def fingerprint(pub_path: Path) -> str:
    """The SHA256 fingerprint of a public key file, as OpenSSH prints it."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub_path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_accepting(host: str, port: int, proc: subprocess.Popen, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                # a banner proves it is sshd answering, not a leftover listener
                s.settimeout(2)
                if s.recv(8).startswith(b"SSH-"):
                    return True
        except OSError:
            time.sleep(0.02)
    return False


def start_sshd(
    workdir: Path | str,
    *,
    addresses: tuple[str, ...] = DEFAULT_ADDRESSES,
    user_key: Path | str | None = None,
    port: int | None = None,
    extra_host_keys: tuple[str, ...] = (),
    options: dict[str, str] | None = None,
    host_certificate: Callable[[Path], Path | str] | None = None,
) -> SshServer:
    """Start `sshd -D -e` on `addresses` with a fresh ed25519 host key.

    `user_key` reuses an existing private key (its .pub must sit beside it);
    otherwise a new one is generated. `extra_host_keys` ("ecdsa", "rsa") adds host
    keys of those types, at WORKDIR/ssh_host_TYPE_key(.pub). `options` sets or replaces sshd_config
keywords (`{"TrustedUserCAKeys": PATH, "AuthorizedKeysFile": "none"}`). `host_certificate` is called with the
    fresh ed25519 host public key's path and returns the certificate it made for it (`ssh-keygen -s CA -h ...`),
    which sshd then offers (HostCertificate). Raises SshdUnavailable if sshd is missing.
    """
    if not sshd_available():
        raise SshdUnavailable(f"{SSHD} or ssh-keygen not found (apt-get install openssh-server)")
    if len(addresses) > 16:
        raise ValueError("sshd accepts at most 16 ListenAddress entries")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir

    host_key = work / "ssh_host_ed25519_key"
    host_pub = keygen(host_key, "opsgate-test-host")
    extra_keys = [work / f"ssh_host_{t}_key" for t in extra_host_keys]
    for path, key_type in zip(extra_keys, extra_host_keys):
        keygen(path, "opsgate-test-host", key_type)
    host_cert = host_certificate(Path(f"{host_key}.pub")) if host_certificate is not None else None
    if user_key is None:
        user_key = work / "id_ed25519"
        keygen(Path(user_key), "opsgate-test-user")
    user_key = Path(user_key)
    authorized = work / "authorized_keys"
    shutil.copyfile(f"{user_key}.pub", authorized)

    user = os.environ.get("USER") or __import__("getpass").getuser()
    last_log = ""
    for _attempt in range(3):  # the free port can be taken between probe and bind
        chosen = port or free_port(addresses[0])
        config = work / "sshd_config"
        lines = [
            f"Port {chosen}",
            *(f"ListenAddress {a}:{chosen}" for a in addresses),
            f"HostKey {host_key}",
            *(f"HostKey {k}" for k in extra_keys),
            *([f"HostCertificate {host_cert}"] if host_cert is not None else []),
            f"AuthorizedKeysFile {authorized}",
            "PidFile none",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin yes",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "MaxStartups 200:30:400",
            "MaxSessions 200",
            "MaxAuthTries 10",
            "UseDNS no",
            "LogLevel ERROR",
        ]
        for keyword, value in (options or {}).items():
            lines = [line for line in lines if line.split()[0] != keyword] + [f"{keyword} {value}"]
        config.write_text("\n".join(lines) + "\n")
        log = open(work / "sshd.log", "wb")
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        if _wait_accepting(addresses[0], chosen, proc, time.monotonic() + 10):
            known = work / "known_hosts"
            names = ",".join(f"[{a}]:{chosen}" for a in addresses)
            known.write_text(f"{names} {host_pub}\n")
            return SshServer(
                host=addresses[0],
                port=chosen,
                user=user,
                identity_file=str(user_key),
                known_hosts=str(known),
                host_key_pub=host_pub,
                host_fingerprint=fingerprint(Path(f"{host_key}.pub")),
                addresses=tuple(addresses),
                workdir=str(work),
                process=proc,
            )
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        last_log = (work / "sshd.log").read_text(errors="replace")
        if port:
            break
    raise RuntimeError(f"sshd did not start; its log:\n{last_log}")
