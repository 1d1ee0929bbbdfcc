"""Security-key PINs: the software key's CTAP2 clientPin (protocols 1 and 2) through the real fido2 client.

No part of the fido2 library is replaced: the client negotiates the PIN protocol, does the ECDH key
agreement, encrypts the PIN hash and MACs each request with the token, and SoftKey checks all of it.
"""

import json

import pytest
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin

from opsgate.console.catalog.policy import Requirement
from opsgate.console.demo.softkey import PIN_RETRIES, SoftKey
from opsgate.console.errors import StepUpDenied
from opsgate.console.stepup.securitykey import PinAuthBlocked, PinBlocked, PinNotSet, SecurityKey
from opsgate.console.stepup.verifier import Prompt
from tests.helpers.stepup_fixtures import AuditLog, ScriptedPrompter, make_stepup, request

PIN = "Quokka-42"
UV = Requirement("fido2", 0, user_verification=True)
TOUCH = Requirement("fido2", 0)


class PinPrompter(ScriptedPrompter):
    """A ScriptedPrompter that also answers the key's PIN from a queue (None when it runs out)."""

    def __init__(self, pins=(), **kw):
        super().__init__(**kw)
        self.pins = list(pins)

    def ask_pin(self, prompt: Prompt):
        self.prompts.append(("pin", Prompt(**vars(prompt))))
        return self.pins.pop(0) if self.pins else None

    def pin_prompts(self) -> list[Prompt]:
        return [p for kind, p in self.prompts if kind == "pin"]


def pin_stepup(tmp_path, softkey, pins=(PIN,)):
    """alice enrolls ``softkey`` with its PIN (as under a policy that asks for user verification)."""
    stepup = make_stepup(tmp_path, key=softkey)
    stepup.enroll_user_verification = True
    stepup.enroll_fido2("alice", "yubi", PinPrompter(pins))
    return stepup


def no_pin_in(audit: AuditLog, *pins: str) -> None:
    text = json.dumps(list(audit))
    for pin in pins:
        assert pin not in text


# The authenticator's clientPin, driven by the library's ClientPin ----------------------------------

@pytest.mark.parametrize("ctap21,protocol", [(True, 2), (False, 1)])
def test_client_pin_set_token_retries(ctap21, protocol):
    key = SoftKey(client_pin=True, ctap21=ctap21)
    client_pin = ClientPin(Ctap2(key))
    assert client_pin.protocol.VERSION == protocol
    assert Ctap2(key).info.options["clientPin"] is False  # supported, not set
    with pytest.raises(CtapError) as e:
        client_pin.get_pin_token(PIN)
    assert e.value.code == CtapError.ERR.PIN_NOT_SET
    client_pin.set_pin(PIN)
    assert Ctap2(key).info.options["clientPin"] is True
    with pytest.raises(CtapError):
        client_pin.set_pin("99999")  # setPIN only when none is set
    assert len(ClientPin(Ctap2(key)).get_pin_token(PIN, ClientPin.PERMISSION.GET_ASSERTION, "opsgate.local")) == 32
    with pytest.raises(CtapError) as e:
        client_pin.get_pin_token("Wombat-17")
    assert e.value.code == CtapError.ERR.PIN_INVALID
    assert client_pin.get_pin_retries()[0] == PIN_RETRIES - 1
    client_pin.get_pin_token(PIN)  # the right PIN gives the retries back
    assert client_pin.get_pin_retries()[0] == PIN_RETRIES
    client_pin.change_pin(PIN, "314159")
    client_pin.get_pin_token("314159")
    expected = ClientPin.CMD.GET_TOKEN_USING_PIN if ctap21 else ClientPin.CMD.GET_TOKEN_USING_PIN_LEGACY
    assert expected in key.pin_commands


def test_pin_state_survives_in_the_key_file(tmp_path):
    path = tmp_path / "softkey.json"
    SoftKey(path, pin=PIN)
    assert PIN not in path.read_text()  # a key keeps LEFT(SHA-256(PIN), 16), like a real one
    with pytest.raises(CtapError):
        ClientPin(Ctap2(SoftKey(path))).get_pin_token("Wombat-17")
    assert ClientPin(Ctap2(SoftKey(path))).get_pin_retries()[0] == PIN_RETRIES - 1


# Step-up with a PIN-protected key ------------------------------------------------------------------

