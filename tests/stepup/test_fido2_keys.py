"""Several security keys: the first touched answers, key management, and the attestation allow-list.

Every key here is a SoftKey speaking real CTAP2 to the real fido2 client and server classes; several keys
"plugged in" are a device factory that returns a list.
"""

import datetime
import threading
import time
import tomllib

import pytest
import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from opsgate.console.catalog.model import Settings
from opsgate.console.catalog.policy import Requirement
from opsgate.console.demo.softkey import SoftKey
from opsgate.console.errors import StepUpDenied
from opsgate.console.stepup.credentials import CredentialStore
from opsgate.console.stepup.securitykey import (
    SOFTWARE_KEY_AAGUID,
    AttestationPolicy,
    AuthenticatorRefused,
    KeyAccepted,
    SecurityKey,
    TouchCancelled,
)
from opsgate.console.stepup.verifier import StepUp
from tests.helpers.stepup_fixtures import AuditLog, FakeClock, ScriptedPrompter, code, enroll_totp, make_stepup, request

FIDO = Requirement("fido2", 0)
PIN = "Quokka-42"
YUBIKEY_5 = "cb69481e-8ff7-4039-93ec-0a2729a154a8"  # the YubiKey 5 series' AAGUID, as a model an admin would list


def stepup_on(tmp_path, plugged: list, clock=None) -> StepUp:
    """A StepUp whose "USB" holds the keys in ``plugged`` (a list the test changes as keys come and go)."""
    return make_stepup(tmp_path, clock, key=plugged, touch_timeout=5)


def creds_of(stepup, operator="alice"):
    return {c.name: c for c in stepup.store.operator(operator).fido2}


def holds(softkey: SoftKey, cred) -> bool:
    return cred.credential_id in softkey._creds


# Several keys plugged in ------------------------------------------------------------------------------


def test_the_first_key_touched_answers_and_the_other_is_cancelled(tmp_path):
    a, b = SoftKey(), SoftKey()
    plugged = [a, b]
    stepup = stepup_on(tmp_path, plugged)
    b.never_touched = True  # the request goes to both; only a is touched
    stepup.enroll_fido2("alice", "primary", ScriptedPrompter())
    assert holds(a, creds_of(stepup)["primary"]) and not b._creds
    b.never_touched = False
    a.never_touched = True  # a would wait until the timeout if it were asked: it holds alice's key, so it is not
    stepup.enroll_fido2("alice", "backup", ScriptedPrompter())
    keys = creds_of(stepup)
    assert holds(b, keys["backup"]) and not holds(a, keys["backup"])

    # Both hold one of alice's keys: the touch request goes to both, the first touched (b) answers.
    started = time.monotonic()
    audit = AuditLog()
    stepup.ensure("alice", FIDO, request(nonce=b"1" * 16), ScriptedPrompter(), audit)
    assert time.monotonic() - started < 3  # a was cancelled, not waited for
    assert audit[-1][0] == "stepup.success" and audit[-1][1]["credential"] == "backup"
    assert (a.touches, b.touches) == (0, 1)
    # And the other way round.
    a.never_touched, b.never_touched = False, True
    audit = AuditLog()
    stepup.ensure("alice", FIDO, request(nonce=b"2" * 16), ScriptedPrompter(), audit)
    assert audit[-1][1]["credential"] == "primary" and (a.touches, b.touches) == (1, 1)


def test_a_key_that_holds_no_credential_is_not_asked(tmp_path):
    mine, stranger = SoftKey(), SoftKey()
    plugged = [mine]
    stepup = stepup_on(tmp_path, plugged)
    stepup.enroll_fido2("alice", "mine", ScriptedPrompter())
    plugged.insert(0, stranger)  # a colleague's key, plugged in first
    stranger.never_touched = True
    outcome = stepup.ensure("alice", FIDO, request(), ScriptedPrompter(), AuditLog())
    assert outcome.fresh and mine.touches == 1 and stranger.touches == 0


