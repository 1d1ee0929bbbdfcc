"""Re-verifying every FIDO2 approval in the trail, offline, against the key enrolled for it.

A ``stepup.success`` record of a security-key step-up carries ``assertion``: what the key signed and the
signature (``credential_id`` hex; ``authenticator_data``, ``client_data_json`` and ``signature`` base64;
``nonce`` hex, the request's per-run nonce; ``rp_id``); its ``digest`` is the request digest, which the key
signed as the WebAuthn challenge. An ``enroll.fido2`` record carries ``public_key``: the credential's COSE
key (CBOR, base64). ``check_assertions`` finds, for each assertion, the key enrolled for that operator and
credential id earlier in the trail and checks, with the fido2 library's COSE code: the signature over
authenticator data + sha256(client data JSON), the client data (``webauthn.get``, the challenge is the
recorded digest), the RP id hash and the user-presence flag. No PIN or secret is ever in these records.
Records written before these fields existed, and assertions by a key whose ``enroll.fido2`` record has no
public key (or is not in this trail), are counted as not re-verifiable, not judged.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from opsgate.actions.display import escape_line
from opsgate.console.audit.trail import record_if
from opsgate.console.events import ACTION_START, ENROLL_FIDO2, RUNBOOK_START, STEPUP_SUCCESS

_NEEDLES = (b'"event":"' + ENROLL_FIDO2.encode() + b'"', b'"assertion":', b'"fido2_digest":"', b'"factor":"fido2"')


@dataclass
class AssertionReport:
    verified: int = 0
    unverifiable: int = 0  # FIDO2 step-ups recorded before assertions (or their key's public key) were
    problems: list[str] = field(default_factory=list)


def _websafe(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def check_one(assertion: dict, digest: object, public_key_b64: str) -> str | None:
    """Why ``assertion`` does not verify against the enrolled key and the recorded ``digest``, or None."""
    from fido2 import cbor
    from fido2.cose import CoseKey
    from fido2.webauthn import AuthenticatorData

    try:
        auth_data = base64.b64decode(assertion["authenticator_data"], validate=True)
        client_data = base64.b64decode(assertion["client_data_json"], validate=True)
        signature = base64.b64decode(assertion["signature"], validate=True)
        key = CoseKey.parse(cbor.decode(base64.b64decode(public_key_b64, validate=True)))
        parsed = AuthenticatorData(auth_data)
        collected = json.loads(client_data)
    except Exception as e:  # anything malformed in a record someone may have edited
        return f"malformed assertion fields ({type(e).__name__})"
    try:
        key.verify(auth_data + hashlib.sha256(client_data).digest(), signature)
    except Exception:
        return "the signature does not verify against the enrolled public key"
    if not isinstance(collected, dict) or collected.get("type") != "webauthn.get":
        return "the client data is not a webauthn.get assertion"
    if not isinstance(digest, str) or collected.get("challenge") != _websafe(bytes.fromhex(digest)):
        return "the signed challenge is not the recorded request digest"
    rp_id = assertion.get("rp_id")
    if not isinstance(rp_id, str) or parsed.rp_id_hash != hashlib.sha256(rp_id.encode()).digest():
        return "the authenticator data is for another relying party"
    if not parsed.is_user_present():
        return "the key did not report user presence"
    return None


def check_assertions(path: Path) -> AssertionReport:
    """One pass over the trail (only lines that may matter are parsed)."""
    report = AssertionReport()
    keys: dict[tuple[str, str], str] = {}
    signed: dict[str, set[str]] = {}  # run -> the request digests its verified assertions signed
    asserted: set[str] = set()  # runs with a recorded assertion (verified or not)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return report
    with f:
        for line in f:
            record = record_if(line, _NEEDLES)
            if record is None:
                continue
            event = record.get("event")
            run = record.get("run")
            if event in (ACTION_START, RUNBOOK_START) and isinstance(record.get("fido2_digest"), str) \
                    and run in asserted and record["fido2_digest"] not in signed.get(run, ()):
                report.problems.append(f"seq {escape_line(record.get('seq'), 24)} ({event}): the plan's fido2_digest "
                                       f"is not a digest this run's security key verifiably signed")
            elif event == ENROLL_FIDO2:
                if isinstance(record.get("public_key"), str) and isinstance(record.get("credential_id"), str):
                    keys[(str(record.get("operator")), record["credential_id"])] = record["public_key"]
            elif event == STEPUP_SUCCESS and record.get("factor") == "fido2":
                assertion = record.get("assertion")
                if not isinstance(assertion, dict):
                    report.unverifiable += 1
                    continue
                if isinstance(run, str):
                    asserted.add(run)
                where = f"seq {escape_line(record.get('seq'), 24)} (stepup.success of {escape_line(record.get('operator'), 40)})"
                key = keys.get((str(record.get("operator")), str(assertion.get("credential_id"))))
                if key is None:  # enrolled before public keys were recorded, or before this trail began
                    report.unverifiable += 1
                    continue
                problem = check_one(assertion, record.get("digest"), key)
                if problem:
                    report.problems.append(f"{where}: FIDO2 approval does not verify: {problem}")
                else:
                    report.verified += 1
                    if isinstance(run, str):
                        signed.setdefault(run, set()).add(str(record.get("digest")))
    return report
