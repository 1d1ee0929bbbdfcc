"""`opsgate audit verify --head/--anchor`, recordings no record names, and the pinned policy (console/audit/anchor.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from opsgate.console.audit.history import build_history, export_run
from opsgate.console.audit.recording import Recording, recording_path
from opsgate.console.audit.trail import AuditTrail
from opsgate.console.paths import AUDIT_FILE
from tests.helpers.cli import clean_env, run_opsgate
from tests.helpers.run_fixtures import records, write_config

RUN = "20261128-145001-a1b2c3"
LATER = "20261128-150000-d4e5f6"
OTHER = "b" * 64


def _run(trail: AuditTrail, state: Path, run: str, target: str) -> None:
    trail.append("action.start", operator="alice", run=run, action="restart-nginx", targets=[target],
                 command="systemctl restart nginx", config_sha256="a" * 64)
    rec = Recording(recording_path(state, run, target), run=run, action="restart-nginx", target=target,
                    command="systemctl restart nginx")
    rec.output("stdout", b"ok\n", time.monotonic())
    digest = rec.close()
    trail.append("action.target", operator="alice", run=run, action="restart-nginx", target=target, outcome="ok",
                 exit_code=0, recording=str(rec.path.relative_to(state)), recording_sha256=digest)
    trail.append("action.end", operator="alice", run=run, action="restart-nginx", exit_code=0)


@pytest.fixture
def state(tmp_path) -> Path:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    trail = AuditTrail(state / AUDIT_FILE)
    trail.append("config.loaded", operator="alice", run=None, path="/etc/opsgate.toml", sha256="a" * 64)
    _run(trail, state, RUN, "web1")
    return state


def opsgate(state: Path, *args: str) -> "subprocess.CompletedProcess":  # noqa: F821
    env = clean_env(HOME=str(state.parent), XDG_CONFIG_HOME=str(state.parent / "nocfg"), LANG="C.UTF-8")
    return run_opsgate(*args, "--state-dir", state, env=env, cwd=state.parent)


def cut_last_run(state: Path) -> str:
    """A second run appended, then its three records cut off the end (its recording stays): the head before."""
    trail = AuditTrail(state / AUDIT_FILE)
    head = trail.head()
    _run(trail, state, LATER, "web2")
    anchored = trail.head()
    path = state / AUDIT_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-3]))
    assert trail.head() == head
    return anchored


def test_verify_fails_when_the_anchored_head_was_cut_off(state):
    anchored = cut_last_run(state)
    plain = opsgate(state, "audit", "verify")
    assert plain.returncode == 0, plain.stdout  # the chain alone cannot see the cut
    result = opsgate(state, "audit", "verify", "--head", anchored)
    assert result.returncode == 1
    assert f"FAIL: anchored head {anchored} (--head) is missing" in result.stdout
    assert "cut off its end, or it was rewritten" in result.stdout


def test_verify_anchor_file_holds_what_audit_head_printed(state, tmp_path):
    head = opsgate(state, "audit", "head")
    anchor = tmp_path / "anchor"
    anchor.write_text("# kept on the ticket\n" + head.stdout)
    ok = opsgate(state, "audit", "verify", "--anchor", str(anchor))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK: anchored head (--anchor" in ok.stdout and "is record 4; 0 records after it" in ok.stdout
    cut_last_run(state)  # the anchor is still in the trail: older records after it are fine
    AuditTrail(state / AUDIT_FILE).append("stepup.success", operator="bob", run=None, factor="otp")
    assert opsgate(state, "audit", "verify", "--anchor", str(anchor)).returncode == 0
    anchor.write_text("c" * 64 + "\n")  # a head the trail never held (a rewritten trail)
    bad = opsgate(state, "audit", "verify", "--anchor", str(anchor))
    assert bad.returncode == 1 and "FAIL: anchored head " + "c" * 64 in bad.stdout
    anchor.write_text("not a hash\n")
    assert opsgate(state, "audit", "verify", "--anchor", str(anchor)).returncode == 2


def test_verify_warns_about_recordings_no_record_names(state):
    cut_last_run(state)
    result = opsgate(state, "audit", "verify")
    assert result.returncode == 0  # a warning: a crash leaves one legitimately (README)
    orphan = str(recording_path(state, LATER, "web2").relative_to(state))
    assert f"warning: recording {orphan} is named by no audit record" in result.stderr
    assert "warning: 1 recording named by no audit record" in result.stderr
    assert "web1.cast" not in result.stderr


def test_verify_flags_runs_under_another_config_than_the_pinned_one(state):
    trail = AuditTrail(state / AUDIT_FILE)
    trail.append("config.loaded", operator="mallory", run=None, path="/tmp/weak.toml", sha256=OTHER)
    trail.append("action.start", operator="alice", run=LATER, action="restart-nginx", targets=["web1"],
                 command="systemctl restart nginx", config_sha256=OTHER)
    # No pin configured: the first config.loaded is the pin; a warning, exit code unchanged.
    implicit = opsgate(state, "audit", "verify")
    assert implicit.returncode == 0
    assert f"warning: seq 6: run {LATER} (action.start) ran under config sha256 {OTHER}" in implicit.stderr
    assert "1 under another" in implicit.stderr
    # Pinned explicitly: a failure naming the run.
    pinned = opsgate(state, "audit", "verify", "--pinned-policy", "a" * 64)
    assert pinned.returncode == 1
    assert f"FAIL: seq 6: run {LATER} (action.start) ran under config sha256 {OTHER}" in pinned.stdout
    # And the history flags it, the export says so.
    runs = {s.run: s for s in build_history(trail.records())}
    assert runs[LATER].other_policy and not runs[RUN].other_policy
    assert runs[LATER].config_sha256 == OTHER and "other-policy" in runs[LATER].text()
    doc, _ = export_run(state / AUDIT_FILE, state, LATER)
    assert doc["other_policy"] is True and doc["config_sha256"] == OTHER
    assert not build_history(trail.records(), pinned_policy=OTHER)[0].other_policy


def test_pinned_policy_in_the_reviewers_config(state, tmp_path):
    trail = AuditTrail(state / AUDIT_FILE)
    trail.append("action.start", operator="alice", run=LATER, action="restart-nginx", targets=["web1"],
                 command="systemctl restart nginx", config_sha256=OTHER)
    config = tmp_path / "reviewer.toml"
    config.write_text(f'[console]\noperator = "rita"\npinned_policy = "{"a" * 64}"\n')
    env = clean_env(HOME=str(tmp_path), LANG="C.UTF-8")
    result = run_opsgate("audit", "verify", config=config, state=state, env=env, cwd=tmp_path)
    assert result.returncode == 1 and f"run {LATER} (action.start) ran under config sha256 {OTHER}" in result.stdout
    config.write_text('[console]\npinned_policy = "weak"\n')
    assert "console.pinned_policy" in run_opsgate("check", config=config, env=env, cwd=tmp_path).stderr


@pytest.mark.system
def test_action_start_carries_the_config_digest_and_a_weaker_config_is_flagged(tmp_path, sshd):
    config, state = write_config(tmp_path, sshd), tmp_path / "state"
    assert run_opsgate("run", "hello", config=config, state=state).returncode == 0
    loaded, start = records(state)[0], records(state)[1]
    assert start["event"] == "action.start" and start["config_sha256"] == loaded["sha256"]
    pinned = loaded["sha256"]
    weak = config.with_name("weak.toml")
    weak.write_text(config.read_text().replace('[policy.medium]\nfactor = "otp"', '[policy.medium]\nfactor = "none"'))
    assert weak.read_text() != config.read_text()
    env = clean_env(OPSGATE_CONFIG=str(weak))  # a borrowed terminal pointing at a weaker policy
    assert run_opsgate("run", "restart", "--param", "service=nginx", "--yes", state=state, env=env).returncode == 0, \
        json.dumps(records(state)[-3:])
    result = run_opsgate("audit", "verify", "--pinned-policy", pinned, config=config, state=state)
    assert result.returncode == 1
    assert "(action.start) ran under config sha256" in result.stdout and "not the pinned policy" in result.stdout
