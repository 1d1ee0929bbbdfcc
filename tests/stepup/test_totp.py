"""TOTP: RFC 6238 vectors, oathtool interop, ±1 step, replay (RFC 6238 §5.2), lockout that persists."""

import base64
import hashlib
import shutil
import subprocess
import time

import pytest

from opsgate.console.stepup.credentials import CredentialStore
from opsgate.console.stepup.totp import (
    TotpAccepted,
    TotpLockedOut,
    TotpMalformed,
    TotpNotEnrolled,
    TotpRejected,
    TotpReplay,
    TotpVerifier,
    code_at_step,
    lockout_seconds,
    new_secret,
    provisioning_uri,
)
from tests.helpers.stepup_fixtures import FakeClock, code, enroll_totp

RFC_SEED = base64.b32encode(b"12345678901234567890").decode()


@pytest.mark.parametrize("unix_time,expected", [
    (59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"),
    (1234567890, "89005924"), (2000000000, "69279037"), (20000000000, "65353130"),
])
def test_rfc6238_appendix_b_sha1_vectors(unix_time, expected):
    assert code_at_step(RFC_SEED, unix_time // 30, digits=8, digest=hashlib.sha1) == expected


def test_secret_is_160_bits_and_uri_names_the_issuer():
    secret = new_secret()
    assert len(base64.b32decode(secret)) == 20
    assert new_secret() != secret
    uri = provisioning_uri(secret, "alice")
    assert uri.startswith("otpauth://totp/opsgate:alice?") and "issuer=opsgate" in uri and secret in uri


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def verifier(tmp_path, clock):
    return TotpVerifier(CredentialStore(tmp_path), clock)


def test_current_and_adjacent_steps_accepted_but_not_two_away(tmp_path, verifier, clock):
    secret = enroll_totp(tmp_path, "alice")
    assert isinstance(verifier.verify("alice", code(secret, clock, -2)), TotpRejected)
    assert isinstance(verifier.verify("alice", code(secret, clock, 2)), TotpRejected)
    assert isinstance(verifier.verify("alice", code(secret, clock, -1)), TotpAccepted)
    assert isinstance(verifier.verify("alice", code(secret, clock, 0)), TotpAccepted)
    assert isinstance(verifier.verify("alice", code(secret, clock, 1)), TotpAccepted)


def test_replay_and_earlier_steps_refused(tmp_path, verifier, clock):
    secret = enroll_totp(tmp_path, "alice")
    assert isinstance(verifier.verify("alice", code(secret, clock, 1)), TotpAccepted)
    # The same code, and a valid code of an earlier step, are both at or before the last accepted step.
    assert isinstance(verifier.verify("alice", code(secret, clock, 1)), TotpReplay)
    assert isinstance(verifier.verify("alice", code(secret, clock, 0)), TotpReplay)
    clock.now += 30
    assert isinstance(verifier.verify("alice", code(secret, clock, 0)), TotpReplay)  # still step+1
    clock.now += 30
    assert isinstance(verifier.verify("alice", code(secret, clock, 0)), TotpAccepted)


def test_replay_state_survives_a_restart(tmp_path, clock):
    secret = enroll_totp(tmp_path, "alice")
    c = code(secret, clock)
    assert isinstance(TotpVerifier(CredentialStore(tmp_path), clock).verify("alice", c), TotpAccepted)
    assert isinstance(TotpVerifier(CredentialStore(tmp_path), clock).verify("alice", c), TotpReplay)


@pytest.mark.parametrize("bad", ["", "12345", "1234567", "12a456", "abcdef", "１２３４５６", "12345\x00"])
def test_malformed_codes_are_not_counted(tmp_path, verifier, bad):
    enroll_totp(tmp_path, "alice")
    assert isinstance(verifier.verify("alice", bad), TotpMalformed)
    assert CredentialStore(tmp_path).operator("alice").totp_failures == 0


def test_spaces_inside_a_code_are_tolerated(tmp_path, verifier, clock):
    secret = enroll_totp(tmp_path, "alice")
    c = code(secret, clock)
    assert isinstance(verifier.verify("alice", f" {c[:3]} {c[3:]}\n"), TotpAccepted)


def test_code_from_another_operators_secret_is_refused(tmp_path, verifier, clock):
    enroll_totp(tmp_path, "alice")
    bob = enroll_totp(tmp_path, "bob")
    assert isinstance(verifier.verify("alice", code(bob, clock)), TotpRejected)


def test_not_enrolled(verifier):
    assert isinstance(verifier.verify("carol", "123456"), TotpNotEnrolled)


def test_lockout_after_five_failures_doubles_up_to_15_minutes(tmp_path, verifier, clock):
    secret = enroll_totp(tmp_path, "alice")
    wrong = "000000" if code(secret, clock) != "000000" else "111111"
    left = [verifier.verify("alice", wrong) for _ in range(4)]
    assert [r.attempts_left for r in left] == [4, 3, 2, 1]
    locked = verifier.verify("alice", wrong)
    assert locked == TotpLockedOut(clock.now + 30, 5)
    # While locked, even the right code is refused and does not count.
    assert isinstance(verifier.verify("alice", code(secret, clock)), TotpLockedOut)
    # State survives a restart (a new verifier on the same store).
    again = TotpVerifier(CredentialStore(tmp_path), clock)
    assert again.locked_until("alice") == clock.now + 30
    durations = []
    for _ in range(7):
        clock.now = again.locked_until("alice") + 0.01
        r = again.verify("alice", wrong)
        durations.append(r.locked_until - clock.now)
    assert durations == pytest.approx([60, 120, 240, 480, 900, 900, 900])
    assert [lockout_seconds(n) for n in (4, 5, 6, 9, 10, 100)] == [0, 30, 60, 480, 900, 900]


def test_success_resets_the_failure_count(tmp_path, verifier, clock):
    secret = enroll_totp(tmp_path, "alice")
    wrong = "000000" if code(secret, clock) != "000000" else "111111"
    for _ in range(4):
        verifier.verify("alice", wrong)
    assert isinstance(verifier.verify("alice", code(secret, clock)), TotpAccepted)
    assert verifier.verify("alice", wrong) == TotpRejected(4)


def test_replays_count_towards_lockout(tmp_path, verifier, clock):
    secret = enroll_totp(tmp_path, "alice")
    c = code(secret, clock)
    verifier.verify("alice", c)
    results = [verifier.verify("alice", c) for _ in range(5)]
    assert isinstance(results[0], TotpReplay) and isinstance(results[-1], TotpLockedOut)


@pytest.mark.system
@pytest.mark.skipif(not shutil.which("oathtool"), reason="oathtool not installed")
def test_oathtool_code_accepted_once_then_refused(tmp_path):
    verifier = TotpVerifier(CredentialStore(tmp_path))  # real clock: oathtool uses it too
    secret = enroll_totp(tmp_path, "alice")
    if time.time() % 30 > 28:
        time.sleep(2.5)  # not across a step boundary between oathtool and the check
    oath = subprocess.run(["oathtool", "--totp", "-b", secret], capture_output=True, text=True, check=True)
    c = oath.stdout.strip()
    assert isinstance(verifier.verify("alice", c), TotpAccepted)
    assert isinstance(verifier.verify("alice", c), TotpReplay)
