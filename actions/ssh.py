"""Run one shell command on one SSH target with paramiko, streaming its output.

Host keys come only from the configured known_hosts files (unknown or changed
keys are refused, never added; a host certificate is accepted when a @cert-authority
line trusts its CA for the host). A running command can be stopped remotely:
it is wrapped so the remote shell reports its process group first, and a stop
kills that group through a second channel on the same connection.

Where to connect comes from sshconfig.resolve_route: ~/.ssh/config (HostName, User, Port,
IdentityFile, ProxyJump, ProxyCommand, ...; what opsgate cannot honour is refused before connecting).
Each jump host is a full SSH connection of its own (host key checked, own identity); the next hop
runs over its direct-tcpip channel, as `ssh -J` does. In a fan-out (JumpHosts) the targets behind one
jump host share its connection.
"""

from __future__ import annotations

import base64
import binascii
import copy
import io
import logging
import os
import re
import select
import shlex
import socket
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import paramiko
import paramiko.agent
from paramiko.buffered_pipe import BufferedPipe, PipeTimeout
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import SSHCertificate, load_ssh_public_identity

from opsgate.actions.display import escape_line
from opsgate.actions.outcome import OUTCOMES, Chunk, Endpoint, TargetResult  # noqa: F401 (re-exported)
from opsgate.actions.errors import AuthFailed, SSHConfigError, SSHError, Unreachable  # noqa: F401 (re-exported)
from opsgate.actions.hostkeys import (CERT_SUFFIX, KnownHosts, KnownHostsCache, KnownKey, certificate_ca,
                                      check_host_certificate, fingerprint, host_token, preferred_key_types)
from opsgate.actions.sshconfig import Hop, Route, resolve_route

# paramiko logs transport failures that we report as typed errors; keep them off a TUI's stderr
logging.getLogger("paramiko").addHandler(logging.NullHandler())


class _EscapeRemoteText(logging.Filter):
    """paramiko's transport log quotes the server (disconnect messages, auth banners, version strings):
    escaped, for whoever turns that log on."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = escape_line(record.getMessage()), None
        return True


logging.getLogger("paramiko.transport").addFilter(_EscapeRemoteText())

READ_SIZE = 1024 * 1024  # at most this much per recv (one Chunk to the sink): large reads keep big outputs cheap
# At most this much is moved to the sink before the read loop looks at cancel and the deadline again: a
# flood faster than the sink (a slow terminal, a full disk's recording) never leaves the buffer empty.
PUMP_BYTES = 4 * READ_SIZE
# Preferred first when the server offers them: AES-GCM needs no separate MAC (paramiko computes an HMAC per
# packet in Python otherwise), then the encrypt-then-MAC variants; the rest keep paramiko's order.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
PREFERRED_MACS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com")
STOP_GRACE = 1.0  # seconds between SIGTERM and SIGKILL of the remote process group
DRAIN_AFTER_STOP = 5.0  # seconds to wait for the channel to close once the group is killed
DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


class HostKeyUnknown(SSHError):
    """The host's key is in none of the known_hosts files."""

    outcome = "hostkey"

    def __init__(self, host: str, port: int, key_type: str, fingerprint: str, known_hosts: str,
                 alias: str | None = None, note: str = ""):
        self.host, self.port, self.key_type, self.fingerprint = host, port, key_type, fingerprint
        keyscan_type = _KEYSCAN_TYPES.get(key_type, key_type)
        if alias is None:
            name, add = host_token(host, port), f"ssh-keyscan -p {port} -t {keyscan_type} {host} >> {known_hosts}"
        else:  # HostKeyAlias: the key is recorded under the alias (no port)
            name = f"{alias} (HostKeyAlias of {host_token(host, port)})"
            add = (f"ssh-keyscan -p {port} -t {keyscan_type} {host} | sed 's/^[^ ]*/{alias}/' >> {known_hosts}")
        super().__init__(
            f"host key for {name} is not known ({key_type} {fingerprint}){note}; "
            f"refusing to connect. Check that fingerprint with the host's owner, then add it: {add}"
        )


class HostKeyMismatch(SSHError):
    """The host offered a key other than the one on record: refused before authenticating."""

    outcome = "hostkey"

    def __init__(self, host: str, port: int, key_type: str, expected: str, actual: str, known_hosts: str,
                 alias: str | None = None):
        self.host, self.port, self.key_type = host, port, key_type
        self.expected, self.actual = expected, actual
        token = alias or host_token(host, port)
        super().__init__(
            f"HOST KEY CHANGED for {token}: expected {expected}, got {key_type} {actual}; "
            f"refusing to connect (possible man-in-the-middle, or the host was rebuilt: "
            f"if so, verify the new key, then ssh-keygen -R '{token}' -f {known_hosts})"
        )


class HostKeyRevoked(SSHError):
    """The host offered a key marked @revoked (or a certificate whose key or CA is marked @revoked)."""

    outcome = "hostkey"


class HostCertificateInvalid(SSHError):
    """The host offered a certificate that does not prove its name: `check` says which check failed
    ("ca", "type", "expired", "not-yet-valid", "principal", "options", "signature", "unreadable")."""

    outcome = "hostkey"

    def __init__(self, message: str, check: str):
        super().__init__(message)
        self.check = check


_KEYSCAN_TYPES = {
    "ssh-ed25519": "ed25519",
    "ssh-rsa": "rsa",
    "ecdsa-sha2-nistp256": "ecdsa",
    "ecdsa-sha2-nistp384": "ecdsa",
    "ecdsa-sha2-nistp521": "ecdsa",
}


def _open_socket(name: str, host: str, port: int, timeout: float, family: int = socket.AF_UNSPEC) -> socket.socket:
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, family, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise Unreachable(f"{name}: cannot resolve {host}: {e.strerror}") from e
    last: str = "no address"
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # SSH is chatty: no Nagle delays
            return sock
        except ConnectionRefusedError:
            last = f"connection refused by {where}"
        except socket.timeout:
            last = f"connection to {where} timed out after {timeout:g}s"
        except OSError as e:
            last = f"cannot connect to {where}: {e.strerror or e}"
        sock.close()
    raise Unreachable(f"{name}: {last}")


