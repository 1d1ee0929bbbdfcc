"""A small SSH server on 127.0.0.1 for ``opsgate demo``: one loopback target, no sshd, no accounts.

Built on paramiko's server API. It accepts exactly one client key (public-key auth, nothing else),
runs each exec request with ``/bin/sh -c`` as the current user in a scratch directory, streams
stdout and stderr separately, sends the exit status, and kills the command's process group when
the channel closes, the client disconnects, or a ``signal`` request arrives.

The client side of the demo is the same strict code as for real hosts: the server's host key is
written to the demo's own known_hosts file and pinned there.
"""

from __future__ import annotations

import base64
import io
import os
import re
import signal
import socket
import subprocess
import threading
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from paramiko.common import MSG_CHANNEL_REQUEST

from opsgate.console.files import write_private

_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SIGNALS = {"TERM": signal.SIGTERM, "INT": signal.SIGINT, "KILL": signal.SIGKILL, "HUP": signal.SIGHUP,
            "QUIT": signal.SIGQUIT, "USR1": signal.SIGUSR1, "USR2": signal.SIGUSR2}
_KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL when a channel goes away


def generate_key() -> paramiko.Ed25519Key:
    """A fresh Ed25519 key (paramiko cannot generate Ed25519 itself)."""
    return paramiko.Ed25519Key(file_obj=io.StringIO(_openssh_private(ed25519.Ed25519PrivateKey.generate())))


def generate_key_file(path: Path) -> paramiko.Ed25519Key:
    """Generate an Ed25519 key, write it to ``path`` (0600, OpenSSH format) and return it."""
    text = _openssh_private(ed25519.Ed25519PrivateKey.generate())
    write_private(path, text.encode())
    return paramiko.Ed25519Key(file_obj=io.StringIO(text))


def _openssh_private(key: ed25519.Ed25519PrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()


def known_hosts_line(host: str, port: int, key: paramiko.PKey) -> str:
    """One OpenSSH known_hosts line pinning ``key`` for ``host:port``."""
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {key.get_name()} {key.get_base64()}\n"


class _Session(paramiko.ServerInterface):
    """Decides authentication and channel requests for one client connection."""

    def __init__(self, server: "DemoServer", client_address: str = ""):
        self.server = server
        self.username = ""
        self.client_address = client_address
        self.forced: str | None = None  # the certificate's force-command, when one authenticated
        self.pending: dict[paramiko.Channel, subprocess.Popen] = {}

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if not _USER.match(username):
            return paramiko.AUTH_FAILED
        if self.server.user_ca is not None:  # like sshd with TrustedUserCAKeys and no authorized_keys
            forced = certificate_command(key, username, self.server.user_ca, self.client_address)
            if forced is None:
                return paramiko.AUTH_FAILED
            self.username, self.forced = username, forced
            return paramiko.AUTH_SUCCESSFUL
        if self.server.client_key is not None and _same_key(key, self.server.client_key):
            self.username = username
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_pty_request(self, channel, term, width, height, pixelwidth, pixelheight, modes) -> bool:
        return True  # accepted; the command still runs on pipes, and dies with the channel as under a pty

    def check_channel_env_request(self, channel, name, value) -> bool:
        return False

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        cwd = self.server.scratch / self.username
        if not cwd.is_dir():
            cwd = self.server.scratch
        env = {**os.environ, "OPSGATE_DEMO_HOST": self.username, "PWD": str(cwd)}
        text = command.decode("utf-8", "replace")
        if self.forced is not None:  # as sshd: the certificate's command, whatever the client asked
            env["SSH_ORIGINAL_COMMAND"] = text
            text = self.forced
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", text], cwd=cwd,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, so the whole tree can be killed
                env=env,
            )
        except OSError:
            return False
        self.server._track(channel, proc)
        # Streaming starts once paramiko has replied "exec ok" (see _handle_request): a fast command
        # must not close the channel before the client has seen its request accepted.
        self.pending[channel] = proc
        return True


