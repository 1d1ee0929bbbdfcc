"""StepUp.ensure: grants, OTP prompting, denials, confirmation, approvals (two-person rule), audit fields."""

import json
import os

import pytest

from opsgate.console.errors import CredentialsError, StepUpDenied
from opsgate.console.catalog.policy import Grant, Requirement
from opsgate.console.demo.softkey import SoftKey
from opsgate.console.stepup.verifier import confirmation_matches, confirmation_text
from tests.helpers.stepup_fixtures import AuditLog, FakeClock, ScriptedPrompter, code, enroll_totp, make_stepup, request

OTP15 = Requirement("otp", 900)
OTP_EVERY = Requirement("otp", 0)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def alice(tmp_path):
    return enroll_totp(tmp_path, "alice")


def test_no_step_up_for_factor_none(tmp_path, clock):
    prompter = ScriptedPrompter()
    out = make_stepup(tmp_path, clock).ensure("alice", Requirement("none"), request(), prompter, AuditLog())
    assert out.grant is None and not out.fresh and prompter.prompts == []


def test_otp_step_up_then_grant_reused_within_max_age(tmp_path, clock, alice):
    stepup = make_stepup(tmp_path, clock)
    audit = AuditLog()
    out = stepup.ensure("alice", OTP15, request(), ScriptedPrompter([code(alice, clock)]), audit)
    assert out.fresh and out.grant == Grant("alice", "otp", clock.now) and out.digest is None
    assert audit == [("stepup.success", {"operator": "alice", "factor": "otp", "purpose": "step-up"})]
    clock.now += 600
    silent = ScriptedPrompter()
    again = stepup.ensure("alice", OTP15, request(nonce=b"x" * 16), silent, audit)
    assert not again.fresh and again.grant == out.grant and silent.prompts == []
    clock.now += 301  # past max_age
    with pytest.raises(StepUpDenied, match="cancelled by alice"):
        stepup.ensure("alice", OTP15, request(), ScriptedPrompter(), audit)


def test_grant_persists_for_the_cli_but_not_without_persist(tmp_path, clock, alice):
    make_stepup(tmp_path, clock).ensure("alice", OTP15, request(), ScriptedPrompter([code(alice, clock)]), AuditLog())
    assert make_stepup(tmp_path, clock).grant_for("alice").factor == "otp"
    assert make_stepup(tmp_path, clock).grant_for("bob") is None
    grants = tmp_path / "grants.json"
    assert (grants.stat().st_mode & 0o777) == 0o600
    other = tmp_path / "other"
    other.mkdir()
    enroll_totp(other, "alice", alice)
    mem = make_stepup(other, clock, persist=False)
    mem.ensure("alice", OTP15, request(), ScriptedPrompter([code(alice, clock)]), AuditLog())
    assert mem.grant_for("alice") is not None and not (other / "grants.json").exists()


def test_grant_is_bound_to_its_operator(tmp_path, clock, alice):
    make_stepup(tmp_path, clock).ensure("alice", OTP15, request(), ScriptedPrompter([code(alice, clock)]), AuditLog())
    path = tmp_path / "grants.json"
    doc = json.loads(path.read_text())
    doc["bob"] = dict(doc["alice"])  # alice's grant copied under bob's name
    path.write_text(json.dumps(doc))
    assert make_stepup(tmp_path, clock).grant_for("bob") is None


def test_world_readable_grants_file_is_refused(tmp_path, clock, alice):
    make_stepup(tmp_path, clock).ensure("alice", OTP15, request(), ScriptedPrompter([code(alice, clock)]), AuditLog())
    os.chmod(tmp_path / "grants.json", 0o644)
    with pytest.raises(CredentialsError, match="grants file"):
        make_stepup(tmp_path, clock).grant_for("alice")


