"""Config loading: typed objects, and every mistake reported with file and key path."""

import pytest

from opsgate.console.catalog.loader import load_config, parse_config

from opsgate.console.durations import parse_duration
from opsgate.console.errors import ConfigError
from tests.helpers import ROOT


BASE = """
[console]
operator = "alice"
known_hosts = []

[targets.web-1]
host = "10.0.0.1"
tags = ["web"]

[targets.db-1]
host = "10.0.0.5"
port = 2222
tags = ["db"]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(text.encode(), "config.toml")
    return e.value.problems


def test_example_config_is_valid():
    cfg = load_config(ROOT / "config.example.toml")
    assert len(cfg.actions) >= 12
    assert {a.risk for a in cfg.actions.values()} == {"low", "medium", "high", "critical"}
    action = cfg.actions["restart-service"]
    assert [t.name for t in cfg.targets_for(action)] == ["web-1", "web-2", "web-3", "db-replica"]
    assert cfg.requirement_for(action).describe() == "OTP within 15 min"
    crit = cfg.requirement_for(cfg.actions["promote-replica"])
    assert crit.describe() == "security key, every run, typed confirmation"
    assert crit.short() == "KEY every run"


def test_approvals_need_a_gate():
    # Local mode: operator names are whatever the config says, so a "second operator" proves nothing.
    text = '[policy.critical]\nfactor = "otp"\napprovals = 1\n'
    with pytest.raises(ConfigError) as e:
        parse_config(text.encode(), "local.toml")
    assert e.value.problems == ["local.toml: policy.critical.approvals: approvals need a [gate]: without one, operator "
                                "names are whatever the config says (remove approvals or configure a gate)"]
    gated = parse_config((text + '[gate]\nsocket = "/run/opsgated/gate.sock"\n').encode(), "gated.toml")
    assert gated.policy["critical"].approvals == 1 and gated.gate.socket.name == "gate.sock"


def test_typed_frozen_objects():
    cfg = parse_config((BASE + """
[actions.restart]
title = "Restart"
risk = "medium"
targets = ["tag:web", "db-1"]
command = "systemctl restart {svc}"
timeout = "2m"
[actions.restart.params.svc]
choices = ["nginx"]
""").encode())
    action = cfg.actions["restart"]
    assert action.timeout == 120.0
    assert cfg.targets["db-1"].port == 2222
    assert [t.name for t in cfg.targets_for(action)] == ["web-1", "db-1"]
    with pytest.raises(AttributeError):
        action.risk = "low"  # frozen


def test_three_independent_mistakes_give_three_messages():
    found = problems(BASE + """
[actions.a]
title = "A"
risk = "severe"
targets = ["web-1"]
command = "echo hi"

[actions.b]
title = "B"
risk = "low"
targets = ["web-9"]
command = "echo {x}"
[actions.b.params.x]
pattern = "([a-z"
""")
    assert "config.toml: actions.a.risk: unknown risk level 'severe' (expected one of: low, medium, high, critical)" in found
    assert "config.toml: actions.b.targets[0]: unknown target 'web-9'" in found
    assert any(p.startswith("config.toml: actions.b.params.x.pattern: invalid regular expression") for p in found)
    assert len(found) == 3


@pytest.mark.parametrize("snippet, expected", [
    ('[console]\nbogus = 1\n', "config.toml: console.bogus: unknown key"),
    ('[console]\nmax_parallel = "many"\n', "config.toml: console.max_parallel: expected an integer, got string"),
    ('[policy.medium]\nfactor = "sms"\n', "config.toml: policy.medium.factor: unknown factor 'sms'"),
    ('[policy.medium]\nfactor = "otp"\nmax_age = "15 minutes"\n', "config.toml: policy.medium.max_age: bad duration"),
    ('[policy.extreme]\nfactor = "otp"\n', "config.toml: policy.extreme: unknown risk level"),
    ('[targets.x]\nhost = "a"\nport = 70000\n', "config.toml: targets.x.port: must be between 1 and 65535"),
])
def test_single_mistakes_name_their_key_path(snippet, expected):
    found = problems(snippet)
    assert any(p.startswith(expected) for p in found), found


def test_unknown_tag_and_param_mismatches():
    found = problems(BASE + """
