"""The credentials store: each operator's TOTP secret, FIDO2 credentials and TOTP replay/lockout state.

One TOML file in the state dir, mode 0600, written atomically (temp file, fsync, rename) under an
exclusive ``fcntl`` lock so two consoles never lose each other's updates. Like ssh, the store is
refused when group or others may read it or when another user owns it (fail closed).
"""

from __future__ import annotations

import base64
import os
import stat
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import tomli_w

from opsgate.console.errors import CredentialsError
from opsgate.console.files import file_lock, write_private
from opsgate.console.paths import CREDENTIALS_FILE, CREDENTIALS_LOCK

VERSION = 1


@dataclass
class FidoCredential:
    """One registered security key credential."""

    credential_id: bytes
    credential_data: bytes  # AttestedCredentialData: aaguid, id and COSE public key
    sign_count: int = 0
    name: str = "security key"
    created: float = 0.0
    locked: str | None = None  # why it may not be used (a clone signal); re-enroll it with another factor
    aaguid: str = ""  # the authenticator model ("cb69481e-8ff7-..."); from credential_data when not given
    last_used: float = 0.0  # the last accepted assertion (0: never)
    attestation: str | None = None  # what enrollment found: "packed basic, verified", "none: not verified (...)"
    attestation_verified: bool = False  # its attestation statement verified at enrollment

    def __post_init__(self) -> None:
        if not self.aaguid:
            self.aaguid = aaguid_of(self.credential_data)


def aaguid_of(credential_data: bytes) -> str:
    """The AAGUID at the start of the attested credential data, as a UUID string ("" if there is none)."""
    if len(credential_data) < 16:
        return ""
    return format_aaguid(credential_data[:16])


def format_aaguid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


@dataclass
class OperatorCredentials:
    """What one operator has enrolled, and their TOTP replay and lockout state."""

    totp_secret: str | None = None  # base32
    totp_last_step: int = -1  # the last accepted time step; codes at or before it are replays
    totp_failures: int = 0  # consecutive failures
    totp_locked_until: float = 0.0
    fido2: list[FidoCredential] = field(default_factory=list)

    def factors(self) -> list[str]:
        """Enrolled factors, weakest first."""
        return [f for f, ok in (("otp", self.totp_secret), ("fido2", self.fido2)) if ok]

    def usable_factors(self) -> list[str]:
        """Enrolled factors that can be used now (a security key locked after a clone signal cannot), weakest first."""
        return [f for f in self.factors() if f != "fido2" or any(not c.locked for c in self.fido2)]


def check_private_file(path: Path, fd: int, what: str) -> None:
    """Refuse a secrets file that another user owns or that group or others can access (like ssh)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise CredentialsError(f"{path}: {what} is not a regular file; refusing to use it")
    if st.st_uid != os.getuid():
        raise CredentialsError(f"{path}: {what} is owned by uid {st.st_uid}, not by you; refusing to use it")
    if st.st_mode & 0o077:
        raise CredentialsError(
            f"{path}: {what} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"refusing to use it: run chmod 600 {path}"
        )


def read_private(path: Path, what: str) -> bytes | None:
    """The bytes of a 0600 file we own, or None when it does not exist. Symlinks are refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CredentialsError(f"{path}: cannot open {what}: {e.strerror or e}") from None
    try:
        check_private_file(path, fd, what)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CredentialStore:
    """The operators' enrolled factors, in ``<state_dir>/credentials.toml``."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / CREDENTIALS_FILE
        self._lock_path = Path(state_dir) / CREDENTIALS_LOCK

    def load(self) -> dict[str, OperatorCredentials]:
        """Every operator's credentials (empty when nothing is enrolled yet)."""
        with file_lock(self._lock_path, exclusive=False):
            return self._read()

    def operator(self, name: str) -> OperatorCredentials:
        """One operator's credentials (empty when they enrolled nothing)."""
        return self.load().get(name, OperatorCredentials())

    @contextmanager
    def transaction(self) -> Iterator[dict[str, OperatorCredentials]]:
        """Read-modify-write under an exclusive lock; written back when the block ends without error."""
        with file_lock(self._lock_path, exclusive=True):
            data = self._read()
            yield data
            self._write(data)

    def _read(self) -> dict[str, OperatorCredentials]:
        raw = read_private(self.path, "credentials file")
        if raw is None:
            return {}
        try:
            doc = tomllib.loads(raw.decode("utf-8"))
            return _parse(doc)
        except (UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as e:
            raise CredentialsError(
                f"{self.path}: corrupted credentials file ({type(e).__name__}: {e}); "
                "restore it from a backup or move it away and enroll again"
            ) from None

    def _write(self, data: dict[str, OperatorCredentials]) -> None:
        doc: dict[str, Any] = {"version": VERSION, "operators": {}}
        for name, op in sorted(data.items()):
            entry: dict[str, Any] = {
                "totp_last_step": op.totp_last_step,
                "totp_failures": op.totp_failures,
                "totp_locked_until": float(op.totp_locked_until),
            }
            if op.totp_secret:
                entry["totp_secret"] = op.totp_secret
            entry["fido2"] = [
                {"credential_id": _b64e(c.credential_id), "credential_data": _b64e(c.credential_data),
                 "sign_count": c.sign_count, "name": c.name, "created": float(c.created), "aaguid": c.aaguid}
                for c in op.fido2
            ]
            for out, c in zip(entry["fido2"], op.fido2):
                if c.locked:
                    out["locked"] = c.locked
                if c.last_used:
                    out["last_used"] = float(c.last_used)
                if c.attestation:
                    out["attestation"] = c.attestation
                    out["attestation_verified"] = bool(c.attestation_verified)
            doc["operators"][name] = entry
        try:
            write_private(self.path, tomli_w.dumps(doc).encode("utf-8"))
        except OSError as e:
            raise CredentialsError(f"{self.path}: cannot write credentials file: {e.strerror or e}") from None


def _parse(doc: dict) -> dict[str, OperatorCredentials]:
    if doc.get("version") != VERSION:
        raise ValueError(f"unsupported version {doc.get('version')!r}")
    out = {}
    for name, entry in doc.get("operators", {}).items():
        secret = entry.get("totp_secret")
        if secret is not None and (not isinstance(secret, str) or len(_b32(secret)) < 16):
            raise ValueError(f"operators.{name}.totp_secret: not a base32 secret of at least 128 bits")
        creds = []
        for c in entry.get("fido2", []):
            # Files written before aaguid, last_used and attestation existed read as: the AAGUID from the
            # credential data, never used, attestation unknown.
            for key in ("locked", "aaguid", "attestation"):
                if c.get(key) is not None and not isinstance(c[key], str):
                    raise ValueError(f"operators.{name}.fido2.{key}: expected a string")
            data = _b64d(c["credential_data"])
            creds.append(FidoCredential(_b64d(c["credential_id"]), data, _int(c["sign_count"]),
                                        str(c.get("name", "security key")), float(c.get("created", 0.0)),
                                        c.get("locked"), c.get("aaguid") or aaguid_of(data),
                                        float(c.get("last_used", 0.0)), c.get("attestation"),
                                        c.get("attestation_verified", False) is True))
        out[name] = OperatorCredentials(secret, _int(entry.get("totp_last_step", -1)),
                                        _int(entry.get("totp_failures", 0)),
                                        float(entry.get("totp_locked_until", 0.0)), creds)
    return out


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _b32(secret: str) -> bytes:
    return base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
