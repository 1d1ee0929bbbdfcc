"""FIDO2 end to end: the software authenticator through the real fido2 client and server classes."""

import threading

import pytest
from fido2.client import Fido2Client

from opsgate.console.errors import StepUpDenied
from opsgate.console.catalog.policy import Requirement, satisfies
from opsgate.console.stepup.securitykey import (
    CloneSuspected,
    KeyAccepted,
    KeyRejected,
    NoSecurityKey,
    SecurityKey,
    SecurityKeyError,
    TouchCancelled,
    TouchTimeout,
    counter_ok,
)
from opsgate.console.demo.softkey import SoftKey
from tests.helpers.stepup_fixtures import AuditLog, ScriptedPrompter, make_stepup, request


@pytest.fixture
def softkey():
    return SoftKey()


@pytest.fixture
def key(softkey):
    return SecurityKey("opsgate.local", lambda: softkey, timeout=5)


@pytest.fixture
def cred(key):
    return key.register("alice", "yubi", [])


def test_softkey_speaks_ctap2_to_the_real_client(softkey):
    from fido2.client import DefaultClientDataCollector

    client = Fido2Client(softkey, DefaultClientDataCollector("https://opsgate.local"))
    assert "FIDO_2_0" in client.info.versions


def test_enroll_then_verify(key, cred, softkey):
    assert cred.name == "yubi" and len(cred.credential_id) == 32
    result = key.verify([cred], b"c" * 32)
    assert isinstance(result, KeyAccepted) and result.credential_id == cred.credential_id
    assert result.sign_count > cred.sign_count
    assert softkey.touches == 1


def test_wrong_credential_is_refused(key, softkey):
    other = SecurityKey("opsgate.local", lambda: SoftKey(), timeout=5).register("alice", "other", [])
    with pytest.raises(SecurityKeyError, match="holds no credential"):
        key.verify([other], b"c" * 32)


def test_tampered_signature(key, cred, softkey):
    softkey.sign_wrongly = True
    assert key.verify([cred], b"c" * 32) == KeyRejected("Invalid signature.")


def test_user_presence_missing(key, cred, softkey):
    softkey.omit_user_presence = True
    assert key.verify([cred], b"c" * 32) == KeyRejected("User Present flag not set.")


def test_replayed_counter_is_a_clone_signal(key, cred, softkey):
    first = key.verify([cred], b"c" * 32)
    cred.sign_count = first.sign_count
    softkey.replay_counter = True
    assert key.verify([cred], b"d" * 32) == CloneSuspected(cred.credential_id, first.sign_count, first.sign_count)


def test_counter_rule():
    assert counter_ok(0, 0)  # a key that does not count
    assert counter_ok(5, 6) and counter_ok(0, 1)
    assert not counter_ok(5, 5) and not counter_ok(5, 4) and not counter_ok(5, 0)


def test_another_relying_party_is_refused(cred, softkey):
    elsewhere = SecurityKey("evil.example", lambda: softkey, timeout=5)
    with pytest.raises(SecurityKeyError, match="holds no credential"):
        elsewhere.verify([cred], b"c" * 32)


def test_user_verification_required_needs_a_key_that_can(key, cred):
    with pytest.raises(SecurityKeyError, match="user verification"):
        key.verify([cred], b"c" * 32, user_verification=True)
    uv = SoftKey(user_verification=True)
    uvkey = SecurityKey("opsgate.local", lambda: uv, timeout=5)
    c = uvkey.register("alice", "bio", [])
    assert uvkey.verify([c], b"c" * 32, user_verification=True).user_verified


def test_timeout_and_cancel(key, cred, softkey):
    softkey.never_touched = True
    key.timeout = 0.3
    with pytest.raises(TouchTimeout):
        key.verify([cred], b"c" * 32)
    key.timeout = 10
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(TouchCancelled):
        key.verify([cred], b"c" * 32, cancel=cancel)


def test_no_key_present(monkeypatch):
    from fido2.hid import CtapHidDevice

    monkeypatch.setattr(CtapHidDevice, "list_devices", classmethod(lambda cls: iter(())))
    with pytest.raises(NoSecurityKey, match="no security key found"):
        SecurityKey("opsgate.local").verify([], b"c" * 32)


