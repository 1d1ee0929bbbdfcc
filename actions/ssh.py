"""Run one shell command on one SSH target with paramiko, streaming its output.

Host keys come only from the configured known_hosts files (unknown or changed
keys are refused, never added). A running command can be stopped remotely:
it is wrapped so the remote shell reports its process group first, and a stop
kills that group through a second channel on the same connection.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import select
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

import paramiko

from opsgate.actions.outcome import OUTCOMES, Chunk, Endpoint, TargetResult  # noqa: F401 (re-exported)
from opsgate.actions.hostkeys import KnownHosts, fingerprint, host_token, preferred_key_types

# paramiko logs transport failures that we report as typed errors; keep them off a TUI's stderr
logging.getLogger("paramiko").addHandler(logging.NullHandler())

READ_SIZE = 64 * 1024  # bytes per recv: large reads keep 50 MB outputs cheap
STOP_GRACE = 1.0  # seconds between SIGTERM and SIGKILL of the remote process group
DRAIN_AFTER_STOP = 5.0  # seconds to wait for the channel to close once the group is killed
DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


class SSHError(Exception):
    """Connecting to a target failed; the message is meant for the operator."""

    outcome = "unreachable"


class Unreachable(SSHError):
    """DNS failure, refused connection, connect timeout, no SSH banner."""


class AuthFailed(SSHError):
    """The server accepted none of the keys tried."""

    outcome = "auth"


class HostKeyUnknown(SSHError):
    """The host's key is in none of the known_hosts files."""

    outcome = "hostkey"

    def __init__(self, host: str, port: int, key_type: str, fingerprint: str, known_hosts: str):
        self.host, self.port, self.key_type, self.fingerprint = host, port, key_type, fingerprint
        keyscan_type = _KEYSCAN_TYPES.get(key_type, key_type)
        super().__init__(
            f"host key for {host_token(host, port)} is not known ({key_type} {fingerprint}); "
            f"refusing to connect. Check that fingerprint with the host's owner, then add it: "
            f"ssh-keyscan -p {port} -t {keyscan_type} {host} >> {known_hosts}"
        )


class HostKeyMismatch(SSHError):
    """The host offered a key other than the one on record: refused before authenticating."""

    outcome = "hostkey"

    def __init__(self, host: str, port: int, key_type: str, expected: str, actual: str, known_hosts: str):
        self.host, self.port, self.key_type = host, port, key_type
        self.expected, self.actual = expected, actual
        token = host_token(host, port)
        super().__init__(
            f"HOST KEY CHANGED for {token}: expected {expected}, got {key_type} {actual}; "
            f"refusing to connect (possible man-in-the-middle, or the host was rebuilt: "
            f"if so, verify the new key, then ssh-keygen -R '{token}' -f {known_hosts})"
        )


class HostKeyRevoked(SSHError):
    """The host offered a key marked @revoked."""

    outcome = "hostkey"


_KEYSCAN_TYPES = {
    "ssh-ed25519": "ed25519",
    "ssh-rsa": "rsa",
    "ecdsa-sha2-nistp256": "ecdsa",
    "ecdsa-sha2-nistp384": "ecdsa",
    "ecdsa-sha2-nistp521": "ecdsa",
}


@dataclass(frozen=True)
class _Resolved:
    host: str
    port: int
    user: str
    identity_files: tuple[str, ...]


def _resolve(endpoint: Endpoint) -> _Resolved:
    """Apply ~/.ssh/config (HostName, User, Port, IdentityFile) under the endpoint's own fields."""
    options: dict = {}
    if endpoint.ssh_config:
        path = os.path.expanduser(endpoint.ssh_config)
        if os.path.exists(path):
            try:
                options = paramiko.SSHConfig.from_path(path).lookup(endpoint.host)
            except Exception as e:  # paramiko raises several types for bad configs
                raise SSHError(f"{endpoint.name}: cannot use ssh config {path}: {e}") from e
    try:
        port = endpoint.port or int(options.get("port", 22))
    except ValueError as e:
        raise SSHError(f"{endpoint.name}: bad Port in ssh config: {options.get('port')!r}") from e
    if endpoint.identity_file:
        identities: tuple[str, ...] = (endpoint.identity_file,)
    else:
        identities = tuple(options.get("identityfile", ()))
    return _Resolved(
        host=options.get("hostname", endpoint.host),
        port=port,
        user=endpoint.user or options.get("user") or getpass.getuser(),
        identity_files=tuple(os.path.expanduser(p) for p in identities),
    )


