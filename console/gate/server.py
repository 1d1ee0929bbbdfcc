"""How consoles reach the gate: a Unix socket (identity from SO_PEERCRED) or one SSH session.

The socket may be reachable by any local user: who connects is decided from the peer's uid, mapped to a
login name by the system and to an operator by the gate's ``[gate.operators]``, never from a request.
``opsgated session --operator NAME`` serves one console on stdin/stdout for operators who reach the gate
with ``ssh gate-host``: the admin binds each operator's key to it in the gate user's authorized_keys
(``restrict,command="opsgated session --operator alice" ssh-ed25519 AAAA...``), so the name comes from
the key sshd authenticated, not from the operator.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import struct
import sys
import threading
from pathlib import Path

from opsgate.console.errors import UsageError
from opsgate.console.gate.protocol import Channel
from opsgate.console.gate.service import GateService


def peer_login(conn: socket.socket) -> str:
    """The login name of the process at the other end of a Unix socket (SO_PEERCRED: set by the kernel)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


def listen(path: Path) -> socket.socket:
    """A listening Unix socket at ``path`` that every local user may connect to (the gate decides who is who)."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not stat.S_ISSOCK(path.lstat().st_mode)):
        raise UsageError(f"{path}: exists and is not a socket; refusing to replace it")
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o666)
    sock.listen(64)
    return sock


def serve_socket(service: GateService, sock: socket.socket, stop: threading.Event | None = None) -> None:
    """Accept consoles until ``stop`` is set; each connection is served in its own thread."""
    stop = stop or threading.Event()
    sock.settimeout(0.5)
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except socket.timeout:
            continue
        except OSError:
            if stop.is_set():
                return
            raise
        conn.settimeout(None)
        threading.Thread(target=_serve_one, args=(service, conn), daemon=True, name="gate-conn").start()


def _serve_one(service: GateService, conn: socket.socket) -> None:
    with conn:
        login = peer_login(conn)
        service.serve(Channel(conn.makefile("rb"), conn.makefile("wb")), login)


def serve_session(service: GateService, operator: str) -> None:
    """One console on stdin/stdout (under sshd's forced command)."""
    service.serve(Channel(sys.stdin.buffer, sys.stdout.buffer), f"ssh:{operator}", bound_operator=operator)