def test_softkey_file_survives_reload(tmp_path):
    path = tmp_path / "softkey.json"
    k1 = SoftKey(path)
    cred = SecurityKey("opsgate.local", lambda: k1).register("alice", "k", [])
    assert (path.stat().st_mode & 0o777) == 0o600
    k2 = SoftKey(path)
    assert isinstance(SecurityKey("opsgate.local", lambda: k2).verify([cred], b"c" * 32), KeyAccepted)


# Through StepUp: the challenge is the request digest ------------------------------------------

FIDO = Requirement("fido2", 0)


def enrolled(tmp_path, softkey, operator="alice"):
    stepup = make_stepup(tmp_path, key=softkey)
    stepup.enroll_fido2(operator, f"{operator}-key", ScriptedPrompter())
    return stepup


def test_stepup_fido2_end_to_end_returns_the_digest(tmp_path, softkey):
    stepup = enrolled(tmp_path, softkey)
    audit = AuditLog()
    req = request()
    outcome = stepup.ensure("alice", FIDO, req, ScriptedPrompter(), audit)
    assert outcome.fresh and outcome.grant.factor == "fido2"
    assert outcome.digest == req.digest().hex()
    assert audit[-1][0] == "stepup.success" and audit[-1][1]["digest"] == req.digest().hex()
    stored = stepup.store.operator("alice").fido2[0].sign_count
    assert stored == softkey.counter  # the counter is kept for the clone check


def test_assertion_for_request_a_is_refused_for_request_b(tmp_path, softkey):
    """Capture a real assertion over A's digest, then present it where B's challenge is expected."""
    stepup = enrolled(tmp_path, softkey)
    key = stepup.key
    creds = stepup.store.operator("alice").fido2
    a, b = request(targets=("db-1",)), request(targets=("db-2",))
    assert a.digest() != b.digest()
    from fido2.webauthn import AttestedCredentialData

    attested = [AttestedCredentialData(c.credential_data) for c in creds]
    options_a, _ = key.server.authenticate_begin(attested, challenge=a.digest())
    response_a = key._client().get_assertion(options_a.public_key).get_response(0)
    _, state_b = key.server.authenticate_begin(attested, challenge=b.digest())
    with pytest.raises(ValueError, match="Wrong challenge"):
        key.server.authenticate_complete(state_b, attested, response_a)


def test_digest_binds_every_field():
    base = request()
    variants = [
        request(action="other"), request(command="sudo systemctl restart haproxy"),
        request(targets=("db-1",)), request(targets=("db-1", "db-3")), request(nonce=b"m" * 16),
    ]
    assert len({base.digest(), *(v.digest() for v in variants)}) == 6
    assert request(targets=("db-2", "db-1")).digest() == base.digest()  # sorted
    # Length-prefixed: moving bytes between fields changes the digest.
    assert request(action="ab", command="c").digest() != request(action="a", command="bc").digest()


@pytest.mark.parametrize("knob,event", [("sign_wrongly", "stepup.failure"),
                                        ("omit_user_presence", "stepup.failure"),
                                        ("replay_counter", "stepup.clone_suspected")])
def test_stepup_refuses_and_audits(tmp_path, softkey, knob, event):
    stepup = enrolled(tmp_path, softkey)
    stepup.ensure("alice", FIDO, request(nonce=b"1" * 16), ScriptedPrompter(), AuditLog())
    setattr(softkey, knob, True)
    audit = AuditLog()
    with pytest.raises(StepUpDenied) as info:
        stepup.ensure("alice", FIDO, request(nonce=b"2" * 16), ScriptedPrompter(), audit)
    assert audit.events()[-1] == event
    assert "\n" not in str(info.value)
    if knob == "replay_counter":
        assert "possibly cloned" in str(info.value)


def test_cancel_from_the_front_end(tmp_path, softkey):
    stepup = enrolled(tmp_path, softkey)
    softkey.never_touched = True
    audit = AuditLog()
    with pytest.raises(TouchCancelled):
        stepup.ensure("alice", FIDO, request(), ScriptedPrompter(cancel_touch=True), audit)
    assert audit.events() == ["stepup.failure"]


