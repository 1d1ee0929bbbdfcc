"""The gate's SSH user certificate authority: short-lived certificates bound to one exact command.

A target's sshd trusts the CA's public key (``TrustedUserCAKeys``) and accepts a certificate only for
the principals its ``AuthorizedPrincipalsFile`` lists. Each certificate the gate signs names one
principal (the target's user), is valid from 30 s ago (clock skew) until ``window`` seconds from now,
carries the critical option ``force-command`` (sshd runs that command and nothing else, whatever the
client asks) and, when configured, ``source-address``; it has no extensions, so no pty, no port, agent
or X11 forwarding and no user rc. The CA's private key never leaves the gate's state dir (0600).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import ssh

from opsgate.console.errors import OpsgateError
from opsgate.console.files import write_private

CA_KEY_FILE = "user_ca"  # in the gate's state dir; user_ca.pub beside it
BACKDATE = 30  # seconds a certificate is valid before it was signed (clock skew between gate and target)
DEFAULT_WINDOW = 120  # seconds after signing: long enough to connect; the session may outlive it


class CAError(OpsgateError):
    """The CA key is missing, unreadable, or not private."""


@dataclass(frozen=True)
class Certificate:
    """A signed certificate as the console receives it, and what the gate records about it."""

    line: str  # "ssh-ed25519-cert-v01@openssh.com AAAA... key-id"
    key_id: str
    serial: int
    principal: str
    valid_after: int
    valid_before: int
    command: str


class UserCA:
    """Signs user certificates with an ed25519 CA key."""

    def __init__(self, private_key: ed25519.Ed25519PrivateKey, comment: str = "opsgate gate user CA"):
        self._key = private_key
        self.comment = comment

    @classmethod
    def create(cls, state_dir: Path) -> "UserCA":
        """A new CA key at STATE/user_ca (0600) with its public key beside it. Refuses to overwrite one."""
        path = Path(state_dir) / CA_KEY_FILE
        if path.exists():
            raise CAError(f"{path}: a CA key exists already; remove it first to make a new CA (targets trust the old one)")
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
        write_private(path, pem)
        ca = cls(key)
        Path(f"{path}.pub").write_text(ca.public_line() + "\n")
        return ca

    @classmethod
    def load(cls, state_dir: Path) -> "UserCA":
        """The CA key of STATE/user_ca; refused when it is a symlink, not ours, or readable by others."""
        from opsgate.console.stepup.credentials import read_private

        path = Path(state_dir) / CA_KEY_FILE
        try:
            data = read_private(path, "gate CA key")
        except OpsgateError as e:
            raise CAError(str(e)) from None
        if data is None:
            raise CAError(f"{path}: no CA key: run `opsgated init` first")
        key = serialization.load_ssh_private_key(data, password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise CAError(f"{path}: the CA key must be ed25519")
        return cls(key)

    def public_line(self) -> str:
        """The line for a target's TrustedUserCAKeys file."""
        raw = self._key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        return f"{raw.decode()} {self.comment}"

    def sign(self, public_key: str, *, key_id: str, principal: str, command: str,
             window: float = DEFAULT_WINDOW, source_address: str | None = None, now: float | None = None) -> Certificate:
        """A user certificate for ``public_key`` ("ssh-ed25519 AAAA...") that runs ``command`` only.

        ``key_id`` appears in the target's sshd log ("... ID <key_id> (serial N) CA ...").
        """
        subject = serialization.load_ssh_public_key(public_key.encode())
        if not isinstance(subject, ed25519.Ed25519PublicKey):
            raise CAError("the console's key must be ed25519")
        if not command or "\0" in command:
            raise CAError("a certificate needs one non-empty command")
        now = int(time.time() if now is None else now)
        serial = secrets.randbits(64)
        builder = (
            ssh.SSHCertificateBuilder()
            .public_key(subject)
            .serial(serial)
            .type(ssh.SSHCertificateType.USER)
            .key_id(key_id.encode())
            .valid_principals([principal.encode()])
            .valid_after(now - BACKDATE)
            .valid_before(now + int(window))
            .add_critical_option(b"force-command", command.encode())
        )
        if source_address:
            builder = builder.add_critical_option(b"source-address", source_address.encode())
        cert = builder.sign(self._key)
        line = cert.public_bytes().decode() + " " + key_id.replace(" ", "_")
        return Certificate(line, key_id, serial, principal, now - BACKDATE, now + int(window), command)


def describe(line: str) -> dict:
    """What a certificate says, read back with cryptography (for the run detail and the tests)."""
    cert = ssh.load_ssh_public_identity(line.split(" ", 2)[0].encode() + b" " + line.split(" ", 2)[1].encode())
    assert isinstance(cert, ssh.SSHCertificate)
    return {
        "key_id": cert.key_id.decode(errors="replace"),
        "serial": cert.serial,
        "principals": [p.decode(errors="replace") for p in cert.valid_principals],
        "valid_after": cert.valid_after,
        "valid_before": cert.valid_before,
        "critical_options": {k.decode(): v.decode(errors="replace") for k, v in cert.critical_options.items()},
        "extensions": sorted(k.decode() for k in cert.extensions),
    }


def verify_signed_by(line: str, ca_public: str) -> bool:
    """Whether the certificate ``line`` was signed by the CA whose public line is ``ca_public``."""
    cert = ssh.load_ssh_public_identity(" ".join(line.split(" ", 2)[:2]).encode())
    assert isinstance(cert, ssh.SSHCertificate)
    try:
        cert.verify_cert_signature()
    except Exception:
        return False
    ca = serialization.load_ssh_public_key(" ".join(ca_public.split()[:2]).encode())
    return cert.signature_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == \
        ca.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ephemeral_key() -> tuple[ed25519.Ed25519PrivateKey, str]:
    """A key pair made in memory for one run: the private key and the public line to send the gate."""
    key = ed25519.Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return key, raw.decode()


__all__ = ["BACKDATE", "CA_KEY_FILE", "CAError", "Certificate", "DEFAULT_WINDOW", "UserCA", "describe",
           "ephemeral_key", "verify_signed_by"]