[actions.a]
title = "A"
risk = "low"
targets = ["tag:nope"]
command = "echo {used} ${HOME} awk '{print $1}' {{literal}}"
[actions.a.params.unused]
choices = ["x"]
""")
    assert "config.toml: actions.a.targets[0]: no target has tag 'nope'" in found
    assert "config.toml: actions.a.command: uses {used} but no param 'used' is declared" in found
    assert "config.toml: actions.a.params.unused: declared but not used in the command" in found
    assert len(found) == 3  # ${HOME}, {print $1} and {{literal}} are not fields


def test_param_schema_errors():
    found = problems(BASE + """
[actions.a]
title = "A"
risk = "low"
targets = ["web-1"]
command = "x {n} {s} {d}"
[actions.a.params.n]
type = "int"
min = 10
max = 1
[actions.a.params.s]
description = "free text"
[actions.a.params.d]
choices = ["a", "b"]
default = "c"
""")
    assert "config.toml: actions.a.params.n.min: greater than max" in found
    assert "config.toml: actions.a.params.s: a str param needs choices or a pattern" in found
    assert any(p.startswith("config.toml: actions.a.params.d.default: 'c' is not one of") for p in found)


def test_toml_syntax_error_keeps_line_and_column():
    found = problems('[console]\noperator = "alice\n')
    assert len(found) == 1
    assert "TOML syntax error" in found[0] and "line 2" in found[0] and "column" in found[0]


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: cannot read config"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize("value, seconds", [(0, 0), (90, 90), ("90s", 90), ("15m", 900), ("12h", 43200), ("1d", 86400)])
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["15 minutes", "-1s", -5, "1w", True, 1.5])
def test_bad_durations(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_a_placeholder_inside_quotes_is_refused_with_its_key_path_and_the_fix():
    """`echo "change note: {reason}"` with reason=$(touch M) ran touch on the target: the loader refuses it,
    in an action and in a runbook's inline step alike, and accepts the value outside the quotes."""
    text = BASE + """
[actions.note]
title = "Note"
risk = "low"
targets = ["web-1"]
command = "echo \\"change note: {reason}\\""
[actions.note.params.reason]
pattern = ".*"

[runbooks.lookup]
title = "Lookup"
params = { name = { pattern = ".*" } }
steps = [{ command = "psql -Atc 'select id from users where name = {name}'", targets = ["db-1"], risk = "low" }]
"""
    assert problems(text) == [
        "config.toml: actions.note.command: {reason} is inside double quotes: put it outside the quotes: the value "
        "is quoted for you (echo \"note: \"{reason}, not echo \"note: {reason}\")",
        "config.toml: runbooks.lookup.steps[0].command: {name} is inside single quotes: put it outside the quotes: "
        "the value is quoted for you (grep 'ERROR '{name} app.log, not grep 'ERROR {name}' app.log)",
    ]
    fixed = text.replace('note: {reason}\\"', 'note: \\"{reason}').replace("name = {name}'", "name = '{name}")
    cfg = parse_config(fixed.encode(), "config.toml")
    assert cfg.actions["note"].command == 'echo "change note: "{reason}'


def test_a_secret_int_param_stands_only_where_a_plain_word_does():
    """An int param may stand anywhere (its value is digits), but a secret one is read from stdin into a shell
    variable, which inside quotes would not expand to the value: refused there, also when a runbook made it
    secret."""
    text = BASE + """
[actions.pin]
title = "Pin"
risk = "low"
targets = ["web-1"]
command = "echo 'pin {pin}'; echo {n}"
[actions.pin.params.pin]
type = "int"
secret = true
[actions.pin.params.n]
type = "int"

[actions.count]
title = "Count"
risk = "low"
targets = ["web-1"]
command = "echo 'count {n}'"
[actions.count.params.n]
type = "int"

[runbooks.rb]
title = "Runbook"
params = { code = { type = "int", secret = true } }
steps = [{ action = "count", params = { n = "{code}" } }]
"""
    found = problems(text)
    assert [p.split(": ")[1] for p in found] == ["actions.pin.command", "actions.count.command"], found
    assert "{pin} is inside single quotes" in found[0] and "{n} is inside single quotes" in found[1]