def test_cancel_reaches_every_key(tmp_path):
    a, b = SoftKey(), SoftKey()
    plugged = [a]
    stepup = stepup_on(tmp_path, plugged)
    stepup.enroll_fido2("alice", "a", ScriptedPrompter())
    plugged.append(b)
    stepup.enroll_fido2("alice", "b", ScriptedPrompter())
    a.never_touched = b.never_touched = True
    with pytest.raises(TouchCancelled):
        stepup.ensure("alice", FIDO, request(), ScriptedPrompter(cancel_touch=True), AuditLog())


def test_with_a_pin_the_key_is_chosen_by_touch_and_its_pin_asked_once(tmp_path):
    from tests.stepup.test_fido2_pin import PinPrompter

    a, b = SoftKey(pin=PIN), SoftKey(pin=PIN)
    plugged = [a]
    stepup = stepup_on(tmp_path, plugged)
    stepup.enroll_user_verification = True
    stepup.enroll_fido2("alice", "a", PinPrompter([PIN]))
    plugged[:] = [b]
    stepup.enroll_fido2("alice", "b", PinPrompter([PIN]))
    plugged[:] = [a, b]
    a.never_touched = True  # b is the one touched
    prompter = PinPrompter([PIN])
    audit = AuditLog()
    outcome = stepup.ensure("alice", Requirement("fido2", 0, user_verification=True), request(), prompter, audit)
    assert outcome.grant.user_verified and audit[-1][1]["credential"] == "b"
    assert len(prompter.pin_prompts()) == 1  # one PIN, for the key chosen
    assert a.pin_retries == b.pin_retries == 8


def test_a_key_unplugged_while_waiting_drops_out(tmp_path):
    from fido2.ctap import CtapDevice

    good = SoftKey()
    plugged = [good]
    stepup = stepup_on(tmp_path, plugged)
    stepup.enroll_fido2("alice", "good", ScriptedPrompter())

    class Unplugged(SoftKey):
        def call(self, cmd, data=b"", event=None, on_keepalive=None):
            if data[:1] == bytes([0x02]) and not self.probed:  # the silent probe answers, then the key is gone
                self.probed = True
                return super().call(cmd, data, event, on_keepalive)
            if data[:1] == bytes([0x04]):
                return super().call(cmd, data, event, on_keepalive)
            raise OSError(19, "No such device")

    gone = Unplugged()
    gone.probed = False
    gone._creds = good._creds  # it would answer for alice's key, but it is unplugged mid-request
    good.wait_for_touch = lambda event: time.sleep(0.3)
    plugged.insert(0, gone)
    assert isinstance(gone, CtapDevice)
    audit = AuditLog()
    stepup.ensure("alice", FIDO, request(), ScriptedPrompter(), audit)
    assert audit[-1][0] == "stepup.success" and good.touches == 1


# Key records: AAGUID, last used, backward compatibility ------------------------------------------------


def test_aaguid_and_last_used_are_kept(tmp_path):
    clock = FakeClock()
    key = SoftKey()
    stepup = make_stepup(tmp_path, clock, key=key)
    stepup.enroll_fido2("alice", "yubi", ScriptedPrompter())
    cred = creds_of(stepup)["yubi"]
    assert cred.aaguid == SOFTWARE_KEY_AAGUID and cred.last_used == 0.0
    assert cred.attestation == "packed self, verified" and cred.attestation_verified
    clock.now += 100
    stepup.ensure("alice", FIDO, request(), ScriptedPrompter(), AuditLog())
    cred = creds_of(stepup)["yubi"]
    assert cred.last_used == clock.now and cred.sign_count == key.counter
    raw = tomllib.loads(stepup.store.path.read_text())["operators"]["alice"]["fido2"][0]
    assert raw["aaguid"] == SOFTWARE_KEY_AAGUID and raw["last_used"] == clock.now


def test_a_credentials_file_from_before_reads_as_never_used_with_the_aaguid_of_its_data(tmp_path):
    stepup = make_stepup(tmp_path, key=SoftKey())
    stepup.enroll_fido2("alice", "old", ScriptedPrompter())
    doc = tomllib.loads(stepup.store.path.read_text())
    entry = doc["operators"]["alice"]["fido2"][0]
    for key in ("aaguid", "last_used", "attestation", "attestation_verified"):
        entry.pop(key, None)
    entry["locked"] = "clone signal: sign counter 3 not above 5"  # a locked key keeps its reason
    stepup.store.path.write_text(tomli_w.dumps(doc))
    cred = CredentialStore(tmp_path).operator("alice").fido2[0]
    assert cred.aaguid == SOFTWARE_KEY_AAGUID and cred.last_used == 0.0 and cred.attestation is None
    assert cred.locked.startswith("clone signal")
    with CredentialStore(tmp_path).transaction():
        pass  # written back in the new form
    assert tomllib.loads(stepup.store.path.read_text())["operators"]["alice"]["fido2"][0]["locked"].startswith("clone")


