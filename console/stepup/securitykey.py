"""FIDO2 security keys: enroll with makeCredential, verify with getAssertion and the fido2 server checks.

The relying party is ``settings.rp_id`` (origin ``https://<rp_id>``). ``Fido2Server`` checks the rp id
hash, the challenge, the user-presence flag, user verification when asked, and the signature
against the stored public key; this module adds the sign-counter clone check.
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


class SecurityKeyError(StepUpDenied):
    """The key could not be used: none present, no touch in time, cancelled, or it refused."""


class NoSecurityKey(SecurityKeyError):
    pass


class TouchTimeout(SecurityKeyError):
    pass


class TouchCancelled(SecurityKeyError):
    pass


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


def _interaction():
    """PINs are not asked from here: a key that needs one for UV fails with a clear message."""
    from fido2.client import UserInteraction

    class Interaction(UserInteraction):
        def prompt_up(self) -> None:  # the front end already shows "touch your key"
            pass

        def request_pin(self, permissions, rp_id):
            return None

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

    def _client(self) -> Fido2Client:
        from fido2.client import DefaultClientDataCollector, Fido2Client

        device = self.device_factory()
        return Fido2Client(device, DefaultClientDataCollector(self.origin), _interaction())

    def register(self, operator: str, name: str, existing: list[FidoCredential], *,
                 cancel: threading.Event | None = None) -> FidoCredential:
        """Create a credential on the key for ``operator`` (one touch). Raises SecurityKeyError."""
        from fido2.webauthn import AttestedCredentialData, PublicKeyCredentialUserEntity, UserVerificationRequirement

        user = PublicKeyCredentialUserEntity(id=operator.encode(), name=operator, display_name=operator)
        options, state = self.server.register_begin(
            user, credentials=[AttestedCredentialData(c.credential_data) for c in existing],
            user_verification=UserVerificationRequirement.DISCOURAGED)
        response = self._with_timeout(cancel, lambda ev: self._client().make_credential(options.public_key, event=ev))
        try:
            auth_data = self.server.register_complete(state, response)
        except ValueError as e:
            raise SecurityKeyError(f"security key registration refused: {e}") from None
        cred = auth_data.credential_data
        assert cred is not None  # register_complete guarantees attested data
        return FidoCredential(cred.credential_id, bytes(cred), auth_data.counter, name, time.time())

    def verify(self, credentials: list[FidoCredential], challenge: bytes, *, user_verification: bool = False,
               cancel: threading.Event | None = None) -> KeyResult:
        """One getAssertion over ``challenge`` (>= 16 bytes), checked by the fido2 server code.

        Raises SecurityKeyError when no key answers (absent, timeout, cancelled, no matching credential).
        """
        from fido2.webauthn import AttestedCredentialData, UserVerificationRequirement

        attested = [AttestedCredentialData(c.credential_data) for c in credentials]
        uv = UserVerificationRequirement.REQUIRED if user_verification else UserVerificationRequirement.DISCOURAGED
        options, state = self.server.authenticate_begin(attested, user_verification=uv, challenge=challenge)
        selection = self._with_timeout(cancel, lambda ev: self._client().get_assertion(options.public_key, event=ev))
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

    def _with_timeout(self, cancel: threading.Event | None, call):
        """Run ``call(event)``; the event is set by the UI (cancel) or by our timer (timeout)."""
        from fido2.client import ClientError

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
            raise SecurityKeyError(_client_error_message(e)) from None
        finally:
            timer.cancel()


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