@pytest.mark.parametrize("ctap21", [True, False])
def test_enroll_and_step_up_with_the_right_pin(tmp_path, ctap21):
    softkey = SoftKey(pin=PIN, ctap21=ctap21)
    stepup = pin_stepup(tmp_path, softkey)
    prompter, audit = PinPrompter([PIN]), AuditLog()
    outcome = stepup.ensure("alice", UV, request(), prompter, audit)
    assert outcome.grant.factor == "fido2" and outcome.grant.user_verified
    [asked] = prompter.pin_prompts()
    assert asked.attempts_left == PIN_RETRIES and asked.error is None and asked.operator == "alice"
    assert [kind for kind, _ in prompter.prompts] == ["touch", "pin"]  # asked while the touch modal is up
    success = audit[-1]
    assert success[0] == "stepup.success" and success[1]["user_verified"] is True
    assert success[1]["digest"] == request().digest().hex()
    no_pin_in(audit, PIN)


def test_touch_only_policy_does_not_ask_for_the_pin(tmp_path):
    softkey = SoftKey(pin=PIN)  # CTAP 2.1: makeCredUvNotRqd, and getAssertion without UV
    stepup = pin_stepup(tmp_path, softkey)
    prompter, audit = PinPrompter(), AuditLog()
    outcome = stepup.ensure("alice", TOUCH, request(), prompter, audit)
    assert not prompter.pin_prompts() and not outcome.grant.user_verified
    assert audit[-1][1]["user_verified"] is False


def test_wrong_pin_says_how_many_attempts_are_left(tmp_path):
    softkey = SoftKey(pin=PIN)
    stepup = pin_stepup(tmp_path, softkey)
    prompter, audit = PinPrompter(["Wombat-17"]), AuditLog()  # a script: one PIN, no second attempt
    with pytest.raises(StepUpDenied, match=f"wrong PIN for the security key, {PIN_RETRIES - 1} attempts left"):
        stepup.ensure("alice", UV, request(), prompter, audit)
    assert [p.attempts_left for p in prompter.pin_prompts()] == [PIN_RETRIES, PIN_RETRIES - 1]
    assert audit.events() == ["stepup.failure"]  # the wrong PIN, once
    assert "7 attempts left" in audit[0][1]["reason"]
    no_pin_in(audit, "Wombat-17", PIN)


def test_wrong_pin_then_the_right_one(tmp_path):
    softkey = SoftKey(pin=PIN)
    stepup = pin_stepup(tmp_path, softkey)
    prompter, audit = PinPrompter(["Wombat-17", PIN]), AuditLog()
    outcome = stepup.ensure("alice", UV, request(), prompter, audit)
    assert outcome.grant.user_verified
    second = prompter.pin_prompts()[1]
    assert "wrong PIN" in second.error and second.attempts_left == PIN_RETRIES - 1
    assert audit.events() == ["stepup.failure", "stepup.success"]
    assert softkey.pin_retries == PIN_RETRIES  # the right PIN reset the count


def test_three_wrong_pins_in_a_row_need_a_replug(tmp_path):
    softkey = SoftKey(pin=PIN)
    stepup = pin_stepup(tmp_path, softkey)
    prompter = PinPrompter(["Wombat-17", "000001", "000002", PIN])
    with pytest.raises(PinAuthBlocked, match="unplug the security key and plug it in again"):
        stepup.ensure("alice", UV, request(), prompter, AuditLog())
    softkey.power_cycle()
    assert stepup.ensure("alice", UV, request(nonce=b"2" * 16), PinPrompter([PIN]), AuditLog()).grant.user_verified


def test_after_the_retries_the_pin_is_blocked(tmp_path):
    softkey = SoftKey(pin=PIN)
    stepup = pin_stepup(tmp_path, softkey)
    for attempt in range(PIN_RETRIES - 1):
        with pytest.raises(StepUpDenied):
            stepup.ensure("alice", UV, request(nonce=bytes([attempt]) * 16), PinPrompter(["Wombat-17"]), AuditLog())
        if attempt % 3 == 2:
            softkey.power_cycle()
    softkey.power_cycle()
    audit = AuditLog()
    with pytest.raises(PinBlocked) as e:  # the 8th wrong PIN blocks it
        stepup.ensure("alice", UV, request(nonce=b"x" * 16), PinPrompter(["Wombat-17"]), audit)
    assert "blocked" in str(e.value) and "ykman fido reset" in str(e.value)
    assert softkey.pin_retries == 0
    # Blocked now: refused before any PIN is asked, even the right one.
    prompter = PinPrompter([PIN])
    with pytest.raises(PinBlocked):
        stepup.ensure("alice", UV, request(nonce=b"y" * 16), prompter, AuditLog())
    assert prompter.pin_prompts() == []