# Removing a key ----------------------------------------------------------------------------------------


def two_keys(tmp_path, clock=None):
    a, b = SoftKey(), SoftKey()
    plugged = [a]
    stepup = stepup_on(tmp_path, plugged, clock)
    stepup.enroll_fido2("alice", "a", ScriptedPrompter())
    plugged[:] = [b]
    stepup.enroll_fido2("alice", "b", ScriptedPrompter())
    return stepup, plugged, a, b


def test_removing_a_key_needs_another_key(tmp_path):
    stepup, plugged, a, b = two_keys(tmp_path)
    plugged[:] = [a, b]
    a.never_touched = True  # the key removed is not asked: its own touch cannot approve its removal
    removed, audit = [], AuditLog()
    stepup.remove_key("alice", "a", ScriptedPrompter(), audit, before_remove=lambda c, f: removed.append((c.name, f)))
    assert removed == [("a", "fido2")] and list(creds_of(stepup)) == ["b"]
    assert audit.events() == ["stepup.success"] and audit[0][1]["credential"] == "b" and b.touches == 1


def test_the_key_being_removed_cannot_approve_its_own_removal(tmp_path):
    stepup, plugged, a, b = two_keys(tmp_path)
    plugged[:] = [a]  # only the key to remove is at hand
    with pytest.raises(StepUpDenied, match="holds no credential"):
        stepup.remove_key("alice", "a", ScriptedPrompter(), AuditLog())
    assert sorted(creds_of(stepup)) == ["a", "b"]


def test_the_last_key_needs_the_otp_and_the_last_factor_stays(tmp_path):
    clock = FakeClock()
    key = SoftKey()
    stepup = make_stepup(tmp_path, clock, key=key)
    stepup.enroll_fido2("alice", "only", ScriptedPrompter())
    with pytest.raises(StepUpDenied, match="it is their only factor"):
        stepup.remove_key("alice", "only", ScriptedPrompter(), AuditLog())
    secret = enroll_totp(tmp_path, "alice")
    prompter = ScriptedPrompter([code(secret, clock)])
    audit = AuditLog()
    stepup.remove_key("alice", "only", prompter, audit)
    assert [kind for kind, _ in prompter.prompts] == ["code"] and key.touches == 0  # the OTP, not the key
    assert audit.events() == ["stepup.success"] and audit[0][1]["factor"] == "otp"
    assert creds_of(stepup) == {}


def test_a_key_may_be_removed_with_the_otp_even_when_another_key_exists(tmp_path):
    clock = FakeClock()
    stepup, plugged, a, b = two_keys(tmp_path, clock)
    with pytest.raises(StepUpDenied, match="has no OTP enrolled"):
        stepup.remove_key("alice", "a", ScriptedPrompter(), AuditLog(), factor="otp")
    secret = enroll_totp(tmp_path, "alice")
    plugged[:] = []  # no key at hand: the OTP is enough
    prompter = ScriptedPrompter([code(secret, clock)])
    stepup.remove_key("alice", "a", prompter, AuditLog(), factor="otp")
    assert list(creds_of(stepup)) == ["b"] and [kind for kind, _ in prompter.prompts] == ["code"]
    with pytest.raises(StepUpDenied, match="cannot approve its own removal"):
        stepup.remove_key("alice", "b", ScriptedPrompter(), AuditLog(), factor="fido2")


def test_a_removal_the_trail_cannot_record_does_not_happen(tmp_path):
    stepup, plugged, a, b = two_keys(tmp_path)
    plugged[:] = [b]

    def trail_down(cred, factor):
        raise OSError("disk full")

    with pytest.raises(OSError):
        stepup.remove_key("alice", "a", ScriptedPrompter(), AuditLog(), before_remove=trail_down)
    assert sorted(creds_of(stepup)) == ["a", "b"]


