"""Faults during a run, against a real sshd: every run ends with an outcome, the trail stays whole and valid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from opsgate.console.audit.trail import AuditTrail
from opsgate.console.audit.verify import verify

from opsgate.console.paths import AUDIT_FILE
from opsgate.console.errors import AuditWriteError
from opsgate.console.run import RunRequest
from tests.helpers.reliability import (Proxy, Recorder, config_text, descendants, load, pids_running, pipeline,
                                       run_in_thread)
from tests.helpers.waiting import wait_until


def events(state: Path) -> list[dict]:
    return list(AuditTrail(state / AUDIT_FILE).records())


def assert_trail_complete(state: Path, targets: list[str]) -> dict[str, dict]:
    """One action.start, one action.target per target, one action.end, and the chain and recordings verify."""
    records = events(state)
    names = [r["event"] for r in records]
    assert names.count("action.start") == 1 and names.count("action.end") == 1, names
    per_target = {r["target"]: r for r in records if r["event"] == "action.target"}
    assert sorted(per_target) == sorted(targets), names
    report = verify(state / AUDIT_FILE, state_dir=state)
    assert report.ok, report.problems
    return per_target


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_sshd_killed_in_the_middle_of_a_run(tmp_path, start_sshd):
    server = start_sshd(addresses=("127.0.0.1", "127.0.0.2"))
    marker = f"sleep 3{os.getpid() % 1000:03d}1"
    text = config_text(server, [("a", "127.0.0.1", server.port), ("b", "127.0.0.2", server.port)],
                       {"long": (f"echo started; {marker}", "60s")})
    pipe = pipeline(load(text, tmp_path), tmp_path / "state")
    front = Recorder()
    started = time.monotonic()
    thread, box = run_in_thread(lambda: pipe.execute(pipe.plan(RunRequest("long")), front))
    wait_until(lambda: b"started" in front.text("a") and b"started" in front.text("b"), 30, "both targets to start")
    # sshd, its per-connection children and the remote commands: all gone at once, as in a host crash
    kill_pids(descendants(server.process.pid) + [server.process.pid])
    thread.join(30)
    assert not thread.is_alive(), "the run hung after sshd died"
    assert time.monotonic() - started < 40
    report = box["result"]
    assert report.exit_code == 1
    assert {r.outcome for r in report.results} <= {"unreachable", "failed"}, report.results
    per_target = assert_trail_complete(tmp_path / "state", ["a", "b"])
    assert all(r["outcome"] in ("unreachable", "failed") for r in per_target.values())
    assert not pids_running(marker)


@pytest.fixture
def silent_listener():
    """A TCP port that accepts connections and never says a word (not an SSH server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                accepted.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        stop.set()
        t.join(2)
        for s in [listener, *accepted]:
            s.close()


def test_target_that_accepts_tcp_but_never_speaks_ssh_is_unreachable(tmp_path, sshd, silent_listener):
    port, accepted = silent_listener
    text = config_text(sshd, [("mute", "127.0.0.1", port), ("good", sshd.addresses[0], sshd.port)],
                       {"hi": ("echo hi", "30s")}, connect_timeout="1s")
    pipe = pipeline(load(text, tmp_path), tmp_path / "state")
    started = time.monotonic()
    report = pipe.execute(pipe.plan(RunRequest("hi")), Recorder())
    elapsed = time.monotonic() - started
    outcomes = {r.target: r for r in report.results}
    assert outcomes["mute"].outcome == "unreachable" and "no SSH banner" in outcomes["mute"].error
    assert outcomes["good"].outcome == "ok"  # the mute target does not stop the others
    assert accepted, "the client never connected to the mute port"
    assert elapsed < 10, f"connect_timeout 1s, but the run took {elapsed:.1f}s"
    assert report.exit_code == 1
    per_target = assert_trail_complete(tmp_path / "state", ["mute", "good"])
    assert per_target["mute"]["outcome"] == "unreachable"


def test_hanging_command_is_stopped_by_the_action_timeout(tmp_path, sshd):
    marker = f"sleep 4{os.getpid() % 1000:03d}2"
    text = config_text(sshd, [("a", sshd.addresses[0], sshd.port)], {"hang": (f"echo started; {marker}", "2s")})
    pipe = pipeline(load(text, tmp_path), tmp_path / "state")
    started = time.monotonic()
    report = pipe.execute(pipe.plan(RunRequest("hang")), Recorder())
    elapsed = time.monotonic() - started
    assert report.results[0].outcome == "timeout", report.results
    assert 2 <= elapsed < 15
    per_target = assert_trail_complete(tmp_path / "state", ["a"])
    assert per_target["a"]["outcome"] == "timeout"
    wait_until(lambda: not pids_running(marker), 10, "the remote command to be killed")


def test_network_cut_mid_run_ends_with_an_outcome(tmp_path, sshd):
    proxy = Proxy(sshd.addresses[0], sshd.port)
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{proxy.port} {sshd.host_key_pub}\n")
    marker = f"sleep 5{os.getpid() % 1000:03d}3"
    # prints a line every 0.1 s, so the cut lands in the middle of a stream
    command = f"echo started; for i in $(seq 1 600); do echo tick $i; sleep 0.1; done; {marker}"
    text = config_text(sshd, [("far", "127.0.0.1", proxy.port)], {"stream": (command, "4s")},
                       known_hosts=str(known), connect_timeout="2s")
    pipe = pipeline(load(text, tmp_path), tmp_path / "state")
    front = Recorder()
    try:
        started = time.monotonic()
        thread, box = run_in_thread(lambda: pipe.execute(pipe.plan(RunRequest("stream")), front))
        wait_until(lambda: b"tick 3" in front.text("far"), 30, "output through the proxy")
        proxy.cut()
        thread.join(60)
        assert not thread.is_alive(), "the run hung after the network was cut"
        elapsed = time.monotonic() - started
        report = box["result"]
        result = report.results[0]
        assert result.outcome in ("timeout", "unreachable"), result
        assert result.error, result
        assert report.exit_code == 1
        assert elapsed < 45
        per_target = assert_trail_complete(tmp_path / "state", ["far"])
        assert per_target["far"]["outcome"] == result.outcome
    finally:
        proxy.close()
        # the kill could not reach the host through the cut: clean up the loop we started (found by its marker)
        kill_pids(pids_running(marker))


def test_disk_full_under_the_trail_runs_nothing(tmp_path, sshd):
    """Pipeline level (the CLI's exit 4 is tests/test_cli_run.py): AuditWriteError before anything runs on
    the target: the command would create a file on this very host, and it does not exist afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    state = tmp_path / "tiny"
    state.mkdir(mode=0o700)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(state)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    witness = tmp_path / "ran"
    try:
        text = config_text(sshd, [("a", sshd.addresses[0], sshd.port)], {"touch": (f"touch {witness}", "30s")})
        pipe = pipeline(load(text, tmp_path), state)
        with open(state / "filler", "wb") as f:
            try:
                f.write(b"x" * (1 << 20))
            except OSError:
                pass
        front = Recorder()
        with pytest.raises(AuditWriteError):
            pipe.execute(pipe.plan(RunRequest("touch")), front)
        assert not witness.exists(), "the command ran although the trail could not be written"
        assert front.done == [] and not (state / "recordings").exists()
        (state / "filler").unlink()
        report = verify(state / AUDIT_FILE, state_dir=state)
        assert report.ok or report.problems == [f"no audit trail at {state / AUDIT_FILE}"], report.problems
    finally:
        subprocess.run(["umount", str(state)], check=False)


APPENDER = r"""
import sys
from pathlib import Path
from opsgate.console.audit.trail import AuditTrail
trail = AuditTrail(Path(sys.argv[1]))
for i in range(100000):
    record = trail.append("action.target", operator="child", run="run-kill", i=i, pad="x" * (i % 3000))
    sys.stdout.write(f"{record['seq']}\n")
    sys.stdout.flush()
"""


def test_sigkill_while_appending_loses_no_returned_record(tmp_path):
    path = tmp_path / AUDIT_FILE
    proc = subprocess.Popen([sys.executable, "-c", APPENDER, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)
    seen: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while len(seen) < 300 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(int(line))
        assert len(seen) >= 300, proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        seen += [int(x) for x in proc.stdout.read().split()]  # printed before the kill, still in the pipe
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    before = verify(path)  # the kill may have left a truncated last line: reported, not a crash
    assert before.ok or "truncated last line" in before.problems[0], before.problems
    trail = AuditTrail(path)
    trail.append("config.loaded", operator="after", run=None)
    report = verify(path)
    assert report.ok, report.problems
    records = list(trail.records())
    by_seq = {r["seq"]: r for r in records}
    for seq in seen:
        assert by_seq[seq]["operator"] == "child" and by_seq[seq]["i"] == seq - 1
    assert records[-1]["operator"] == "after"
    if not before.ok:
        assert records[-2]["event"] == "audit.recovered"


def mount_tiny_recordings(state: Path, size: str) -> None:
    """STATE/recordings on a tmpfs of ``size`` (the trail stays on the normal disk): skipped, saying why,
    when not root or when mount fails."""
    if os.geteuid() != 0:
        reason = "needs root to mount a tmpfs under the recordings"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    (state / "recordings").mkdir(parents=True, mode=0o700)
    os.chmod(state, 0o700)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                              str(state / "recordings")], capture_output=True, text=True)
    if mounted.returncode:
        reason = f"cannot mount a tmpfs: {mounted.stderr.strip()}"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)


def test_a_recording_that_fills_the_disk_stops_the_command_and_the_run_exits_4(tmp_path, sshd):
    """Disk full mid-run under the recordings: the target's command is stopped on the target (not left to
    run unrecorded until its timeout), its outcome is recording-failed, the run exits 4, and `opsgate audit
    verify`, the history and the export all flag the incomplete recording."""
    from opsgate.console.audit.history import build_history, check_recordings, export_run
    from tests.helpers.cli import run_opsgate

    state = tmp_path / "state"
    mount_tiny_recordings(state, "256k")
    marker = f"opsgate-flood-{os.getpid()}"
    config = tmp_path / "opsgate.toml"
    config.write_text(config_text(sshd, [("a", sshd.addresses[0], sshd.port), ("b", sshd.addresses[1], sshd.port)],
                                  {"flood": (f"echo started; yes {marker}", "30s")}))
    try:
        r = run_opsgate("run", "flood", config=config, state=state, timeout=60)
        assert r.returncode == 4, r.stderr[-2000:]
        wait_until(lambda: not pids_running(marker), 10, "the remote flood to be stopped")
        records = events(state)
        per_target = {x["target"]: x for x in records if x["event"] == "action.target"}
        assert {x["outcome"] for x in per_target.values()} == {"recording-failed"}, per_target
        assert all("No space left on device" in x["recording_error"] for x in per_target.values())
        # stopped, not run on unrecorded to the action's timeout ("the command had ended (timeout)")
        assert all("the command was stopped" in x["error"] for x in per_target.values()), per_target
        assert [x["exit_code"] for x in records if x["event"] == "action.end"] == [4]
        assert "recording-failed" in r.stdout + r.stderr

        check = run_opsgate("audit", "verify", state=state)
        assert check.returncode == 1, check.stdout + check.stderr
        fails = [line for line in check.stdout.splitlines() if line.startswith("FAIL: ")]
        assert len(fails) == 2 and all("incomplete: it could not be written during the run" in f for f in fails)
        assert verify(state / AUDIT_FILE, state_dir=state).first_bad_seq is None  # the chain itself holds

        summary, = build_history(AuditTrail(state / AUDIT_FILE).records())
        assert summary.outcome == "recording-failed" and summary.exit_code == 4
        assert all(problem and problem.startswith("incomplete") for _, problem in check_recordings(summary, state))
        doc, ok = export_run(state / AUDIT_FILE, state, summary.run)
        assert not ok and doc["outcome"] == "recording-failed"
        assert not any(r["verified"] for r in doc["recordings"])
    finally:
        kill_pids(pids_running(marker))
        subprocess.run(["umount", str(state / "recordings")], check=False)


def test_a_target_whose_recording_cannot_be_written_at_all_never_starts(tmp_path, sshd):
    """The disk under the recordings is already full: the header cannot be written, so the command never
    starts on that target (it would create a file on this very host), and the run says why, exit 4."""
    state = tmp_path / "state"
    mount_tiny_recordings(state, "64k")
    witness = tmp_path / "ran"
    try:
        with open(state / "recordings" / "filler", "wb") as f:
            try:
                f.write(b"x" * (1 << 20))
            except OSError:
                pass
        text = config_text(sshd, [("a", sshd.addresses[0], sshd.port)], {"touch": (f"touch {witness}", "30s")})
        pipe = pipeline(load(text, tmp_path), state)
        front = Recorder()
        report = pipe.execute(pipe.plan(RunRequest("touch")), front)
        assert report.exit_code == 4
        assert not witness.exists(), "the command ran although its recording could not be written"
        result, = report.results
        assert result.outcome == "recording-failed" and "the command was stopped" in result.error
        assert [r.outcome for r in front.done] == ["recording-failed"]
        target, = [x for x in events(state) if x["event"] == "action.target"]
        assert target["outcome"] == "recording-failed" and target["recording_error"]
    finally:
        subprocess.run(["umount", str(state / "recordings")], check=False)
