"""A software FIDO2 authenticator, for tests and the demo only: it is NOT a security boundary.

``SoftKey`` is a ``fido2`` ``CtapDevice`` that answers real CTAP2 (CBOR) getInfo, makeCredential
and getAssertion with ES256 (P-256) keys, so the ``fido2`` client and server code run for real.
Its private keys sit in memory or in a plain 0600 JSON file: anyone who can read that file can
"touch" the key. Knobs let tests misbehave like a broken or cloned key: omit user presence, replay
an old counter, sign wrongly, or wait for a touch that never comes (until cancelled).

Attestation: packed self-attestation by default (the credential key signs; its AAGUID marks it as
opsgate's software key, which enrollment refuses outside tests and the demo). With ``attestation_key``
and ``attestation_certs`` (a DER chain, leaf first) it makes a packed basic attestation, or with
``attestation="fido-u2f"`` a FIDO U2F one; ``attestation="none"`` gives none, ``bad_attestation`` signs
the wrong bytes.

The CTAP2 clientPin command is implemented too (PIN/UV auth protocols 1 and 2: getPINRetries,
getKeyAgreement, setPIN, changePIN, getPinToken and getPinUvAuthTokenUsingPinWithPermissions), with
a real key's rules: 8 retries, blocked at 0 (``PIN_BLOCKED``), and after 3 wrong PINs in a row no more
attempts until a power cycle (``PIN_AUTH_BLOCKED``; ``power_cycle()``, or a new ``SoftKey`` on the same
file). Like a real key it keeps LEFT(SHA-256(PIN), 16), never the PIN. ``ctap21=False`` makes it a CTAP
2.0 key (getPinToken, PIN protocol 1, a PIN for every makeCredential once a PIN is set).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from cryptography.hazmat.primitives import constant_time, hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cbor
from fido2.cose import ES256
from fido2.ctap import STATUS, CtapDevice, CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocolV1, PinProtocolV2
from fido2.utils import bytes2int, int2bytes
from fido2.hid import CAPABILITY, CTAPHID
from fido2.webauthn import AttestedCredentialData, AuthenticatorData

from opsgate.console.files import write_private
from opsgate.console.stepup.securitykey import SOFTWARE_KEY_AAGUID

AAGUID = bytes.fromhex(SOFTWARE_KEY_AAGUID.replace("-", ""))  # "opsgate" + 1: enrollment refuses it outside tests/demo
_FLAG = AuthenticatorData.FLAG
_ERR = CtapError.ERR
_PIN = ClientPin.CMD
_PERM = ClientPin.PERMISSION
PIN_RETRIES = 8  # as on a YubiKey: the PIN is blocked after 8 wrong PINs
PIN_AUTH_BLOCK = 3  # wrong PINs in a row before a power cycle is needed
_PROTOCOLS = {1: PinProtocolV1, 2: PinProtocolV2}


class SoftKey(CtapDevice):
    """A CTAP2 authenticator in software. ``path``: keep credentials in that file (else in memory)."""

    def __init__(self, path: str | Path | None = None, *, user_verification: bool = False,
                 wait_for_touch: Callable[[threading.Event | None], None] | None = None,
                 pin: str | None = None, client_pin: bool = False, ctap21: bool = True, aaguid: bytes = AAGUID,
                 attestation: str = "packed", attestation_key: ec.EllipticCurvePrivateKey | None = None,
                 attestation_certs: list[bytes] | tuple[bytes, ...] = ()):
        self.path = Path(path) if path else None
        self.user_verification = user_verification  # advertise built-in UV (like a fingerprint key)
        self.client_pin = client_pin or pin is not None  # supports a PIN (set or not); else no clientPin at all
        self.ctap21 = ctap21  # CTAP 2.1 (PIN protocol 2, tokens with permissions) or 2.0 (protocol 1, getPinToken)
        self.aaguid = aaguid
        self.attestation = attestation  # "packed" (self, or basic with a key and certificates), "fido-u2f", "none"
        self.attestation_key = attestation_key
        self.attestation_certs = list(attestation_certs)
        self.bad_attestation = False  # sign the attestation over the wrong bytes
        # Called where a real key waits for the touch, with the client's cancel event (the demo's key
        # waits for a key press in the console); it returns when touched or cancelled.
        self.wait_for_touch = wait_for_touch
        # Test knobs.
        self.omit_user_presence = False  # answer without the UP flag
        self.replay_counter = False  # report the previous counter instead of a higher one
        self.sign_wrongly = False  # corrupt the signature
        self.never_touched = False  # wait for a touch until the call is cancelled
        self.touches = 0  # assertions made with user presence
        self._lock = threading.Lock()
        self.counter = 0
        self._creds: dict[bytes, dict[str, Any]] = {}  # credential id -> {rp_id_hash, key, user_id}
        # clientPin state: what a real key keeps (the PIN's hash, retries) and what a power cycle resets.
        self.pin_hash: bytes | None = None  # LEFT(SHA-256(PIN), 16)
        self.pin_retries = PIN_RETRIES
        self.pin_commands: list[int] = []  # clientPin sub-commands received, in order (tests)
        self.power_cycle()
        if self.path and self.path.exists():
            self._load()
        self.client_pin = self.client_pin or self.pin_hash is not None
        if pin is not None and self.pin_hash is None:
            self.pin_hash = hashlib.sha256(pin.encode()).digest()[:16]
            self._save()

    def power_cycle(self) -> None:
        """Unplug and plug in again: a new key-agreement key, no PIN token, the in-a-row count reset."""
        self._ka_key = ec.generate_private_key(ec.SECP256R1())
        self._token: bytes | None = None
        self._token_perms = _PERM(0)
        self._token_rp_id: str | None = None
        self._pin_fails_in_a_row = 0

    # CtapDevice API -------------------------------------------------------------------------
    @property
    def capabilities(self) -> int:
        return CAPABILITY.CBOR

    @classmethod
    def list_devices(cls) -> Iterator["SoftKey"]:
        return iter(())  # never discovered: tests and the demo pass one in explicitly

    def call(self, cmd: int, data: bytes = b"", event: threading.Event | None = None,
             on_keepalive: Callable[[STATUS], None] | None = None) -> bytes:
        if cmd != CTAPHID.CBOR or not data:
            raise CtapError(_ERR.INVALID_COMMAND)
        try:
            request = cbor.decode(data[1:]) if len(data) > 1 else {}
            with self._lock:
                handler = {
                    Ctap2.CMD.GET_INFO: self._get_info,
                    Ctap2.CMD.MAKE_CREDENTIAL: self._make_credential,
                    Ctap2.CMD.GET_ASSERTION: self._get_assertion,
                    Ctap2.CMD.SELECTION: self._selection,
                    Ctap2.CMD.CLIENT_PIN: self._client_pin,
                }.get(data[0])
                if handler is None:
                    return bytes([_ERR.INVALID_COMMAND])
                response = handler(request, event, on_keepalive)
        except CtapError as e:
            return bytes([e.code])
        return b"\x00" + (cbor.encode(response) if response is not None else b"")

    # Commands -------------------------------------------------------------------------------
    def _get_info(self, request, event, on_keepalive) -> dict:
        options: dict[str, bool] = {"rk": False, "up": True, "plat": False}
        versions = ["FIDO_2_0"]
        info: dict[int, Any] = {1: versions, 3: self.aaguid, 4: options, 5: 2048, 10: [{"alg": -7, "type": "public-key"}]}
        if self.client_pin:
            options["clientPin"] = self.pin_hash is not None  # False: supported, not set
        if self.user_verification:
            options["uv"] = True
        if self.client_pin or self.user_verification:
            info[6] = self._protocols()
            if self.ctap21:
                versions.append("FIDO_2_1")
                options["pinUvAuthToken"] = True
                options["makeCredUvNotRqd"] = True  # like a YubiKey 5: no PIN to register when UV is not asked
        return info

    def _selection(self, request, event, on_keepalive) -> None:
        self._wait_for_touch(event, on_keepalive)
        return None

    def _make_credential(self, request: dict, event, on_keepalive) -> dict:
        client_data_hash, rp, user, params = request[1], request[2], request[3], request[4]
        if not any(p.get("alg") == ES256.ALGORITHM for p in params):
            raise CtapError(_ERR.UNSUPPORTED_ALGORITHM)
        rp_id_hash = hashlib.sha256(rp["id"].encode()).digest()
        for desc in request.get(5) or []:  # excludeList: this key already holds one of these
            cred = self._creds.get(desc["id"])
            if cred and cred["rp_id_hash"] == rp_id_hash:
                self._wait_for_touch(event, on_keepalive)
                raise CtapError(_ERR.CREDENTIAL_EXCLUDED)
        options = request.get(7) or {}
        self._check_uv_option(options)
        uv = self._check_pin_uv_auth(request.get(8), request.get(9), client_data_hash, _PERM.MAKE_CREDENTIAL,
                                     rp["id"], event, on_keepalive)
        if (uv is None and self.pin_hash is not None and not self.ctap21 and not options.get("uv")):
            raise CtapError(_ERR.PUAT_REQUIRED)  # CTAP 2.0: a key with a PIN registers only with it
        self._wait_for_touch(event, on_keepalive)
        key = ec.generate_private_key(ec.SECP256R1())
        credential_id = os.urandom(32)
        self._creds[credential_id] = {"rp_id_hash": rp_id_hash, "key": key, "user_id": user["id"]}
        self.counter += 1
        public = ES256.from_cryptography_key(key.public_key())
        flags = _FLAG.UP | _FLAG.AT | (_FLAG.UV if options.get("uv") or uv else 0)
        auth_data = AuthenticatorData.create(
            rp_id_hash, flags, self.counter, AttestedCredentialData.create(self.aaguid, credential_id, public))
        self._save()
        return {1: self.attestation, 2: bytes(auth_data),
                3: self._attest(key, auth_data, client_data_hash, credential_id, rp_id_hash)}

    def _attest(self, key, auth_data, client_data_hash: bytes, credential_id: bytes, rp_id_hash: bytes) -> dict:
        """The attestation statement: packed (self, or basic with x5c), fido-u2f or none."""
        if self.attestation == "none":
            return {}
        signer = self.attestation_key or key
        if self.attestation == "fido-u2f":
            pn = key.public_key().public_numbers()
            signed = (b"\0" + rp_id_hash + client_data_hash + credential_id + b"\x04" + int2bytes(pn.x, 32)
                      + int2bytes(pn.y, 32))
        else:
            signed = bytes(auth_data) + client_data_hash  # packed: self-attestation unless a key is given
        if self.bad_attestation:
            signed = b"not what was asked" + signed
        sig = signer.sign(signed, ec.ECDSA(hashes.SHA256()))
        if self.attestation == "fido-u2f":
            return {"sig": sig, "x5c": self.attestation_certs}
        statement = {"alg": ES256.ALGORITHM, "sig": sig}
        if self.attestation_key is not None:
            statement["x5c"] = self.attestation_certs
        return statement

    def _get_assertion(self, request: dict, event, on_keepalive) -> dict:
        rp_id, client_data_hash = request[1], request[2]
        rp_id_hash = hashlib.sha256(rp_id.encode()).digest()
        options = request.get(5) or {}
        want_up = options.get("up", True)
        self._check_uv_option(options)
        uv = self._check_pin_uv_auth(request.get(6), request.get(7), client_data_hash, _PERM.GET_ASSERTION, rp_id,
                                     event, on_keepalive)
        match = None
        for desc in request.get(3) or []:  # non-resident credentials only: an allow list is needed
            cred = self._creds.get(desc["id"])
            if cred and cred["rp_id_hash"] == rp_id_hash:
                match = (desc["id"], cred)
                break
        if want_up:
            self._wait_for_touch(event, on_keepalive)  # a real key asks for the touch even with no match
        if match is None:
            raise CtapError(_ERR.NO_CREDENTIALS)
        credential_id, cred = match
        flags = _FLAG(0)
        if want_up:
            self.touches += 1
            if not self.replay_counter:
                self.counter += 1
            if not self.omit_user_presence:
                flags |= _FLAG.UP
        if options.get("uv") or uv:
            flags |= _FLAG.UV
        auth_data = AuthenticatorData.create(rp_id_hash, flags, self.counter)
        signature = cred["key"].sign(bytes(auth_data) + client_data_hash, ec.ECDSA(hashes.SHA256()))
        if self.sign_wrongly:
            signature = cred["key"].sign(b"not what was asked", ec.ECDSA(hashes.SHA256()))
        self._save()
        return {1: {"id": credential_id, "type": "public-key"}, 2: bytes(auth_data), 3: signature}

    def _check_uv_option(self, options: dict) -> None:
        if options.get("uv") and not self.user_verification:
            raise CtapError(_ERR.UNSUPPORTED_OPTION)

    def _check_pin_uv_auth(self, param: bytes | None, version: int | None, client_data_hash: bytes,
                           permission: "ClientPin.PERMISSION", rp_id: str, event, on_keepalive) -> bool | None:
        """True when ``param`` is a valid pinUvAuthParam over ``client_data_hash`` (the UV flag is set)."""
        if param is None:
            return None
        if len(param) == 0:  # the platform's "select by touch" probe (CTAP 2.0 keys)
            self._wait_for_touch(event, on_keepalive)
            raise CtapError(_ERR.PIN_INVALID if self.pin_hash is not None else _ERR.PIN_NOT_SET)
        if version not in self._protocols():
            raise CtapError(_ERR.MISSING_PARAMETER if version is None else _ERR.INVALID_PARAMETER)
        if self._token is None:  # no getPinToken (or built-in UV token) since the last power cycle
            configured = self.pin_hash is not None or self.user_verification
            raise CtapError(_ERR.PIN_AUTH_INVALID if configured else _ERR.PIN_NOT_SET)
        expected = _PROTOCOLS[version]().authenticate(self._token, client_data_hash)
        if not constant_time.bytes_eq(expected, bytes(param)):
            raise CtapError(_ERR.PIN_AUTH_INVALID)
        if self.ctap21 and (not self._token_perms & permission
                            or self._token_rp_id not in (None, rp_id)):
            raise CtapError(_ERR.PIN_AUTH_INVALID)
        return True

    def _protocols(self) -> list[int]:
        return [2, 1] if self.ctap21 else [1]

    # clientPin ------------------------------------------------------------------------------
    def _client_pin(self, request: dict, event, on_keepalive) -> dict | None:
        version, sub = request.get(1), request.get(2)
        if not (self.client_pin or self.user_verification):
            raise CtapError(_ERR.INVALID_COMMAND)
        self.pin_commands.append(sub)
        if sub == _PIN.GET_PIN_RETRIES:
            return {3: self.pin_retries}
        if version not in self._protocols():
            raise CtapError(_ERR.MISSING_PARAMETER if version is None else _ERR.INVALID_PARAMETER)
        proto = _PROTOCOLS[version]()
        if sub == _PIN.GET_KEY_AGREEMENT:
            pn = self._ka_key.public_key().public_numbers()
            return {1: {1: 2, 3: -25, -1: 1, -2: int2bytes(pn.x, 32), -3: int2bytes(pn.y, 32)}}
        if sub == _PIN.SET_PIN:
            shared = self._shared_secret(proto, request.get(3))
            new_pin_enc, param = request.get(5), request.get(4)
            if not constant_time.bytes_eq(proto.authenticate(shared, new_pin_enc), bytes(param or b"")):
                raise CtapError(_ERR.PIN_AUTH_INVALID)
            if self.pin_hash is not None:
                raise CtapError(_ERR.PIN_AUTH_INVALID)  # setPIN only when no PIN is set (changePIN otherwise)
            self.pin_hash = self._new_pin_hash(proto, shared, new_pin_enc)
            self._save()
            return None
        if sub == _PIN.CHANGE_PIN:
            shared = self._shared_secret(proto, request.get(3))
            new_pin_enc, pin_hash_enc, param = request.get(5), request.get(6), request.get(4)
            if not constant_time.bytes_eq(proto.authenticate(shared, new_pin_enc + pin_hash_enc), bytes(param or b"")):
                raise CtapError(_ERR.PIN_AUTH_INVALID)
            self._check_pin(proto, shared, pin_hash_enc)
            self.pin_hash = self._new_pin_hash(proto, shared, new_pin_enc)
            self._save()
            return None
        if sub in (_PIN.GET_TOKEN_USING_PIN_LEGACY, _PIN.GET_TOKEN_USING_PIN):
            if sub == _PIN.GET_TOKEN_USING_PIN and not self.ctap21:
                raise CtapError(_ERR.INVALID_SUBCOMMAND)
            permissions = _PERM(request.get(9) or 0)
            if sub == _PIN.GET_TOKEN_USING_PIN and not permissions:
                raise CtapError(_ERR.MISSING_PARAMETER)
            if sub == _PIN.GET_TOKEN_USING_PIN_LEGACY and (request.get(9) or request.get(10)):
                raise CtapError(_ERR.INVALID_PARAMETER)
            shared = self._shared_secret(proto, request.get(3))
            self._check_pin(proto, shared, request.get(6))
            return {2: self._issue_token(proto, shared, permissions or _PERM.MAKE_CREDENTIAL | _PERM.GET_ASSERTION,
                                         request.get(10))}
        if sub == _PIN.GET_TOKEN_USING_UV and self.ctap21 and self.user_verification:
            shared = self._shared_secret(proto, request.get(3))
            self._wait_for_touch(event, on_keepalive)  # the built-in "fingerprint" is a touch here
            return {2: self._issue_token(proto, shared, _PERM(request.get(9) or 0), request.get(10))}
        raise CtapError(_ERR.INVALID_SUBCOMMAND)

    def _shared_secret(self, proto, cose_key: dict | None) -> bytes:
        if not cose_key:
            raise CtapError(_ERR.MISSING_PARAMETER)
        try:
            peer = ec.EllipticCurvePublicNumbers(bytes2int(cose_key[-2]), bytes2int(cose_key[-3]),
                                                 ec.SECP256R1()).public_key()
        except (KeyError, ValueError, TypeError):
            raise CtapError(_ERR.INVALID_PARAMETER) from None
        return proto.kdf(self._ka_key.exchange(ec.ECDH(), peer))

    def _check_pin(self, proto, shared: bytes, pin_hash_enc: bytes | None) -> None:
        """The spec's PIN check: retries first, then the hash; a mismatch costs a retry and the key agreement."""
        if self.pin_hash is None:
            raise CtapError(_ERR.PIN_NOT_SET)
        if self.pin_retries <= 0:
            raise CtapError(_ERR.PIN_BLOCKED)
        if self._pin_fails_in_a_row >= PIN_AUTH_BLOCK:
            raise CtapError(_ERR.PIN_AUTH_BLOCKED)
        if not pin_hash_enc:
            raise CtapError(_ERR.MISSING_PARAMETER)
        self.pin_retries -= 1  # spent before the check, given back on a match (no power-off trick)
        self._save()
        try:
            ok = constant_time.bytes_eq(proto.decrypt(shared, bytes(pin_hash_enc)), self.pin_hash)
        except ValueError:
            ok = False
        if not ok:
            self._ka_key = ec.generate_private_key(ec.SECP256R1())
            self._pin_fails_in_a_row += 1
            if self.pin_retries <= 0:
                raise CtapError(_ERR.PIN_BLOCKED)
            if self._pin_fails_in_a_row >= PIN_AUTH_BLOCK:
                raise CtapError(_ERR.PIN_AUTH_BLOCKED)
            raise CtapError(_ERR.PIN_INVALID)
        self.pin_retries = PIN_RETRIES
        self._pin_fails_in_a_row = 0
        self._save()

    def _new_pin_hash(self, proto, shared: bytes, new_pin_enc: bytes) -> bytes:
        try:
            padded = proto.decrypt(shared, bytes(new_pin_enc))
        except ValueError:
            raise CtapError(_ERR.PIN_POLICY_VIOLATION) from None
        pin = padded.rstrip(b"\0")
        if len(padded) < 64 or len(pin.decode("utf-8", "replace")) < 4:
            raise CtapError(_ERR.PIN_POLICY_VIOLATION)
        self.pin_retries = PIN_RETRIES
        return hashlib.sha256(pin).digest()[:16]

    def _issue_token(self, proto, shared: bytes, permissions, rp_id: str | None) -> bytes:
        self._token = os.urandom(32)
        self._token_perms = _PERM(permissions)
        self._token_rp_id = rp_id
        return proto.encrypt(shared, self._token)

    def _wait_for_touch(self, event: threading.Event | None, on_keepalive) -> None:
        if on_keepalive:
            on_keepalive(STATUS.UPNEEDED)
        if self.wait_for_touch is not None:
            self.wait_for_touch(event)
        if self.never_touched:
            # Like a key nobody touches: block until the client cancels (the UI's event or a timeout).
            while not (event and event.wait(0.05)):
                pass
        if event is not None and event.is_set():
            raise CtapError(_ERR.KEEPALIVE_CANCEL)

    # Storage --------------------------------------------------------------------------------
    def _save(self) -> None:
        if not self.path:
            return
        doc = {"warning": "opsgate software key for tests and demos: NOT a security boundary",
               "counter": self.counter, "credentials": {}, "pin_retries": self.pin_retries,
               "pin_hash": self.pin_hash.hex() if self.pin_hash else None, "client_pin": self.client_pin}
        for cid, cred in self._creds.items():
            pem = cred["key"].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
            doc["credentials"][cid.hex()] = {"rp_id_hash": cred["rp_id_hash"].hex(), "key": pem.decode(),
                                             "user_id": cred["user_id"].hex()}
        write_private(self.path, json.dumps(doc, indent=1).encode())

    def _load(self) -> None:
        doc = json.loads(self.path.read_text())
        self.counter = int(doc["counter"])
        self.pin_retries = int(doc.get("pin_retries", PIN_RETRIES))
        self.pin_hash = bytes.fromhex(doc["pin_hash"]) if doc.get("pin_hash") else None
        self.client_pin = self.client_pin or bool(doc.get("client_pin"))
        for cid, cred in doc["credentials"].items():
            key = serialization.load_pem_private_key(cred["key"].encode(), password=None)
            self._creds[bytes.fromhex(cid)] = {"rp_id_hash": bytes.fromhex(cred["rp_id_hash"]), "key": key,
                                               "user_id": bytes.fromhex(cred["user_id"])}
