"""Runbooks: ordered steps, checks, pauses, one step-up for the plan, against the real sshd."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pyotp
import pytest

from opsgate.console.catalog.loader import parse_config
from opsgate.console.errors import ConfigError
from tests.helpers.cli import run_opsgate
from tests.helpers.run_fixtures import enroll_otp, events, next_code, records, write_config

RUNBOOKS = """
[runbooks.five-steps]
title = "Five steps, the third fails"
steps = [
  { action = "hello", targets = ["t1"] },
  { title = "check", command = "echo lag=0", targets = ["t1"], risk = "low", expect_output = "lag=0" },
  { title = "fence", command = "exit 7", targets = ["t1"], risk = "low" },
  { title = "promote", command = "echo promoted", targets = ["t1"], risk = "low" },
  { title = "verify", command = "echo verified", targets = ["t1"], risk = "low" },
]

[runbooks.keep-going]
title = "Continues past a failure"
steps = [
  { title = "may fail", command = "exit 1", targets = ["t1"], risk = "low", on_failure = "continue" },
  { title = "after", command = "echo after", targets = ["t1"], risk = "low" },
]

[runbooks.output-check]
title = "Check on output fails"
steps = [
  { title = "lag", command = "echo lag=42", targets = ["t1"], risk = "low", expect_output = "^lag=0$" },
  { title = "never", command = "echo never", targets = ["t1"], risk = "low" },
]

[runbooks.paused]
title = "With a pause"
steps = [
  { title = "before", command = "echo before", targets = ["t1"], risk = "low" },
  { pause = "Confirm traffic drained", skippable = true },
  { title = "after", command = "echo after-pause", targets = ["t1"], risk = "low" },
]

[runbooks.hard-pause]
title = "A pause that --yes cannot pass"
steps = [
  { pause = "Call the DBA" },
  { title = "after", command = "echo after-hard", targets = ["t1"], risk = "low" },
]

[runbooks.three-medium]
title = "Three medium steps, one step-up"
params.service = { choices = ["nginx", "haproxy"] }
steps = [
  { action = "restart", params = { service = "{service}" } },
  { title = "status", command = "echo status {service}", targets = ["t1", "t2"], risk = "medium" },
  { action = "restart", params = { service = "haproxy" } },
]

