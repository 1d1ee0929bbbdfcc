"""FIDO2 security keys: enroll with makeCredential, verify with getAssertion and the fido2 server checks.

The relying party is ``settings.rp_id`` (origin ``https://<rp_id>``). ``Fido2Server`` checks the rp id
hash, the challenge, the user-presence flag, user verification when asked, and the signature
against the stored public key; this module adds the sign-counter clone check.

A key's PIN is asked through ``ask_pin`` (the front end) only when the key needs it: the policy asks
for user verification, or a CTAP 2.0 key with a PIN registers a credential. It goes straight to the
fido2 client (which sends the key only a hash encrypted to it) and is never logged, stored or audited.

Several keys may be plugged in (a primary and its backup). With more than one, the keys that cannot
answer are left out first by a silent probe (no touch: does it hold one of these credentials?), then the
request goes to every remaining key at once and the first one touched answers; the others are cancelled.
When a PIN may be needed, the key is chosen by a touch first (as browsers do), so only one PIN is asked.

Enrollment checks the key's attestation statement with the fido2 library's verifiers (packed, fido-u2f,
...) against ``AttestationPolicy``: the allowed authenticator models (AAGUIDs), the trusted attestation
roots, and whether opsgate's software key may be enrolled (tests and the demo only).
"""

from __future__ import annotations

import base64
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Callable

from opsgate.console.stepup.credentials import FidoCredential, format_aaguid
from opsgate.console.errors import StepUpDenied

# fido2 is imported when a key is first used, not when the console starts (start-up time).
if TYPE_CHECKING:
    from fido2.client import ClientError, Fido2Client
    from fido2.ctap import CtapDevice
    from fido2.server import Fido2Server

DEFAULT_TIMEOUT = 60.0  # seconds to wait for a touch

# One device, or every plugged-in device (a list): tests pass several software keys this way.
DeviceFactory = Callable[[], "CtapDevice | list[CtapDevice]"]
# ask_pin(retries_left, why_the_last_pin_failed) -> the PIN, or None (cancelled / a script's second attempt)
PinAsker = Callable[[int | None, str | None], "str | None"]

# console/demo/softkey.py's AAGUID ("opsgate" + 1): its private keys sit in a plain file, it proves nothing.
SOFTWARE_KEY_AAGUID = "6f707367-6174-6500-0000-000000000001"

SET_PIN_HINT = "set one with `ykman fido access change-pin` or `fido2-token -S /dev/hidrawN`"


class SecurityKeyError(StepUpDenied):
    """The key could not be used: none present, no touch in time, cancelled, or it refused."""


class NoSecurityKey(SecurityKeyError):
    pass


class TouchTimeout(SecurityKeyError):
    pass


class TouchCancelled(SecurityKeyError):
    pass


class AuthenticatorRefused(SecurityKeyError):
    """Enrollment refused this authenticator: its model is not allowed, or its attestation does not verify."""

    def __init__(self, message: str, check: "AttestationCheck"):
        super().__init__(message)
        self.check = check


class PinInvalid(SecurityKeyError):
    """A wrong PIN: the key counts it (``retries`` left)."""

    def __init__(self, message: str, retries: int | None = None):
        super().__init__(message)
        self.retries = retries


class PinBlocked(SecurityKeyError):
    """No PIN attempt left: only a reset of the key's FIDO application (which erases it) unblocks it."""


class PinAuthBlocked(SecurityKeyError):
    """Three wrong PINs in a row: the key takes no more until it is unplugged and plugged in again."""


class PinNotSet(SecurityKeyError):
    """User verification is asked, and the key could do it with a PIN, but none is set."""


PIN_BLOCKED_MESSAGE = ("the security key's PIN is blocked after too many wrong PINs: only a reset of its FIDO "
                       "application unblocks it (`ykman fido reset`; it erases every credential on the key), "
                       "then set a new PIN and enroll the key again")
PIN_NOT_SET_MESSAGE = (f"the policy asks for user verification, but the security key has no PIN set: "
                       f"{SET_PIN_HINT}, then try again")


# Typed results of verify(): the step-up layer audits each.
@dataclass(frozen=True)
class KeyAccepted:
    credential_id: bytes
    sign_count: int
    user_verified: bool
    # What a reviewer needs to check the assertion offline (console/audit/assertions.py): credential_id (hex),
    # authenticator_data, client_data_json, signature (base64) and rp_id. Never a PIN.
    assertion: dict | None = field(default=None, compare=False)