def _kill_group(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _pump(src, send) -> None:
    """Copy a pipe to the channel as bytes arrive (not line by line)."""
    try:
        while True:
            data = src.read1(65536)
            if not data:
                break
            send(data)
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the channel went away; the watcher kills the process group
    finally:
        src.close()


def _feed_stdin(channel: paramiko.Channel, proc: subprocess.Popen) -> None:
    try:
        while True:
            data = channel.recv(65536)
            if not data:
                break
            proc.stdin.write(data)
            proc.stdin.flush()
    except (OSError, EOFError, paramiko.SSHException, ValueError):
        pass
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass


def _run_exec(channel: paramiko.Channel, proc: subprocess.Popen) -> None:
    out = threading.Thread(target=_pump, args=(proc.stdout, channel.sendall), daemon=True)
    err = threading.Thread(target=_pump, args=(proc.stderr, channel.sendall_stderr), daemon=True)
    inp = threading.Thread(target=_feed_stdin, args=(channel, proc), daemon=True)
    for t in (out, err, inp):
        t.start()
    killed_at = None
    while True:
        try:
            proc.wait(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            pass
        gone = channel.closed or not channel.get_transport().is_active()
        if gone and killed_at is None:
            _kill_group(proc, signal.SIGTERM)
            killed_at = _now()
        elif killed_at is not None and _now() - killed_at > _KILL_GRACE:
            _kill_group(proc, signal.SIGKILL)
    _kill_group(proc, signal.SIGKILL)  # leftovers of the group (background children) go with it
    out.join(5)
    err.join(5)
    status = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
    try:
        if not channel.closed:
            channel.send_exit_status(status)
            channel.shutdown_write()
            channel.close()
    except (OSError, EOFError, paramiko.SSHException):
        pass


def _now() -> float:
    import time

    return time.monotonic()


def _handle_request(chan: paramiko.Channel, m: paramiko.Message) -> None:
    """paramiko ignores the "signal" channel request (RFC 4254 6.9); deliver it to the process group."""
    start = m.packet.tell()
    key = m.get_text()
    session = chan.transport.server_object
    if key != "signal":
        m.packet.seek(start)
        paramiko.Channel._handle_request(chan, m)  # replies to the client
        proc = session.pending.pop(chan, None) if session is not None else None
        if proc is not None:
            threading.Thread(target=_run_exec, args=(chan, proc), name="demo-exec", daemon=True).start()
        return
    m.get_boolean()  # want_reply: signal requests take no reply
    name = m.get_text()
    proc = session.server._procs.get(chan) if session is not None else None
    if proc is not None and name in _SIGNALS:
        _kill_group(proc, _SIGNALS[name])


class _Transport(paramiko.Transport):
    _channel_handler_table = {**paramiko.Transport._channel_handler_table, MSG_CHANNEL_REQUEST: _handle_request}


class DemoServer:
    """An SSH server on ``host`` (default 127.0.0.1) and a random free port, for the demo and tests.

    ``client_key`` is the only key accepted; with ``user_ca``, only that CA's user certificates (as a
    target in gate mode: ``TrustedUserCAKeys``), each running only its ``force-command``. ``scratch`` is where commands run; a subdirectory named
    like the SSH user, when it exists, is used instead (so each demo target has its own files).
    """

    def __init__(self, scratch: Path, client_key: paramiko.PKey | None, *, host_key: paramiko.PKey | None = None,
                 host: str = "127.0.0.1", port: int = 0, user_ca: str | None = None):
        self.scratch = Path(scratch)
        self.client_key = client_key
        self.user_ca = user_ca  # set: only certificates of this CA, and only their force-command
        self.host_key = host_key or generate_key()
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port = self._sock.getsockname()[1]
        self._transports: list[paramiko.Transport] = []
        self._procs: dict[paramiko.Channel, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def known_hosts_line(self) -> str:
        return known_hosts_line(self.host, self.port, self.host_key)

    def start(self) -> "DemoServer":
        self._sock.listen(16)
        self._thread = threading.Thread(target=self._accept_loop, name="demo-sshd", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> "DemoServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="demo-ssh-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        transport = _Transport(conn)
        transport.add_server_key(self.host_key)
        with self._lock:
            self._transports.append(transport)
        try:
            transport.start_server(server=_Session(self, conn.getpeername()[0]))
        except (paramiko.SSHException, EOFError, OSError):
            transport.close()
            return
        # Requests on the channels are handled by _Session; holding the channels here keeps them alive
        # (paramiko closes a channel nobody references) until the client leaves.
        channels: list[paramiko.Channel] = []
        while transport.is_active() and not self._closed.is_set():
            channel = transport.accept(timeout=0.5)
            channels = [c for c in channels if not c.closed]
            if channel is not None:
                channels.append(channel)
        transport.close()

    def _track(self, channel: paramiko.Channel, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs = {c: p for c, p in self._procs.items() if p.poll() is None}
            self._procs[channel] = proc

    def stop(self) -> None:
        """Stop accepting, drop every connection, and kill every command still running."""
        self._closed.set()
        try:
            self._sock.close()
        except OSError:
            pass
        with self._lock:
            procs = list(self._procs.values())
            transports = list(self._transports)
        for proc in procs:
            if proc.poll() is None:
                _kill_group(proc, signal.SIGKILL)
        for transport in transports:
            transport.close()


def certificate_command(key: paramiko.PKey, username: str, ca_public: str, client_address: str) -> str | None:
    """The force-command of a valid user certificate for ``username`` signed by ``ca_public``, else None.

    The checks sshd makes: signed by the trusted CA, a user certificate, valid now, the user among its
    principals, only critical options we enforce (force-command; source-address matches the client).
    paramiko has already checked that the client holds the certified key.
    """
    import ipaddress
    import time

    from cryptography.hazmat.primitives.serialization import ssh

    blob = key.public_blob
    if blob is None or not blob.key_type.endswith("-cert-v01@openssh.com"):
        return None
    try:
        cert = ssh.load_ssh_public_identity(f"{blob.key_type} {base64.b64encode(blob.key_blob).decode()}".encode())
        cert.verify_cert_signature()
    except Exception:
        return None
    ca = serialization.load_ssh_public_key(" ".join(ca_public.split()[:2]).encode())
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    if cert.signature_key().public_bytes(*raw) != ca.public_bytes(*raw):
        return None
    now = time.time()
    if cert.type != ssh.SSHCertificateType.USER or not cert.valid_after <= now < cert.valid_before:
        return None
    if username.encode() not in cert.valid_principals:
        return None
    options = dict(cert.critical_options)
    if set(options) - {b"force-command", b"source-address"} or b"force-command" not in options:
        return None
    if b"source-address" in options:
        try:
            allowed = [ipaddress.ip_network(a.strip()) for a in options[b"source-address"].decode().split(",")]
            if not any(ipaddress.ip_address(client_address) in net for net in allowed):
                return None
        except ValueError:
            return None
    return options[b"force-command"].decode("utf-8", "replace")


def _same_key(a: paramiko.PKey, b: paramiko.PKey) -> bool:
    return a.get_name() == b.get_name() and a.asbytes() == b.asbytes()