[runbooks.two-high]
title = "Two every-run steps"
steps = [
  { title = "one", command = "echo one", targets = ["t1"], risk = "high" },
  { title = "two", command = "echo two", targets = ["t1"], risk = "high" },
]
"""


@pytest.fixture
def lab(tmp_path, sshd):
    return write_config(tmp_path, sshd, extra=RUNBOOKS), tmp_path / "state"


def cli(config: Path, state: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return run_opsgate(*args, config=config, state=state, stdin=stdin, timeout=90)


def steps(state: Path) -> dict[int, str]:
    """Step statuses of the newest runbook run."""
    recs = records(state)
    last = [r["run"] for r in recs if r["event"] == "runbook.start"][-1]
    return {r["step"]: r["status"] for r in recs if r["event"] == "runbook.step" and r["run"] == last}


def test_third_step_fails_and_later_steps_never_run(lab):
    config, state = lab
    r = cli(config, state, "run", "five-steps")
    assert r.returncode == 1, r.stdout + r.stderr
    assert steps(state) == {1: "ok", 2: "ok", 3: "failed", 4: "skipped", 5: "skipped"}
    assert "promoted" not in r.stdout and "verified" not in r.stdout
    starts = [x for x in records(state) if x["event"] == "action.start"]
    assert [s["step"] for s in starts] == [1, 2, 3]  # step runs link to the runbook run
    digest = records(state)[0]["sha256"]  # config.loaded: each start record names the config it ran under
    assert [x.get("config_sha256") for x in records(state) if x["event"] in ("runbook.start", "action.start")] \
        == [digest] * 4
    rb_run = [x for x in records(state) if x["event"] == "runbook.start"][0]["run"]
    assert all(s["runbook_run"] == rb_run and s["run"].startswith(rb_run) for s in starts)
    assert events(state)[-1] == "runbook.end"
    assert cli(config, state, "audit", "verify").returncode == 0


def test_on_failure_continue(lab):
    config, state = lab
    r = cli(config, state, "run", "keep-going")
    assert steps(state) == {1: "failed", 2: "ok"}
    assert "after" in r.stdout and r.returncode == 1


def test_check_on_output(lab):
    config, state = lab
    r = cli(config, state, "run", "output-check")
    assert r.returncode == 1
    assert steps(state) == {1: "failed", 2: "skipped"}
    detail = [x for x in records(state) if x["event"] == "runbook.step"][0]["detail"]
    assert "does not match" in detail


def test_pause_passed_with_yes_only_when_skippable(lab):
    config, state = lab
    r = cli(config, state, "run", "paused", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert steps(state) == {1: "ok", 2: "ok", 3: "ok"} and "after-pause" in r.stdout
    # Without a terminal, a pause --yes may not pass would stop the runbook half done: refused before step 1.
    before = len(records(state))
    r = cli(config, state, "run", "hard-pause", "--yes")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "hard-pause cannot finish without a terminal: step 1 pauses for 'Call the DBA' (not skippable)" in r.stderr
    assert "after-hard" not in r.stdout and len(records(state)) == before  # nothing ran, nothing to audit


def test_one_step_up_for_a_medium_runbook_of_three_steps(lab):
    config, state = lab
    secret = enroll_otp(config, state)
    r = cli(config, state, "run", "three-medium", "--param", "service=nginx", "--yes", stdin=next_code(secret) + "\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert events(state).count("stepup.success") == 1
    assert steps(state) == {1: "ok", 2: "ok", 3: "ok"}
    assert "restarting nginx" in r.stdout and "status nginx" in r.stdout and "restarting haproxy" in r.stdout


def test_every_run_step_asks_again(lab):
    config, state = lab
    secret = enroll_otp(config, state)
    totp = pyotp.TOTP(secret)
    codes = f"{totp.at(time.time() + 30)}\n{totp.at(time.time() + 30)}\n"
    r = cli(config, state, "run", "two-high", "--yes", stdin=codes)
    # the second every-run step asks again; the same code is a replay and is refused
    assert r.returncode == 3, r.stdout + r.stderr
    assert steps(state) == {1: "ok"}
    ev = events(state)
    assert ev.count("stepup.success") == 1 and "stepup.replay" in ev and ev[-1] == "action.denied"


def test_dry_run_prints_every_rendered_step(lab):
    config, state = lab
    r = cli(config, state, "run", "three-medium", "--param", "service=nginx", "--dry-run")
    assert r.returncode == 0
    assert "1. t1: echo restarting nginx" in r.stdout
    assert "2. t1, t2: echo status nginx" in r.stdout
    assert "3. t1: echo restarting haproxy" in r.stdout
    doc = json.loads(cli(config, state, "run", "three-medium", "--param", "service=nginx", "--dry-run", "--json").stdout)
    assert [s["command"] for s in doc["steps"]][1] == "echo status nginx"


def test_list_shows_runbooks_with_their_highest_risk(lab):
    config, state = lab
    rows = {r["id"]: r for r in json.loads(cli(config, state, "list", "--json").stdout)}
    assert rows["three-medium"]["risk"] == "medium" and rows["three-medium"]["kind"] == "runbook"
    assert rows["three-medium"]["targets"] == ["t1", "t2"]  # an action step without targets uses its action's
    assert rows["two-high"]["risk"] == "high" and len(rows["two-high"]["steps"]) == 2
    assert rows["five-steps"]["targets"] == ["t1"]


BASE = """
[targets.a]
host = "h"
tags = ["x"]
[actions.act]
title = "A"
risk = "low"
targets = ["a"]
command = "echo {p}"
[actions.act.params.p]
choices = ["one"]
"""


@pytest.mark.parametrize("runbook, expected", [
    ('steps = [{ action = "nope" }]', "runbooks.rb.steps[0].action: unknown action 'nope'"),
    ('steps = [{ action = "act" }]', "runbooks.rb.steps[0].params: param 'p' of action act is not provided"),
    ('steps = [{ action = "act", params = { p = "two" } }]', "runbooks.rb.steps[0].params.p: 'two' is not one of"),
    ('steps = [{ action = "act", params = { p = "{q}" } }]', "runbooks.rb.steps[0].params.p: refers to {q}"),
    ('steps = [{ command = "echo", targets = ["a"] }]', "runbooks.rb.steps[0].risk: an inline step needs a risk"),
    ('steps = [{ command = "echo", risk = "low", targets = ["a"], on_failure = "retry" }]',
     "runbooks.rb.steps[0].on_failure: expected"),
    ('steps = [{ pause = "x", action = "act" }]', "runbooks.rb.steps[0]: a step needs exactly one of"),
    ('steps = []', "runbooks.rb.steps: a runbook needs at least one step"),
])
def test_check_validates_runbooks(runbook, expected):
    with pytest.raises(ConfigError) as e:
        parse_config(f'{BASE}\n[runbooks.rb]\ntitle = "RB"\n{runbook}\n'.encode())
    assert any(p.startswith(f"config.toml: {expected}") for p in e.value.problems), e.value.problems


def test_a_literal_step_value_that_only_starts_with_a_brace_is_not_a_param_reference(tmp_path):
    from opsgate.console.run import Pipeline, RunRequest

    cfg = parse_config(f'''{BASE}
[actions.echo]
title = "Echo"
risk = "low"
targets = ["a"]
command = "echo {{msg}}"
[actions.echo.params.msg]
pattern = ".*"

[runbooks.rb]
title = "RB"
params.word = {{ choices = ["hi"] }}
steps = [{{ action = "echo", params = {{ msg = "{{not a ref" }} }}, {{ action = "echo", params = {{ msg = "{{word}}" }} }}]
'''.encode())
    plan = Pipeline(cfg, tmp_path, stepup=None, audit=None).plan(RunRequest("rb", params={"word": "hi"}))
    assert [sp.plan.command.command for sp in plan.steps] == ["echo '{not a ref'", "echo hi"]


DISAGREE = """
[actions.measure]
title = "Count a value's bytes"
risk = "low"
targets = ["t1"]
command = "printf %s {value} | wc -c"
params.value = { pattern = "[A-Za-z]{8,20}" }

