"""Run one command on many targets at once, each target independent of the others."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from opsgate.actions.hostkeys import KnownHostsCache
from opsgate.actions.ssh import Chunk, Connection, Endpoint, JumpHosts, SSHError, TargetResult
from opsgate.actions.ssh import connect as ssh_connect

log = logging.getLogger(__name__)


class PoolClosed(RuntimeError):
    """The pool was closed; no new connections are handed out."""


class _Slot:
    """One endpoint's connection; its lock makes concurrent get() connect only once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connection: Connection | None = None


class ConnectionPool:
    """One SSH connection per target for the length of a run (several steps reuse it), one per jump
    host, shared by every target behind it (`jumps`), and the known_hosts files read once for them all."""

    def __init__(self, connect: Callable[[Endpoint], Connection] | None = None):
        self.jumps = JumpHosts()
        self.known_hosts = KnownHostsCache()
        self._connect = connect or functools.partial(ssh_connect, jumps=self.jumps, known_hosts=self.known_hosts)
        self._lock = threading.Lock()
        self._slots: dict[Endpoint, _Slot] = {}
        self._closed = False

    def get(self, endpoint: Endpoint) -> Connection:
        """The connection for `endpoint`, connecting on first use; raises SSHError subclasses."""
        with self._lock:
            if self._closed:
                raise PoolClosed("connection pool is closed")
            slot = self._slots.setdefault(endpoint, _Slot())
        # connecting happens outside the pool lock so targets connect in parallel
        with slot.lock:
            if slot.connection is None or not slot.connection.is_active():
                if slot.connection is not None:
                    slot.connection.close()
                slot.connection = self._connect(endpoint)
            if self._closed:  # closed while we were connecting
                slot.connection.close()
                raise PoolClosed("connection pool is closed")
            return slot.connection

    def release(self, endpoint: Endpoint) -> None:
        """Close `endpoint`'s connection now (its channel through a shared jump host goes with it)."""
        with self._lock:
            slot = self._slots.pop(endpoint, None)
        if slot is not None:
            with slot.lock:
                if slot.connection is not None:
                    slot.connection.close()
                    slot.connection = None

    def close(self) -> None:
        """Close every connection, then the jump hosts; later get() calls raise PoolClosed."""
        with self._lock:
            self._closed = True
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in slots:
            connection = slot.connection
            if connection is not None:
                connection.close()
        self.jumps.close()

    def __enter__(self) -> "ConnectionPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FanOut:
    """One command over many endpoints, at most `max_parallel` at once.

    sink/on_start/on_result are called from worker threads; for one target they
    are called one after another.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        command: str,
        *,
        stdin: bytes = b"",
        max_parallel: int = 16,
        timeout: float | None = None,
        sink: Callable[[Chunk], None],
        on_start: Callable[[str], None] | None = None,
        on_result: Callable[[TargetResult], None] | None = None,
        pool: ConnectionPool | None = None,
    ):
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self.endpoints = list(endpoints)
        counts = Counter(self.endpoints)
        self._once = {e: n == 1 for e, n in counts.items()}
        self.command = command
        self.stdin = stdin  # sent to each command's standard input, then closed (secret params: one line each)
        self.max_parallel = max_parallel
        self.timeout = timeout
        self.sink = sink
        self.on_start = on_start
        self.on_result = on_result
        self._pool = pool
        self._stops = {e.name: threading.Event() for e in self.endpoints}  # per target: stop() sets one, cancel() all

    def cancel(self) -> None:
        """Stop the run: running commands are stopped remotely, the rest never start."""
        for stop in self._stops.values():
            stop.set()

    def stop(self, target: str) -> None:
        """Stop one target as ``cancel`` stops them all (its outcome is "cancelled"); the others go on.
        Thread-safe; a target not yet started never starts."""
        self._stops[target].set()

    def run(self) -> list[TargetResult]:
        """Run on every endpoint; block until all are done; results in endpoint order."""
        if not self.endpoints:
            return []
        pool = self._pool or ConnectionPool()
        try:
            workers = min(self.max_parallel, len(self.endpoints))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="opsgate-fanout") as executor:
                futures = [executor.submit(self._one, pool, ep) for ep in self.endpoints]
                return [f.result() for f in futures]
        finally:
            if self._pool is None:
                pool.close()

    def _one(self, pool: ConnectionPool, endpoint: Endpoint) -> TargetResult:
        start = time.monotonic()
        try:
            result = self._attempt(pool, endpoint, start)
        except Exception as e:  # a bug (say, in a sink) must not lose the other targets' results
            log.exception("fan-out worker for %s failed", endpoint.name)
            result = TargetResult(endpoint.name, "failed", None, time.monotonic() - start, 0, 0,
                                  f"{endpoint.name}: internal error: {type(e).__name__}: {e}")
        if self._pool is None and self._once[endpoint]:  # nothing reuses it: close it, so at most
            pool.release(endpoint)  # max_parallel are open (as channels of a shared jump host) at once
        if self.on_result is not None:
            self.on_result(result)
        return result

    def _attempt(self, pool: ConnectionPool, endpoint: Endpoint, start: float) -> TargetResult:
        def failed(outcome: str, error: str) -> TargetResult:
            return TargetResult(endpoint.name, outcome, None, time.monotonic() - start, 0, 0, error)

        stop = self._stops[endpoint.name]
        if stop.is_set():
            return failed("cancelled", f"{endpoint.name}: cancelled before it started")
        try:
            connection = pool.get(endpoint)
        except SSHError as e:
            return failed(e.outcome, str(e))
        except PoolClosed:
            return failed("cancelled", f"{endpoint.name}: the run was closed before it started")
        if stop.is_set():  # connecting can take a while; don't start after a cancel
            return failed("cancelled", f"{endpoint.name}: cancelled before it started")
        if self.on_start is not None:
            self.on_start(endpoint.name)
        return connection.run(self.command, self.sink, timeout=self.timeout, cancel=stop, stdin=self.stdin)
