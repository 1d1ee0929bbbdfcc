"""Shared parts of the reliability suite: a Pipeline on real sshd targets, a recording front end,
process and descriptor counts, a tiny TCP proxy that can stop forwarding, and polling with deadlines."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from opsgate.console.audit.trail import AuditTrail

from opsgate.console.paths import AUDIT_FILE
from opsgate.console.catalog.model import Config
from opsgate.console.catalog.loader import parse_config
from opsgate.console.run import Pipeline
from opsgate.console.stepup.verifier import StepUp


def config_text(server, targets: list[tuple[str, str, int]], actions: dict[str, tuple[str, str]], *,
                connect_timeout: str = "5s", max_parallel: int = 8, extra: str = "",
                known_hosts: str | None = None) -> str:
    """TOML for ``targets`` [(name, host, port)] reached with ``server``'s key and known_hosts, and
    low-risk ``actions`` {name: (command, timeout)} on every target (tag rel)."""
    text = f"""
[console]
operator = "rel"
known_hosts = [{json.dumps(known_hosts or server.known_hosts)}]
max_parallel = {max_parallel}
connect_timeout = "{connect_timeout}"
[policy.low]
factor = "none"
"""
    for name, host, port in targets:
        text += f"""
[targets.{name}]
host = "{host}"
port = {port}
user = "{server.user}"
identity_file = {json.dumps(server.identity_file)}
tags = ["rel"]
"""
    for name, (command, timeout) in actions.items():
        text += f"""
[actions.{name}]
title = "{name}"
risk = "low"
targets = ["tag:rel"]
command = {json.dumps(command)}
timeout = "{timeout}"
"""
    return text + extra


def load(text: str, directory: Path) -> Config:
    path = directory / "opsgate.toml"
    path.write_text(text)
    return parse_config(text.encode(), str(path), path=path)


def pipeline(config: Config, state: Path) -> Pipeline:
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Pipeline(config, state, stepup=StepUp(state, config.settings), audit=AuditTrail(state / AUDIT_FILE))


class Recorder:
    """A front end that keeps what it was shown (thread-safe) and is never asked anything."""

    def __init__(self):
        self.lock = threading.Lock()
        self.output: dict[str, bytearray] = {}  # stdout only: a login shell's rc files may write to stderr
        self.errors: dict[str, bytearray] = {}
        self.done: list = []

    def on_start(self, plan) -> None:
        pass

    def on_output(self, chunk) -> None:
        with self.lock:
            into = self.output if chunk.stream == "stdout" else self.errors
            into.setdefault(chunk.target, bytearray()).extend(chunk.data)

    tail = None  # a worker process (console/runner.py) sends its default tails

    def on_skipped(self, target, stream, lines) -> None:  # lines the worker dropped to keep its tails bounded
        pass

    def on_target_done(self, result) -> None:
        with self.lock:
            self.done.append(result)

    def on_step(self, step, status, detail="") -> None:
        pass

    def ask_pause(self, step) -> bool:
        return True

    def text(self, target: str) -> bytes:
        with self.lock:
            return bytes(self.output.get(target, b""))

    def __getattr__(self, name):
        raise AssertionError(f"the reliability front end was asked {name!r}: use low-risk actions")


def run_in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, dict]:
    """Start ``fn`` in a daemon thread; the dict gets "result" or "error" when it ends."""
    box: dict = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - reported to the test
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True, name="reliability-run")
    thread.start()
    return thread, box


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def pids_running(marker: str) -> list[int]:
    """Processes whose command line contains ``marker`` (a unique string of this test)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry))
    return found


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Proxy:
    """A TCP forwarder on 127.0.0.1 to ``(host, port)``; ``cut()`` stops forwarding (both ways) but keeps
    the sockets open, like a network that silently drops everything; ``close()`` ends it all."""

    def __init__(self, host: str, port: int):
        self.upstream = (host, port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.forwarding = threading.Event()
        self.forwarding.set()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True, name="proxy-accept")]
        self.threads[0].start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            server = socket.create_connection(self.upstream, timeout=5)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                t = threading.Thread(target=self._pump, args=(a, b), daemon=True, name="proxy-pump")
                self.threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.2)
        while not self.closed.is_set():
            if not self.forwarding.is_set():
                time.sleep(0.05)  # the cable is cut: what was sent is lost, nothing is read
                continue
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            if not self.forwarding.is_set():
                continue  # dropped on the floor
            try:
                dst.sendall(data)
            except OSError:
                return

    def cut(self) -> None:
        self.forwarding.clear()

    def close(self) -> None:
        self.closed.set()
        for s in [self.listener, *self.sockets]:
            try:
                s.close()
            except OSError:
                pass
        for t in self.threads:
            t.join(timeout=2)