class _ProxyCommand(paramiko.ProxyCommand):
    """ssh_config's ProxyCommand, run as OpenSSH runs it: `/bin/sh -c 'exec COMMAND'`.

    The command line is the user's own (from their ssh_config); the %-tokens put into it were checked
    to hold no shell syntax (sshconfig._expand). recv() reports EOF as a socket does (b""), so a proxy
    that exits fails the handshake at once instead of at the timeout.
    """

    def __init__(self, command: str):
        super().__init__(shlex.join(["/bin/sh", "-c", f"exec {command}"]))
        self.command = command
        self.stderr = b""  # what it wrote on stderr, kept when it is closed (for the error message)

    def recv(self, size: int) -> bytes:
        ready, _, _ = select.select([self.process.stdout], [], [], self.timeout)
        if not ready:
            raise socket.timeout()
        try:
            return os.read(self.process.stdout.fileno(), size)
        except OSError as e:
            raise paramiko.ProxyCommandFailure(self.command, e.strerror) from e

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._drain_stderr()
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                pipe.close()
            except OSError:
                pass

    def _drain_stderr(self) -> None:
        """Keep what the command wrote on stderr, without blocking (a daemon may hold the pipe open)."""
        if self.process.stderr.closed:
            return
        fd = self.process.stderr.fileno()
        os.set_blocking(fd, False)
        try:
            while len(self.stderr) < 4000:
                data = os.read(fd, 4000)
                if not data:
                    break
                self.stderr += data
        except (BlockingIOError, OSError):
            pass

    def describe(self) -> str:
        """The command, and how it ended if it did (its stderr's first lines)."""
        code = self.process.poll()
        if code is None:
            return f"ProxyCommand {self.command!r}"
        self._drain_stderr()
        text = self.stderr.decode(errors="replace")
        lines = " / ".join(line.strip() for line in text.splitlines()[:3] if line.strip())
        return f"ProxyCommand {self.command!r} exited with status {code}" + (f": {lines}" if lines else "")


