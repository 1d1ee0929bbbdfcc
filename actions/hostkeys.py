"""OpenSSH known_hosts files: plain, [host]:port, hashed (|1|) and wildcard entries, @revoked, and
@cert-authority (host certificates, checked with `cryptography`).

Written here instead of paramiko.HostKeys because that one skips @revoked lines,
wildcards and negations silently; a host key decision must not guess.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import paramiko
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import SSHCertificate, SSHCertificateType, load_ssh_public_identity

CERT_SUFFIX = "-cert-v01@openssh.com"  # a host key algorithm name + this: the same key in a certificate


@dataclass(frozen=True)
class KnownKey:
    """One key line of a known_hosts file."""

    patterns: tuple[str, ...]
    key: paramiko.PKey
    marker: str | None  # None, "@revoked" or "@cert-authority"
    source: str  # "file:line", for messages


def host_token(host: str, port: int) -> str:
    """The name OpenSSH writes for a host: `host`, or `[host]:port` off port 22."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    """SHA256 fingerprint as OpenSSH prints it ("SHA256:...")."""
    return key.fingerprint


def blob_fingerprint(blob: bytes) -> str:
    """The SHA256 fingerprint of a public key blob, as OpenSSH prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _wildcard(pattern: str) -> re.Pattern[str]:
    # OpenSSH patterns know only * and ?; brackets in "[host]:port" are literal
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower())
    return re.compile("".join(parts))


def _hashed(pattern: str) -> tuple[bytes, bytes] | None:
    """(salt, hmac-sha1 of the name) of a hashed pattern ``|1|base64(salt)|base64(hmac)``; None if it is not one."""
    try:
        _, magic, salt_b64, hash_b64 = pattern.split("|")
        salt = base64.b64decode(salt_b64)
        want = base64.b64decode(hash_b64)
    except (ValueError, binascii.Error):
        return None
    return (salt, want) if magic == "1" else None


class _Patterns:
    """One line's host patterns, compiled once. OpenSSH semantics: the line matches a name when one of its
    positive patterns does and none of its negated (``!``) ones; plain and wildcard patterns ignore case,
    a hashed one (``|1|salt|hmac``) is the HMAC-SHA1 of the name as written."""

    def __init__(self, patterns: tuple[str, ...]):
        self.literals: set[str] = set()  # positive patterns without wildcards, lowercase
        self.hashed: list[tuple[bytes, bytes]] = []  # positive hashed patterns: (salt, hmac)
        self.wildcards: list[re.Pattern[str]] = []  # positive patterns with * or ?
        self.negated: list[tuple[str, object]] = []  # ("hashed", (salt, hmac)) or ("wildcard", regex)
        for pattern in patterns:
            negate = pattern.startswith("!")
            body = pattern[1:] if negate else pattern
            if body.startswith("|"):
                hashed = _hashed(body)
                if hashed is None:
                    continue  # matches nothing
                if negate:
                    self.negated.append(("hashed", hashed))
                else:
                    self.hashed.append(hashed)
            elif negate:
                self.negated.append(("wildcard", _wildcard(body)))
            elif "*" in body or "?" in body:
                self.wildcards.append(_wildcard(body))
            else:
                self.literals.add(body.lower())

    def matches(self, name: str) -> bool:
        lower = name.lower()
        for kind, matcher in self.negated:
            if _hit(kind, matcher, name, lower):
                return False
        return (lower in self.literals or any(_hit("hashed", h, name, lower) for h in self.hashed)
                or any(w.fullmatch(lower) for w in self.wildcards))


def _hit(kind: str, matcher, name: str, lower: str) -> bool:
    if kind == "hashed":
        salt, want = matcher
        return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), want)
    return matcher.fullmatch(lower) is not None


def _parse_line(line: str, source: str) -> KnownKey | None:
    fields = line.split()
    marker = None
    if fields and fields[0].startswith("@"):
        marker, fields = fields[0], fields[1:]
    if len(fields) < 3:
        return None
    names, key_type, blob = fields[:3]
    try:
        key = paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))
    except (binascii.Error, ValueError, paramiko.SSHException, paramiko.ssh_exception.UnknownKeyType):
        return None  # key types paramiko cannot read can never match a server key anyway
    return KnownKey(tuple(names.split(",")), key, marker, source)


