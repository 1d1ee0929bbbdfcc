"""`opsgate run` end to end: real sshd, real audit trail, real recordings, real TOTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from opsgate.console.paths import AUDIT_FILE
from tests.helpers.cli import clean_env, opsgate_on_pty, popen_opsgate, read_until, run_opsgate
from tests.helpers.run_fixtures import enroll_otp, events, next_code, records, write_config
from tests.helpers.ssh import remote_processes, wait_gone
from tests.helpers.waiting import wait_until


def opsgate(config: Path, state: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return run_opsgate(*args, config=config, state=state, stdin=stdin)


@pytest.fixture
def lab(tmp_path, sshd):
    config = write_config(tmp_path, sshd, unreachable=False)
    state = tmp_path / "state"
    return config, state


def test_low_action_runs_on_all_targets_with_live_prefixed_output(lab):
    config, state = lab
    r = opsgate(config, state, "run", "hello", "--param", "name=Ada Lovelace")
    assert r.returncode == 0, r.stderr
    assert "t1 | hello from" in r.stdout and "Ada Lovelace" in r.stdout
    assert "t2 ! warn" in r.stdout
    assert "t1  ok" in r.stdout and "t2  ok" in r.stdout
    assert events(state) == ["config.loaded", "action.start", "action.target", "action.target", "action.end"]
    start = records(state)[1]
    assert start["command"].endswith("'Ada Lovelace'; echo warn >&2")
    assert opsgate(config, state, "audit", "verify").returncode == 0


def test_some_target_failing_is_exit_1(lab):
    config, state = lab
    r = opsgate(config, state, "run", "fail-on-two", "--target", "t2", "--target", "t1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "t2  exit 3" in r.stdout
    ends = [x for x in records(state) if x["event"] == "action.end"]
    assert ends[-1]["outcomes"] == {"failed": 1, "ok": 1}


def test_unreachable_target_does_not_stop_the_others(tmp_path, sshd):
    config = write_config(tmp_path, sshd, unreachable=True)
    state = tmp_path / "state"
    r = opsgate(config, state, "run", "hello")
    assert r.returncode == 1
    targets = {x["target"]: x for x in records(state) if x["event"] == "action.target"}
    assert targets["t1"]["outcome"] == "ok" and targets["t2"]["outcome"] == "ok"
    assert targets["down"]["outcome"] == "unreachable"


@pytest.mark.parametrize("args, message", [
    (["run", "nope"], "unknown action 'nope'"),
    (["run", "restart", "--param", "service=sshd", "--yes"], "param service:"),
    (["run", "restart", "--param", "service=nginx", "--target", "t2", "--yes"], "target 't2' is not allowed"),
    (["run", "hello", "--param", "name=x;reboot"], "does not match"),
    (["run", "hello", "--param", "oops"], "expected NAME=VALUE"),
])
def test_bad_input_is_exit_2_and_nothing_runs(lab, args, message):
    config, state = lab
    r = opsgate(config, state, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert "action.start" not in events(state)


def test_medium_without_yes_and_without_terminal_is_refused(lab):
    config, state = lab
    r = opsgate(config, state, "run", "restart", "--param", "service=nginx", stdin="123456\n")
    assert r.returncode == 2 and "pass --yes" in r.stderr
    assert "action.start" not in events(state)


def test_dry_run_prints_and_audits_but_runs_nothing(lab):
    config, state = lab
    r = opsgate(config, state, "run", "rotate-key", "--param-file", "-", "--dry-run", stdin="key=Sup3rS3cretValue\n")
    assert r.returncode == 0
    assert "printf 'key=%s\\n' <secret> | wc -c" in r.stdout and "OTP within 15 min" in r.stdout
    assert "Sup3rS3cretValue" not in r.stdout
    assert events(state) == ["config.loaded", "action.dry_run"]
    assert not (state / "recordings").exists()


def test_medium_action_with_otp_on_stdin_end_to_end(lab):
    """The acceptance path: enroll, run with the code on stdin, verify, replay, asciinema cat, tamper."""
    config, state = lab
    secret = enroll_otp(config, state)
    r = opsgate(config, state, "run", "restart", "--param", "service=nginx", "--yes", stdin=next_code(secret) + "\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "t1 | restarting nginx" in r.stdout
    assert events(state)[-4:] == ["stepup.success", "action.start", "action.target", "action.end"]
    start = records(state)[-3]
    assert start["grant"]["factor"] == "otp" and start["grant"]["fresh"] is True
    run_id = start["run"]

    verify = opsgate(config, state, "audit", "verify")
    assert verify.returncode == 0 and verify.stdout.startswith("OK: ")

    replay = opsgate(config, state, "replay", run_id, "--speed", "100")
    assert replay.returncode == 0 and "restarting nginx" in replay.stdout

    target = [x for x in records(state) if x["event"] == "action.target"][-1]
    cast = state / target["recording"]
    cat = subprocess.run([str(Path(sys.executable).parent / "asciinema"), "cat", str(cast)],
                         capture_output=True, text=True, timeout=30)
    assert "restarting nginx" in cat.stdout

    # Within max_age the grant is reused: no code needed for the second run.
    again = opsgate(config, state, "run", "restart", "--param", "service=haproxy", "--yes")
    assert again.returncode == 0, again.stderr
    assert records(state)[-3]["grant"]["fresh"] is False

    # Tamper one byte of the trail: verify names that record.
    path = state / AUDIT_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    victim = 3
    lines[victim - 1] = lines[victim - 1].replace(b'"event":"', b'"event":"X', 1)
    path.write_bytes(b"".join(lines))
    bad = opsgate(config, state, "audit", "verify")
    assert bad.returncode == 1
    assert f"seq {victim}" in bad.stdout + bad.stderr


def test_wrong_code_is_denied_exit_3_and_audited(lab):
    config, state = lab
    enroll_otp(config, state)
    r = opsgate(config, state, "run", "restart", "--param", "service=nginx", "--yes", stdin="000000\n")
    assert r.returncode == 3, r.stdout + r.stderr
    ev = events(state)
    assert "stepup.failure" in ev and ev[-1] == "action.denied" and "action.start" not in ev


def test_a_denied_step_up_of_a_run_with_a_reason_is_audited_with_both_reasons(lab):
    config, state = lab
    enroll_otp(config, state)
    r = opsgate(config, state, "run", "restart", "--param", "service=nginx", "--reason", "INC-42 stuck workers",
                "--yes", stdin="000000\n")
    assert r.returncode == 3, r.stdout + r.stderr  # was a TypeError: "reason" given twice to the record
    denied = records(state)[-1]
    assert denied["event"] == "action.denied" and denied["operator_reason"] == "INC-42 stuck workers"
    assert "code" in denied["reason"]


def test_no_enrolled_factor_says_how_to_enroll(lab):
    config, state = lab
    r = opsgate(config, state, "run", "restart", "--param", "service=nginx", "--yes", stdin="123456\n")
    assert r.returncode == 3
    assert "opsgate enroll otp" in r.stderr


def test_secret_param_never_reaches_trail_or_terminal(lab):
    config, state = lab
    secret = enroll_otp(config, state)
    value = "TopSecretKey12345"
    r = opsgate(config, state, "run", "rotate-key", "--param-file", "-", "--yes",
                stdin=f"key={value}\n\n{next_code(secret)}\n")  # the params up to an empty line, then the code
    assert r.returncode == 0, r.stderr
    assert "t1 | 22" in r.stdout  # the remote side got the real value: len("key=TopSecretKey12345\n")
    assert value not in r.stdout + r.stderr
    assert value not in (state / AUDIT_FILE).read_text()
    assert "<secret>" in records(state)[-3]["command"]


def test_a_mistyped_param_does_not_echo_its_value(lab):
    """`--param key:VALUE` (a typo of key=VALUE) or the value alone: refused, exit 2, the value never printed."""
    config, state = lab
    value = "TopSecretKey12345"
    for typo, shown in ((f"key:{value}", "bad --param 'key'... (the rest is not shown: it may be a secret)"),
                        (value, "bad --param (its text is not shown: it may be a secret)")):
        r = opsgate(config, state, "run", "rotate-key", "--param", typo, "--yes")
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stderr == f"opsgate: {shown}: expected NAME=VALUE\n"
        assert value not in r.stdout + r.stderr
    assert value not in (state / AUDIT_FILE).read_text() if (state / AUDIT_FILE).exists() else True


def test_json_output_is_one_document(lab):
    config, state = lab
    r = opsgate(config, state, "run", "hello", "--json")
    doc = json.loads(r.stdout)
    assert doc["exit_code"] == 0 and [x["target"] for x in doc["results"]] == ["t1", "t2"]
    assert "hello from" in doc["results"][0]["stdout"] and doc["results"][0]["stderr"] == "warn\n"


def test_full_audit_disk_fails_closed_exit_4(lab, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    config, _ = lab
    state = tmp_path / "tiny"
    state.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(state)], check=True)
    try:
        with open(state / "filler", "wb") as f:
            try:
                f.write(b"x" * (1 << 20))
            except OSError:
                pass
        r = opsgate(config, state, "run", "hello")
        assert r.returncode == 4, r.stdout + r.stderr
        assert "hello from" not in r.stdout
        assert not list((state / "recordings").glob("*/*.cast")) if (state / "recordings").exists() else True
    finally:
        subprocess.run(["umount", str(state)], check=False)


def test_ctrl_c_cancels_remote_process_and_exits_130(lab):
    config, state = lab
    proc = popen_opsgate("run", "sleepy", config=config, state=state, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        wait_until(lambda: "action.start" in events(state), 30, "the run to start")
        wait_until(lambda: remote_processes("^sleep 347"), 30, "the remote command to start")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 130, out + err
    assert "action.cancelled" in events(state)
    assert wait_gone("sleep 347", 5) == [], "remote sleep 347 still running after cancel"


def test_critical_action_with_security_key_and_typed_confirmation(lab, tmp_path):
    config, state = lab
    softkey = tmp_path / "softkey.json"
    env = clean_env(OPSGATE_SOFTKEY=str(softkey))

    def cli(*args, stdin=""):
        return run_opsgate(*args, config=config, state=state, stdin=stdin, env=env)

    enrolled = cli("enroll", "fido2", "--name", "test-key")
    assert enrolled.returncode == 0, enrolled.stderr
    wrong = cli("run", "failover", "--yes", stdin="t2\n")
    assert wrong.returncode == 3, wrong.stdout + wrong.stderr
    ok = cli("run", "failover", "--yes", stdin="t1\n")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "t1 | promoted" in ok.stdout
    start = [r for r in records(state) if r["event"] == "action.start"][-1]
    assert start["grant"]["factor"] == "fido2" and len(start["fido2_digest"]) == 64
    # every run asks again: the grant of the last run does not carry over
    again = cli("run", "failover", "--yes", stdin="t1\n")
    assert again.returncode == 0
    starts = [r for r in records(state) if r["event"] == "action.start"]
    assert starts[-1]["grant"]["fresh"] is True and starts[-1]["fido2_digest"] != start["fido2_digest"]


def test_run_warns_on_stderr_when_the_local_trail_does_not_verify(lab):
    """An incremental check before each run: from where the last one got to (audit.verified) to the end."""
    from opsgate.console.paths import TRAIL_CHECKPOINT

    config, state = lab
    dry = ("run", "hello", "--param", "name=x", "--dry-run")
    first = opsgate(config, state, *dry)
    assert first.returncode == 0 and "WARNING" not in first.stderr
    second = opsgate(config, state, *dry)  # checks the first run's records, keeps where it got to
    assert second.returncode == 0 and "WARNING" not in second.stderr
    mark = json.loads((state / TRAIL_CHECKPOINT).read_text())
    assert mark["seq"] == 2 and 0 < mark["offset"] < (state / AUDIT_FILE).stat().st_size
    trail = state / AUDIT_FILE

    def edit(seq: int) -> None:  # change a record, keep its hash (the last one stays: appends check it)
        lines = trail.read_text().splitlines(keepends=True)
        lines[seq - 1] = lines[seq - 1].replace('"operator":"', '"operator":"mallory-', 1)
        trail.write_text("".join(lines))

    edit(3)  # after the mark
    third = opsgate(config, state, *dry)
    assert third.returncode == 0, third.stderr  # a warning, not a refusal
    assert "opsgate: WARNING: the audit trail" in third.stderr and "does not verify" in third.stderr
    assert "hash mismatch" in third.stderr and "seq 3" in third.stderr
    assert "opsgate audit verify" in third.stderr
    again = opsgate(config, state, *dry)  # the mark does not move past a broken record: it warns again
    assert "does not verify" in again.stderr and json.loads((state / TRAIL_CHECKPOINT).read_text()) == mark
    edit(2)  # before the mark: the incremental check cannot see it ...
    (state / TRAIL_CHECKPOINT).unlink()  # ... the first check without a mark reads the whole chain
    full = opsgate(config, state, *dry)
    assert "does not verify" in full.stderr and "seq 2" in full.stderr


def test_the_trail_check_waits_for_a_line_being_written(tmp_path):
    from opsgate.cli.run import trail_problem
    from opsgate.console.audit.trail import AuditTrail

    trail = AuditTrail(tmp_path / AUDIT_FILE)
    assert trail_problem(trail.path, tmp_path) is None  # no trail yet
    trail.append("note", operator="alice", text="one")
    with open(trail.path, "ab") as f:
        f.write(b'{"event":"note","half":')  # another opsgate is appending this line now
    assert trail_problem(trail.path, tmp_path) is None  # first check (no mark): not a problem yet
    assert trail_problem(trail.path, tmp_path) is None  # incremental: still waiting for its newline


def test_ctrl_d_at_run_prompt_is_no_without_a_traceback(lab):
    config, state = lab
    with opsgate_on_pty("run", "restart", "--param", "service=nginx", config=config, state=state) as (proc, master):
        seen = read_until(master, proc, b"Run? [y/N]")
        os.write(master, b"\x04")  # Ctrl-D: end of input
        seen += read_until(master, proc, None)
        proc.wait(timeout=30)
    text = seen.decode(errors="replace")
    assert proc.returncode == 130, text
    assert "not run" in text and "Traceback" not in text and "EOFError" not in text
    assert "action.start" not in events(state)


def test_the_trail_check_is_skipped_in_gate_mode(tmp_path, capsys):
    """In gate mode the trail that counts is the gate's: `opsgate run` does not check a local one."""
    from types import SimpleNamespace

    from opsgate.cli.run import warn_if_trail_broken
    from opsgate.console.audit.trail import AuditTrail

    trail = AuditTrail(tmp_path / AUDIT_FILE)
    trail.append("note", operator="alice", text="one")
    trail.append("note", operator="alice", text="two")
    trail.path.write_text(trail.path.read_text().replace('"text":"one"', '"text":"0ne"'))
    warn_if_trail_broken(SimpleNamespace(config=SimpleNamespace(gate=object()), state_dir=tmp_path))
    assert capsys.readouterr().err == ""
    warn_if_trail_broken(SimpleNamespace(config=SimpleNamespace(gate=None), state_dir=tmp_path))
    assert "does not verify" in capsys.readouterr().err