@dataclass(frozen=True)
class KeyRejected:
    reason: str  # from the server checks: "Wrong challenge in response.", "Invalid signature.", ...


@dataclass(frozen=True)
class CloneSuspected:
    """The key's sign counter did not grow although it counts: a cloned key is the likely cause."""

    credential_id: bytes
    stored_count: int
    received_count: int


KeyResult = KeyAccepted | KeyRejected | CloneSuspected


def counter_ok(stored: int, received: int) -> bool:
    """WebAuthn §6.1.1: a key that counts (either value non-zero) must report a higher counter."""
    return (stored == 0 and received == 0) or received > stored


def discover_all_hid() -> list[CtapDevice]:
    """Every USB security key we can open, or NoSecurityKey saying why there is none (a key we may not
    open is named, with the udev fix)."""
    try:
        from fido2.hid import CtapHidDevice

        devices = list(CtapHidDevice.list_devices())
    except Exception as e:  # no hidraw access, unsupported platform
        raise NoSecurityKey(_permission_problem() or f"cannot look for security keys: {e}") from None
    if not devices:
        raise NoSecurityKey(_permission_problem() or "no security key found: plug one in and try again")
    return devices


def discover_hid() -> CtapDevice:
    """The first USB security key (the gate relays to one key), or NoSecurityKey with a clear message."""
    return discover_all_hid()[0]


def _permission_problem() -> str | None:
    """A key the kernel lists but we may not open (Linux hidraw permissions), in words with the fix."""
    from opsgate.console.stepup.hidraw import fido_hidraw_nodes, permission_problem

    try:
        return permission_problem(fido_hidraw_nodes())
    except Exception:  # a diagnosis must never hide the real error
        return None


def _first_of(factory: DeviceFactory) -> Callable[[], CtapDevice]:
    def first() -> CtapDevice:
        found = factory()
        if isinstance(found, (list, tuple)):
            if not found:
                raise NoSecurityKey("no security key found: plug one in and try again")
            return found[0]
        return found

    return first


# Attestation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttestationPolicy:
    """Which authenticators enrollment accepts."""

    allowed: frozenset[str] | None = None  # AAGUIDs ([console] authenticators); None: any model
    roots: tuple[bytes, ...] = ()  # DER certificates ([console] attestation_roots): the chain must reach one
    allow_software_key: bool = False  # the demo, the tests, $OPSGATE_SOFTKEY (with its warning)


@dataclass(frozen=True)
class AttestationCheck:
    """What the key's attestation statement says, as checked by the fido2 library's verifier for its format."""

    aaguid: str
    format: str  # "packed", "fido-u2f", "none", ...
    type: str | None  # "basic", "self", "att_ca", "none"; None when it did not verify
    verified: bool  # the statement's signature (and certificate rules) verified
    trusted: bool  # its certificate chain reaches one of the configured roots
    problem: str | None = None  # why it did not verify

    def describe(self) -> str:
        if not self.verified:
            return f"{self.format}: not verified ({self.problem})"
        text = f"{self.format} {self.type}, verified"
        return text + ", chain to a trusted root" if self.trusted else text


def check_attestation(attestation_object, client_data_hash: bytes, roots: tuple[bytes, ...] = ()) -> AttestationCheck:
    """Verify a registration's attestation statement with the fido2 library's verifier for its format."""
    from fido2.attestation import Attestation, verify_x509_chain
    from fido2.attestation.base import InvalidAttestation

    auth_data = attestation_object.auth_data
    aaguid = format_aaguid(bytes(auth_data.credential_data.aaguid))
    fmt = attestation_object.fmt
    if fmt == "none":
        return AttestationCheck(aaguid, fmt, None, False, False, "the key gave no attestation")
    try:
        result = Attestation.for_type(fmt)().verify(attestation_object.att_stmt, auth_data, client_data_hash)
    except (InvalidAttestation, NotImplementedError) as e:
        return AttestationCheck(aaguid, fmt, None, False, False, str(e) or type(e).__name__)
    trusted = False
    for root in roots if result.trust_path else ():
        try:
            verify_x509_chain(list(result.trust_path) + [root])
        except InvalidAttestation:
            continue
        trusted = True
        break
    return AttestationCheck(aaguid, fmt, result.attestation_type.name.lower(), True, trusted)


