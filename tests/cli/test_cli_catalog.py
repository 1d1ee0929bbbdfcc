"""`opsgate check` and `opsgate list` through the real command line."""

import json
import os
import subprocess
from pathlib import Path

from tests.helpers import ROOT
from tests.helpers.cli import clean_env, run_opsgate


def opsgate(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_opsgate(*args, cwd=cwd, env=clean_env(**(env or {})))


def test_check_accepts_the_example():
    r = opsgate("check", "--config", "config.example.toml")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "OK: 13 actions, 3 runbooks, 7 targets"


def test_check_prints_every_error_and_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("""
[console]
max_parallel = 0
[targets.t]
host = "h"
[actions.a]
title = "A"
risk = "urgent"
targets = ["nope"]
command = "echo"
""")
    r = opsgate("--config", str(bad), "check")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert f"{bad}: console.max_parallel: must be at least 1" in lines
    assert any(line.startswith(f"{bad}: actions.a.risk: unknown risk level 'urgent'") for line in lines)
    assert f"{bad}: actions.a.targets[0]: unknown target 'nope'" in lines


def test_config_discovery_env_and_local_file(tmp_path):
    (tmp_path / "opsgate.toml").write_text('[console]\noperator = "bob"\n')
    assert opsgate("check", cwd=tmp_path).stdout.strip() == "OK: 0 actions, 0 targets"
    env = {"OPSGATE_CONFIG": str(ROOT / "config.example.toml")}
    assert opsgate("check", cwd=tmp_path, env=env).stdout.strip() == "OK: 13 actions, 3 runbooks, 7 targets"
    r = opsgate("check", cwd=tmp_path, env={"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "x")})
    assert r.returncode == 0  # ./opsgate.toml found


def test_no_config_is_a_clear_error(tmp_path):
    r = opsgate("check", cwd=tmp_path, env={"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "x")})
    assert r.returncode == 2
    assert "no config found" in r.stderr


def test_list_json_and_text():
    r = opsgate("list", "--json", "--config", "config.example.toml")
    rows = {row["id"]: row for row in json.loads(r.stdout)}
    assert rows["restart-service"]["requirement"] == "OTP within 15 min"
    assert rows["restart-service"]["targets"] == ["web-1", "web-2", "web-3", "db-replica"]
    assert rows["promote-replica"]["requirement"] == "security key, every run, typed confirmation"
    # a runbook lists every step's targets, those of action steps that name none included (fence-primary)
    assert rows["database-failover"]["targets"] == ["db-replica", "db-primary", "lb-1"]
    text = opsgate("list", "--config", "config.example.toml").stdout
    assert "promote-replica" in text and "CRITICAL" in text and "step-up: OTP within 5 min" in text
    # the params, as --json has them: each name with what it accepts, one a line
    lines = text.splitlines()
    at = lines.index(next(line for line in lines if line.startswith("restart-service ")))
    assert lines[at + 3].split() == ["params:", "service:", "one", "of", "nginx,", "haproxy,", "app"]
    tail = lines.index(next(line for line in lines if line.startswith("tail-logs ")))
    assert lines[tail + 4].strip().startswith("lines: integer")


def test_state_dir_is_created_private(tmp_path):
    from opsgate.console import paths

    d = paths.state_dir(str(tmp_path / "s"), None)
    assert d.stat().st_mode & 0o777 == 0o700
    (tmp_path / "open").mkdir(mode=0o777)
    os.chmod(tmp_path / "open", 0o777)
    import pytest

    from opsgate.console.errors import UsageError
    with pytest.raises(UsageError, match="writable by group or others"):
        paths.state_dir(str(tmp_path / "open"), None)


def test_check_refuses_a_placeholder_inside_quotes(tmp_path):
    """The two templates of the security review: both ran `touch` on the target with a hostile value."""
    bad = tmp_path / "quoted.toml"
    bad.write_text("""
[targets.db]
host = "h"
[actions.note]
title = "Note"
risk = "low"
targets = ["db"]
command = "echo \\"change note: {reason}\\""
params = { reason = { pattern = ".*" } }
[actions.lookup]
title = "Lookup"
risk = "low"
targets = ["db"]
command = "psql -Atc 'select id from users where name = {name}'"
params = { name = { pattern = ".*" } }
""")
    r = opsgate("--config", str(bad), "check")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        f"{bad}: actions.note.command: {{reason}} is inside double quotes: put it outside the quotes: the value is "
        f"quoted for you (echo \"note: \"{{reason}}, not echo \"note: {{reason}}\")",
        f"{bad}: actions.lookup.command: {{name}} is inside single quotes: put it outside the quotes: the value is "
        f"quoted for you (grep 'ERROR '{{name}} app.log, not grep 'ERROR {{name}}' app.log)",
    ]
