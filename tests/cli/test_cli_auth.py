"""`opsgate enroll otp|fido2` and `opsgate auth` from a script (codes on stdin), with exit codes."""

import os
import re
import subprocess
import time
import tomllib

import pyotp

from tests.helpers.run_fixtures import enroll_otp as enroll_directly
import pytest

from tests.helpers.cli import clean_env, popen_opsgate, run_opsgate


@pytest.fixture
def env(tmp_path):
    config = tmp_path / "opsgate.toml"
    config.write_text('[console]\noperator = "alice"\n')
    state = tmp_path / "state"
    return config, state


def opsgate(env, *args, stdin="", extra_env=None):
    config, state = env
    return run_opsgate(*args, config=config, state=state, stdin=stdin, env=clean_env(**(extra_env or {})))


def secret_of(env, operator="alice"):
    data = tomllib.loads((env[1] / "credentials.toml").read_text())
    return data["operators"][operator]["totp_secret"]


def enroll_otp(env, operator="alice", stdin_prefix=""):
    """Run `opsgate enroll otp`, read the secret from the printed URI, answer with its current code."""
    config, state = env
    proc = popen_opsgate("enroll", "otp", "--operator", operator, config=config, state=state, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if stdin_prefix:
            proc.stdin.write(stdin_prefix)
            proc.stdin.flush()
        uri = ""
        while "otpauth://" not in uri:
            uri = proc.stdout.readline()
            assert uri, proc.stderr.read()
        secret = re.search(r"secret=([A-Z2-7]+)", uri).group(1)
        out, err = proc.communicate(pyotp.TOTP(secret).now() + "\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return proc.returncode, uri + out, err, secret


def next_code(secret, steps=1):
    return pyotp.TOTP(secret).at(time.time() + 30 * steps)


def test_enroll_otp_then_auth(env):
    rc, out, err, secret = enroll_otp(env)
    assert rc == 0, err
    assert "issuer=opsgate" in out and "OTP enrolled for alice" in out
    assert "\u2588" in out or "\u2580" in out  # a QR code drawn with block characters
    assert secret_of(env) == secret
    assert (os.stat(env[1] / "credentials.toml").st_mode & 0o777) == 0o600
    r = opsgate(env, "auth", stdin=next_code(secret) + "\n")
    assert r.returncode == 0, r.stderr
    assert re.search(r"OTP grant valid for 1?\d:\d\d for medium actions; [0-4]:\d\d for high actions", r.stdout), r.stdout
    assert "critical actions still ask at every run" not in r.stdout  # critical needs fido2 by default
    # The same code again is a replay: denied, exit 3, one line.
    r = opsgate(env, "auth", stdin=next_code(secret) + "\n")
    assert r.returncode == 3 and "code already used" in r.stderr
    assert len([line for line in r.stderr.splitlines() if line.startswith("opsgate:")]) <= 2


def test_enroll_refuses_a_wrong_code(env):
    config, state = env
    r = opsgate(env, "enroll", "otp", stdin="000000\n")
    assert r.returncode == 3 and "not saved" in r.stderr
    assert not (state / "credentials.toml").exists()


@pytest.mark.parametrize("bad", ["abcdef", "123", "12345678", ""])
def test_auth_bad_codes_exit_3(env, bad):
    assert enroll_otp(env)[0] == 0
    r = opsgate(env, "auth", stdin=bad + "\n")
    assert r.returncode == 3
    assert r.stderr.strip().splitlines()[-1].startswith("opsgate: step-up failed for alice: not a code")


def test_auth_with_another_operators_code(env):
    enroll_otp(env, "alice")
    bob = enroll_directly(*env, "bob")  # bob's entry in the same store, as a shared state dir would hold
    r = opsgate(env, "auth", stdin=next_code(bob) + "\n")
    assert r.returncode == 3 and "wrong code, 4 attempts left" in r.stderr


def test_local_mode_enrolls_only_you(env):
    # Without a gate there is no identity but the login and the config: "--operator bob" is refused.
    r = opsgate(env, "enroll", "otp", "--operator", "bob")
    assert r.returncode == 2 and "cannot enroll a factor for 'bob' here" in r.stderr
    assert not (env[1] / "credentials.toml").exists()


def test_auth_without_enrollment_says_how(env):
    r = opsgate(env, "auth", stdin="123456\n")
    assert r.returncode == 3
    assert r.stderr.strip() == "opsgate: no factor enrolled for alice: run `opsgate enroll otp`"


def test_locked_out_operator(env):
    _, _, _, secret = enroll_otp(env)
    for _ in range(5):
        opsgate(env, "auth", stdin="000000\n" if next_code(secret) != "000000" else "111111\n")
    r = opsgate(env, "auth", stdin=next_code(secret) + "\n")
    assert r.returncode == 3 and "locked out of OTP" in r.stderr


def test_world_readable_credentials_refused(env):
    enroll_otp(env)
    os.chmod(env[1] / "credentials.toml", 0o644)
    r = opsgate(env, "auth", stdin="123456\n")
    assert r.returncode == 3
    assert "accessible by group or others" in r.stderr and "chmod 600" in r.stderr


def test_corrupted_credentials_refused(env):
    enroll_otp(env)
    (env[1] / "credentials.toml").write_text("garbage [[[")
    r = opsgate(env, "auth", stdin="123456\n")
    assert r.returncode == 3 and "corrupted credentials file" in r.stderr


def test_usage_errors_exit_2(env):
    assert opsgate(env, "auth", "--factor", "sms").returncode == 2
    assert opsgate(env, "enroll", "voice").returncode == 2


def test_reenrollment_needs_a_step_up_first(env):
    _, _, _, secret = enroll_otp(env)
    r = opsgate(env, "enroll", "otp", stdin="000000\n")
    assert r.returncode == 3 and "step up with it first" in r.stderr
    assert secret_of(env) == secret  # unchanged


def test_enroll_fido2_with_the_software_key_then_auth(env, tmp_path):
    softkey = {"OPSGATE_SOFTKEY": str(tmp_path / "softkey.json")}
    r = opsgate(env, "enroll", "fido2", "--name", "yubi", extra_env=softkey)
    assert r.returncode == 0, r.stderr
    assert "DEMO/TEST software key" in r.stderr and "Security key 'yubi' enrolled for alice" in r.stdout
    r = opsgate(env, "auth", "--factor", "fido2", extra_env=softkey)
    assert r.returncode == 0, r.stderr
    assert "Touch your security key" in r.stderr
    assert r.stdout.startswith("Security key grant valid for")
    assert "critical actions still ask at every run" in r.stdout
    # Another (fresh) software key holds no credential for alice.
    r = opsgate(env, "auth", "--factor", "fido2", extra_env={"OPSGATE_SOFTKEY": str(tmp_path / "other.json")})
    assert r.returncode == 3 and "holds no credential" in r.stderr


def test_enroll_fido2_without_a_key(env):
    r = opsgate(env, "enroll", "fido2")
    assert r.returncode == 3
    assert "no security key found" in r.stderr or "cannot look for security keys" in r.stderr


def test_enrollment_is_audited_before_it_is_saved(env):
    # The trail cannot be written (here: its path is a directory): the enrollment fails closed, exit 4,
    # and no factor exists that the trail does not know about.
    (env[1] / "audit.jsonl").mkdir(parents=True)
    rc, _, err, _ = enroll_otp(env)
    assert rc == 4, err
    credentials = env[1] / "credentials.toml"
    assert not credentials.exists() or "totp_secret" not in credentials.read_text()


def test_enrollment_record_names_the_os_user(env):
    import getpass
    import json

    assert enroll_otp(env)[0] == 0
    records = [json.loads(line) for line in (env[1] / "audit.jsonl").read_text().splitlines()]
    enrolled = next(r for r in records if r["event"] == "enroll.otp")
    assert enrolled["operator"] == "alice" and enrolled["os_user"] == getpass.getuser()
