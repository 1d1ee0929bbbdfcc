"""OpenSSH known_hosts files: plain, [host]:port, hashed (|1|) and wildcard entries, @revoked.

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
from dataclasses import dataclass

import paramiko


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


def _wildcard(pattern: str) -> re.Pattern[str]:
    # OpenSSH patterns know only * and ?; brackets in "[host]:port" are literal
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower())
    return re.compile("".join(parts))


def _matches_hashed(pattern: str, name: str) -> bool:
    # |1|base64(salt)|base64(hmac-sha1(salt, name))
    try:
        _, magic, salt_b64, hash_b64 = pattern.split("|")
        salt = base64.b64decode(salt_b64)
        want = base64.b64decode(hash_b64)
    except (ValueError, binascii.Error):
        return False
    if magic != "1":
        return False
    got = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(got, want)


def _pattern_list_matches(patterns: tuple[str, ...], name: str) -> bool:
    """OpenSSH semantics: any positive match, and no negated (!) match."""
    matched = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        if pat.startswith("|"):
            hit = _matches_hashed(pat, name)
        else:
            hit = _wildcard(pat).fullmatch(name.lower()) is not None
        if hit and negate:
            return False
        matched = matched or hit
    return matched


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
    """The keys of a set of known_hosts files, looked up the way OpenSSH does."""

    def __init__(self, entries: list[KnownKey], files: tuple[str, ...]):
        self.entries = entries
        self.files = files

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

    def lookup(self, host: str, port: int) -> tuple[list[paramiko.PKey], list[paramiko.PKey]]:
        """Return (trusted keys, revoked keys) for host:port. CA lines are not supported and ignored."""
        name = host_token(host, port)
        trusted: list[paramiko.PKey] = []
        revoked: list[paramiko.PKey] = []
        for entry in self.entries:
            if entry.marker == "@revoked":
                revoked.append(entry.key)  # @revoked applies whatever the host pattern
            elif entry.marker is None and _pattern_list_matches(entry.patterns, name):
                trusted.append(entry.key)
        return trusted, revoked


def preferred_key_types(known: list[paramiko.PKey], supported: tuple[str, ...]) -> list[str]:
    """Host key algorithms to offer: the ones already known for this host first.

    Otherwise a host known by its ed25519 key would look "unknown" when the
    server picks ecdsa from our default order.
    """
    first: list[str] = []
    for key in known:
        name = key.get_name()
        algs = ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if name == "ssh-rsa" else [name]
        first.extend(a for a in algs if a in supported and a not in first)
    return first + [a for a in supported if a not in first]