class KnownHosts:
    """The keys of a set of known_hosts files, looked up the way OpenSSH does.

    The lines' patterns are compiled once, when the files are loaded, into an index: plain names in a dict,
    hashed names by salt (one HMAC per distinct salt and name looked up, then a dict), and a list of the
    lines that need more than that (wildcards, negations). A name's answer is kept: a fan-out asks for each
    target (and each shared jump host) once per connection, and several targets may share an address.
    """

    def __init__(self, entries: list[KnownKey], files: tuple[str, ...]):
        self.entries = entries
        self.files = files
        self._revoked = [e.key for e in entries if e.marker == "@revoked"]  # @revoked applies whatever the pattern
        self._plain: dict[str, list[int]] = {}  # lowercase name -> lines (indexes into entries)
        self._salted: dict[bytes, tuple[object, dict[bytes, list[int]]]] = {}  # salt -> (hmac, {digest: lines})
        self._scan: list[tuple[int, _Patterns]] = []  # lines with wildcards or negations: matched one by one
        for i, entry in enumerate(entries):
            if entry.marker == "@revoked":
                continue
            patterns = _Patterns(entry.patterns)
            if patterns.negated or patterns.wildcards:
                self._scan.append((i, patterns))
                continue
            for literal in patterns.literals:
                self._plain.setdefault(literal, []).append(i)
            for salt, want in patterns.hashed:
                _, table = self._salted.setdefault(salt, (hmac.new(salt, digestmod=hashlib.sha1), {}))
                table.setdefault(want, []).append(i)
        self._answers: dict[str, list[KnownKey]] = {}

    @classmethod
    def load(cls, paths: tuple[str, ...] | list[str]) -> "KnownHosts":
        """Read the files in order; a missing file is empty, an unreadable one raises OSError."""
        entries: list[KnownKey] = []
        files = tuple(os.path.expanduser(p) for p in paths)
        for path in files:
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    for lineno, raw in enumerate(f, 1):
                        line = raw.strip()
                        if not line or line.startswith("#"):
                            continue
                        entry = _parse_line(line, f"{path}:{lineno}")
                        if entry is not None:
                            entries.append(entry)
            except FileNotFoundError:
                continue
        return cls(entries, files)

    def _matching(self, name: str) -> list[KnownKey]:
        """The lines (not @revoked) whose patterns match ``name``, in file order."""
        found = self._answers.get(name)
        if found is None:
            hits = set(self._plain.get(name.lower(), ()))
            if self._salted:
                raw = name.encode()
                for prototype, table in self._salted.values():
                    mac = prototype.copy()
                    mac.update(raw)
                    hits.update(table.get(mac.digest(), ()))
            hits.update(i for i, patterns in self._scan if patterns.matches(name))
            found = self._answers[name] = [self.entries[i] for i in sorted(hits)]
        return found

    def lookup(self, host: str, port: int, *, alias: str | None = None) -> tuple[list[paramiko.PKey], list[paramiko.PKey]]:
        """Return (trusted keys, revoked keys) for host:port (or for `alias`, a HostKeyAlias, as is)."""
        name = alias or host_token(host, port)
        return [e.key for e in self._matching(name) if e.marker is None], list(self._revoked)

    def authorities(self, host: str, port: int, *, alias: str | None = None) -> list[KnownKey]:
        """The @cert-authority lines whose patterns match host:port (or `alias`): CAs trusted to sign its key."""
        return [e for e in self._matching(alias or host_token(host, port)) if e.marker == "@cert-authority"]