def test_removing_an_unknown_key_names_the_enrolled_ones(tmp_path):
    stepup, *_ = two_keys(tmp_path)
    with pytest.raises(StepUpDenied, match=r"no security key named 'c' \(enrolled: 'a', 'b'\)"):
        stepup.remove_key("alice", "c", ScriptedPrompter(), AuditLog())


# Attestation -------------------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Vendor"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn="Test Vendor FIDO Root CA"):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def attestation_cert(ca, aaguid: bytes | None):
    """An attestation key and its certificate under ``ca``, with the AAGUID extension when given."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name("Test Vendor Attestation")).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if aaguid is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(
            x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4"), b"\x04\x10" + aaguid), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def vendor_key(ca, aaguid=YUBIKEY_5, fmt="packed", cert_aaguid="same") -> SoftKey:
    raw = bytes.fromhex(aaguid.replace("-", ""))
    key, cert = attestation_cert(ca, raw if cert_aaguid == "same" else cert_aaguid)
    return SoftKey(aaguid=raw, attestation=fmt, attestation_key=key, attestation_certs=[cert])


def policy_stepup(tmp_path, key, *, authenticators=None, roots=(), allow_software_key=False) -> StepUp:
    root_files = []
    (tmp_path / "state").mkdir(parents=True)
    for i, cert in enumerate(roots):
        path = tmp_path / f"root{i}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        root_files.append(path)
    settings = Settings("alice", None, (), authenticators=authenticators, attestation_roots=tuple(root_files))
    stepup = StepUp(tmp_path / "state", settings, authenticator=lambda: key, clock=FakeClock(), touch_timeout=5)
    stepup.allow_software_key = allow_software_key
    return stepup


def test_the_software_key_is_refused_unless_it_is_allowed(tmp_path):
    stepup = policy_stepup(tmp_path, SoftKey())
    with pytest.raises(AuthenticatorRefused, match="opsgate's software key") as e:
        stepup.enroll_fido2("alice", "soft", ScriptedPrompter(), before_save=lambda c: pytest.fail("saved"))
    assert e.value.check.aaguid == SOFTWARE_KEY_AAGUID and e.value.check.verified
    assert creds_of(stepup) == {}
    # Listed by name in [console] authenticators: allowed.
    listed = policy_stepup(tmp_path / "listed", SoftKey(), authenticators=(SOFTWARE_KEY_AAGUID,))
    assert listed.enroll_fido2("alice", "soft", ScriptedPrompter()).aaguid == SOFTWARE_KEY_AAGUID
    # $OPSGATE_SOFTKEY (the tests, the demo) allows it, but an allow-list without it still has the last word.
    allowed = policy_stepup(tmp_path / "env", SoftKey(), allow_software_key=True)
    assert allowed.enroll_fido2("alice", "soft", ScriptedPrompter())
    strict = policy_stepup(tmp_path / "strict", SoftKey(), authenticators=(YUBIKEY_5,), allow_software_key=True)
    with pytest.raises(AuthenticatorRefused, match="not allowed here"):
        strict.enroll_fido2("alice", "soft", ScriptedPrompter())


def test_packed_basic_attestation_of_an_allowed_model_chaining_to_a_trusted_root(tmp_path):
    ca = make_ca()
    stepup = policy_stepup(tmp_path, vendor_key(ca), authenticators=(YUBIKEY_5,), roots=(ca[1],))
    cred = stepup.enroll_fido2("alice", "yubi", ScriptedPrompter())
    assert cred.aaguid == YUBIKEY_5 and cred.attestation_verified
    assert cred.attestation == "packed basic, verified, chain to a trusted root"
    assert isinstance(stepup.key.verify([cred], b"c" * 32), KeyAccepted)


def test_an_attestation_from_another_root_or_a_self_attestation_is_refused_when_roots_are_set(tmp_path):
    ours, theirs = make_ca(), make_ca("Someone Else's CA")
    stepup = policy_stepup(tmp_path, vendor_key(theirs), authenticators=(YUBIKEY_5,), roots=(ours[1],))
    with pytest.raises(AuthenticatorRefused, match="does not chain to a root in"):
        stepup.enroll_fido2("alice", "yubi", ScriptedPrompter())
    # A key that claims the allowed model but signs its own statement (self attestation).
    claims = SoftKey(aaguid=bytes.fromhex(YUBIKEY_5.replace("-", "")))
    stepup = policy_stepup(tmp_path / "self", claims, authenticators=(YUBIKEY_5,), roots=(ours[1],))
    with pytest.raises(AuthenticatorRefused, match=r"self attestation"):
        stepup.enroll_fido2("alice", "yubi", ScriptedPrompter())


def test_a_model_not_on_the_allow_list_is_refused(tmp_path):
    ca = make_ca()
    other = "ee882879-721c-4913-9775-3dfcce97072a"
    stepup = policy_stepup(tmp_path, vendor_key(ca, aaguid=other), authenticators=(YUBIKEY_5,))
    with pytest.raises(AuthenticatorRefused, match=f"authenticator model {other} is not allowed here"):
        stepup.enroll_fido2("alice", "other", ScriptedPrompter())
    assert creds_of(stepup) == {}


def test_fido_u2f_attestation_is_verified(tmp_path):
    ca = make_ca()
    u2f = "00000000-0000-0000-0000-000000000000"  # U2F keys have no AAGUID
    stepup = policy_stepup(tmp_path, vendor_key(ca, aaguid=u2f, fmt="fido-u2f", cert_aaguid=None),
                           authenticators=(u2f,), roots=(ca[1],))
    cred = stepup.enroll_fido2("alice", "u2f", ScriptedPrompter())
    assert cred.attestation == "fido-u2f basic, verified, chain to a trusted root" and cred.attestation_verified


@pytest.mark.parametrize("fmt", ["packed", "fido-u2f"])
def test_an_attestation_that_does_not_verify_is_refused_even_without_an_allow_list(tmp_path, fmt):
    ca = make_ca()
    key = vendor_key(ca, fmt=fmt, cert_aaguid=None)
    key.bad_attestation = True
    stepup = policy_stepup(tmp_path, key)
    with pytest.raises(AuthenticatorRefused, match=f"its {fmt} attestation does not verify"):
        stepup.enroll_fido2("alice", "bad", ScriptedPrompter())


def test_a_certificate_for_another_model_is_refused(tmp_path):
    ca = make_ca()
    key = vendor_key(ca, cert_aaguid=bytes(16))  # the key says YubiKey 5, its certificate another model
    stepup = policy_stepup(tmp_path, key, authenticators=(YUBIKEY_5,))
    with pytest.raises(AuthenticatorRefused, match="does not match attestation certificate"):
        stepup.enroll_fido2("alice", "mixed", ScriptedPrompter())


def test_no_attestation_is_accepted_only_without_an_allow_list(tmp_path):
    ca = make_ca()
    key = vendor_key(ca, fmt="none")
    cred = policy_stepup(tmp_path, key).enroll_fido2("alice", "anon", ScriptedPrompter())
    assert not cred.attestation_verified and cred.attestation.startswith("none: not verified")
    stepup = policy_stepup(tmp_path / "list", vendor_key(ca, fmt="none"), authenticators=(YUBIKEY_5,))
    with pytest.raises(AuthenticatorRefused, match="cannot be verified"):
        stepup.enroll_fido2("alice", "anon", ScriptedPrompter())


def test_securitykey_register_checks_the_policy_it_is_given():
    key = SecurityKey("opsgate.local", lambda: SoftKey(), timeout=5)
    with pytest.raises(AuthenticatorRefused):
        key.register("alice", "soft", [], attestation=AttestationPolicy())
    assert key.register("alice", "soft", [], attestation=AttestationPolicy(allow_software_key=True))


def test_a_second_thread_waiting_for_a_touch_is_not_left_behind(tmp_path):
    a, b = SoftKey(), SoftKey()
    plugged = [a, b]
    stepup = stepup_on(tmp_path, plugged)
    b.never_touched = True
    before = threading.active_count()
    stepup.enroll_fido2("alice", "a", ScriptedPrompter())
    time.sleep(0.2)
    assert threading.active_count() <= before + 1  # the losing key's thread ended (a timer may linger)