def test_every_run_asks_each_time(tmp_path, clock, alice):
    stepup = make_stepup(tmp_path, clock)
    stepup.ensure("alice", OTP_EVERY, request(), ScriptedPrompter([code(alice, clock)]), AuditLog())
    clock.now += 1
    with pytest.raises(StepUpDenied):
        stepup.ensure("alice", OTP_EVERY, request(nonce=b"2" * 16), ScriptedPrompter(), AuditLog())
    p = ScriptedPrompter([code(alice, clock, 1)])
    assert stepup.ensure("alice", OTP_EVERY, request(nonce=b"2" * 16), p, AuditLog()).fresh


def test_auth_grant_does_not_count_for_every_run(tmp_path, clock, alice):
    stepup = make_stepup(tmp_path, clock)
    stepup.step_up_now("alice", None, ScriptedPrompter([code(alice, clock)]), AuditLog())
    with pytest.raises(StepUpDenied):  # asked again: an every-run step-up is for this request only
        stepup.ensure("alice", OTP_EVERY, request(), ScriptedPrompter(), AuditLog())
    assert stepup.ensure("alice", OTP15, request(), ScriptedPrompter(), AuditLog()).fresh is False


def test_wrong_code_then_right_code_with_prompt_errors(tmp_path, clock, alice):
    audit = AuditLog()
    p = ScriptedPrompter(["000000" if code(alice, clock) != "000000" else "111111", "12ab", code(alice, clock)])
    assert make_stepup(tmp_path, clock).ensure("alice", OTP15, request(), p, audit).fresh
    codes = [pr for kind, pr in p.prompts if kind == "code"]
    assert [c.error for c in codes] == [None, "wrong code, 4 attempts left", "not a code: a code is 6 digits"]
    assert codes[0].attempts_left == 5 and codes[1].attempts_left == 4
    assert codes[0].summary == "restart-service on db-1, db-2"
    assert audit.events() == ["stepup.failure", "stepup.failure", "stepup.success"]
    assert audit[0][1] == {"operator": "alice", "factor": "otp", "purpose": "step-up", "reason": "wrong code",
                           "attempts_left": 4}


def test_audit_fields_never_carry_codes_or_secrets(tmp_path, clock, alice):
    audit = AuditLog()
    c = code(alice, clock)
    stepup = make_stepup(tmp_path, clock)
    stepup.ensure("alice", OTP_EVERY, request(), ScriptedPrompter(["999999", c]), audit)
    with pytest.raises(StepUpDenied):
        stepup.ensure("alice", OTP_EVERY, request(nonce=b"2" * 16), ScriptedPrompter([c]), audit)
    blob = json.dumps(audit)
    assert c not in blob and "999999" not in blob and alice not in blob
    assert "stepup.replay" in audit.events()


def test_replayed_code_denies_with_reason(tmp_path, clock, alice):
    c = code(alice, clock)
    stepup = make_stepup(tmp_path, clock)
    stepup.ensure("alice", OTP_EVERY, request(), ScriptedPrompter([c]), AuditLog())
    with pytest.raises(StepUpDenied, match="code already used"):
        stepup.ensure("alice", OTP_EVERY, request(nonce=b"2" * 16), ScriptedPrompter([c]), AuditLog())


def test_lockout_denies_and_is_audited(tmp_path, clock, alice):
    audit = AuditLog()
    p = ScriptedPrompter(["000001", "000002", "000003", "000004", "000005"])
    with pytest.raises(StepUpDenied, match="locked out of OTP for 30 s"):
        make_stepup(tmp_path, clock).ensure("alice", OTP15, request(), p, audit)
    assert audit.events()[-1] == "stepup.lockout"
    # A restarted console still refuses, without asking.
    audit2, p2 = AuditLog(), ScriptedPrompter([code(alice, clock)])
    with pytest.raises(StepUpDenied, match="locked out"):
        make_stepup(tmp_path, clock).ensure("alice", OTP15, request(), p2, audit2)
    assert p2.prompts == [] and audit2.events() == ["stepup.lockout"]


def test_no_factor_enrolled_says_how_to_enroll(tmp_path, clock):
    with pytest.raises(StepUpDenied, match="run `opsgate enroll otp`"):
        make_stepup(tmp_path, clock).ensure("carol", OTP15, request(), ScriptedPrompter(), AuditLog())


