"""The TUI's runs in a worker process (console/runner.py), against a real sshd: what reaches the console is
bounded and accounted for, the recording has every byte, and a worker that dies, a cancel, or a console
that dies never leaves a command running unrecorded or unreported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from opsgate.actions.outcome import Chunk
from opsgate.console.audit.recording import RECORDING_FAILED
from opsgate.console.audit.trail import AuditTrail
from opsgate.console.audit.verify import verify
from opsgate.console.errors import EXIT_AUDIT, EXIT_CANCELLED
from opsgate.console.paths import AUDIT_FILE
from opsgate.console.run import RunRequest
from opsgate.console.runner import TAIL_BYTES, TAIL_LINES, IsolatedExecutor, _Tails
from opsgate.console.wiring import assemble
from tests.helpers.reliability import Recorder, config_text, load, pids_running, run_in_thread
from tests.helpers.waiting import wait_until

RUNNER = b"opsgate.console.runner"


def isolated(config, state: Path):
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    pipe = assemble(config, state, persist_grants=False, isolated=True).pipeline
    assert isinstance(pipe.executor, IsolatedExecutor)
    return pipe


def cmdline(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[:-1]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ")[1][:1] != b"Z"
    except OSError:
        return False


class Tails(Recorder):
    """Keeps every piece the console was handed, and the lines the worker said it dropped."""

    def __init__(self):
        super().__init__()
        self.pieces: list[int] = []
        self.lines: list[int] = []
        self.skipped = 0
        self.threads: set[str] = set()

    def on_output(self, chunk) -> None:
        with self.lock:
            self.pieces.append(len(chunk.data))
            self.lines.append(chunk.data.count(b"\n"))
            self.threads.add(threading.current_thread().name)
        super().on_output(chunk)

    def on_skipped(self, target, stream, lines) -> None:  # noqa: D102
        with self.lock:
            self.skipped += lines


def test_a_flood_reaches_the_console_as_bounded_tails_every_line_accounted_and_recorded(tmp_path, start_sshd):
    server = start_sshd()
    lines, width = 200_000, 99
    flood = f"head -c {lines * width} /dev/zero | tr '\\0' x | fold -w {width}; echo; echo last-line"
    pipe = isolated(load(config_text(server, [("a", "127.0.0.1", server.port)], {"flood": (flood, "120s")}),
                         tmp_path), tmp_path / "state")
    front = Tails()
    report = pipe.execute(pipe.plan(RunRequest("flood")), front)
    assert report.exit_code == 0, report.results
    got = front.text("a")
    assert got.endswith(b"last-line\n")
    assert max(front.pieces) <= TAIL_BYTES  # never more than a tail per batch, whatever the flood
    assert max(front.lines) <= TAIL_LINES
    assert len(got) < lines * (width + 1) // 10  # the console was spared nearly all of it
    assert got.count(b"\n") + front.skipped == lines + 1  # every line shown or counted as skipped
    assert front.threads == {threading.current_thread().name}  # handed over by the run's own thread
    record = next(r for r in AuditTrail(tmp_path / "state" / AUDIT_FILE).records() if r["event"] == "action.target")
    assert record["bytes_out"] == lines * (width + 1) + len("last-line\n")  # the recording has every byte
    assert verify(tmp_path / "state" / AUDIT_FILE, state_dir=tmp_path / "state").ok


def test_the_plan_and_its_secret_lines_reach_the_worker_on_a_pipe_never_its_argv(tmp_path, start_sshd):
    server = start_sshd()
    extra = textwrap.dedent("""
        [actions.secret]
        title = "secret"
        risk = "low"
        targets = ["tag:rel"]
        command = "echo got {token}; sleep 30"
        timeout = "60s"
        [actions.secret.params.token]
        type = "str"
        pattern = "[a-z0-9-]+"
        secret = true
        """)
    pipe = isolated(load(config_text(server, [("a", "127.0.0.1", server.port)], {}, extra=extra), tmp_path),
                    tmp_path / "state")
    front = Recorder()
    value = "s3cr3t-" + os.urandom(6).hex()
    thread, box = run_in_thread(lambda: pipe.execute(pipe.plan(RunRequest("secret", params={"token": value})), front))
    wait_until(lambda: f"got {value}".encode() in front.text("a") or "error" in box, 60, "the command to get its secret")
    assert "error" not in box, box
    worker = pipe.executor._child.proc.pid
    argv = cmdline(worker)
    assert argv[1:3] == [b"-m", RUNNER] and all(a.isdigit() for a in argv[3:]), argv
    assert not [pid for pid in pids_running(value)], "the secret is in some process's argv"
    with open(f"/proc/{worker}/environ", "rb") as f:
        assert value.encode() not in f.read()
    pipe.cancel()
    thread.join(60)
    assert box["result"].exit_code == EXIT_CANCELLED


def test_a_worker_killed_mid_run_ends_every_unreported_target_as_not_on_record_exit_4(tmp_path, start_sshd):
    server = start_sshd(addresses=("127.0.0.1", "127.0.0.2"))
    marker = f"sleep 3{os.getpid() % 1000:03d}7"
    command = f'echo started; case "$SSH_CONNECTION" in *" 127.0.0.2 "*) {marker};; esac'  # b runs on
    text = config_text(server, [("a", "127.0.0.1", server.port), ("b", "127.0.0.2", server.port)],
                       {"long": (command, "120s")})
    pipe = isolated(load(text, tmp_path), tmp_path / "state")
    front = Recorder()
    thread, box = run_in_thread(lambda: pipe.execute(pipe.plan(RunRequest("long")), front))
    wait_until(lambda: [r.target for r in front.done] == ["a"] and b"started" in front.text("b"), 60,
               "a to end and b to start")
    os.kill(pipe.executor._child.proc.pid, signal.SIGKILL)
    thread.join(60)
    report = box["result"]
    assert report.exit_code == EXIT_AUDIT  # what ran is not all on record
    assert [(r.target, r.outcome) for r in report.results] == [("a", "ok"), ("b", RECORDING_FAILED)]
    assert "worker process stopped" in report.results[1].error
    records = list(AuditTrail(tmp_path / "state" / AUDIT_FILE).records())
    targets = {r["target"]: r for r in records if r["event"] == "action.target"}
    assert targets["a"]["outcome"] == "ok" and targets["a"]["recording_sha256"]
    assert targets["b"]["recording_error"] and not targets["b"]["recording_sha256"]
    assert records[-1]["event"] == "action.end" and records[-1]["exit_code"] == EXIT_AUDIT
    assert records[-1]["outcomes"] == {"ok": 1, RECORDING_FAILED: 1}
    # sshd does not end a no-pty command whose client vanished (as when a console is killed with -9);
    # the exit 4 and the trail say the run is not all on record. Clean up the test's own.
    for pid in pids_running(marker):
        os.kill(pid, signal.SIGKILL)


def test_cancel_reaches_the_worker_and_stops_the_remote_commands(tmp_path, start_sshd):
    server = start_sshd()
    marker = f"sleep 3{os.getpid() % 1000:03d}8"
    pipe = isolated(load(config_text(server, [("a", "127.0.0.1", server.port)],
                                     {"long": (f"echo started; {marker}", "120s")}), tmp_path), tmp_path / "state")
    front = Recorder()
    thread, box = run_in_thread(lambda: pipe.execute(pipe.plan(RunRequest("long")), front))
    wait_until(lambda: b"started" in front.text("a"), 60, "the command to start")
    pipe.cancel()
    thread.join(60)
    assert box["result"].exit_code == EXIT_CANCELLED
    assert [r.outcome for r in box["result"].results] == ["cancelled"]
    wait_until(lambda: not pids_running(marker), 60, "the remote command to end")
    assert verify(tmp_path / "state" / AUDIT_FILE, state_dir=tmp_path / "state").ok


def test_a_console_that_dies_takes_its_worker_and_the_remote_commands_with_it(tmp_path, start_sshd):
    server = start_sshd()
    marker = f"sleep 3{os.getpid() % 1000:03d}9"
    (tmp_path / "opsgate.toml").write_text(config_text(server, [("a", "127.0.0.1", server.port)],
                                                       {"long": (f"echo started; {marker}", "120s")}))
    console = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from opsgate.console.catalog.loader import load_config
        from opsgate.console.run import RunRequest
        from opsgate.console.wiring import assemble

        state = Path({json.dumps(str(tmp_path / "state"))})
        state.mkdir(mode=0o700, exist_ok=True)
        pipe = assemble(load_config(Path({json.dumps(str(tmp_path / "opsgate.toml"))})), state,
                        persist_grants=False, isolated=True).pipeline

        class Front:
            def on_start(self, plan): pass
            def on_output(self, chunk):
                if b"started" in chunk.data:
                    print(pipe.executor._child.proc.pid, flush=True)
                    os._exit(9)  # the console dies in the middle of the run
            def on_target_done(self, result): pass

        pipe.execute(pipe.plan(RunRequest("long")), Front())
        """)
    proc = subprocess.run([sys.executable, "-c", console], capture_output=True, timeout=120)
    assert proc.returncode == 9, proc.stderr.decode()
    worker = int(proc.stdout.split()[0])
    wait_until(lambda: not alive(worker), 60, "the worker to exit")
    wait_until(lambda: not pids_running(marker), 60, "the remote command to end")