class KnownHostsCache:
    """known_hosts files loaded once for a run: the targets of a fan-out (or of a runbook's steps) share them
    instead of each reading and parsing every line again. Thread-safe; keyed by the list of files."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[tuple[str, ...], KnownHosts] = {}

    def load(self, paths: tuple[str, ...] | list[str]) -> KnownHosts:
        """``KnownHosts.load(paths)`` the first time; the same object after that. OSError is not kept: the next
        target tries again (and reports it under its own name)."""
        key = tuple(paths)
        with self._lock:
            known = self._loaded.get(key)
            if known is None:
                known = self._loaded[key] = KnownHosts.load(key)
            return known


def preferred_key_types(known: list[paramiko.PKey], supported: tuple[str, ...],
                        certificates: tuple[str, ...] = ()) -> list[str]:
    """Host key algorithms to offer: `certificates` (the certificate algorithms, given when known_hosts
    has a @cert-authority for this host, as OpenSSH puts them first then), then the ones already known
    for this host, then the rest.

    Otherwise a host known by its ed25519 key would look "unknown" when the
    server picks ecdsa from our default order.
    """
    first: list[str] = list(certificates)
    for key in known:
        name = key.get_name()
        algs = ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if name == "ssh-rsa" else [name]
        first.extend(a for a in algs if a in supported and a not in first)
    return first + [a for a in supported if a not in first]


@dataclass(frozen=True)
class CertificateProblem:
    """Why a host certificate was not accepted: `check` names the check that failed, `detail` says how."""

    check: str  # "unreadable", "signature", "revoked", "ca", "type", "not-yet-valid", "expired", "principal", "options"
    detail: str


def _when(seconds: int) -> str:
    if seconds >= 2**63:
        return "forever"
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _public_blob(key) -> bytes:
    """The SSH wire blob of a `cryptography` public key."""
    text = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return base64.b64decode(text.split()[1])


def certificate_ca(blob: bytes) -> str:
    """The fingerprint of the CA that signed the certificate `blob` (already checked), for messages."""
    key_type = blob[4:4 + int.from_bytes(blob[:4], "big")]
    cert = load_ssh_public_identity(key_type + b" " + base64.b64encode(blob))
    return blob_fingerprint(_public_blob(cert.signature_key()))


def check_host_certificate(key_type: str, blob: bytes, principal: str, authorities: list[KnownKey],
                           revoked: list[paramiko.PKey], now: float | None = None) -> CertificateProblem | None:
    """None if the certificate `blob` (of algorithm `key_type`) proves the host `principal`, else why not.

    The checks are OpenSSH's (check_host_cert, sshkey_cert_check_authority): the CA's signature is valid; no
    @revoked line names the CA or the certified key (revoked wins over everything); the CA is one of
    `authorities` (the @cert-authority lines matching this host); it is a host certificate; it is valid now;
    `principal` (the host name connected to, or its HostKeyAlias, without port) is one of its principals;
    it has no critical options. Stricter than OpenSSH: a certificate listing no principals (valid for any
    host in OpenSSH) is refused.
    """
    try:
        cert = load_ssh_public_identity(key_type.encode() + b" " + base64.b64encode(blob))
    except (ValueError, TypeError) as e:
        return CertificateProblem("unreadable", f"cannot read the host certificate: {e}")
    if not isinstance(cert, SSHCertificate):
        return CertificateProblem("unreadable", "the host offered a plain key where a certificate was negotiated")
    try:
        cert.verify_cert_signature()
    except (InvalidSignature, ValueError, TypeError):
        return CertificateProblem("signature", "its CA signature does not verify")
    ca_blob = _public_blob(cert.signature_key())
    key_blob = _public_blob(cert.public_key())
    for key in revoked:
        if key.asbytes() == ca_blob:
            return CertificateProblem("revoked", f"its CA key {blob_fingerprint(ca_blob)} is marked @revoked")
        if key.asbytes() == key_blob:
            return CertificateProblem("revoked", f"the certified host key {blob_fingerprint(key_blob)} is marked "
                                                 f"@revoked")
    if not any(a.key.asbytes() == ca_blob for a in authorities):
        trusted = ", ".join(f"{fingerprint(a.key)} ({a.source})" for a in authorities) or "none"
        return CertificateProblem("ca", f"it is signed by CA {blob_fingerprint(ca_blob)}, which known_hosts does "
                                        f"not trust for this host (trusted CAs: {trusted})")
    if cert.type != SSHCertificateType.HOST:
        return CertificateProblem("type", f"it is a {cert.type.name.lower()} certificate, not a host certificate")
    now = time.time() if now is None else now
    if now < cert.valid_after:
        return CertificateProblem("not-yet-valid", f"it is not valid before {_when(cert.valid_after)}")
    if now >= cert.valid_before:
        return CertificateProblem("expired", f"it expired at {_when(cert.valid_before)}")
    principals = [p.decode(errors="replace") for p in cert.valid_principals]
    if not principals:
        return CertificateProblem("principal", f"it lists no principals (valid for any host); opsgate requires "
                                               f"{principal!r} among them")
    if principal not in principals:
        return CertificateProblem("principal", f"it is valid for {', '.join(principals)}, not for {principal}")
    if cert.critical_options:
        names = ", ".join(k.decode(errors="replace") for k in cert.critical_options)
        return CertificateProblem("options", f"it has critical options ({names}), which a host certificate "
                                             f"must not have")
    return None
