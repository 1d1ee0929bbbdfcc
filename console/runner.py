"""The TUI's runs in a worker process: connections, readers and recorders outside the UI process.

A run's SSH transports decrypt every byte, its readers and recorders handle every chunk: in the console's
own process they share the interpreter lock with the UI thread, and a flood of output from ten targets
makes every key wait. ``IsolatedExecutor`` runs the same ``LocalExecutor`` (the same fan-out, the same
recordings in the state dir) in a child process of this console and gets back only:

- each target's output as a bounded tail, at most ``TAIL_INTERVAL`` apart (the recording has every byte);
- each target's result and recording, as it ends (the pipeline audits it here, as for a local run);
- the run's results.

The child is this console's own: started with ``sys.executable -m opsgate.console.runner``, it talks over
two anonymous pipes (``multiprocessing.connection`` framing), never a terminal: its standard streams are
/dev/null, it has a session of its own (the terminal's signals reach the console, which sends
``cancel``), and it stops its run and exits when the console's end of the pipe closes (the console
exited or died). Nothing reaches it through argv or the environment but the pipes' numbers: the
plan (with any secret lines the command reads) travels on the pipe. A worker serves one run at a time
and waits, loaded, for the next (``prewarm`` starts the first), so a run does not wait for the
interpreter and paramiko to load.

A runbook's steps share one worker (its ``ConnectionPool`` lives there), so a step reuses the connections
of the step before it, as in-process; when the runbook's pool goes, the worker closes them. If the child
dies in a run, every target it had not reported ends with the recording marked lost: what ran is not all on
record (exit 4), never a silent gap.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from opsgate.actions.outcome import Chunk, Endpoint, TargetResult
from opsgate.console.catalog.model import Settings, Target
from opsgate.console.run import Executed, Frontend, LocalExecutor, Plan, target_endpoint

if TYPE_CHECKING:  # subprocess and multiprocessing load with the first worker, not with the console
    from multiprocessing.connection import Connection

    from opsgate.actions.fanout import ConnectionPool

TAIL_INTERVAL = 0.1  # seconds between two batches of tails: the output pane draws at most 10 times a second
TAIL_LINES = 400  # per stream and batch, unless the front end says what it draws (``tail``: lines, bytes)
TAIL_BYTES = 1024 * 1024


class WorkerDied(RuntimeError):
    """The run's worker process ended without reporting every target."""


# -- the console's side ---------------------------------------------------------------------------------