class _StreamBuffer(BufferedPipe):
    """A channel's incoming stream (stdout, stderr, or a jump host tunnel's bytes) as paramiko feeds it, kept
    as the bytes objects that arrived (one per SSH packet) rather than in one array.

    paramiko's BufferedPipe appends every packet to an array and, on each read, copies out the part read and
    moves everything behind it to the front: with a 2 MiB window that is up to 2 MiB moved per read (per
    16-byte read for a tunnel carrying another SSH connection). Here a read hands back a packet's bytes as
    they are when it takes a whole one, and joins packets (one copy) up to ``nbytes``; a partial read of a
    packet copies only what it returns. Same interface and semantics as BufferedPipe (Channel calls
    ``feed``, ``read``, ``read_ready``, ``empty``, ``close``, ``set_event`` and ``len``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # bytes of the first chunk already read
        self._size = 0  # bytes buffered

    def set_event(self, event) -> None:
        with self._lock:
            self._event = event
            if self._closed or self._size:
                event.set()
            else:
                event.clear()

    def feed(self, data) -> None:
        with self._lock:
            if self._event is not None:
                self._event.set()
            if data:
                self._chunks.append(bytes(data))
                self._size += len(data)
            self._cv.notify_all()

    def read_ready(self) -> bool:
        with self._lock:
            return self._size > 0

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        with self._lock:
            if not self._size:
                if self._closed:
                    return b""
                if timeout == 0.0:
                    raise PipeTimeout()
                while not self._size and not self._closed:  # woken up, but another reader took it: wait again
                    then = time.time()
                    self._cv.wait(timeout)
                    if timeout is not None:
                        timeout -= time.time() - then
                        if timeout <= 0.0:
                            raise PipeTimeout()
                if not self._size:
                    return b""
            out = self._take(nbytes)
            if not self._size and self._event is not None and not self._closed:
                self._event.clear()
            return out

    def _take(self, nbytes: int) -> bytes:
        parts = []
        chunks, need = self._chunks, nbytes
        while need and chunks:
            head, offset = chunks[0], self._offset
            left = len(head) - offset
            if left <= need:
                parts.append(head[offset:] if offset else head)
                chunks.popleft()
                self._offset = 0
                need -= left
            else:
                parts.append(head[offset:offset + need])
                self._offset = offset + need
                need = 0
        self._size -= nbytes - need
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def empty(self) -> bytes:
        with self._lock:
            out = self._take(self._size) if self._size else b""
            if self._event is not None and not self._closed:
                self._event.clear()
            return out

    def __len__(self) -> int:
        with self._lock:
            return self._size


def _stream_buffers(channel: paramiko.Channel) -> paramiko.Channel:
    """``channel``, its two incoming streams now read through _StreamBuffers.

    Bytes may arrive while this runs (a tunnel's target sends its banner at once): under the old buffer's
    lock, what it holds moves to the new one, and a feed already on its way to the old buffer (paramiko's
    thread looked it up before the swap) is passed on to the new one, in order. A paramiko whose
    BufferedPipe is not the one this was written against keeps its own buffers."""
    for name in ("in_buffer", "in_stderr_buffer"):
        old, new = getattr(channel, name), _StreamBuffer()
        if type(old) is not BufferedPipe or not hasattr(old, "_buffer_frombytes") or not hasattr(old, "_buffer"):
            return channel
        with old._lock:
            if len(old._buffer):
                new.feed(old._buffer.tobytes())
                del old._buffer[:]
            if old._closed:
                new.close()
            old._buffer_frombytes = new.feed
            setattr(channel, name, new)
    return channel


def _preferred(offered: tuple[str, ...], first: tuple[str, ...]) -> tuple[str, ...]:
    """``offered`` (what this paramiko supports, in its order) with those of ``first`` it has moved to the front."""
    return tuple(a for a in first if a in offered) + tuple(a for a in offered if a not in first)


def _check_host_key(name: str, hop: Hop, server_key: paramiko.PKey, known: KnownHosts,
                    trusted: list[paramiko.PKey], revoked: list[paramiko.PKey], authorities: list[KnownKey]) -> str:
    """Accept the host's key if known_hosts trusts it: as a plain key, or as a certificate signed by a
    @cert-authority for the host. Anything @revoked is refused first. Returns what was accepted, in words."""
    accepted = f"{server_key.get_name()} {fingerprint(server_key)}"
    hint_file = known.files[0] if known.files else "~/.ssh/known_hosts"
    token = hop.host_key_alias or host_token(hop.host, hop.port)
    blob = server_key.asbytes()
    if any(k.asbytes() == blob for k in revoked):
        raise HostKeyRevoked(
            f"{name}: host key {server_key.get_name()} {fingerprint(server_key)} of "
            f"{token} is marked @revoked; refusing to connect"
        )
    cert = server_key.public_blob
    if cert is not None and cert.key_type.endswith(CERT_SUFFIX):
        problem = check_host_certificate(cert.key_type, cert.key_blob, hop.host_key_alias or hop.host,
                                         authorities, revoked)
        if problem is None:
            return f"{cert.key_type} {fingerprint(server_key)} (certificate by CA {certificate_ca(cert.key_blob)})"
        message = (f"{name}: host certificate of {token} ({server_key.get_name()} {fingerprint(server_key)}) "
                   f"refused: {problem.detail}; refusing to connect")
        if problem.check == "revoked":
            raise HostKeyRevoked(message)
        if any(k.asbytes() == blob for k in trusted):
            return accepted  # as OpenSSH: a certificate that does not pass falls back to its plain key, known here
        raise HostCertificateInvalid(message, problem.check)
    if any(k.asbytes() == blob for k in trusted):
        return accepted
    if not trusted:
        note = " (known_hosts trusts a CA for it, but it offered no host certificate)" if authorities else ""
        raise HostKeyUnknown(hop.host, hop.port, server_key.get_name(), fingerprint(server_key), hint_file,
                             hop.host_key_alias, note)
    same_type = [k for k in trusted if k.get_name() == server_key.get_name()]
    expected = (same_type or trusted)[0]
    raise HostKeyMismatch(
        hop.host, hop.port, server_key.get_name(),
        f"{expected.get_name()} {fingerprint(expected)}", fingerprint(server_key), hint_file, hop.host_key_alias,
    )


class _Transport(paramiko.Transport):
    """paramiko's Transport offering exactly the host key algorithms set in its security options.

    paramiko appends a certificate variant of every algorithm after the plain ones, so a server with a
    host certificate would still be asked for its plain key; opsgate puts the certificate algorithms first
    when known_hosts has a @cert-authority for the host, and offers none otherwise.
    """

    @property
    def preferred_keys(self):
        return tuple(self._preferred_keys)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _handshake_deadline(self.packetizer)


def _handshake_deadline(packetizer: paramiko.Packetizer) -> None:
    """Keep paramiko's handshake timeout as a deadline instead of a ``threading.Timer``: paramiko starts a
    timer thread per connection, so a fan-out held a third thread per target while connecting. The
    packetizer's reader checks ``handshake_timed_out`` after each read timeout (0.1 s), as before."""
    state = {"deadline": None, "complete": False}

    def start_handshake(timeout: float) -> None:
        if state["deadline"] is None:
            state["deadline"] = time.monotonic() + float(timeout)

    def handshake_timed_out() -> bool:
        return state["deadline"] is not None and not state["complete"] and time.monotonic() > state["deadline"]

    def complete_handshake() -> None:
        state["complete"] = True

    # instance attributes: the packetizer's own read loop calls self.handshake_timed_out()
    packetizer.start_handshake = start_handshake
    packetizer.handshake_timed_out = handshake_timed_out
    packetizer.complete_handshake = complete_handshake


_ENCRYPTED = object()  # _load_key's answer for a passphrase-protected key


def _load_key(path: str, tried: list[str]) -> paramiko.PKey | object | None:
    """The private key at `path`; None (with the reason in `tried`) or _ENCRYPTED if it cannot be used."""
    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError:
        tried.append(f"{path} (missing)")
    except (paramiko.PasswordRequiredException, TypeError):  # paramiko 5: TypeError "password-protected"
        return _ENCRYPTED
    except (OSError, ValueError, paramiko.SSHException) as e:
        tried.append(f"{path} (unreadable: {e})")
    return None


def _public_blob(path: str) -> bytes | None:
    """The key blob of `path`.pub, if that file is there and readable."""
    try:
        with open(f"{path}.pub", encoding="ascii", errors="replace") as f:
            fields = f.read().split()
        return base64.b64decode(fields[1]) if len(fields) >= 2 else None
    except (OSError, ValueError, binascii.Error):
        return None


class _SocketAgent(paramiko.agent.AgentSSH):
    """The ssh-agent listening on `path` (IdentityAgent), instead of the one $SSH_AUTH_SOCK names."""

    def __init__(self, path: str):
        super().__init__()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(10)
            sock.connect(path)
            self._connect(sock)
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        self._close()


def _agent_keys(hop: Hop, endpoint: Endpoint, tried: list[str]) -> tuple[paramiko.agent.AgentSSH | None,
                                                                          list[paramiko.PKey]]:
    if not (endpoint.allow_agent and hop.use_agent):
        return None, []
    path, label = os.environ.get("SSH_AUTH_SOCK"), "ssh-agent"
    if hop.agent_socket is not None and hop.agent_socket.startswith("$"):  # IdentityAgent $VAR
        path, label = os.environ.get(hop.agent_socket[1:]), f"ssh-agent at {hop.agent_socket}"
        if not path:
            tried.append(f"ssh-agent ({hop.agent_socket[1:]} not set, IdentityAgent)")
            return None, []
    elif hop.agent_socket is not None:  # IdentityAgent PATH
        path, label = hop.agent_socket, f"ssh-agent at {hop.agent_socket} (IdentityAgent)"
    elif not path:
        tried.append("ssh-agent (SSH_AUTH_SOCK not set)")
        return None, []
    try:
        agent = _SocketAgent(path)
        keys = list(agent.get_keys())
    except (paramiko.SSHException, OSError) as e:
        tried.append(f"{label} (unreachable: {e})")
        return None, []
    if not keys:
        tried.append(f"{label} (no keys)")
    return agent, keys


def _certificates(hop: Hop, endpoint: Endpoint, tried: list[str]) -> list[tuple[str, paramiko.PublicBlob, bytes]]:
    """The user certificates to offer: each CertificateFile, then IDENTITY-cert.pub beside each identity
    file and default key (as OpenSSH loads it), as (path, certificate, blob of the key it certifies)."""
    found: list[tuple[str, paramiko.PublicBlob, bytes]] = []
    defaults = [os.path.expanduser(f"~/.ssh/{base}") for base in DEFAULT_KEYS] if endpoint.look_for_keys else []
    implicit = [f"{p}-cert.pub" for p in (*hop.identity_files, *defaults)]
    for path in (*hop.certificate_files, *implicit):
        if path in (f[0] for f in found):
            continue
        try:
            cert = paramiko.PublicBlob.from_file(path)
            inner = load_ssh_public_identity(f"{cert.key_type} {base64.b64encode(cert.key_blob).decode()}".encode())
            if not isinstance(inner, SSHCertificate):
                raise ValueError("a plain public key, not a certificate")
            key = inner.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        except FileNotFoundError:
            if path not in implicit:
                tried.append(f"{path} (certificate file missing)")
            continue
        except (OSError, ValueError, TypeError, paramiko.SSHException) as e:
            tried.append(f"{path} (unreadable certificate: {e})")
            continue
        found.append((path, cert, base64.b64decode(key.split()[1])))
    return found


def _authenticate(transport: paramiko.Transport, name: str, hop: Hop, endpoint: Endpoint) -> str:
    """Public key auth as OpenSSH orders it: each identity file (an encrypted one through the agent's
    copy of it), then the other ssh-agent keys (unless IdentitiesOnly), then the usual ~/.ssh keys.
    Returns the key that was accepted, in words."""
    tried: list[str] = []
    seen: set[tuple[bytes, bytes]] = set()
    where = f"{hop.user}@{hop.host}:{hop.port}"
    certificates = _certificates(hop, endpoint, tried)

    accepted: list[str] = []

    def attempt(key: paramiko.PKey, label: str) -> bool:
        """Offer `key`: first with each certificate of it, then plain; True once authenticated."""
        for path, cert, inner in certificates:
            if inner == key.asbytes():
                if isinstance(key, paramiko.AgentKey):  # a proxy whose copy.copy recurses
                    certified = paramiko.AgentKey(key.agent, key.blob, key.comment)
                else:
                    certified = copy.copy(key)
                certified.public_blob = cert
                if offer(certified, f"{label} with certificate {path}"):
                    return True
        return offer(key, label)

    def offer(key: paramiko.PKey, label: str) -> bool:
        blob = getattr(key, "public_blob", None)
        ident = (key.asbytes(), blob.key_blob if blob is not None else b"")
        if ident in seen:
            return False
        seen.add(ident)
        try:
            remaining = transport.auth_publickey(hop.user, key)
        except paramiko.BadAuthenticationType as e:
            raise AuthFailed(
                f"{name}: {where} does not accept public keys "
                f"(it allows: {', '.join(e.allowed_types) or 'nothing'})"
            ) from e
        except paramiko.AuthenticationException:
            tried.append(f"{label} (rejected)")
            return False
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise Unreachable(f"{name}: connection lost during authentication: {e}") from e
        if transport.is_authenticated():
            accepted.append(label)
            return True
        tried.append(f"{label} (accepted, but the server also wants: {', '.join(remaining)})")
        return False

    agent, agent_keys = _agent_keys(hop, endpoint, tried)
    try:
        for path in hop.identity_files:
            key = _load_key(path, tried)
            if key is _ENCRYPTED:
                blob = _public_blob(path)
                held = next((k for k in agent_keys if blob is not None and k.asbytes() == blob), None)
                if held is None:
                    tried.append(f"{path} (passphrase-protected and not in ssh-agent: ssh-add it)")
                elif attempt(held, f"{path} via ssh-agent"):
                    return accepted[0]
            elif key is not None and attempt(key, path):
                return accepted[0]
        if hop.identities_only:  # only the agent's copies of the configured identities (and certificates)
            wanted = ({_public_blob(p) for p in hop.identity_files} - {None}) | {c[2] for c in certificates}
            agent_keys = [k for k in agent_keys if k.asbytes() in wanted]
        for key in agent_keys:
            if attempt(key, f"ssh-agent key {key.get_name()} {fingerprint(key)}"):
                return accepted[0]
        if endpoint.look_for_keys and not (hop.identities_only and hop.identity_files):
            for base in DEFAULT_KEYS:
                path = os.path.expanduser(f"~/.ssh/{base}")
                if path in hop.identity_files or not os.path.exists(path):
                    continue
                key = _load_key(path, tried)
                if key is _ENCRYPTED:
                    tried.append(f"{path} (passphrase-protected and not in ssh-agent: ssh-add it)")
                elif key is not None and attempt(key, path):
                    return accepted[0]
    finally:
        if agent is not None:
            agent.close()
    raise AuthFailed(
        f"{name}: authentication as {where} failed; "
        f"tried publickey: {'; '.join(tried) or 'no keys (set identity_file or start ssh-agent)'}"
    )


def _handshake(transport: paramiko.Transport, name: str, hop: Hop, timeout: float) -> None:
    """Banner, key exchange; raises Unreachable naming the stage that failed."""
    where = f"{hop.host}:{hop.port}"
    done = threading.Event()
    try:
        transport.start_client(event=done)  # returns at once; `done` is set on success or failure
    except (paramiko.SSHException, EOFError, OSError) as e:
        raise Unreachable(f"{name}: SSH handshake with {where} failed: {e}") from e
    finished = done.wait(timeout)
    if finished and transport.is_active():
        return
    if not transport.remote_version:
        if finished:
            raise Unreachable(f"{name}: {where} closed the connection before sending an SSH banner")
        raise Unreachable(f"{name}: no SSH banner from {where} within {timeout:g}s (not an SSH server?)")
    if not finished:
        raise Unreachable(f"{name}: SSH handshake with {where} timed out after {timeout:g}s")
    error = transport.get_exception()
    raise Unreachable(f"{name}: SSH handshake with {where} failed: {error or 'connection closed'}")


def _authenticate_certificate(transport: paramiko.Transport, name: str, hop: Hop, certificate: tuple[str, str]) -> str:
    """Gate mode: the run's ephemeral key with the gate's certificate, and nothing else (no agent, no files)."""
    pem, line = certificate
    try:
        key = paramiko.Ed25519Key(file_obj=io.StringIO(pem))
        key.load_certificate(line)
    except (paramiko.SSHException, ValueError) as e:
        raise AuthFailed(f"{name}: the gate's certificate cannot be used: {e}") from e
    try:
        transport.auth_publickey(hop.user, key)
    except paramiko.AuthenticationException as e:
        raise AuthFailed(f"{name}: {hop.user}@{hop.host}:{hop.port} refused the gate's certificate (is the gate's CA "
                         "in its TrustedUserCAKeys, the user in its AuthorizedPrincipalsFile, the certificate "
                         "still valid?)") from e
    except (paramiko.SSHException, EOFError, OSError) as e:
        raise Unreachable(f"{name}: connection lost during authentication: {e}") from e
    if not transport.is_authenticated():
        raise AuthFailed(f"{name}: {hop.host} wants more than the gate's certificate")
    return "the gate's certificate"


@dataclass(frozen=True)
class HopReport:
    """How one hop of a connection was secured: for `opsgate check --ssh`."""

    alias: str  # the name looked up in ssh_config
    where: str  # user@host:port
    identity: str  # the key that was accepted (or why none was tried)
    host_key: str  # the host key (or certificate) that was accepted


def _secure(sock, name: str, hop: Hop, endpoint: Endpoint, known: KnownHosts, *,
            target: bool = False, authenticate: bool = True) -> paramiko.Transport:
    """SSH over `sock` to `hop`: handshake, host key checked against known_hosts, authentication (its
    HopReport in `transport.opsgate_report`)."""
    trusted, revoked = known.lookup(hop.host, hop.port, alias=hop.host_key_alias)
    authorities = known.authorities(hop.host, hop.port, alias=hop.host_key_alias)
    try:
        transport = _Transport(sock)
    except Exception:
        sock.close()
        raise
    if isinstance(sock, _Tunnel):
        sock.owner = transport
    try:
        options = transport.get_security_options()
        plain = tuple(t for t in options.key_types if not t.endswith(CERT_SUFFIX))
        certificates = tuple(t + CERT_SUFFIX for t in plain if t + CERT_SUFFIX in transport._key_info)
        options.key_types = preferred_key_types(trusted, plain, certificates if authorities else ())
        options.ciphers = _preferred(options.ciphers, PREFERRED_CIPHERS)
        options.digests = _preferred(options.digests, PREFERRED_MACS)
        transport.banner_timeout = endpoint.connect_timeout + 1.0  # our own wait (_handshake) names a silent peer first
        transport.handshake_timeout = endpoint.connect_timeout
        _handshake(transport, name, hop, endpoint.connect_timeout)
        host_key = _check_host_key(name, hop, transport.get_remote_server_key(), known, trusted, revoked, authorities)
        if not authenticate:
            identity = "not tried"
        elif target and endpoint.certificate is not None:
            identity = _authenticate_certificate(transport, name, hop, endpoint.certificate)
        else:
            identity = _authenticate(transport, name, hop, endpoint)
        transport.opsgate_report = HopReport(hop.alias, f"{hop.user}@{hop.host}:{hop.port}", identity, host_key)
        return transport
    except BaseException:
        transport.close()
        raise


class _Tunnel:
    """A jump host's direct-tcpip channel as the socket of the next hop's Transport.

    Closing it is left to that Transport's own thread, after its last send: paramiko's Channel checks that it
    is open, then sends outside its lock, so a close from another thread (Transport.close does not wait for
    its thread) can put a packet for the channel behind its CLOSE, and OpenSSH then drops the whole jump host
    connection ("packet referred to nonexistent channel"), every other target's channel with it.
    """

    def __init__(self, channel: paramiko.Channel):
        self.channel = channel
        self.owner: threading.Thread | None = None  # the Transport running over it

    def __getattr__(self, name: str):
        return getattr(self.channel, name)

    def close(self) -> None:
        owner = self.owner
        if owner is None or owner is threading.current_thread() or not owner.is_alive():
            try:
                self.channel.close()
            except (EOFError, OSError, paramiko.SSHException):
                pass  # the jump host's connection closed first: the channel went with it
        # else: the owner is stopping; the last thing its thread does is close its socket, i.e. this


def _forward(via: paramiko.Transport, name: str, jump: Hop, hop: Hop, timeout: float) -> _Tunnel:
    """A direct-tcpip channel from the jump host `jump` to `hop` (what ssh -W asks for)."""
    try:
        channel = via.open_channel("direct-tcpip", (hop.host, hop.port), ("127.0.0.1", 0), timeout=timeout)
        return _Tunnel(_stream_buffers(channel))
    except paramiko.ChannelException as e:
        raise Unreachable(f"{name}: jump host {jump.alias} ({jump.host}:{jump.port}) could not open a "
                          f"connection to {hop.host}:{hop.port}: {e.text} (code {e.code})") from e
    except (paramiko.SSHException, EOFError, OSError) as e:
        raise Unreachable(f"{name}: jump host {jump.alias} ({jump.host}:{jump.port}) could not open a "
                          f"connection to {hop.host}:{hop.port}: {e or type(e).__name__}") from e


class _JumpSlot:
    """One shared jump host connection; its lock makes concurrent targets log in to it once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.transport: paramiko.Transport | None = None
        self.attempts = 0
        self.failure: tuple[SSHError, str] | None = None  # the last attempt's error, and the name it was raised for


def _renamed(error: SSHError, old: str, new: str) -> SSHError:
    """`error` as another target sees it: its message's leading `old` name replaced by `new`."""
    clone = type(error).__new__(type(error))
    clone.__dict__.update(error.__dict__)
    text = str(error)
    clone.args = (new + text[len(old):] if text.startswith(old) else text,)
    return clone


class JumpHosts:
    """Jump host connections shared by every target behind them, for the length of a fan-out (or of a
    runbook's pool): one login per jump host, each target a direct-tcpip channel of it, as many at once as
    the fan-out runs targets. Thread-safe.

    A jump host is shared only between routes that reach it the same way (the hops before it, its own
    settings, the ProxyCommand) and check and authenticate it the same way (known_hosts, agent, keys,
    timeout). When logging in to it fails, the targets that were waiting for that attempt get its error
    (under their own names) instead of trying again one after another.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[tuple, _JumpSlot] = {}
        self._closed = False

    def get(self, key: tuple, name: str, open_hop: Callable[[], paramiko.Transport]) -> paramiko.Transport:
        """The live connection for `key`, opened with `open_hop()` if there is none; raises SSHError."""
        with self._lock:
            if self._closed:
                raise Unreachable(f"{name}: the run's connections were closed")
            slot = self._slots.setdefault(key, _JumpSlot())
            seen = slot.attempts
        with slot.lock:
            if slot.transport is not None and slot.transport.is_active():
                return slot.transport
            if slot.failure is not None and slot.attempts != seen:  # it failed while we waited for it
                raise _renamed(slot.failure[0], slot.failure[1], name)
            if slot.transport is not None:
                slot.transport.close()
                slot.transport = None
            slot.attempts += 1
            try:
                transport = open_hop()
            except SSHError as e:
                slot.failure = (e, name)
                raise
            with self._lock:
                closed = self._closed
            if closed:
                transport.close()
                raise Unreachable(f"{name}: the run's connections were closed")
            slot.transport, slot.failure = transport, None
            return transport

    def close(self) -> None:
        """Close every jump host connection (the targets' connections through them go too)."""
        with self._lock:
            self._closed = True
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in reversed(slots):  # a hop behind another was added after it: closed first
            with slot.lock:
                if slot.transport is not None:
                    slot.transport.close()
                    slot.transport = None


def _open_hop(endpoint: Endpoint, route: Route, i: int, name: str, known: KnownHosts,
              via: paramiko.Transport | None, authenticate: bool = True) -> paramiko.Transport:
    """Hop `i` of `route`, secured: over `via` (the previous hop's connection), the ProxyCommand or TCP."""
    hop = route.hops[i]
    is_target = i == len(route.hops) - 1
    proxy: _ProxyCommand | None = None
    if i > 0:
        sock = _forward(via, name, route.hops[i - 1], hop, endpoint.connect_timeout)
    elif route.proxy_command is not None:
        try:
            proxy = sock = _ProxyCommand(route.proxy_command)
        except (OSError, paramiko.SSHException) as e:
            raise Unreachable(f"{name}: cannot start ProxyCommand {route.proxy_command!r}: {e}") from e
    else:
        sock = _open_socket(name, hop.host, hop.port, endpoint.connect_timeout, hop.family)
    try:
        return _secure(sock, name, hop, endpoint, known, target=is_target,  # the transport owns the proxy now
                       authenticate=authenticate or not is_target)
    except SSHError as e:
        if isinstance(e, Unreachable) and proxy is not None:
            described = proxy.describe()
            proxy.close()
            raise Unreachable(f"{e} ({described})") from e
        if proxy is not None:
            proxy.close()
        if not is_target and not str(e).startswith(name):  # host key errors do not name the hop
            e.args = (f"{name}: {e}",)
        raise
    except BaseException:
        if proxy is not None:
            proxy.close()
        raise


def connect(endpoint: Endpoint, *, jumps: JumpHosts | None = None,
            known_hosts: KnownHostsCache | None = None) -> "Connection":
    """Open an authenticated SSH connection, through its jump hosts or ProxyCommand if ssh_config (or
    `endpoint.jump`) says so; raises an SSHError subclass on failure (SSHConfigError before connecting).

    With `jumps`, the jump host connections come from (and stay in) it, shared with other targets;
    without, they belong to the returned Connection and close with it. With `known_hosts`, the known_hosts
    files are read once for all the targets that share it; without, for this connection."""
    return _connect(endpoint, jumps, authenticate=True, known_hosts=known_hosts)


def probe(endpoint: Endpoint, *, authenticate: bool = True, jumps: JumpHosts | None = None,
          known_hosts: KnownHostsCache | None = None) -> tuple[str | None, list[HopReport]]:
    """Reach `endpoint` as a run would (jump hosts, ProxyCommand, host keys, and unless `authenticate` is
    False, the target's login), run nothing, close; return (the ProxyCommand, how each hop was secured).
    Raises SSHError like connect()."""
    with _connect(endpoint, jumps, authenticate=authenticate, known_hosts=known_hosts) as connection:
        return connection.proxy_command, connection.reports


def _connect(endpoint: Endpoint, jumps: JumpHosts | None, *, authenticate: bool,
             known_hosts: KnownHostsCache | None = None) -> "Connection":
    route: Route = resolve_route(endpoint)
    try:
        known = known_hosts.load(endpoint.known_hosts) if known_hosts is not None else KnownHosts.load(
            endpoint.known_hosts)
    except OSError as e:
        error = SSHError(f"{endpoint.name}: cannot read known_hosts {e.filename}: {e.strerror}")
        error.outcome = "hostkey"
        raise error from e
    owned: list[paramiko.Transport] = []
    reports: list[HopReport] = []
    previous: paramiko.Transport | None = None
    try:
        for i, hop in enumerate(route.hops):
            is_target = i == len(route.hops) - 1
            name = endpoint.name if is_target else f"{endpoint.name}: jump host {hop.alias}"
            if is_target or jumps is None:
                previous = _open_hop(endpoint, route, i, name, known, previous, authenticate)
                owned.append(previous)
            else:
                key = (route.proxy_command, route.hops[:i + 1], tuple(endpoint.known_hosts), endpoint.allow_agent,
                       endpoint.look_for_keys, endpoint.connect_timeout)
                via = previous
                previous = jumps.get(key, name, lambda: _open_hop(endpoint, route, i, name, known, via))
            reports.append(previous.opsgate_report)
        connection = Connection(endpoint.name, owned[-1], via=owned[:-1], forced=endpoint.certificate is not None)
        connection.reports, connection.proxy_command = reports, route.proxy_command
        return connection
    except BaseException:
        for transport in reversed(owned):
            transport.close()
        raise


# The remote login shell (what plain ssh would run the command in) gets a short POSIX
# prologue: make sure it leads its own process group (servers like OpenSSH already set
# that up; else setsid), print "opsgate-pid PID PGID" as the first stdout line, then
# `eval` the untouched command line, so pipes, &&, quotes, $VAR, stdin and the shell's
# rc files behave exactly as with `ssh host 'command'`, and no second shell is started.
_PROLOGUE = (
    "__og=$$; {{ read -r __og __og __og __og __og __og_rest < /proc/$$/stat; }} 2>/dev/null; "
    'if [ "$__og" != "$$" ] && command -v setsid >/dev/null 2>&1; then '
    "exec setsid \"${{SHELL:-/bin/sh}}\" -c 'echo \"opsgate-pid $$ $$\"; eval \"$1\"' opsgate {cmd}; fi; "
    'echo "opsgate-pid $$ $__og"; unset __og __og_rest; eval {cmd}'
)
_PID_LINE = re.compile(rb"opsgate-pid (\d+) (\d+)\n")
_PID_LINE_MAX = 64  # a first line longer than this is not our report


def wrap_command(command: str) -> str:
    """The exec request for `command`: reports the process group, then runs it in the login shell."""
    return _PROLOGUE.format(cmd=shlex.quote(command))


# Gate mode: sshd runs the certificate's force-command, and a second exec on the connection would run
# that command again, so a forced command cannot be stopped by a "kill" session. Instead it watches its
# standard input: the client keeps stdin open while it runs and closes it to stop the command, which
# then kills its own process group (TERM, then KILL). The command itself reads /dev/null, as without it.
_FORCED = (
    "exec 3<&0; {feed}"
    "setsid sh -c 'echo \"opsgate-pid $$ $$\"; eval \"$1\"' opsgate {cmd} {input} 3<&- & __og_p=$!; "
    "{{ while read -r __og_l <&3; do :; done; kill -TERM -$__og_p 2>/dev/null; "
    "__og_i=0; while kill -0 -$__og_p 2>/dev/null && [ $__og_i -lt " + str(int(STOP_GRACE / 0.1)) + " ]; do "
    "sleep 0.1; __og_i=$((__og_i+1)); done; kill -KILL -$__og_p 2>/dev/null; }} & __og_w=$!; "
    "exec 3<&-; wait $__og_p; __og_s=$?; kill $__og_w 2>/dev/null; exit $__og_s"
)


def wrap_forced_command(command: str, secret_lines: int = 0) -> str:
    """The certificate's force-command for ``command``: reports the process group like ``wrap_command``,
    and stops it when the client closes standard input (the client's way to cancel in gate mode).

    ``secret_lines``: the command first reads that many lines of stdin (the values of its secret params,
    see ``opsgate.console.catalog.params``). The wrapper reads them off the client's stdin and hands them to
    the command through a pipe (``printf`` is a shell builtin: no argv shows them); the command reads
    nothing more, and the rest of the client's stdin is the stop signal as without secrets.
    """
    if secret_lines <= 0:
        return _FORCED.format(cmd=shlex.quote(command), feed="", input="</dev/null")
    names = [f"__og_v{i}" for i in range(secret_lines)]
    feed = (" && ".join(f"IFS= read -r {n} <&3" for n in names)
            + " || { echo 'opsgate: the secret params did not arrive on stdin' >&2; exit 125; }; "
            + "printf '%s\\n' " + " ".join(f'"${n}"' for n in names) + " | ")
    return _FORCED.format(cmd=shlex.quote(command), feed=feed, input="")


def _stop_script(pid: int, pgid: int) -> str:
    """TERM the remote process group, KILL it if still alive after STOP_GRACE."""
    # Only signal the group when the command leads it; otherwise it is not ours to kill.
    target = f"-{pgid}" if pid == pgid else f"{pid}"
    select = f"-g {pgid}" if pid == pgid else f"-p {pid}"
    steps = int(STOP_GRACE / 0.1)
    # zombies answer kill -0 until reaped (slow under some inits): count only live processes
    return (
        f"alive() {{ kill -0 {target} 2>/dev/null && ps -o stat= {select} 2>/dev/null | grep -qv '^Z'; }}; "
        f"kill -TERM {target} 2>/dev/null; i=0; "
        f"while alive && [ $i -lt {steps} ]; do sleep 0.1; i=$((i+1)); done; "
        f"kill -KILL {target} 2>/dev/null; exit 0"
    )


def _wake_reader(transport: paramiko.Transport) -> None:
    """Shut a TCP transport's socket down before closing it, so its reader thread, blocked in a recv with
    paramiko's 0.1 s timeout, sees EOF now: closing the descriptor alone does not wake that recv on Linux,
    and the join after it then waited about 100 ms per connection (a fan-out slot idle that long per target).
    A jump host channel or a ProxyCommand is left to close as it does."""
    sock = getattr(transport, "sock", None)
    if transport.is_active() and isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already gone


class Connection:
    """An authenticated SSH connection; runs commands on channels of it (thread-safe)."""

    def __init__(self, name: str, transport: paramiko.Transport, via: list[paramiko.Transport] | None = None,
                 *, forced: bool = False):
        self.name = name
        # Authenticated with a force-command certificate: one command per session, no "kill" session
        # (it would run the forced command again); stopping closes the command's stdin instead.
        self.forced = forced
        self._transport = transport
        self._via = list(via or ())  # jump host connections the transport runs through, first hop first
        self._lock = threading.Lock()
        self._running: set[_Run] = set()  # runs in progress, stopped remotely by close()
        self.reports: list[HopReport] = []  # how each hop was secured, jump hosts first (set by connect)
        self.proxy_command: str | None = None  # the ProxyCommand that reached the first hop, if any

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_active(self) -> bool:
        """True while the underlying SSH transport is up."""
        return self._transport.is_active()

    def close(self) -> None:
        """Close the connection; commands still running are killed remotely first."""
        with self._lock:
            running = [r.pid for r in self._running if r.pid is not None]
            self._running.clear()
        for pid, pgid in running:
            if self.forced:
                continue  # the forced wrapper stops its command when stdin closes, as the channel now does
            # sshd does not kill a no-pty command when its client goes away: do it, without waiting
            try:
                killer = self._transport.open_session(timeout=5)
                killer.exec_command(_stop_script(pid, pgid))
            except (paramiko.SSHException, EOFError, OSError):
                pass
        for transport in (self._transport, *reversed(self._via)):
            _wake_reader(transport)
            transport.close()
        for transport in (self._transport, *self._via):  # its reader thread ends at once (the socket is shut down):
            if transport is not threading.current_thread():  # wait for it, so a run's threads stay bounded
                transport.join(1.0)

    def run(
        self,
        command: str,
        sink: Callable[[Chunk], None],
        *,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
        stdin: bytes = b"",
    ) -> TargetResult:
        """Run `command` (a shell command line), stream output to `sink`, return how it ended.

        On timeout or cancel the remote process group is killed (TERM, then KILL).
        Standard input gets ``stdin`` (the values of secret params, one line each, which the command
        reads first: never on its command line) and is then closed: the command reads EOF. A forced
        command's wrapper reads those lines and hands them to the command; the rest of its stdin stays
        open as the client's way to stop it.
        """
        start = time.monotonic()
        try:
            channel = _stream_buffers(self._transport.open_session(timeout=30))
            channel.exec_command(wrap_command(command))
            if stdin:
                channel.sendall(stdin)
            if not self.forced:  # a forced command gets EOF on its own stdin anyway (</dev/null)
                channel.shutdown_write()
        except (paramiko.SSHException, EOFError, OSError) as e:
            return TargetResult(self.name, "unreachable", None, time.monotonic() - start, 0, 0,
                                f"{self.name}: cannot start the command: {escape_line(e or type(e).__name__)}")
        reader = _Run(self, channel, sink, start, timeout, cancel)
        with self._lock:
            self._running.add(reader)
        try:
            return reader.wait()
        finally:
            with self._lock:
                self._running.discard(reader)
            channel.close()

    def _stop_remote(self, pid: int, pgid: int, channel: paramiko.Channel | None = None) -> str | None:
        """Kill the remote process group; return an error line if that failed."""
        if self.forced:
            try:
                if channel is not None:
                    channel.shutdown_write()  # the forced wrapper's signal to stop
            except (paramiko.SSHException, EOFError, OSError) as e:
                return f"could not stop the remote command: {escape_line(e)}"
            return None
        try:
            killer = self._transport.open_session(timeout=10)
            try:
                killer.exec_command(_stop_script(pid, pgid))
                killer.shutdown_write()
                if not killer.status_event.wait(STOP_GRACE + 10):
                    return f"stopping remote process group {pgid} did not finish"
            finally:
                killer.close()
        except (paramiko.SSHException, EOFError, OSError) as e:
            return f"could not stop remote process group {pgid}: {escape_line(e)}"
        return None


class _Run:
    """The read loop of one command: demultiplexes stdout/stderr, watches timeout and cancel."""

    def __init__(self, conn: Connection, channel: paramiko.Channel, sink: Callable[[Chunk], None],
                 start: float, timeout: float | None, cancel: threading.Event | None):
        self.conn, self.channel, self.sink = conn, channel, sink
        self.start, self.timeout, self.cancel = start, timeout, cancel
        self.bytes_out = self.bytes_err = 0
        self.head = b""  # stdout before the pid line is parsed
        self.pid: tuple[int, int] | None = None
        self.head_done = False

    def _stdout(self, data: bytes) -> None:
        if not self.head_done:
            self.head += data
            match = _PID_LINE.match(self.head)
            if match:
                self.pid = (int(match.group(1)), int(match.group(2)))
                data = self.head[match.end():]
            elif b"\n" in self.head or len(self.head) > _PID_LINE_MAX:
                data = self.head  # no report (odd remote shell): pass everything through
            else:
                return
            self.head_done, self.head = True, b""
        if data:
            self.bytes_out += len(data)
            self.sink(Chunk(self.conn.name, "stdout", data, time.monotonic()))

    def _stderr(self, data: bytes) -> None:
        self.bytes_err += len(data)
        self.sink(Chunk(self.conn.name, "stderr", data, time.monotonic()))

    def _pump(self, budget: float = PUMP_BYTES) -> bool:
        """Move what has arrived to the sink, about ``budget`` bytes at most; True once the channel hit EOF
        and is drained."""
        channel = self.channel
        while budget > 0 and channel.recv_stderr_ready():
            data = channel.recv_stderr(READ_SIZE)
            budget -= len(data)
            self._stderr(data)
        while budget > 0 and channel.recv_ready():
            data = channel.recv(READ_SIZE)
            if not data:
                break
            budget -= len(data)
            self._stdout(data)
        return (channel.eof_received or channel.closed) and not channel.recv_ready() \
            and not channel.recv_stderr_ready()

    def _wait_readable(self, seconds: float) -> None:
        select.select([self.channel], [], [], max(0.0, seconds))

    def wait(self) -> TargetResult:
        stop_reason: str | None = None
        stop_at: float | None = None
        stop_error: str | None = None
        drain_until = float("inf")
        deadline = self.start + self.timeout if self.timeout is not None else None
        try:
            while True:
                if self._pump():
                    break
                now = time.monotonic()
                if stop_reason is None:
                    if self.cancel is not None and self.cancel.is_set():
                        stop_reason = "cancelled"
                    elif deadline is not None and now >= deadline:
                        stop_reason = "timeout"
                    if stop_reason:
                        stop_at = now
                if stop_reason and stop_at is not None:
                    if self.pid is not None:
                        stop_error = self.conn._stop_remote(*self.pid, channel=self.channel)
                        stop_at = None  # signalled; now drain until EOF
                        drain_until = time.monotonic() + DRAIN_AFTER_STOP
                    elif now - stop_at > 2.0:
                        stop_error = "the remote command never reported its process group; it may still run"
                        break
                elif stop_reason and time.monotonic() > drain_until:
                    break
                if not self.conn.is_active() and not self._pump(budget=float("inf")):
                    return self._result("unreachable", None, f"{self.conn.name}: connection lost while running")
                wait = 0.1  # poll cancel/timeout at least this often
                if deadline is not None and stop_reason is None:
                    wait = min(wait, deadline - time.monotonic())
                self._wait_readable(wait)
        except BaseException:
            if self.pid is not None and stop_reason is None:
                self.conn._stop_remote(*self.pid, channel=self.channel)  # don't leave the command running behind a crashed reader
            raise
        if not self.head_done and self.head:
            self.head_done, data, self.head = True, self.head, b""
            self.bytes_out += len(data)
            self.sink(Chunk(self.conn.name, "stdout", data, time.monotonic()))
        code = self._exit_code()
        if stop_reason == "timeout":
            return self._result("timeout", code, stop_error or
                                f"{self.conn.name}: timed out after {self.timeout:g}s; remote command stopped")
        if stop_reason == "cancelled":
            return self._result("cancelled", code, stop_error or f"{self.conn.name}: cancelled; remote command stopped")
        if code is None:
            return self._result("failed", None, f"{self.conn.name}: the command ended without an exit status "
                                "(killed by a signal?)")
        return self._result("ok" if code == 0 else "failed", code)

    def _exit_code(self) -> int | None:
        # exit-status may follow EOF by a packet; -1 means the server sent none (e.g. killed by a signal)
        if self.channel.status_event.wait(2.0) and self.channel.exit_status >= 0:
            return self.channel.exit_status
        return None

    def _result(self, outcome: str, code: int | None, error: str | None = None) -> TargetResult:
        return TargetResult(self.conn.name, outcome, code, time.monotonic() - self.start,
                            self.bytes_out, self.bytes_err, error)
