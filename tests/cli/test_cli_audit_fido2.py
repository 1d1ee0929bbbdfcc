"""FIDO2 approvals provable afterwards: `opsgate audit verify` re-verifies every recorded assertion offline
against the public key its enroll.fido2 record holds (console/audit/assertions.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from opsgate.console.audit.trail import RESERVED, AuditTrail
from opsgate.console.paths import AUDIT_FILE
from tests.helpers.cli import clean_env, run_opsgate


def opsgate(config: Path, state: Path, *args: str, softkey: Path | None = None):
    env = clean_env(**({"OPSGATE_SOFTKEY": str(softkey)} if softkey else {}))
    return run_opsgate(*args, config=config, state=state, env=env)


def enrolled_and_approved(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "opsgate.toml"
    config.write_text('[console]\noperator = "alice"\n')
    state, softkey = tmp_path / "state", tmp_path / "softkey.json"
    assert opsgate(config, state, "enroll", "fido2", "--name", "yubi", softkey=softkey).returncode == 0
    assert opsgate(config, state, "auth", "--factor", "fido2", softkey=softkey).returncode == 0
    return config, state


def rewrite(state: Path, change) -> None:
    """Rebuild the whole chain after ``change`` edits the records (what someone who can write the file can do)."""
    path = state / AUDIT_FILE
    records = [json.loads(line) for line in path.read_text().splitlines()]
    change(records)
    path.unlink()
    trail = AuditTrail(path)
    for r in records:
        trail.append(r["event"], operator=r["operator"], run=r["run"],
                     **{k: v for k, v in r.items() if k not in RESERVED})


def test_the_recorded_assertion_and_public_key_verify_offline(tmp_path):
    config, state = enrolled_and_approved(tmp_path)
    records = [json.loads(line) for line in (state / AUDIT_FILE).read_text().splitlines()]
    enroll = next(r for r in records if r["event"] == "enroll.fido2")
    success = next(r for r in records if r["event"] == "stepup.success" and r["factor"] == "fido2")
    assert enroll["public_key"] and success["assertion"]["credential_id"] == enroll["credential_id"]
    assertion = success["assertion"]
    assert set(assertion) >= {"authenticator_data", "client_data_json", "signature", "nonce", "rp_id"}
    assert not [k for k in (*success, *assertion) if "pin" in k.lower()]  # never a PIN
    result = opsgate(config, state, "audit", "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "re-verified 1 FIDO2 approval" in result.stderr


def test_the_plan_digest_must_be_what_the_key_signed(tmp_path):
    config, state = enrolled_and_approved(tmp_path)
    digest = {}

    def into_a_run(fido2_digest):
        def change(records):
            r = next(r for r in records if r["event"] == "stepup.success" and r["factor"] == "fido2")
            r["run"] = "20261128-145001-a1b2c3"
            digest["signed"] = r["digest"]
            records.append({"event": "action.start", "operator": "alice", "run": r["run"], "action": "failover",
                            "fido2_digest": fido2_digest or r["digest"]})
        return change

    rewrite(state, into_a_run(None))
    ok = opsgate(config, state, "audit", "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    rewrite(state, into_a_run("0" * 64))
    bad = opsgate(config, state, "audit", "verify")
    assert bad.returncode == 1
    assert "(action.start): the plan's fido2_digest is not a digest this run's security key verifiably signed" \
        in bad.stdout


def test_a_flipped_byte_in_a_stored_signature_fails_naming_the_record(tmp_path):
    config, state = enrolled_and_approved(tmp_path)

    def flip(records):
        r = next(r for r in records if r["event"] == "stepup.success" and r["factor"] == "fido2")
        sig = bytearray(base64.b64decode(r["assertion"]["signature"]))
        sig[len(sig) // 2] ^= 0x01
        r["assertion"]["signature"] = base64.b64encode(bytes(sig)).decode()

    rewrite(state, flip)
    result = opsgate(config, state, "audit", "verify")
    assert result.returncode == 1
    seq = next(json.loads(line)["seq"] for line in (state / AUDIT_FILE).read_text().splitlines()
               if '"assertion":' in line)
    assert (f"FAIL: seq {seq} (stepup.success of alice): FIDO2 approval does not verify: the signature does not "
            f"verify against the enrolled public key") in result.stdout


def test_a_critical_run_approved_with_the_key_is_re_verified_with_its_plan_digest(tmp_path, sshd):
    from tests.helpers.run_fixtures import write_config

    config, state = write_config(tmp_path, sshd), tmp_path / "state"
    softkey = tmp_path / "softkey.json"
    assert opsgate(config, state, "enroll", "fido2", "--name", "test-key", softkey=softkey).returncode == 0
    env = clean_env(OPSGATE_SOFTKEY=str(softkey))
    ok = run_opsgate("run", "failover", "--yes", config=config, state=state, stdin="t1\n", env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    result = opsgate(config, state, "audit", "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "re-verified 1 FIDO2 approval against the enrolled keys; 0 do not verify" in result.stderr