SUPPORTED_FORMATS = ("packed", "fido-u2f", "tpm", "apple", "android-safetynet")


def refusal(check: AttestationCheck, policy: AttestationPolicy) -> str | None:
    """Why enrollment refuses this authenticator (None: accepted)."""
    allowed = policy.allowed
    if check.aaguid == SOFTWARE_KEY_AAGUID and not policy.allow_software_key and not (allowed and check.aaguid in allowed):
        return ("this is opsgate's software key (AAGUID %s, for tests and the demo: its private keys sit in a plain "
                "file): refused; list its AAGUID in [console] authenticators to allow it anyway" % check.aaguid)
    if not check.verified and check.format in SUPPORTED_FORMATS:
        return f"its {check.format} attestation does not verify ({check.problem}): a broken or forged authenticator"
    if allowed is not None:
        if check.aaguid not in allowed:
            return (f"authenticator model {check.aaguid} is not allowed here: [console] authenticators lists "
                    f"{', '.join(sorted(allowed)) or 'none'}")
        if not check.verified:
            return (f"authenticator model {check.aaguid} is allowed, but its attestation ({check.format}) cannot be "
                    f"verified ({check.problem}); [console] authenticators needs a packed or fido-u2f attestation")
    if policy.roots and not check.trusted:
        return ("its attestation certificate does not chain to a root in [console] attestation_roots"
                + ("" if check.type != "self" else " (self attestation: the key signed its own statement)"))
    return None


def pin_retries(device: CtapDevice) -> int | None:
    """The PIN attempts the key has left (None when it cannot say)."""
    from fido2.ctap import CtapError
    from fido2.ctap2 import Ctap2
    from fido2.ctap2.pin import ClientPin

    try:
        return ClientPin(Ctap2(device)).get_pin_retries()[0]
    except (CtapError, ValueError, KeyError, OSError):
        return None


def _retries_text(retries: int | None) -> str:
    return "" if retries is None else f", {retries} attempt{'s' if retries != 1 else ''} left before the PIN is blocked"


def _interaction(device: CtapDevice, ask_pin: PinAsker | None, error: str | None):
    """Asks the front end for the key's PIN when the fido2 client needs it (never kept: handed straight on)."""
    from fido2.client import UserInteraction

    class Interaction(UserInteraction):
        def prompt_up(self) -> None:  # the front end already shows "touch your key"
            pass

        def request_pin(self, permissions, rp_id):
            retries = pin_retries(device)
            if retries == 0:
                raise PinBlocked(PIN_BLOCKED_MESSAGE)
            if ask_pin is None:
                raise SecurityKeyError("the security key needs its PIN here, and this front end cannot ask for it")
            why = error
            while True:
                pin = ask_pin(retries, why)
                if pin is None:
                    if why and why != error:
                        raise SecurityKeyError(f"security key PIN not accepted: {why}")
                    if error:  # a script's second attempt: deny with the reason of the first
                        raise PinInvalid(error, retries)
                    return None  # cancelled: the client raises PinRequiredError
                if 4 <= len(pin) and len(pin.encode()) <= 63:
                    return pin
                why = "a security key PIN has 4 to 63 characters"

    return Interaction()


