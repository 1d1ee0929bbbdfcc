"""FIDO2 security keys: enroll with makeCredential, verify with getAssertion and the fido2 server checks.

The relying party is ``settings.rp_id`` (origin ``https://<rp_id>``). ``Fido2Server`` checks the rp id
hash, the challenge, the user-presence flag, user verification when asked, and the signature
against the stored public key; this module adds the sign-counter clone check.

A key's PIN is asked through ``ask_pin`` (the front end) only when the key needs it: the policy asks
for user verification, or a CTAP 2.0 key with a PIN registers a credential. It goes straight to the
fido2 client (which sends the key only a hash encrypted to it) and is never logged, stored or audited.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Callable

from opsgate.console.stepup.credentials import FidoCredential
from opsgate.console.errors import StepUpDenied

# fido2 is imported when a key is first used, not when the console starts (start-up time).
if TYPE_CHECKING:
    from fido2.client import ClientError, Fido2Client
    from fido2.ctap import CtapDevice
    from fido2.server import Fido2Server

DEFAULT_TIMEOUT = 60.0  # seconds to wait for a touch

DeviceFactory = Callable[[], "CtapDevice"]
# ask_pin(retries_left, why_the_last_pin_failed) -> the PIN, or None (cancelled / a script's second attempt)
PinAsker = Callable[[int | None, str | None], "str | None"]

SET_PIN_HINT = "set one with `ykman fido access change-pin` or `fido2-token -S /dev/hidrawN`"


class SecurityKeyError(StepUpDenied):
    """The key could not be used: none present, no touch in time, cancelled, or it refused."""


class NoSecurityKey(SecurityKeyError):
    pass


class TouchTimeout(SecurityKeyError):
    pass


class TouchCancelled(SecurityKeyError):
    pass


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


def discover_hid() -> CtapDevice:
    """The first USB security key, or NoSecurityKey with a clear message."""
    try:
        from fido2.hid import CtapHidDevice

        devices = list(CtapHidDevice.list_devices())
    except Exception as e:  # no hidraw access, unsupported platform
        raise NoSecurityKey(f"cannot look for security keys: {e}") from None
    if not devices:
        raise NoSecurityKey("no security key found: plug one in and try again")
    return devices[0]


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
        self.device_factory = device_factory or discover_hid
        self.timeout = timeout

    @cached_property
    def server(self) -> Fido2Server:
        from fido2.server import Fido2Server
        from fido2.webauthn import PublicKeyCredentialRpEntity

        return Fido2Server(PublicKeyCredentialRpEntity(id=self.rp_id, name="opsgate"))

    def _client(self, device: CtapDevice | None = None, ask_pin: PinAsker | None = None,
                error: str | None = None) -> Fido2Client:
        from fido2.client import DefaultClientDataCollector, Fido2Client

        device = device or self.device_factory()
        return Fido2Client(device, DefaultClientDataCollector(self.origin), _interaction(device, ask_pin, error))

    def register(self, operator: str, name: str, existing: list[FidoCredential], *,
                 cancel: threading.Event | None = None, user_verification: bool = False,
                 ask_pin: PinAsker | None = None) -> FidoCredential:
        """Create a credential on the key for ``operator`` (one touch). Raises SecurityKeyError.

        ``user_verification``: the key must verify the user (its PIN) to register, as the policy will ask later.
        """
        from fido2.webauthn import AttestedCredentialData, PublicKeyCredentialUserEntity, UserVerificationRequirement

        user = PublicKeyCredentialUserEntity(id=operator.encode(), name=operator, display_name=operator)
        uv = UserVerificationRequirement.REQUIRED if user_verification else UserVerificationRequirement.DISCOURAGED
        options, state = self.server.register_begin(
            user, credentials=[AttestedCredentialData(c.credential_data) for c in existing], user_verification=uv)
        response = self._with_pin(cancel, ask_pin,
                                  lambda client, ev: client.make_credential(options.public_key, event=ev))
        try:
            auth_data = self.server.register_complete(state, response)
        except ValueError as e:
            raise SecurityKeyError(f"security key registration refused: {e}") from None
        cred = auth_data.credential_data
        assert cred is not None  # register_complete guarantees attested data
        return FidoCredential(cred.credential_id, bytes(cred), auth_data.counter, name, time.time())

    def verify(self, credentials: list[FidoCredential], challenge: bytes, *, user_verification: bool = False,
               cancel: threading.Event | None = None, ask_pin: PinAsker | None = None) -> KeyResult:
        """One getAssertion over ``challenge`` (>= 16 bytes), checked by the fido2 server code.

        Raises SecurityKeyError when no key answers (absent, timeout, cancelled, no matching credential).
        """
        from fido2.webauthn import AttestedCredentialData, UserVerificationRequirement

        attested = [AttestedCredentialData(c.credential_data) for c in credentials]
        uv = UserVerificationRequirement.REQUIRED if user_verification else UserVerificationRequirement.DISCOURAGED
        options, state = self.server.authenticate_begin(attested, user_verification=uv, challenge=challenge)
        selection = self._with_pin(cancel, ask_pin,
                                   lambda client, ev: client.get_assertion(options.public_key, event=ev))
        response = selection.get_response(0)
        try:
            cred = self.server.authenticate_complete(state, attested, response)
        except ValueError as e:
            return KeyRejected(str(e))
        auth_data = response.response.authenticator_data
        stored = next(c.sign_count for c in credentials if c.credential_id == cred.credential_id)
        if not counter_ok(stored, auth_data.counter):
            return CloneSuspected(cred.credential_id, stored, auth_data.counter)
        return KeyAccepted(cred.credential_id, auth_data.counter, auth_data.is_user_verified())

    def _with_pin(self, cancel: threading.Event | None, ask_pin: PinAsker | None, call):
        """Run ``call(client, event)``; after a wrong PIN, again with the PIN asked again (the key counts them)."""
        error = None
        while True:
            try:
                return self._with_timeout(cancel, lambda ev: call(self._client(None, ask_pin, error), ev))
            except PinInvalid as e:
                if ask_pin is None or str(e) == error:
                    raise
                error = str(e)

    def _with_timeout(self, cancel: threading.Event | None, call):
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
            raise _pin_error(e, self.device_factory) or SecurityKeyError(_client_error_message(e)) from None
        finally:
            timer.cancel()


def _pin_error(e: ClientError, device_factory: DeviceFactory) -> SecurityKeyError | None:
    """The typed error for a PIN the key refused or cannot use, with what to do about it."""
    from fido2.client import ClientError
    from fido2.ctap import CtapError

    code = e.cause.code if isinstance(e.cause, CtapError) else None
    if code == CtapError.ERR.PIN_INVALID:
        retries = _retries_of(device_factory)
        return PinInvalid(f"wrong PIN for the security key{_retries_text(retries)}", retries)
    if code == CtapError.ERR.PIN_BLOCKED:
        return PinBlocked(PIN_BLOCKED_MESSAGE)
    if code == CtapError.ERR.PIN_AUTH_BLOCKED:
        retries = _retries_of(device_factory)
        return PinAuthBlocked(f"3 wrong PINs in a row: unplug the security key and plug it in again before the next "
                              f"try{_retries_text(retries)}")
    if code == CtapError.ERR.PIN_NOT_SET:
        return PinNotSet(PIN_NOT_SET_MESSAGE)
    if code == CtapError.ERR.PIN_POLICY_VIOLATION:
        return SecurityKeyError("the security key refused that PIN: it does not meet the key's PIN policy")
    if e.code == ClientError.ERR.CONFIGURATION_UNSUPPORTED and "not configured" in str(e.cause):
        try:
            from fido2.ctap2 import Ctap2

            options = Ctap2(device_factory()).info.options
        except Exception:  # the key went away: the generic message says enough
            return None
        if options.get("clientPin") is False and not options.get("uv"):
            return PinNotSet(PIN_NOT_SET_MESSAGE)
    return None


def _retries_of(device_factory: DeviceFactory) -> int | None:
    try:
        return pin_retries(device_factory())
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