class _Child:
    """One worker process and its two pipes; ``send`` is thread-safe, ``recv`` is the run's thread's."""

    def __init__(self) -> None:
        import subprocess
        from multiprocessing.connection import Connection

        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "opsgate.console.runner", str(down_r), str(up_w)],
                pass_fds=(down_r, up_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        finally:
            os.close(down_r)
            os.close(up_w)
        self._down = Connection(down_w, readable=False)
        self._up = Connection(up_r, writable=False)
        self._lock = threading.Lock()
        self.closed = False

    def send(self, message: tuple) -> None:
        with self._lock:
            if not self.closed:
                self._down.send(message)

    def recv(self):
        return self._up.recv()

    def close(self) -> None:
        """End the child: it stops what it runs and exits when its pipe closes."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._down.close()
        self._up.close()
        import subprocess

        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_idle_lock = threading.Lock()
_idle: list[_Child] = []  # loaded workers waiting for a run
IDLE_MAX = 2


def prewarm() -> None:
    """Have a loaded worker ready, so the next run does not wait for one (the console calls this after its
    first paint; a run gives its worker back when it ends)."""
    with _idle_lock:
        if any(child.proc.poll() is None for child in _idle):
            return
        _idle.append(_Child())


def _take_child() -> _Child:
    with _idle_lock:
        while _idle:
            child = _idle.pop()
            if child.proc.poll() is None:
                return child
            child.close()
    return _Child()


def _give_back(child: _Child) -> None:
    """A worker whose run ended cleanly waits for the next run (of any console in this process)."""
    with _idle_lock:
        if not child.closed and child.proc.poll() is None and len(_idle) < IDLE_MAX:
            _idle.append(child)
            return
    child.close()


class IsolatedExecutor:
    """``LocalExecutor`` in a worker process; same arguments, same reports (see the module docstring)."""

    def __init__(self, state_dir: Path, settings: Settings, endpoint: Callable[[Target], Endpoint] | None = None):
        self.state_dir = Path(state_dir)
        self.settings = settings
        self.endpoint = endpoint or (lambda target: target_endpoint(target, settings))
        self._child: _Child | None = None  # the worker of the run going on, for cancel()
        self._pooled: tuple[weakref.ref, _Child] | None = None  # a runbook's pool and the worker its steps share

    prewarm = staticmethod(prewarm)

    def _child_for(self, pool: "ConnectionPool | None") -> _Child:
        if pool is None:
            return _take_child()
        if self._pooled is not None and self._pooled[0]() is pool and self._pooled[1].proc.poll() is None:
            return self._pooled[1]
        child = _take_child()
        self._pooled = (weakref.ref(pool), child)
        # The runbook is over when its pool goes: the worker closes the pool's connections and is free again.
        weakref.finalize(pool, _end_pool, child, id(pool))
        return child

    def run(self, plan: Plan, frontend: Frontend, marker: str | None,
            on_result: Callable[[TargetResult, Executed], None], *, cancel: threading.Event,
            pool: "ConnectionPool | None" = None, capture: dict | None = None) -> list[TargetResult]:
        child = self._child = self._child_for(pool)
        endpoints = {t.name: self.endpoint(t) for t in plan.targets}
        tail = getattr(frontend, "tail", None) or (TAIL_LINES, TAIL_BYTES)
        skipped_to = getattr(frontend, "on_skipped", None)
        env = dict(os.environ)  # as a run from this process would see them now (HOME, SSH_AUTH_SOCK, ...)
        start = time.monotonic()
        reported: dict[str, TargetResult] = {}
        results: list[TargetResult] | None = None
        try:
            child.send(("run", plan, endpoints, marker, capture is not None, None if pool is None else id(pool),
                        str(self.state_dir), self.settings, env, os.getcwd(), tail))
            if cancel.is_set():
                child.send(("cancel",))
            while results is None:
                message = child.recv()
                kind = message[0]
                if kind == "out":
                    now = time.monotonic()
                    for target, stream, data, skipped in message[1]:
                        if skipped and skipped_to is not None:
                            skipped_to(target, stream, skipped)
                        if data:
                            frontend.on_output(Chunk(target, stream, data, now))
                elif kind == "done":
                    _kind, result, executed, captured = message
                    reported[result.target] = result
                    if capture is not None and captured:
                        capture[result.target] += captured
                    on_result(result, executed)
                elif kind == "end":
                    results = message[1]
                elif kind == "error":
                    raise WorkerDied(f"the run's worker process failed: {message[1]}")
        except (EOFError, OSError) as e:
            child.close()
            results = self._lost(plan, reported, on_result, start, f"it ended unexpectedly ({type(e).__name__})")
        finally:
            self._child = None
            if results is None:  # an error: this worker is not used again
                child.close()
            elif pool is None:
                _give_back(child)
        return results

    def _lost(self, plan: Plan, reported: dict[str, TargetResult], on_result, start: float,
              why: str) -> list[TargetResult]:
        """The child died mid-run: every target it had not reported ends with its recording lost."""
        from opsgate.console.audit.recording import recording_path

        results = []
        for target in plan.targets:
            if target.name in reported:
                results.append(reported[target.name])
                continue
            error = f"the run's worker process stopped: {why}; what the command did is not all on record"
            result = TargetResult(target.name, "failed", None, time.monotonic() - start, 0, 0, error)
            path = recording_path(self.state_dir, plan.run_id, target.name)
            relative = str(path.relative_to(self.state_dir)) if path.exists() else None
            on_result(result, Executed(relative, None, error))
            results.append(result)
        return results

    def cancel(self) -> None:
        child = self._child
        if child is not None:
            try:
                child.send(("cancel",))
            except OSError:
                pass


def _end_pool(child: _Child, key: int) -> None:
    try:
        child.send(("end_pool", key))
    except OSError:
        child.close()
        return
    _give_back(child)


# -- the worker's side -----------------------------------------------------------------------------------


class _Tails:
    """The child's stand-in for the console's front end: each stream's newest output, sent in batches.

    Each stream keeps at most what the console's pane would draw of it at its next update: its last
    ``lines`` lines, at most ``size`` bytes of them (cut when twice that is waiting, and before sending).
    The lines dropped are counted and sent with the rest, so the pane says how many it never got."""

    def __init__(self, send: Callable[[tuple], None], lines: int = TAIL_LINES, size: int = TAIL_BYTES):
        self._send = send
        self.lines = lines
        self.size = size
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], list] = {}  # (target, stream) -> [bytearray, lines in it, skipped]

    def on_output(self, chunk: Chunk) -> None:
        with self._lock:
            slot = self._pending.get((chunk.target, chunk.stream))
            if slot is None:
                slot = self._pending[(chunk.target, chunk.stream)] = [bytearray(), 0, 0]
            slot[0] += chunk.data
            slot[1] += chunk.data.count(b"\n")
            if slot[1] > 2 * self.lines or len(slot[0]) > 2 * self.size:
                self._cut(slot)

    def _cut(self, slot: list) -> None:
        """Keep the last whole lines within the bounds (and a last line without end); count the rest."""
        buf = slot[0]
        dropped = 0
        if slot[1] > self.lines:
            head = buf.rsplit(b"\n", self.lines + 1)[0]  # what comes before the last `lines` line ends
            dropped = slot[1] - self.lines
            del buf[:len(head) + 1]
        if len(buf) > self.size:
            cut = buf.find(b"\n", len(buf) - self.size) + 1
            count = 0
            if not cut:  # the last line is longer than the bound: its start goes, counted as a line skipped
                cut, count = len(buf) - self.size, 1
            count += buf.count(b"\n", 0, cut)
            dropped += count
            del buf[:cut]
        slot[1] = buf.count(b"\n") if dropped else slot[1]
        slot[2] += dropped

    def flush(self, target: str | None = None) -> None:
        """Send what is pending (``target``'s only, before its result), in one message."""
        with self._lock:  # held while sending: a target's output always arrives before its result
            batch = []
            for key, slot in list(self._pending.items()):
                if target is None or key[0] == target:
                    if slot[1] > self.lines or len(slot[0]) > self.size:
                        self._cut(slot)
                    batch.append((key[0], key[1], bytes(slot[0]), slot[2]))
                    del self._pending[key]
            if batch:
                self._send(("out", batch))


def _serve(down: Connection, up: Connection) -> None:
    from opsgate.actions.fanout import ConnectionPool

    send_lock = threading.Lock()

    def send(message: tuple) -> None:
        with send_lock:
            up.send(message)

    executor: LocalExecutor | None = None
    pools: dict[int, ConnectionPool] = {}  # a runbook's connections, by the console's key for its pool
    cancel = threading.Event()
    running: threading.Thread | None = None  # one run at a time

    def run_one(plan, endpoints, marker, capturing, pool, state_dir, settings, tail) -> None:
        nonlocal executor
        tails = _Tails(send, *tail)
        capture = defaultdict(bytearray) if capturing else None
        executor = LocalExecutor(Path(state_dir), settings, endpoint=lambda target: endpoints[target.name])

        def done(result: TargetResult, executed: Executed) -> None:
            tails.flush(result.target)
            send(("done", result, executed, bytes(capture[result.target]) if capture is not None else b""))

        stop = threading.Event()

        def flusher() -> None:
            while not stop.wait(TAIL_INTERVAL):
                tails.flush()

        thread = threading.Thread(target=flusher, name="tails", daemon=True)
        thread.start()
        try:
            results = executor.run(plan, tails, marker, done, cancel=cancel, pool=pool, capture=capture)
        except BaseException as e:  # noqa: BLE001 - reported to the console, which raises it there
            send(("error", f"{type(e).__name__}: {e}"))
            return
        finally:
            stop.set()
            thread.join()
        tails.flush()
        send(("end", results))

    while True:
        try:
            message = down.recv()
        except (EOFError, OSError):  # the console closed its end or exited: stop what runs, then leave
            break
        kind = message[0]
        if kind == "run":
            _kind, plan, endpoints, marker, capturing, pool_key, state_dir, settings, env, cwd, tail = message
            os.environ.clear()
            os.environ.update(env)
            try:
                os.chdir(cwd)
            except OSError:  # the console's directory is gone: the config's paths are absolute
                pass
            pool = None
            if pool_key is not None:  # a runbook: its steps share the connections, as in-process
                pool = pools.get(pool_key)
                if pool is None:
                    pool = pools[pool_key] = ConnectionPool()
            if running is not None:  # the run before it has sent its "end"
                running.join()
            cancel.clear()
            running = threading.Thread(target=run_one, name="run",
                                       args=(plan, endpoints, marker, capturing, pool, state_dir, settings, tail))
            running.start()
        elif kind == "cancel":
            cancel.set()
            if executor is not None:
                executor.cancel()
        elif kind == "end_pool":
            ended = pools.pop(message[1], None)
            if ended is not None:
                ended.close()
    cancel.set()
    if executor is not None:
        executor.cancel()
    if running is not None:
        running.join()
    for pool in pools.values():
        pool.close()


def main(argv: list[str]) -> int:
    import signal
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the console owns Ctrl-C; it sends "cancel"
    down = Connection(int(argv[0]), writable=False)
    up = Connection(int(argv[1]), readable=False)
    import opsgate.actions.fanout  # noqa: F401 - loaded while the worker waits for its first run

    _serve(down, up)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