class SecurityKey:
    """Talks to one security key (HID, or a SoftKey in tests and the demo) for relying party ``rp_id``."""

    def __init__(self, rp_id: str, device_factory: DeviceFactory | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT):
        self.rp_id = rp_id
        self.origin = f"https://{rp_id}"
        self._factory = device_factory
        # One device (what the gate's relay opens); the operations themselves use every plugged-in key.
        self.device_factory = _first_of(device_factory) if device_factory else discover_hid
        self.timeout = timeout

    @cached_property
    def server(self) -> Fido2Server:
        from fido2.server import Fido2Server
        from fido2.webauthn import AttestationConveyancePreference, PublicKeyCredentialRpEntity

        # Direct attestation: enrollment checks the statement itself (check_attestation), after the server checks.
        return Fido2Server(PublicKeyCredentialRpEntity(id=self.rp_id, name="opsgate"),
                           attestation=AttestationConveyancePreference.DIRECT)

    def _client(self, device: CtapDevice | None = None, ask_pin: PinAsker | None = None,
                error: str | None = None) -> Fido2Client:
        from fido2.client import DefaultClientDataCollector, Fido2Client

        device = device or self.device_factory()
        return Fido2Client(device, DefaultClientDataCollector(self.origin), _interaction(device, ask_pin, error))

    def devices(self) -> list[CtapDevice]:
        """Every plugged-in key (NoSecurityKey when there is none)."""
        found = (self._factory or discover_all_hid)()
        devices = list(found) if isinstance(found, (list, tuple)) else [found]
        if not devices:
            raise NoSecurityKey("no security key found: plug one in and try again")
        return devices

    def register(self, operator: str, name: str, existing: list[FidoCredential], *,
                 cancel: threading.Event | None = None, user_verification: bool = False,
                 ask_pin: PinAsker | None = None, attestation: AttestationPolicy | None = None) -> FidoCredential:
        """Create a credential on the key for ``operator`` (one touch). Raises SecurityKeyError.

        ``user_verification``: the key must verify the user (its PIN) to register, as the policy will ask later.
        ``attestation``: which authenticators are accepted, AuthenticatorRefused when this one is not. Without
        it, any whose attestation statement is not broken: StepUp (every enrollment of the CLI, the TUI, the
        gate and the demo) always passes the config's policy.
        """
        from fido2.webauthn import AttestedCredentialData, PublicKeyCredentialUserEntity, UserVerificationRequirement

        user = PublicKeyCredentialUserEntity(id=operator.encode(), name=operator, display_name=operator)
        uv = UserVerificationRequirement.REQUIRED if user_verification else UserVerificationRequirement.DISCOURAGED
        options, state = self.server.register_begin(
            user, credentials=[AttestedCredentialData(c.credential_data) for c in existing], user_verification=uv)
        response = self._operation(cancel, ask_pin,
                                   lambda client, ev: client.make_credential(options.public_key, event=ev),
                                   [c.credential_id for c in existing], register=True,
                                   user_verification=user_verification)
        try:
            auth_data = self.server.register_complete(state, response)
        except ValueError as e:
            raise SecurityKeyError(f"security key registration refused: {e}") from None
        cred = auth_data.credential_data
        assert cred is not None  # register_complete guarantees attested data
        policy = attestation or AttestationPolicy(allow_software_key=True)
        check = check_attestation(response.response.attestation_object, response.response.client_data.hash,
                                  policy.roots)
        why = refusal(check, policy)
        if why is not None:
            raise AuthenticatorRefused(f"security key not enrolled: {why}", check)
        return FidoCredential(cred.credential_id, bytes(cred), auth_data.counter, name, time.time(),
                              aaguid=check.aaguid, attestation=check.describe(),
                              attestation_verified=check.verified)

    def verify(self, credentials: list[FidoCredential], challenge: bytes, *, user_verification: bool = False,
               cancel: threading.Event | None = None, ask_pin: PinAsker | None = None) -> KeyResult:
        """One getAssertion over ``challenge`` (>= 16 bytes), checked by the fido2 server code.

        Raises SecurityKeyError when no key answers (absent, timeout, cancelled, no matching credential).
        """
        from fido2.webauthn import AttestedCredentialData, UserVerificationRequirement

        attested = [AttestedCredentialData(c.credential_data) for c in credentials]
        uv = UserVerificationRequirement.REQUIRED if user_verification else UserVerificationRequirement.DISCOURAGED
        options, state = self.server.authenticate_begin(attested, user_verification=uv, challenge=challenge)
        selection = self._operation(cancel, ask_pin,
                                    lambda client, ev: client.get_assertion(options.public_key, event=ev),
                                    [c.credential_id for c in credentials], register=False,
                                    user_verification=user_verification)
        response = selection.get_response(0)
        try:
            cred = self.server.authenticate_complete(state, attested, response)
        except ValueError as e:
            return KeyRejected(str(e))
        auth_data = response.response.authenticator_data
        stored = next(c.sign_count for c in credentials if c.credential_id == cred.credential_id)
        if not counter_ok(stored, auth_data.counter):
            return CloneSuspected(cred.credential_id, stored, auth_data.counter)
        return KeyAccepted(cred.credential_id, auth_data.counter, auth_data.is_user_verified(), assertion={
            "credential_id": cred.credential_id.hex(), "rp_id": self.rp_id,
            "authenticator_data": base64.b64encode(bytes(auth_data)).decode("ascii"),
            "client_data_json": base64.b64encode(bytes(response.response.client_data)).decode("ascii"),
            "signature": base64.b64encode(bytes(response.response.signature)).decode("ascii"),
        })

    def _operation(self, cancel: threading.Event | None, ask_pin: PinAsker | None, call, credential_ids: list[bytes],
                   *, register: bool, user_verification: bool):
        """``call(client, event)`` on the key that should answer: the only one, or among several the first
        touched (after a touch to choose it when a PIN may be needed)."""
        devices = self.devices()
        if len(devices) == 1:
            return self._with_pin(devices[0], cancel, ask_pin, call)
        devices, pin_possible = _candidates(devices, self.rp_id, credential_ids, register=register)
        if len(devices) == 1:
            return self._with_pin(devices[0], cancel, ask_pin, call)
        if user_verification or pin_possible:
            # One PIN prompt, for the key the operator chose by touching it (then it asks for its own touch).
            device, _ = self._with_timeout(cancel, lambda ev: _first_to_answer(devices, ev, _select))
            return self._with_pin(device, cancel, ask_pin, call)
        lock = threading.Lock()

        def one_at_a_time(retries: int | None, error: str | None) -> str | None:
            with lock:
                return ask_pin(retries, error) if ask_pin else None

        asker = one_at_a_time if ask_pin else None
        _, result = self._with_timeout(cancel, lambda ev: _first_to_answer(
            devices, ev, lambda device, stop: call(self._client(device, asker, None), stop)))
        return result

    def _with_pin(self, device: CtapDevice, cancel: threading.Event | None, ask_pin: PinAsker | None, call):
        """Run ``call(client, event)``; after a wrong PIN, again with the PIN asked again (the key counts them)."""
        error = None
        while True:
            try:
                return self._with_timeout(cancel, lambda ev: call(self._client(device, ask_pin, error), ev), device)
            except PinInvalid as e:
                if ask_pin is None or str(e) == error:
                    raise
                error = str(e)

    def _with_timeout(self, cancel: threading.Event | None, call, device: CtapDevice | None = None):
        """Run ``call(event)``; the event is set by the UI (cancel) or by our timer (timeout)."""
        from fido2.client import ClientError, PinRequiredError

        event = cancel or threading.Event()
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            event.set()

        timer = threading.Timer(self.timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            return call(event)
        except ClientError as e:
            if timed_out.is_set():
                raise TouchTimeout(f"no touch within {self.timeout:g} s") from None
            if event.is_set():
                raise TouchCancelled("security key touch cancelled") from None
            if isinstance(e, PinRequiredError):
                raise TouchCancelled("security key PIN entry cancelled") from None
            raise (_pin_error(e, device) if device is not None else None) or SecurityKeyError(
                _client_error_message(e)) from None
        finally:
            timer.cancel()


def _candidates(devices: list[CtapDevice], rp_id: str, credential_ids: list[bytes], *,
                register: bool) -> tuple[list[CtapDevice], bool]:
    """The keys worth asking, found without a touch, and whether one of them may ask for its PIN.

    To sign: the keys that hold one of ``credential_ids``; to register: the keys that hold none of them
    (a key already enrolled would refuse). When the probe leaves none, every key is asked and answers
    for itself. A key that does not answer getInfo is left out."""
    from fido2.ctap2 import Ctap2

    talking, chosen, pin_possible = [], [], False
    for device in devices:
        try:
            ctap = Ctap2(device)
        except Exception:  # not a CTAP2 key, or unplugged meanwhile
            continue
        talking.append((device, ctap))
        if (_holds_one(ctap, rp_id, credential_ids) if credential_ids else False) != register:
            chosen.append((device, ctap))
    chosen = chosen or talking
    if not chosen:
        return devices, False
    for _, ctap in chosen:
        options = ctap.info.options
        # To register, a key with a PIN (or built-in UV) that lacks makeCredUvNotRqd asks for it (CTAP 2.0 keys).
        if register and (options.get("clientPin") or options.get("uv")) and not options.get("makeCredUvNotRqd"):
            pin_possible = True
    return [device for device, _ in chosen], pin_possible


def _holds_one(ctap, rp_id: str, credential_ids: list[bytes]) -> bool:
    """True when the key holds one of the credentials: a getAssertion without user presence (no touch,
    no signature counted), one credential at a time (some keys take one per request)."""
    from fido2.ctap import CtapError

    for credential_id in credential_ids:
        try:
            ctap.get_assertion(rp_id, b"\0" * 32, [{"type": "public-key", "id": credential_id}], None, {"up": False})
            return True
        except CtapError as e:
            if e.code != CtapError.ERR.NO_CREDENTIALS:
                return True  # it cannot say without a PIN (or at all): ask it
        except Exception:
            return True
    return False


def _select(device: CtapDevice, stop: threading.Event) -> None:
    """Wait for a touch on ``device`` (CTAP 2.1 selection, or the library's dummy registration on 2.0)."""
    from fido2.client import DefaultClientDataCollector, Fido2Client

    Fido2Client(device, DefaultClientDataCollector("https://opsgate.invalid")).selection(stop)


def _first_to_answer(devices: list[CtapDevice], event: threading.Event, work):
    """``work(device, stop)`` on every device at once; the first key to answer (touched, or refusing) wins
    and the others are cancelled. A device that fails without answering (unplugged, I/O error) only drops
    out while others still wait. Returns (device, result) or raises the answer's error."""
    from fido2.client import ClientError

    stop = threading.Event()  # our own: the caller's event (the UI's cancel) is never set by a win
    answers: queue.Queue = queue.Queue()

    def attempt(device: CtapDevice) -> None:
        try:
            answers.put((device, work(device, stop), None))
        except BaseException as e:  # handed to the caller's thread
            answers.put((device, None, e))

    def relay_cancel() -> None:
        while not stop.is_set():
            if event.wait(0.05):
                stop.set()

    threads = [threading.Thread(target=attempt, args=(d,), daemon=True, name="security-key") for d in devices]
    threading.Thread(target=relay_cancel, daemon=True, name="security-key-cancel").start()
    for t in threads:
        t.start()
    try:
        pending = len(threads)
        while True:
            device, result, error = answers.get()
            pending -= 1
            if error is None:
                return device, result
            if pending and not stop.is_set() and not isinstance(error, (ClientError, SecurityKeyError)):
                continue  # this one went away; the others may still be touched
            if isinstance(error, OSError):
                raise SecurityKeyError(f"the security keys went away ({error})") from None
            raise error
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)


