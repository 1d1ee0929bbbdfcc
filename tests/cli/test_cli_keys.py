"""`opsgate keys list|remove` and enrolling a backup key, with two software keys "plugged in" at once
($OPSGATE_SOFTKEY=a.json:b.json), end to end through the real fido2 client and server classes."""

import json
import os
import re

import pytest

from opsgate.console.demo.softkey import SoftKey
from opsgate.console.stepup.securitykey import SOFTWARE_KEY_AAGUID
from tests.helpers.cli import clean_env, run_opsgate
from tests.helpers.run_fixtures import enroll_otp as enroll_otp_directly
from tests.helpers.run_fixtures import next_code


@pytest.fixture
def env(tmp_path):
    config = tmp_path / "opsgate.toml"
    config.write_text('[console]\noperator = "alice"\n')
    return config, tmp_path / "state", tmp_path / "a.json", tmp_path / "b.json"


def opsgate(env, *args, keys=(), stdin=""):
    config, state, *_ = env
    extra = {"OPSGATE_SOFTKEY": os.pathsep.join(str(k) for k in keys)} if keys else {}
    return run_opsgate(*args, config=config, state=state, stdin=stdin, env=clean_env(**extra))


def trail(env):
    return [json.loads(line) for line in (env[1] / "audit.jsonl").read_text().splitlines()]


def enroll_two(env):
    _, _, a, b = env
    r = opsgate(env, "enroll", "fido2", "--name", "primary", keys=[a])
    assert r.returncode == 0, r.stderr
    assert "only factor: enroll a backup key" in r.stdout
    r = opsgate(env, "enroll", "fido2", "--name", "backup", keys=[a, b])  # both plugged in
    assert r.returncode == 0, r.stderr
    return r


def test_a_backup_key_needs_a_step_up_with_the_first_and_both_are_listed(env):
    _, _, a, b = env
    r = enroll_two(env)
    assert "DEMO/TEST software keys" in r.stderr
    assert ("alice already has a factor enrolled (security key 'primary'): a backup security key is enrolled only "
            "after a step-up with a factor you already have: step up with it first, then touch the NEW key") in r.stderr
    assert "Security key 'backup' enrolled for alice" in r.stdout and SOFTWARE_KEY_AAGUID in r.stdout
    # The step-up was answered by the primary key (the only one holding alice's credential), the new
    # credential made on the other key (the primary already holds one and is not asked).
    primary, backup = SoftKey(a), SoftKey(b)
    assert primary.touches == 0 and len(primary._creds) == 1 and len(backup._creds) == 1
    records = [rec for rec in trail(env) if rec["event"] in ("enroll.fido2", "stepup.success")]
    assert [rec["event"] for rec in records] == ["enroll.fido2", "stepup.success", "enroll.fido2"]
    assert records[1]["credential"] == "primary"
    enrolled = records[2]
    assert enrolled["credential"] == "backup" and enrolled["aaguid"] == SOFTWARE_KEY_AAGUID
    assert enrolled["attestation_verified"] is True and enrolled["attestation"] == "packed self, verified"

    r = opsgate(env, "keys", "list")
    assert r.returncode == 0, r.stderr
    header, first, second = r.stdout.splitlines()
    assert header.split() == ["NAME", "CREATED", "LAST", "USED", "COUNTER", "AAGUID", "STATUS"]
    assert first.startswith("primary") and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d +\d{4}-\d\d-\d\d \d\d:\d\d", first)
    assert second.startswith("backup") and " never " in second
    assert f"{SOFTWARE_KEY_AAGUID} (opsgate software key)" in first and first.endswith("ok")
    listed = json.loads(opsgate(env, "keys", "list", "--json").stdout)
    assert [k["name"] for k in listed] == ["primary", "backup"]
    assert listed[0]["last_used"] and listed[1]["last_used"] is None and listed[0]["locked"] is None


def test_remove_a_key_with_the_other_then_the_last_needs_the_otp(env):
    config, state, a, b = env
    enroll_two(env)
    r = opsgate(env, "keys", "remove", "primary", keys=[a, b])
    assert r.returncode == 0, r.stderr
    assert "step up with another of your keys ('backup'), not this one" in r.stderr
    assert "Security key 'primary' removed for alice." in r.stdout
    removed = [rec for rec in trail(env) if rec["event"] == "keys.removed"]
    assert len(removed) == 1 and removed[0]["credential"] == "primary" and removed[0]["factor"] == "fido2"
    assert removed[0]["aaguid"] == SOFTWARE_KEY_AAGUID and removed[0]["os_user"]
    success = [rec for rec in trail(env) if rec["event"] == "stepup.success"][-1]
    assert success["credential"] == "backup"  # the key removed did not approve its own removal

    # The last key, and no OTP: refused (the last factor of all stays).
    r = opsgate(env, "keys", "remove", "backup", keys=[b])
    assert r.returncode == 3 and "it is their only factor" in r.stderr
    # With an OTP enrolled, the last key goes after an OTP step-up.
    secret = enroll_otp_directly(config, state, "alice")
    r = opsgate(env, "keys", "remove", "backup", stdin=next_code(secret) + "\n")
    assert r.returncode == 0, r.stderr
    assert "your last one: step up with your OTP" in r.stderr
    assert opsgate(env, "keys", "list").stdout.startswith("alice has no security key enrolled")


def test_remove_refuses_a_step_up_with_the_key_being_removed(env):
    _, _, a, b = env
    enroll_two(env)
    r = opsgate(env, "keys", "remove", "primary", keys=[a])  # only the key to remove is at hand
    assert r.returncode == 3 and "holds no credential" in r.stderr
    assert [k["name"] for k in json.loads(opsgate(env, "keys", "list", "--json").stdout)] == ["primary", "backup"]
    assert not [rec for rec in trail(env) if rec["event"] == "keys.removed"]


def test_an_allow_list_refuses_the_software_key_even_when_asked_for(env):
    config, state, a, _ = env
    config.write_text('[console]\noperator = "alice"\nauthenticators = ["cb69481e-8ff7-4039-93ec-0a2729a154a8"]\n')
    r = opsgate(env, "enroll", "fido2", keys=[a])
    assert r.returncode == 3
    assert f"authenticator model {SOFTWARE_KEY_AAGUID} is not allowed here" in r.stderr
    assert not (state / "credentials.toml").exists() or "fido2 = []" in (state / "credentials.toml").read_text()


def test_keys_are_managed_at_the_gate_in_gate_mode(env, tmp_path):
    config = env[0]
    config.write_text(f'[console]\noperator = "alice"\n\n[gate]\nsocket = "{tmp_path / "gate.sock"}"\n')
    for args in (("keys", "list"), ("keys", "remove", "primary")):
        r = opsgate(env, *args)
        assert r.returncode == 2 and "managed at the gate" in r.stderr, r.stderr