def test_otp_does_not_meet_a_fido2_requirement(tmp_path, clock, alice):
    with pytest.raises(StepUpDenied, match="run `opsgate enroll fido2`"):
        make_stepup(tmp_path, clock).ensure("alice", Requirement("fido2", 0), request(), ScriptedPrompter(),
                                            AuditLog())


def test_fido2_meets_an_otp_requirement(tmp_path, clock):
    key = SoftKey()
    stepup = make_stepup(tmp_path, clock, key=key)
    stepup.enroll_fido2("dave", "k", ScriptedPrompter())
    out = stepup.ensure("dave", OTP15, request(), ScriptedPrompter(), AuditLog())
    assert out.grant.factor == "fido2" and out.digest


def test_step_up_now_for_a_factor_not_enrolled(tmp_path, clock, alice):
    with pytest.raises(StepUpDenied, match="no security key enrolled: run `opsgate enroll fido2`"):
        make_stepup(tmp_path, clock).step_up_now("alice", "fido2", ScriptedPrompter(), AuditLog())


def test_corrupted_credentials_deny(tmp_path, clock):
    (tmp_path / "credentials.toml").write_text("not = [toml")
    (tmp_path / "credentials.toml").chmod(0o600)
    with pytest.raises(CredentialsError, match="corrupted"):
        make_stepup(tmp_path, clock).ensure("alice", OTP15, request(), ScriptedPrompter(), AuditLog())


# Confirmation -------------------------------------------------------------------------------

def test_confirmation_rules():
    # Short and meaningful: a single target's name, the number of several targets, a runbook's name.
    assert confirmation_text(request(targets=("db-1",))) == "db-1"
    assert confirmation_text(request(targets=("db-1", "db-2"))) == "2"
    assert confirmation_text(request(action="runbook:db-failover")) == "db-failover"
    assert confirmation_matches(" db-1 ", request(targets=("db-1",)))
    assert confirmation_matches("2", request(targets=("db-1", "db-2")))
    assert not confirmation_matches("db-1", request(targets=("db-1", "db-2")))
    assert not confirmation_matches("DB-1", request(targets=("db-1",)))
    assert not confirmation_matches("db-failover2", request(action="runbook:db-failover"))


def test_confirmation_comes_first_and_the_grant_only_after_the_whole_step_up(tmp_path, clock, alice):
    req = Requirement("otp", 900, confirm=True)
    stepup = make_stepup(tmp_path, clock)
    prompter = ScriptedPrompter([code(alice, clock)], ["db-1"])
    with pytest.raises(StepUpDenied, match="confirmation did not match: type '2'"):
        stepup.ensure("alice", req, request(), prompter, AuditLog())
    assert prompter.codes == [code(alice, clock)]  # the code was never asked: the run was not confirmed
    with pytest.raises(StepUpDenied, match="confirmation cancelled"):
        stepup.ensure("alice", req, request(), ScriptedPrompter(), AuditLog())
    assert stepup.grant_for("alice") is None  # nothing half done leaves a grant behind
    assert stepup.ensure("alice", req, request(), ScriptedPrompter([code(alice, clock)], ["2"]), AuditLog())
    assert stepup.grant_for("alice") is not None


# Approvals ----------------------------------------------------------------------------------

APPROVAL = Requirement("otp", 900, approvals=1)


def test_approval_by_another_operator(tmp_path, clock, alice):
    bob = enroll_totp(tmp_path, "bob")
    enroll_totp(tmp_path, "carol")
    audit = AuditLog()
    p = ScriptedPrompter([code(alice, clock), code(bob, clock)], approvers=["bob"])
    out = make_stepup(tmp_path, clock).ensure("alice", APPROVAL, request(), p, audit)
    assert out.approvals == ("bob",)
    assert p.candidates == ["bob", "carol"]
    assert audit.events() == ["stepup.success", "stepup.success", "approval.granted"]
    assert audit[1][1]["operator"] == "bob" and audit[1][1]["purpose"] == "approval"
    assert audit[2][1] == {"operator": "bob", "requester": "alice", "factor": "otp"}
    approval_prompt = [pr for kind, pr in p.prompts if kind == "code"][1]
    assert approval_prompt.operator == "bob" and "requested by alice" in approval_prompt.summary


