"""The security key's PIN on the command line: no echo on a terminal, one line from a script, never kept."""

import os

import pytest

from opsgate.console.demo.softkey import PIN_RETRIES, SoftKey
from tests.helpers.cli import clean_env, opsgate_on_pty, read_until, run_opsgate

PIN = "Quokka-42"

CONFIG = """\
[console]
operator = "alice"

[policy.critical]
factor = "fido2"
max_age = 0
user_verification = true
"""


@pytest.fixture
def env(tmp_path):
    config = tmp_path / "opsgate.toml"
    config.write_text(CONFIG)
    softkey = tmp_path / "softkey.json"
    SoftKey(softkey, pin=PIN)  # a PIN-protected key (CTAP 2.1)
    return config, tmp_path / "state", softkey


def test_enroll_asks_the_pin_without_echo_on_a_terminal(env):
    config, state, softkey = env
    with opsgate_on_pty("enroll", "fido2", "--name", "yubi", config=config, state=state,
                        env=clean_env(OPSGATE_SOFTKEY=str(softkey))) as (proc, master):
        shown = read_until(master, proc, b"attempts left: ")
        assert b"Enter the PIN of alice's security key, 8 attempts left: " in shown, shown
        os.write(master, PIN.encode() + b"\n")
        shown += read_until(master, proc, None)
        proc.wait(timeout=60)
    text = shown.decode()
    assert proc.returncode == 0, text
    assert "Security key 'yubi' enrolled for alice" in text
    assert PIN not in text  # not echoed
    for path in state.iterdir():  # nor kept anywhere in the state dir (credentials, trail)
        if path.is_file():
            assert PIN.encode() not in path.read_bytes(), path
    assert SoftKey(softkey).pin_retries == PIN_RETRIES


def test_a_wrong_pin_from_a_script_is_one_denial_with_the_attempts_left(env):
    config, state, softkey = env
    r = run_opsgate("enroll", "fido2", config=config, state=state, stdin="Wombat-17\n" + PIN + "\n",
                    env=clean_env(OPSGATE_SOFTKEY=str(softkey)))
    assert r.returncode == 3, r.stderr
    assert f"wrong PIN for the security key, {PIN_RETRIES - 1} attempts left" in r.stderr
    assert PIN not in r.stderr and "Wombat-17" not in r.stderr + r.stdout
    assert SoftKey(softkey).pin_retries == PIN_RETRIES - 1  # the second line was never read
    r = run_opsgate("enroll", "fido2", config=config, state=state, stdin=PIN + "\n",
                    env=clean_env(OPSGATE_SOFTKEY=str(softkey)))
    assert r.returncode == 0, r.stderr


def test_a_key_without_pin_under_a_uv_policy_says_how_to_set_one(env, tmp_path):
    config, state, _ = env
    bare = tmp_path / "bare.json"
    SoftKey(bare, client_pin=True)._save()
    r = run_opsgate("enroll", "fido2", config=config, state=state, env=clean_env(OPSGATE_SOFTKEY=str(bare)))
    assert r.returncode == 3
    assert "no PIN set" in r.stderr and "ykman fido access change-pin" in r.stderr and "fido2-token -S" in r.stderr