[runbooks.hide-in-runbook]
title = "The runbook says secret, the action does not"
params.token = { pattern = "[A-Za-z]{8,20}", secret = true }
steps = [
  { action = "measure", params = { value = "{token}" } },
  { title = "count", command = "printf %s {token} | wc -c", targets = ["t1"], risk = "low" },
]

[runbooks.hide-in-action]
title = "The action says secret, the runbook does not"
params.key = { pattern = "[A-Za-z0-9]{8,64}" }
steps = [
  { action = "rotate-key", params = { key = "{key}" } },
  { title = "count", command = "printf %s {key} | wc -c", targets = ["t1"], risk = "low" },
]
"""


def test_a_secret_stays_out_of_the_trail_and_the_terminal_when_runbook_and_action_disagree(tmp_path, sshd):
    """Either way round, secret-ness is the union: the value reaches the targets, never the hash chain,
    the step commands or the terminal; `opsgate check` warns about each param it had to make secret."""
    config, state = write_config(tmp_path, sshd, extra=DISAGREE), tmp_path / "state"
    code = enroll_otp(config, state)
    for runbook, name, value, stdin in [("hide-in-runbook", "token", "HunterTwoSecret", ""),
                                        ("hide-in-action", "key", "TopSecretKey12345", next_code(code) + "\n")]:
        r = cli(config, state, "run", runbook, "--param-file", "-", "--yes", stdin=f"{name}={value}\n\n" + stdin)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"| {len(value)}" in r.stdout  # the inline step counted the real value on the target
        assert value not in r.stdout + r.stderr, runbook
        trail = (state / "audit.jsonl").read_text()
        assert value not in trail, runbook
        dry = cli(config, state, "run", runbook, "--param-file", "-", "--dry-run", "--json", stdin=f"{name}={value}\n")
        assert dry.returncode == 0 and value not in dry.stdout + dry.stderr
    assert "<secret>" in [x for x in records(state) if x["event"] == "runbook.start"][0]["params"].values()
    r = cli(config, state, "check")
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        f"warning: {config}: actions.measure.params.value: not marked secret, but a runbook step binds it to a secret "
        "param (runbook hide-in-runbook param 'token'): treated as secret (redacted in the trail, on the terminal "
        "and in every step command, the action's own runs included); mark it secret = true",
        f"warning: {config}: runbooks.hide-in-action.params.key: not marked secret, but a runbook step binds it to a "
        "secret param (action rotate-key param 'key'): treated as secret (redacted in the trail, on the terminal "
        "and in every step command); mark it secret = true",
    ]


CONFIRMING_STEP = """
[policy.low]
factor = "none"
confirm = true
[policy.medium]
factor = "otp"
max_age = "15m"
"""

CONFIRM_RUNBOOK = """
[runbooks.confirm-low]
title = "A low step whose tier asks for typed confirmation, under a medium runbook that does not"
steps = [
  { title = "low", command = "echo low-step-ran", targets = ["t1"], risk = "low" },
  { title = "medium", command = "echo medium-step-ran", targets = ["t1"], risk = "medium" },
]
"""


def test_a_step_covered_by_the_plans_grant_still_asks_its_own_tiers_confirmation(tmp_path, sshd):
    """The runbook's tier (medium: OTP, no confirmation) covers the low step's factor, not the confirmation
    the low tier asks for: the operator types it before that step; a wrong answer stops the runbook there."""
    config = write_config(tmp_path, sshd, policy=CONFIRMING_STEP, extra=CONFIRM_RUNBOOK)
    state = tmp_path / "state"
    code = enroll_otp(config, state)
    wrong = cli(config, state, "run", "confirm-low", "--yes", stdin=next_code(code) + "\nt2\n")
    assert wrong.returncode == 3, wrong.stdout + wrong.stderr
    assert "Type t1 to confirm (the target's name)" in wrong.stdout + wrong.stderr
    assert "low-step-ran" not in wrong.stdout and "medium-step-ran" not in wrong.stdout
    denied = [x for x in records(state) if x["event"] == "action.denied"][-1]
    assert denied["action"] == "confirm-low#1" and "confirmation did not match" in denied["reason"]
    ok = cli(config, state, "run", "confirm-low", "--yes", stdin="t1\n")  # the grant is still fresh: no code
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "low-step-ran" in ok.stdout and "medium-step-ran" in ok.stdout