def test_a_runbooks_steps_share_one_worker_and_its_connections_and_the_next_run_reuses_the_worker(tmp_path,
                                                                                                   start_sshd):
    server = start_sshd()
    extra = textwrap.dedent("""
        [runbooks.two]
        title = "two steps"
        steps = [
          { title = "one", command = "echo conn=$PPID", targets = ["a"], risk = "low", expect_output = "conn=" },
          { title = "two", command = "echo conn=$PPID", targets = ["a"], risk = "low", expect_output = "conn=" },
        ]
        """)
    pipe = isolated(load(config_text(server, [("a", "127.0.0.1", server.port)], {"hello": ("echo hi", "30s")},
                                     extra=extra), tmp_path), tmp_path / "state")
    front = Recorder()
    seen = []
    real_run = pipe.executor.run

    def run(plan, *args, **kwargs):  # which worker ran each step
        results = real_run(plan, *args, **kwargs)
        seen.append(pipe.executor._pooled[1].proc.pid)
        return results

    pipe.executor.run = run
    report = pipe.execute(pipe.plan(RunRequest("two")), front)
    assert report.exit_code == 0, report.results
    pipe.executor.run = real_run
    assert len(seen) == 2 and seen[0] == seen[1]  # one worker for the runbook
    sshd_sessions = front.text("a").decode().split()
    assert len(sshd_sessions) == 2 and sshd_sessions[0] == sshd_sessions[1]  # the same SSH connection
    workers = []
    front.on_target_done = lambda result: workers.append(pipe.executor._child.proc.pid)
    assert pipe.execute(pipe.plan(RunRequest("hello")), front).exit_code == 0
    assert workers == [seen[0]]  # the runbook over, its worker ran the next run


