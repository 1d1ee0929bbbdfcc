"""Secret params never on a command line: not opsgate's (``--param`` refuses them; ``--param-file`` or a
no-echo prompt gives them), not the remote shell's (the command reads them from its stdin), and the dry run
and the trail show ``<secret>``. Against the real sshd fixture."""

from __future__ import annotations

import os

import pytest

from tests.helpers.cli import opsgate_on_pty, popen_opsgate, read_until, run_opsgate
from tests.helpers.run_fixtures import events, records, write_config

VALUE = "Hunter2SecretValue"

# Every process's argv on this machine while the command runs, the remote shell's own included (the sshd
# fixture is local, so opsgate's argv is in the list too); and the value's length, to show it arrived.
ARGV_PROBE = """
[actions.probe]
title = "Show every argv"
risk = "low"
targets = ["t1"]
command = "printf '%s' {key} | wc -c; for f in /proc/[0-9]*/cmdline; do tr '\\\\000' ' ' < \\"$f\\"; echo; done"
[actions.probe.params.key]
pattern = "[A-Za-z0-9]{8,64}"
secret = true
"""


@pytest.fixture
def lab(tmp_path, sshd):
    return write_config(tmp_path, sshd, extra=ARGV_PROBE), tmp_path / "state"


def private_file(path, text: str, mode: int = 0o600):
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_secret_param_is_in_no_process_argv_on_either_side(lab, tmp_path):
    config, state = lab
    params = private_file(tmp_path / "params", f"# the probe's key\nkey={VALUE}\n")
    r = run_opsgate("run", "probe", "--param-file", params, config=config, state=state)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"t1 | {len(VALUE)}" in lines  # the command got the value...
    assert any("sshd" in line or "__opsgate_secret_key" in line for line in lines)  # ...the argv listing ran
    assert VALUE not in r.stdout + r.stderr  # ...and no process had it on its command line
    assert any("__opsgate_secret_key" in line for line in lines)  # the remote shell's argv names the variable
    start = [x for x in records(state) if x["event"] == "action.start"][0]
    assert start["params"] == {"key": "<secret>"} and "<secret>" in start["command"]
    assert VALUE not in (state / "audit.jsonl").read_text()


def test_a_secret_param_on_the_command_line_is_refused_without_echo(lab):
    config, state = lab
    r = run_opsgate("run", "probe", "--param", f"key={VALUE}", config=config, state=state)
    assert r.returncode == 2
    assert "param key is secret: not accepted with --param" in r.stderr and "--param-file" in r.stderr
    assert VALUE not in r.stdout + r.stderr
    assert "action.start" not in events(state)


def test_a_missing_secret_without_a_terminal_says_how_to_give_it(lab):
    config, state = lab
    r = run_opsgate("run", "probe", config=config, state=state)
    assert r.returncode == 2
    assert "param key of probe is secret and required: give it in --param-file FILE" in r.stderr
    assert "action.start" not in events(state)


def test_a_param_file_others_can_read_is_refused(lab, tmp_path):
    config, state = lab
    params = private_file(tmp_path / "params", f"key={VALUE}\n", mode=0o644)
    r = run_opsgate("run", "probe", "--param-file", params, config=config, state=state)
    assert r.returncode != 0 and "accessible by group or others" in r.stderr and "chmod 600" in r.stderr
    assert VALUE not in r.stdout + r.stderr
    assert "action.start" not in events(state)


def test_a_param_file_line_that_is_not_name_value_is_not_echoed(lab, tmp_path):
    config, state = lab
    params = private_file(tmp_path / "params", f"key:{VALUE}\n")
    r = run_opsgate("run", "probe", "--param-file", params, config=config, state=state)
    assert r.returncode == 2 and "expected NAME=VALUE" in r.stderr
    assert VALUE not in r.stdout + r.stderr


def test_a_secret_from_a_pipe(lab):
    """``--param-file <(vault read ...)``: a pipe is taken as it is (no owner or mode to check)."""
    config, state = lab
    read_end, write_end = os.pipe()
    proc = popen_opsgate("run", "probe", "--param-file", f"/dev/fd/{read_end}", config=config, state=state,
                         pass_fds=(read_end,), stdin=-3, stdout=-1, stderr=-1, text=True)
    os.close(read_end)
    with os.fdopen(write_end, "w") as w:
        w.write(f"key={VALUE}\n")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"t1 | {len(VALUE)}" in out.splitlines() and VALUE not in out + err


def test_a_missing_secret_is_asked_without_echo_on_a_terminal(lab):
    config, state = lab
    with opsgate_on_pty("run", "probe", config=config, state=state) as (proc, master):
        seen = read_until(master, proc, b"not shown: ")
        os.write(master, VALUE.encode() + b"\r")
        seen += read_until(master, proc, None)
        proc.wait(timeout=30)
    text = seen.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "probe: secret param key (matches [A-Za-z0-9]{8,64}, secret), not shown: " in text
    assert f"t1 | {len(VALUE)}" in text
    assert VALUE not in text  # not echoed as typed, not in any argv the probe listed
