"""A software FIDO2 authenticator, for tests and the demo only: it is NOT a security boundary.

``SoftKey`` is a ``fido2`` ``CtapDevice`` that answers real CTAP2 (CBOR) getInfo, makeCredential
and getAssertion with ES256 (P-256) keys, so the ``fido2`` client and server code run for real.
Its private keys sit in memory or in a plain 0600 JSON file: anyone who can read that file can
"touch" the key. Knobs let tests misbehave like a broken or cloned key: omit user presence, replay
an old counter, sign wrongly, or wait for a touch that never comes (until cancelled).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cbor
from fido2.cose import ES256
from fido2.ctap import STATUS, CtapDevice, CtapError
from fido2.ctap2 import Ctap2
from fido2.hid import CAPABILITY, CTAPHID
from fido2.webauthn import AttestedCredentialData, AuthenticatorData

from opsgate.console.files import write_private

AAGUID = bytes.fromhex("6f707367617465000000000000000001")  # "opsgate" + 1: marks a software key
_FLAG = AuthenticatorData.FLAG
_ERR = CtapError.ERR


class SoftKey(CtapDevice):
    """A CTAP2 authenticator in software. ``path``: keep credentials in that file (else in memory)."""

    def __init__(self, path: str | Path | None = None, *, user_verification: bool = False,
                 wait_for_touch: Callable[[threading.Event | None], None] | None = None):
        self.path = Path(path) if path else None
        self.user_verification = user_verification  # advertise built-in UV (like a fingerprint key)
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
        if self.path and self.path.exists():
            self._load()

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
                }.get(data[0])
                if handler is None:
                    return bytes([_ERR.INVALID_COMMAND])
                response = handler(request, event, on_keepalive)
        except CtapError as e:
            return bytes([e.code])
        return b"\x00" + (cbor.encode(response) if response is not None else b"")

    # Commands -------------------------------------------------------------------------------
    def _get_info(self, request, event, on_keepalive) -> dict:
        options = {"rk": False, "up": True, "plat": False}
        info: dict[int, Any] = {1: ["FIDO_2_0"], 3: AAGUID, 4: options, 5: 2048, 10: [{"alg": -7, "type": "public-key"}]}
        if self.user_verification:
            options["uv"] = True
            info[6] = [2]  # the client insists on a PIN/UV protocol when UV is offered
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
        self._wait_for_touch(event, on_keepalive)
        key = ec.generate_private_key(ec.SECP256R1())
        credential_id = os.urandom(32)
        self._creds[credential_id] = {"rp_id_hash": rp_id_hash, "key": key, "user_id": user["id"]}
        self.counter += 1
        public = ES256.from_cryptography_key(key.public_key())
        flags = _FLAG.UP | _FLAG.AT | (_FLAG.UV if options.get("uv") else 0)
        auth_data = AuthenticatorData.create(
            rp_id_hash, flags, self.counter, AttestedCredentialData.create(AAGUID, credential_id, public))
        # Packed self-attestation: signed by the credential key itself.
        sig = key.sign(bytes(auth_data) + client_data_hash, ec.ECDSA(hashes.SHA256()))
        self._save()
        return {1: "packed", 2: bytes(auth_data), 3: {"alg": ES256.ALGORITHM, "sig": sig}}

    def _get_assertion(self, request: dict, event, on_keepalive) -> dict:
        rp_id, client_data_hash = request[1], request[2]
        rp_id_hash = hashlib.sha256(rp_id.encode()).digest()
        options = request.get(5) or {}
        want_up = options.get("up", True)
        self._check_uv_option(options)
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
            if options.get("uv"):
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
               "counter": self.counter, "credentials": {}}
        for cid, cred in self._creds.items():
            pem = cred["key"].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
            doc["credentials"][cid.hex()] = {"rp_id_hash": cred["rp_id_hash"].hex(), "key": pem.decode(),
                                             "user_id": cred["user_id"].hex()}
        write_private(self.path, json.dumps(doc, indent=1).encode())

    def _load(self) -> None:
        doc = json.loads(self.path.read_text())
        self.counter = int(doc["counter"])
        for cid, cred in doc["credentials"].items():
            key = serialization.load_pem_private_key(cred["key"].encode(), password=None)
            self._creds[bytes.fromhex(cid)] = {"rp_id_hash": bytes.fromhex(cred["rp_id_hash"]), "key": key,
                                               "user_id": bytes.fromhex(cred["user_id"])}