def sent_pieces(sent: list) -> tuple[bytes, int]:
    pieces = [(piece, skipped) for _kind, batch in sent for (_t, _s, piece, skipped) in batch]
    return b"".join(p for p, _ in pieces), sum(n for _, n in pieces)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.integers(0, 20), max_size=200), cuts=st.lists(st.integers(0, 2000), max_size=8),
       keep=st.integers(1, 6), size=st.integers(24, 120), flush_every=st.integers(1, 40))
def test_tails_send_bounded_batches_and_count_every_line_they_drop(lines, cuts, keep, size, flush_every):
    """Lines shorter than the byte bound, fed in arbitrary pieces, flushed at arbitrary times: each batch
    holds at most ``keep`` lines and ``size`` bytes, and lines received + lines skipped = lines sent."""
    data = b"".join(b"x" * n + b"\n" for n in lines) + b"tail"
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    sent: list = []
    tails = _Tails(sent.append, keep, size)
    for i, (a, b) in enumerate(zip(points, points[1:])):
        tails.on_output(Chunk("t", "stdout", data[a:b], 0.0))
        if i % flush_every == 0:
            tails.flush()
    tails.flush()
    for _kind, batch in sent:
        for _t, _s, piece, _n in batch:
            assert piece.count(b"\n") <= keep and len(piece) <= size
    got, skipped = sent_pieces(sent)
    assert got.count(b"\n") + skipped == len(lines)
    pieces = [(piece, n) for _kind, batch in sent for (_t, _s, piece, n) in batch]
    since = max((i for i, (_p, n) in enumerate(pieces) if n), default=0)  # contiguous after the last gap
    newest = b"".join(p for p, _ in pieces[since:])
    assert data.endswith(newest) and newest.endswith(b"tail") and (skipped or newest == data)


def test_a_line_longer_than_the_bound_loses_its_start_counted_as_one_line():
    sent: list = []
    tails = _Tails(sent.append, 10, 100)
    tails.on_output(Chunk("t", "stdout", b"ok\n" + b"y" * 500, 0.0))
    tails.flush()
    got, skipped = sent_pieces(sent)
    assert got == b"y" * 100 and skipped == 2  # "ok" and the start of the long line