def test_user_verification_requirement_is_passed_to_the_key(tmp_path, softkey):
    stepup = enrolled(tmp_path, softkey)
    with pytest.raises(StepUpDenied, match="user verification"):
        stepup.ensure("alice", Requirement("fido2", 0, user_verification=True), request(), ScriptedPrompter(),
                      AuditLog())


def test_clone_detected_when_another_console_saw_a_higher_counter(tmp_path, softkey):
    stepup = enrolled(tmp_path, softkey)
    with stepup.store.transaction() as data:
        data["alice"].fido2[0].sign_count = 10_000  # another console already accepted a higher count
    audit = AuditLog()
    with pytest.raises(StepUpDenied, match="possibly cloned"):
        stepup.ensure("alice", FIDO, request(), ScriptedPrompter(), audit)
    assert audit.events() == ["stepup.clone_suspected"]


def test_enrolling_the_same_key_twice_is_refused(tmp_path, softkey):
    stepup = enrolled(tmp_path, softkey)
    with pytest.raises(SecurityKeyError):
        stepup.enroll_fido2("alice", "again", ScriptedPrompter())


def test_a_touch_only_grant_never_meets_a_user_verification_policy(tmp_path, softkey):
    # `opsgate auth --factor fido2` with a key that cannot verify the user: the grant says so, and a run
    # whose policy asks for user verification asks again (and is refused by this key) instead of reusing it.
    stepup = enrolled(tmp_path, softkey)
    grant = stepup.step_up_now("alice", "fido2", ScriptedPrompter(), AuditLog())
    assert grant.factor == "fido2" and grant.user_verified is False
    uv = Requirement("fido2", 900, user_verification=True)
    assert not satisfies(grant, uv, grant.auth_time)
    assert satisfies(grant, Requirement("fido2", 900), grant.auth_time)
    audit = AuditLog()
    with pytest.raises(StepUpDenied, match="user verification"):
        stepup.ensure("alice", uv, request(), ScriptedPrompter(), audit)
    assert "stepup.failure" in audit.events()


def test_a_key_that_verifies_the_user_gives_a_grant_that_meets_the_policy(tmp_path):
    softkey = SoftKey(user_verification=True)
    stepup = enrolled(tmp_path, softkey)
    uv = Requirement("fido2", 900, user_verification=True)
    outcome = stepup.ensure("alice", uv, request(), ScriptedPrompter(), AuditLog())
    assert outcome.fresh and outcome.grant.user_verified
    again = stepup.ensure("alice", uv, request(nonce=b"n" * 16), ScriptedPrompter(), AuditLog())
    assert not again.fresh  # the kept grant counts: it was user-verified


def test_a_clone_signal_locks_the_key_for_the_clone_and_the_genuine_key_alike(tmp_path, softkey):
    stepup = enrolled(tmp_path, softkey)
    stepup.ensure("alice", FIDO, request(nonce=b"1" * 16), ScriptedPrompter(), AuditLog())
    softkey.replay_counter = True
    audit = AuditLog()
    with pytest.raises(StepUpDenied, match="locked until it is enrolled again"):
        stepup.ensure("alice", FIDO, request(nonce=b"2" * 16), ScriptedPrompter(), audit)
    assert audit[-1][0] == "stepup.clone_suspected" and audit[-1][1]["locked"] is True
    softkey.replay_counter = False  # a retry, or the genuine key: still refused, and no touch is asked
    touches = softkey.touches
    audit = AuditLog()
    for nonce in (b"3" * 16, b"4" * 16):
        with pytest.raises(StepUpDenied, match="locked after a clone signal"):
            stepup.ensure("alice", FIDO, request(nonce=nonce), ScriptedPrompter(), audit)
    assert softkey.touches == touches and audit.events() == ["stepup.failure", "stepup.failure"]
    assert stepup.store.operator("alice").fido2[0].locked.startswith("clone signal")  # survives a restart