def _open_socket(name: str, host: str, port: int, timeout: float) -> socket.socket:
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
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


def _check_host_key(name: str, host: str, port: int, server_key: paramiko.PKey, known: KnownHosts,
                    trusted: list[paramiko.PKey], revoked: list[paramiko.PKey]) -> None:
    hint_file = known.files[0] if known.files else "~/.ssh/known_hosts"
    blob = server_key.asbytes()
    if any(k.asbytes() == blob for k in revoked):
        raise HostKeyRevoked(
            f"{name}: host key {server_key.get_name()} {fingerprint(server_key)} of "
            f"{host_token(host, port)} is marked @revoked; refusing to connect"
        )
    if any(k.asbytes() == blob for k in trusted):
        return
    if not trusted:
        raise HostKeyUnknown(host, port, server_key.get_name(), fingerprint(server_key), hint_file)
    same_type = [k for k in trusted if k.get_name() == server_key.get_name()]
    expected = (same_type or trusted)[0]
    raise HostKeyMismatch(
        host, port, server_key.get_name(),
        f"{expected.get_name()} {fingerprint(expected)}", fingerprint(server_key), hint_file,
    )


def _load_key(path: str, tried: list[str]) -> paramiko.PKey | None:
    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError:
        tried.append(f"{path} (missing)")
    except paramiko.PasswordRequiredException:
        tried.append(f"{path} (encrypted: load it into ssh-agent)")
    except (OSError, ValueError, paramiko.SSHException) as e:
        tried.append(f"{path} (unreadable: {e})")
    return None


def _authenticate(transport: paramiko.Transport, endpoint: Endpoint, target: _Resolved) -> None:
    """Public key auth: identity file(s), then ssh-agent keys, then the usual ~/.ssh keys."""
    tried: list[str] = []
    seen: set[bytes] = set()

    def attempt(key: paramiko.PKey, label: str) -> bool:
        if key.asbytes() in seen:
            return False
        seen.add(key.asbytes())
        try:
            remaining = transport.auth_publickey(target.user, key)
        except paramiko.BadAuthenticationType as e:
            raise AuthFailed(
                f"{endpoint.name}: {target.user}@{target.host}:{target.port} does not accept public keys "
                f"(it allows: {', '.join(e.allowed_types) or 'nothing'})"
            ) from e
        except paramiko.AuthenticationException:
            tried.append(f"{label} (rejected)")
            return False
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise Unreachable(f"{endpoint.name}: connection lost during authentication: {e}") from e
        if transport.is_authenticated():
            return True
        tried.append(f"{label} (accepted, but the server also wants: {', '.join(remaining)})")
        return False

    for path in target.identity_files:
        key = _load_key(path, tried)
        if key is not None and attempt(key, path):
            return
    if endpoint.allow_agent:
        if not os.environ.get("SSH_AUTH_SOCK"):
            tried.append("ssh-agent (SSH_AUTH_SOCK not set)")
        else:
            agent = paramiko.Agent()
            try:
                keys = agent.get_keys()
                if not keys:
                    tried.append("ssh-agent (no keys)")
                for key in keys:
                    if attempt(key, f"ssh-agent key {key.get_name()} {fingerprint(key)}"):
                        return
            finally:
                agent.close()
    if endpoint.look_for_keys:
        for base in DEFAULT_KEYS:
            path = os.path.expanduser(f"~/.ssh/{base}")
            if path in target.identity_files or not os.path.exists(path):
                continue
            key = _load_key(path, tried)
            if key is not None and attempt(key, path):
                return
    raise AuthFailed(
        f"{endpoint.name}: authentication as {target.user}@{target.host}:{target.port} failed; "
        f"tried publickey: {'; '.join(tried) or 'no keys (set identity_file or start ssh-agent)'}"
    )


def _handshake(transport: paramiko.Transport, endpoint: Endpoint, target: _Resolved) -> None:
    """Banner, key exchange; raises Unreachable naming the stage that failed."""
    where = f"{target.host}:{target.port}"
    done = threading.Event()
    try:
        transport.start_client(event=done)  # returns at once; `done` is set on success or failure
    except (paramiko.SSHException, EOFError, OSError) as e:
        raise Unreachable(f"{endpoint.name}: SSH handshake with {where} failed: {e}") from e
    finished = done.wait(endpoint.connect_timeout)
    if finished and transport.is_active():
        return
    if not transport.remote_version:
        raise Unreachable(f"{endpoint.name}: no SSH banner from {where} within "
                          f"{endpoint.connect_timeout:g}s (not an SSH server?)")
    if not finished:
        raise Unreachable(f"{endpoint.name}: SSH handshake with {where} timed out after {endpoint.connect_timeout:g}s")
    error = transport.get_exception()
    raise Unreachable(f"{endpoint.name}: SSH handshake with {where} failed: {error or 'connection closed'}")