def _pin_error(e: ClientError, device: CtapDevice) -> SecurityKeyError | None:
    """The typed error for a PIN the key refused or cannot use, with what to do about it."""
    from fido2.client import ClientError
    from fido2.ctap import CtapError

    code = e.cause.code if isinstance(e.cause, CtapError) else None
    if code == CtapError.ERR.PIN_INVALID:
        retries = _retries_of(device)
        return PinInvalid(f"wrong PIN for the security key{_retries_text(retries)}", retries)
    if code == CtapError.ERR.PIN_BLOCKED:
        return PinBlocked(PIN_BLOCKED_MESSAGE)
    if code == CtapError.ERR.PIN_AUTH_BLOCKED:
        retries = _retries_of(device)
        return PinAuthBlocked(f"3 wrong PINs in a row: unplug the security key and plug it in again before the next "
                              f"try{_retries_text(retries)}")
    if code == CtapError.ERR.PIN_NOT_SET:
        return PinNotSet(PIN_NOT_SET_MESSAGE)
    if code == CtapError.ERR.PIN_POLICY_VIOLATION:
        return SecurityKeyError("the security key refused that PIN: it does not meet the key's PIN policy")
    if e.code == ClientError.ERR.CONFIGURATION_UNSUPPORTED and "not configured" in str(e.cause):
        try:
            from fido2.ctap2 import Ctap2

            options = Ctap2(device).info.options
        except Exception:  # the key went away: the generic message says enough
            return None
        if options.get("clientPin") is False and not options.get("uv"):
            return PinNotSet(PIN_NOT_SET_MESSAGE)
    return None


def _retries_of(device: CtapDevice) -> int | None:
    try:
        return pin_retries(device)
    except Exception:  # the key went away
        return None


def _client_error_message(e: ClientError) -> str:
    from fido2.client import ClientError

    cause = f" ({e.cause})" if e.cause else ""
    if e.code == ClientError.ERR.DEVICE_INELIGIBLE:
        return "this security key holds no credential enrolled for you (or it was already enrolled)"
    if e.code == ClientError.ERR.CONFIGURATION_UNSUPPORTED:
        return f"the security key cannot do what the policy asks{cause}: user verification needs a key with a built-in PIN or biometric"
    if e.code == ClientError.ERR.TIMEOUT:
        return "no touch in time"
    return f"security key error: {e.code.name}{cause}"


def random_challenge() -> bytes:
    return os.urandom(32)