def test_uv_policy_and_a_key_without_pin_says_how_to_set_one(tmp_path):
    softkey = SoftKey(client_pin=True)  # supports a PIN, none set
    stepup = make_stepup(tmp_path, key=softkey)
    stepup.enroll_fido2("alice", "yubi", PinPrompter())
    audit = AuditLog()
    with pytest.raises(PinNotSet) as e:
        stepup.ensure("alice", UV, request(), PinPrompter([PIN]), audit)
    assert "no PIN set" in str(e.value)
    assert "ykman fido access change-pin" in str(e.value) and "fido2-token -S" in str(e.value)
    assert audit.events() == ["stepup.failure"]
    # Enrolling under such a policy is refused the same way (the key could never pass it).
    stepup.enroll_user_verification = True
    with pytest.raises(PinNotSet):
        stepup.enroll_fido2("alice", "second", PinPrompter([PIN]))


def test_cancelled_pin_entry_denies(tmp_path):
    softkey = SoftKey(pin=PIN)
    stepup = pin_stepup(tmp_path, softkey)
    with pytest.raises(StepUpDenied, match="PIN entry cancelled"):
        stepup.ensure("alice", UV, request(), PinPrompter([]), AuditLog())
    assert softkey.pin_retries == PIN_RETRIES  # nothing was tried


def test_a_front_end_without_pin_entry_gets_a_clear_refusal(tmp_path):
    softkey = SoftKey(pin=PIN)
    stepup = pin_stepup(tmp_path, softkey)
    with pytest.raises(StepUpDenied, match="cannot ask for it"):
        stepup.ensure("alice", UV, request(), ScriptedPrompter(), AuditLog())


def test_a_short_pin_is_asked_again_not_sent(tmp_path):
    softkey = SoftKey(pin=PIN)
    stepup = pin_stepup(tmp_path, softkey)
    prompter = PinPrompter(["12", PIN])
    assert stepup.ensure("alice", UV, request(), prompter, AuditLog()).grant.user_verified
    assert "4 to 63 characters" in prompter.pin_prompts()[1].error
    assert softkey.pin_retries == PIN_RETRIES


def test_a_forged_pin_token_is_refused_by_the_key(tmp_path):
    """makeCredential/getAssertion check pinUvAuthParam: a MAC with another token does not verify."""
    softkey = SoftKey(pin=PIN)
    ClientPin(Ctap2(softkey)).get_pin_token(PIN, ClientPin.PERMISSION.GET_ASSERTION, "opsgate.local")
    with pytest.raises(CtapError) as e:
        Ctap2(softkey).get_assertion("opsgate.local", b"h" * 32, [{"type": "public-key", "id": b"x" * 32}],
                                     None, None, b"f" * 32, 2)
    assert e.value.code == CtapError.ERR.PIN_AUTH_INVALID
    # And a token for another relying party does not sign for this one.
    token = ClientPin(Ctap2(softkey)).get_pin_token(PIN, ClientPin.PERMISSION.GET_ASSERTION, "evil.example")
    from fido2.ctap2.pin import PinProtocolV2

    with pytest.raises(CtapError) as e:
        Ctap2(softkey).get_assertion("opsgate.local", b"h" * 32, [{"type": "public-key", "id": b"x" * 32}],
                                     None, None, PinProtocolV2().authenticate(token, b"h" * 32), 2)
    assert e.value.code == CtapError.ERR.PIN_AUTH_INVALID


def test_securitykey_register_without_uv_on_a_ctap20_pin_key_still_asks(tmp_path):
    """A CTAP 2.0 key with a PIN registers only with it, whatever the policy (the key needs it)."""
    softkey = SoftKey(pin=PIN, ctap21=False)
    asked = []
    cred = SecurityKey("opsgate.local", lambda: softkey, timeout=5).register(
        "alice", "old", [], ask_pin=lambda retries, error: asked.append(retries) or PIN)
    assert asked == [PIN_RETRIES] and cred.name == "old"