def connect(endpoint: Endpoint) -> "Connection":
    """Open an authenticated SSH connection; raises an SSHError subclass on failure."""
    target = _resolve(endpoint)
    try:
        known = KnownHosts.load(endpoint.known_hosts)
    except OSError as e:
        error = SSHError(f"{endpoint.name}: cannot read known_hosts {e.filename}: {e.strerror}")
        error.outcome = "hostkey"
        raise error from e
    trusted, revoked = known.lookup(target.host, target.port)
    sock = _open_socket(endpoint.name, target.host, target.port, endpoint.connect_timeout)
    try:
        transport = paramiko.Transport(sock)
    except Exception:
        sock.close()
        raise
    try:
        options = transport.get_security_options()
        options.key_types = preferred_key_types(trusted, tuple(options.key_types))
        transport.banner_timeout = endpoint.connect_timeout
        transport.handshake_timeout = endpoint.connect_timeout
        _handshake(transport, endpoint, target)
        _check_host_key(endpoint.name, target.host, target.port, transport.get_remote_server_key(),
                        known, trusted, revoked)
        _authenticate(transport, endpoint, target)
        return Connection(endpoint.name, transport)
    except BaseException:
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


class Connection:
    """An authenticated SSH connection; runs commands on channels of it (thread-safe)."""

    def __init__(self, name: str, transport: paramiko.Transport):
        self.name = name
        self._transport = transport
        self._lock = threading.Lock()
        self._running: set[_Run] = set()  # runs in progress, stopped remotely by close()

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
            # sshd does not kill a no-pty command when its client goes away: do it, without waiting
            try:
                killer = self._transport.open_session(timeout=5)
                killer.exec_command(_stop_script(pid, pgid))
            except (paramiko.SSHException, EOFError, OSError):
                pass
        self._transport.close()

    def run(
        self,
        command: str,
        sink: Callable[[Chunk], None],
        *,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
    ) -> TargetResult:
        """Run `command` (a shell command line), stream output to `sink`, return how it ended.

        On timeout or cancel the remote process group is killed (TERM, then KILL).
        Standard input is closed at once: the command reads EOF.
        """
        start = time.monotonic()
        try:
            channel = self._transport.open_session(timeout=30)
            channel.exec_command(wrap_command(command))
            channel.shutdown_write()
        except (paramiko.SSHException, EOFError, OSError) as e:
            return TargetResult(self.name, "unreachable", None, time.monotonic() - start, 0, 0,
                                f"{self.name}: cannot start the command: {e or type(e).__name__}")
        reader = _Run(self, channel, sink, start, timeout, cancel)
        with self._lock:
            self._running.add(reader)
        try:
            return reader.wait()
        finally:
            with self._lock:
                self._running.discard(reader)
            channel.close()

    def _stop_remote(self, pid: int, pgid: int) -> str | None:
        """Kill the remote process group; return an error line if that failed."""
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
            return f"could not stop remote process group {pgid}: {e}"
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

    def _pump(self) -> bool:
        """Move what has arrived to the sink; True once the channel hit EOF and is drained."""
        channel = self.channel
        while channel.recv_stderr_ready():
            self._stderr(channel.recv_stderr(READ_SIZE))
        while channel.recv_ready():
            data = channel.recv(READ_SIZE)
            if not data:
                break
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
                        stop_error = self.conn._stop_remote(*self.pid)
                        stop_at = None  # signalled; now drain until EOF
                        drain_until = time.monotonic() + DRAIN_AFTER_STOP
                    elif now - stop_at > 2.0:
                        stop_error = "the remote command never reported its process group; it may still run"
                        break
                elif stop_reason and time.monotonic() > drain_until:
                    break
                if not self.conn.is_active() and not self._pump():
                    return self._result("unreachable", None, f"{self.conn.name}: connection lost while running")
                wait = 0.1  # poll cancel/timeout at least this often
                if deadline is not None and stop_reason is None:
                    wait = min(wait, deadline - time.monotonic())
                self._wait_readable(wait)
        except BaseException:
            if self.pid is not None and stop_reason is None:
                self.conn._stop_remote(*self.pid)  # don't leave the command running behind a crashed reader
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
