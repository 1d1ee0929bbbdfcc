"""`opsgate audit ...` and `opsgate replay` through the installed console script, with only --state-dir."""

from __future__ import annotations

import select
import subprocess
import time
from pathlib import Path

import pytest

from opsgate.console.audit.trail import AuditTrail

from opsgate.console.paths import AUDIT_FILE
from opsgate.console.audit.recording import Recording, recording_path
from tests.helpers.cli import clean_env, popen_opsgate, run_opsgate

RUN = "20261128-145001-a1b2c3"
OUTPUT = {"web1": "restarting nginx on web1 ✓\n", "web2": "restarting nginx on web2 ✓\n"}


@pytest.fixture
def state(tmp_path) -> Path:
    """A state dir holding one finished run on two targets, as the pipeline leaves it."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    trail = AuditTrail(state / AUDIT_FILE)
    trail.append("action.start", operator="alice", run=RUN, action="restart-nginx", targets=["web1", "web2"],
                 command="systemctl restart nginx")
    for target, text in OUTPUT.items():
        rec = Recording(recording_path(state, RUN, target), run=RUN, action="restart-nginx", target=target,
                        command="systemctl restart nginx")
        t0 = time.monotonic()
        rec.marker("start", t0)
        rec.output("stdout", text.encode(), t0 + 0.2)
        rec.output("stderr", b"warning: reload took 3s\n", t0 + 30)  # an idle gap replay caps
        rec.marker("end ok exit 0", t0 + 30)
        digest = rec.close()
        trail.append("action.target", operator="alice", run=RUN, action="restart-nginx", target=target,
                     outcome="ok", exit_code=0, recording=str(rec.path.relative_to(state)), recording_sha256=digest)
    trail.append("action.end", operator="alice", run=RUN, action="restart-nginx", exit_code=0)
    trail.append("stepup.success", operator="bob", run="20261128-150000-ffffff", factor="otp")
    return state


def opsgate(state: Path, *args: str) -> subprocess.CompletedProcess:
    result = run_opsgate(*args, "--state-dir", state, script=True, text=False, env=no_config_env(state),
                         cwd=state.parent)
    # Decoded by hand: text=True would turn the recordings' \r\n into \n.
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


def no_config_env(state: Path) -> dict:
    # No config anywhere: --state-dir alone must be enough.
    return clean_env(HOME=str(state.parent), XDG_CONFIG_HOME=str(state.parent / "nocfg"), LANG="C.UTF-8")


def tamper(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))


def test_verify_ok_without_a_config(state):
    result = opsgate(state, "audit", "verify")
    assert result.returncode == 0, result.stderr
    head = AuditTrail(state / AUDIT_FILE).head()
    assert result.stdout.strip() == f"OK: 5 records, head {head}"


def test_verify_names_the_tampered_record(state):
    tamper(state / AUDIT_FILE, b'"exit_code":0,"operator":"alice","outcome":"ok"',
           b'"exit_code":1,"operator":"alice","outcome":"ok"')
    result = opsgate(state, "audit", "verify")
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL: line 2 (seq 2") and "hash mismatch" in result.stdout
    assert "chain BROKEN at record 2: 1 records verified before it" in result.stdout


def test_verify_reports_an_edited_recording(state):
    tamper(recording_path(state, RUN, "web2"), b"web2", b"webX")
    result = opsgate(state, "audit", "verify")
    assert result.returncode == 1 and "web2.cast" in result.stdout and "changed" in result.stdout
    # The chain is whole: the summary says so, not "N records verified before the first problem".
    last = result.stdout.splitlines()[-1]
    assert last.startswith("chain OK: 5 records, head ") and last.endswith("1 recording does not verify (above)")
    assert "before" not in result.stdout


def test_verify_reports_a_deleted_recording(state):
    recording_path(state, RUN, "web1").unlink()
    result = opsgate(state, "audit", "verify")
    assert result.returncode == 1 and "web1.cast: missing" in result.stdout


def test_a_forged_record_naming_a_path_with_a_nul_byte_is_reported_not_a_crash(state):
    """The chain is not a MAC: whoever can write the trail can add a well-chained record naming any path."""
    AuditTrail(state / AUDIT_FILE).append("action.target", operator="mallory", run=RUN, action="restart-nginx",
                                          target="web3", outcome="ok", exit_code=0,
                                          recording="recordings/x\x00/../../etc/passwd", recording_sha256="0" * 64)
    for args in (("audit", "verify"), ("audit", "export", RUN), ("audit", "show", RUN), ("replay", RUN, "--target", "web3")):
        result = opsgate(state, *args)
        assert "Traceback" not in result.stderr and "ValueError" not in result.stderr, result.stderr
    result = opsgate(state, "audit", "verify")
    assert result.returncode == 1 and "recording path holds a NUL byte" in result.stdout, result.stdout


def test_verify_with_no_trail_fails(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    result = opsgate(empty, "audit", "verify")
    assert result.returncode == 1 and "no audit trail" in result.stdout


def test_head(state, tmp_path):
    result = opsgate(state, "audit", "head")
    assert result.returncode == 0 and result.stdout.strip() == AuditTrail(state / AUDIT_FILE).head()
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    assert opsgate(empty, "audit", "head").returncode == 1


def test_tail_prints_readable_lines(state):
    result = opsgate(state, "audit", "tail", "-n", "2")
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and len(lines) == 2
    assert lines[0].startswith("#4 ") and " alice action.end run=" + RUN in lines[0]
    assert "bob stepup.success" in lines[1] and "factor=otp" in lines[1]


def test_tail_follow_picks_up_records_from_another_process(state):
    proc = popen_opsgate("audit", "tail", "-f", "-n", "1", "--state-dir", state, script=True, stdout=subprocess.PIPE,
                         text=True, env=no_config_env(state), cwd=state.parent)
    try:
        first = read_line(proc)
        assert "stepup.success" in first
        AuditTrail(state / AUDIT_FILE).append("approval.granted", operator="carol", run=RUN, approver="carol")
        assert "carol approval.granted" in read_line(proc)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def read_line(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "tail -f printed nothing"
    return proc.stdout.readline()


def test_show_a_run_by_prefix(state):
    result = opsgate(state, "audit", "show", RUN[:12])
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert [line.split()[3] for line in lines] == ["action.start", "action.target", "action.target", "action.end"]
    assert "target=web1" in lines[1] and "exit_code=0" in lines[1]
    missing = opsgate(state, "audit", "show", "nosuchrun")
    assert missing.returncode == 2 and "no run" in missing.stderr


def test_replay_plays_every_target_with_a_header(state):
    started = time.monotonic()
    result = opsgate(state, "replay", RUN, "--speed", "1000")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10
    out = result.stdout
    assert f"=== {RUN} restart-nginx@web1 (exit 0) ===" in out and f"=== {RUN} restart-nginx@web2 (exit 0) ===" in out
    assert "restarting nginx on web1 ✓\r\n" in out and "restarting nginx on web2 ✓\r\n" in out
    assert "\x1b[31mwarning: reload took 3s" in out
    assert out.index("web1 ✓") < out.index("web2 ✓")


def test_replay_header_of_a_target_without_an_exit_code_says_how_it_ended(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    trail = AuditTrail(state / AUDIT_FILE)
    for target, outcome, code in (("web1", "ok", 0), ("web2", "timeout", None)):
        rec = Recording(recording_path(state, RUN, target), run=RUN, action="restart-nginx", target=target,
                        command="systemctl restart nginx")
        rec.output("stdout", f"on {target}\n".encode(), time.monotonic())
        digest = rec.close()
        trail.append("action.target", operator="alice", run=RUN, action="restart-nginx", target=target,
                     outcome=outcome, exit_code=code, recording=str(rec.path.relative_to(state)),
                     recording_sha256=digest)
    result = opsgate(state, "replay", RUN, "--speed", "1000")
    assert result.returncode == 0, result.stderr
    assert f"=== {RUN} restart-nginx@web2 (timeout) ===" in result.stdout
    assert "exit None" not in result.stdout and "timeout, timeout" not in result.stdout
    assert "the audit trail records timeout (seq 2)" in result.stdout


def test_replay_one_target_caps_the_idle_gap(state):
    started = time.monotonic()
    result = opsgate(state, "replay", RUN[:17], "--target", "web2", "--speed", "4")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "web2 ✓" in result.stdout and "web1" not in result.stdout and "===" not in result.stdout
    assert 0.5 <= elapsed < 6  # the 30 s gap plays as 2 s / 4


def test_replay_refuses_a_tampered_recording_unless_forced(state):
    tamper(recording_path(state, RUN, "web1"), b"restarting", b"restarted!")
    refused = opsgate(state, "replay", RUN, "--target", "web1", "--speed", "1000")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "does not verify" in refused.stderr and "--force" in refused.stderr
    forced = opsgate(state, "replay", RUN, "--target", "web1", "--speed", "1000", "--force")
    assert forced.returncode == 0 and "restarted! nginx on web1" in forced.stdout
    assert "WARNING" in forced.stderr


def test_replay_unknown_target_fails(state):
    result = opsgate(state, "replay", RUN, "--target", "db9")
    assert result.returncode == 1 and "no recording" in result.stderr


def test_replay_force_cannot_play_a_deleted_recording(state):
    recording_path(state, RUN, "web1").unlink()
    result = opsgate(state, "replay", RUN, "--target", "web1", "--force")
    assert result.returncode == 1 and "missing" in result.stderr and "nothing to play" in result.stderr
    both = opsgate(state, "replay", RUN, "--force", "--speed", "1000")  # the other target still plays
    assert both.returncode == 0 and "web2 ✓" in both.stdout and "web1 ✓" not in both.stdout