def test_self_approval_is_refused(tmp_path, clock, alice):
    enroll_totp(tmp_path, "bob")
    audit = AuditLog()
    p = ScriptedPrompter([code(alice, clock)], approvers=["alice"])
    with pytest.raises(StepUpDenied, match="cannot approve their own request"):
        make_stepup(tmp_path, clock).ensure("alice", APPROVAL, request(), p, audit)
    assert audit[-1] == ("approval.denied", {"operator": "alice", "requester": "alice",
                                             "reason": "an operator cannot approve their own request"})


def test_same_approver_does_not_count_twice(tmp_path, clock, alice):
    bob = enroll_totp(tmp_path, "bob")
    enroll_totp(tmp_path, "carol")
    p = ScriptedPrompter([code(alice, clock), code(bob, clock)], approvers=["bob", "bob"])
    with pytest.raises(StepUpDenied, match="bob already approved"):
        make_stepup(tmp_path, clock).ensure("alice", Requirement("otp", 900, approvals=2), request(), p, AuditLog())


def test_two_approvals(tmp_path, clock, alice):
    bob, carol = enroll_totp(tmp_path, "bob"), enroll_totp(tmp_path, "carol")
    p = ScriptedPrompter([code(alice, clock), code(bob, clock), code(carol, clock)], approvers=["bob", "carol"])
    out = make_stepup(tmp_path, clock).ensure("alice", Requirement("otp", 900, approvals=2), request(), p, AuditLog())
    assert out.approvals == ("bob", "carol")


def test_approver_failing_their_factor_denies(tmp_path, clock, alice):
    enroll_totp(tmp_path, "bob")
    audit = AuditLog()
    p = ScriptedPrompter([code(alice, clock), code(alice, clock, 1)], approvers=["bob"])  # alice's code for bob
    with pytest.raises(StepUpDenied, match="approval by bob failed"):
        make_stepup(tmp_path, clock).ensure("alice", APPROVAL, request(), p, audit)
    assert audit.events()[-2:] == ["stepup.failure", "approval.denied"]
    assert audit[-2][1]["operator"] == "bob"


def test_no_other_operator_enrolled(tmp_path, clock, alice):
    audit = AuditLog()
    with pytest.raises(StepUpDenied, match="needs 1 approval by another operator"):
        make_stepup(tmp_path, clock).ensure("alice", APPROVAL, request(), ScriptedPrompter([code(alice, clock)]),
                                            audit)
    assert audit.events()[-1] == "approval.denied"


def test_unknown_approver_and_cancel(tmp_path, clock, alice):
    enroll_totp(tmp_path, "bob")
    stepup = make_stepup(tmp_path, clock)
    with pytest.raises(StepUpDenied, match="mallory is not an operator"):
        stepup.ensure("alice", APPROVAL, request(), ScriptedPrompter([code(alice, clock)], approvers=["mallory"]),
                      AuditLog())
    # the refused approval left no grant: the factor is asked again (the next code), then the approver
    with pytest.raises(StepUpDenied, match="approval cancelled: 0 of 1"):
        stepup.ensure("alice", APPROVAL, request(), ScriptedPrompter([code(alice, clock, 1)]), AuditLog())


def test_fido2_approval_uses_the_request_digest(tmp_path, clock):
    key = SoftKey()
    stepup = make_stepup(tmp_path, clock, key=key)
    for who in ("alice", "bob"):
        stepup.enroll_fido2(who, f"{who}-key", ScriptedPrompter())
    audit = AuditLog()
    req = request()
    out = stepup.ensure("alice", Requirement("fido2", 0, approvals=1), req, ScriptedPrompter(approvers=["bob"]), audit)
    assert out.approvals == ("bob",)
    assert audit[-1] == ("approval.granted", {"operator": "bob", "requester": "alice", "factor": "fido2",
                                              "digest": req.digest().hex()})
