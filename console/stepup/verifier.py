"""Step-up authentication: the one entry point the run pipeline, the CLI and the TUI call.

``StepUp.ensure`` decides whether an existing grant meets an action's requirement; if not it asks for a
TOTP code or a security-key touch (whose challenge is the request digest, so a touch approves exactly
what runs), then the typed confirmation, then the other operators' approvals. Every success, failure,
replay, lockout and clone signal goes to the caller's audit hook; no hook field carries a secret or code.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from opsgate.console.catalog.model import Settings
from opsgate.console.stepup.credentials import CredentialStore, FidoCredential, OperatorCredentials
from opsgate.console.errors import ConfigError, StepUpDenied
from opsgate.console.events import (
    APPROVAL_DENIED,
    APPROVAL_GRANTED,
    STEPUP_CLONE_SUSPECTED,
    STEPUP_FAILURE,
    STEPUP_LOCKOUT,
    STEPUP_REPLAY,
    STEPUP_SUCCESS,
)
from opsgate.console.stepup.grants import GrantBook, GrantRecord
from opsgate.console.catalog.policy import FACTOR_WORDS, Grant, Requirement, factor_rank, satisfies
from opsgate.console.stepup.securitykey import (
    DEFAULT_TIMEOUT,
    AttestationPolicy,
    CloneSuspected,
    KeyAccepted,
    KeyRejected,
    SecurityKey,
    SecurityKeyError,
    counter_ok,
)
from opsgate.console.stepup.totp import (
    TotpAccepted,
    TotpLockedOut,
    TotpMalformed,
    TotpNotEnrolled,
    TotpRejected,
    TotpReplay,
    TotpVerifier,
    check_enrollment_code,
)

if TYPE_CHECKING:
    from fido2.ctap import CtapDevice

_DIGEST_DOMAIN = b"opsgate step-up request v1\0"


@dataclass(frozen=True)
class StepUpRequest:
    """What a code or a touch approves: this action, this exact command, these targets, this run."""

    action_id: str
    command: str  # the rendered command; only hashed, never shown or audited from here
    targets: tuple[str, ...]
    nonce: bytes  # random per run (new_nonce())
    display_command: str | None = field(default=None, compare=False)  # redacted command for prompts

    def digest(self) -> bytes:
        """sha256 over a length-prefixed encoding (targets sorted): no two requests share an encoding."""
        h = hashlib.sha256(_DIGEST_DOMAIN)
        for part in (self.action_id.encode(), self.command.encode(), self.nonce):
            h.update(struct.pack(">I", len(part)) + part)
        targets = sorted(self.targets)
        h.update(struct.pack(">I", len(targets)))
        for t in targets:
            h.update(struct.pack(">I", len(t.encode())) + t.encode())
        return h.digest()

    def summary(self) -> str:
        """"restart-service on db-1, db-2: sudo systemctl restart nginx" (the redacted command, if given)."""
        text = self.action_id
        if self.targets:
            text += " on " + ", ".join(self.targets)
        if self.display_command:
            text += ": " + self.display_command
        return text


def new_nonce() -> bytes:
    """A fresh per-run nonce for StepUpRequest."""
    return os.urandom(16)


@dataclass
class Prompt:
    """What the front end shows while asking."""

    operator: str  # who must answer (the requester, or an approver)
    factor: str  # "otp" | "fido2"
    purpose: str  # "step-up" | "approval" | "enroll"
    summary: str
    attempts_left: int | None = None
    locked_until: float | None = None
    error: str | None = None  # why the last attempt failed
    hint: str | None = None  # what the expected answer is, in words ("the runbook's name")


class Prompter(Protocol):
    """Implemented by the CLI and the TUI; every call comes from a worker thread."""

    def ask_code(self, prompt: Prompt) -> str | None: ...  # None: cancelled
    # The security key's PIN, while the touch is shown (attempts_left: the key's retries); never kept.
    def ask_pin(self, prompt: Prompt) -> str | None: ...  # None: cancelled
    def touch_started(self, prompt: Prompt, cancel: threading.Event) -> None: ...
    def touch_finished(self) -> None: ...
    def ask_confirmation(self, expected: str, prompt: Prompt) -> str | None: ...
    def ask_approver(self, candidates: list[str], prompt: Prompt) -> str | None: ...


AuditHook = Callable[[str, dict], None]


@dataclass(frozen=True)
class StepUpOutcome:
    grant: Grant | None  # None when the requirement needed no step-up
    fresh: bool  # a step-up happened now
    digest: str | None  # hex request digest when FIDO2 was used
    approvals: tuple[str, ...]  # approver names


RUNBOOK_PREFIX = "runbook:"  # a runbook's StepUpRequest.action_id


def confirmation_text(request: StepUpRequest) -> str:
    """What the operator types to confirm, short and meaningful (as GitHub and Teleport ask): a runbook's
    name, a single target's name, or for several targets their number."""
    if request.action_id.startswith(RUNBOOK_PREFIX):
        return request.action_id[len(RUNBOOK_PREFIX):]
    if len(request.targets) == 1:
        return request.targets[0]
    return str(len(request.targets))


def confirmation_hint(request: StepUpRequest) -> str:
    """What the expected text is, in words, for the prompt."""
    if request.action_id.startswith(RUNBOOK_PREFIX):
        return "the runbook's name"
    return "the target's name" if len(request.targets) == 1 else "the number of targets"


def confirmation_matches(typed: str, request: StepUpRequest) -> bool:
    """Exactly the expected text, blanks around it ignored."""
    return typed.strip() == confirmation_text(request)


def pin_asker(prompter: Prompter, prompt: Prompt, on_wrong_pin: Callable[[str], None] | None = None):
    """``SecurityKey``'s ask_pin from the front end's ``ask_pin`` (None when the front end has none)."""
    ask = getattr(prompter, "ask_pin", None)
    if ask is None:
        return None

    def ask_pin(retries: int | None, error: str | None) -> str | None:
        if error and on_wrong_pin is not None:
            on_wrong_pin(error)
        return ask(Prompt(prompt.operator, "fido2", prompt.purpose, prompt.summary, attempts_left=retries, error=error))

    return ask_pin


def enroll_hint(factor: str) -> str:
    return "run `opsgate enroll fido2`" if factor == "fido2" else "run `opsgate enroll otp`"


def enroll_fido2_fields(operator: str, cred: FidoCredential) -> dict:
    """The ``enroll.fido2`` record's fields: which key, which model, whether its attestation verified, and its
    public key (the COSE key of the credential data, CBOR in base64), against which ``opsgate audit verify``
    re-verifies every assertion it makes."""
    import base64

    from fido2 import cbor
    from fido2.webauthn import AttestedCredentialData

    public_key = base64.b64encode(cbor.encode(dict(AttestedCredentialData(cred.credential_data).public_key)))
    return {"operator": operator, "credential": cred.name, "credential_id": cred.credential_id.hex(),
            "aaguid": cred.aaguid, "attestation": cred.attestation, "attestation_verified": cred.attestation_verified,
            "public_key": public_key.decode("ascii")}


def load_attestation_roots(paths: tuple[Path, ...]) -> tuple[bytes, ...]:
    """``[console] attestation_roots``: every certificate in those PEM files, as DER."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    roots = []
    for path in paths:
        try:
            certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
        except (OSError, ValueError) as e:
            raise ConfigError(f"console.attestation_roots: {path}: not a readable PEM certificate file ({e})") from None
        roots += [c.public_bytes(Encoding.DER) for c in certs]
    return tuple(roots)


class StepUp:
    """Step-up, confirmation and approvals for one state dir."""

    enroll_user_verification = False  # a key registers only with its PIN (wiring: when a policy asks for UV)
    # opsgate's software key may be enrolled: only the demo, the tests and $OPSGATE_SOFTKEY (which warns) set it.
    allow_software_key = False

    def __init__(self, state_dir: Path, settings: Settings, *, persist_grants: bool = True,
                 authenticator: Callable[[], "CtapDevice"] | None = None,
                 clock: Callable[[], float] = time.time, touch_timeout: float = DEFAULT_TIMEOUT):
        self.store = CredentialStore(state_dir)
        self.settings = settings
        self.clock = clock
        self.totp = TotpVerifier(self.store, clock)
        self.key = SecurityKey(settings.rp_id, authenticator, timeout=touch_timeout)
        self.grants = GrantBook(state_dir if persist_grants else None)

    # Grants ---------------------------------------------------------------------------------
    def grant_for(self, operator: str) -> Grant | None:
        """The operator's current grant (memory, and the state dir when grants persist)."""
        record = self.grants.get(operator)
        return record.grant if record else None

    def _usable_grant(self, operator: str, requirement: Requirement, request: StepUpRequest) -> GrantRecord | None:
        record = self.grants.get(operator)
        if record is None or record.grant.operator != operator:
            return None
        if not satisfies(record.grant, requirement, self.clock(), used=record.used):
            return None
        # Every run: only a step-up made for this very request counts (a touch approves what runs).
        if requirement.max_age == 0 and record.request_digest != request.digest().hex():
            return None
        return record

    # The pipeline's entry point -------------------------------------------------------------
    def ensure(self, operator: str, requirement: Requirement, request: StepUpRequest,
               prompter: Prompter, audit: AuditHook) -> StepUpOutcome:
        """Make sure ``operator`` may run ``request`` under ``requirement``; raise StepUpDenied if not."""
        grant, fresh, digest = None, False, None
        if requirement.confirm:  # first: nothing is asked of the key or the phone for a run not confirmed
            self._confirm(operator, request, requirement, prompter)
        if requirement.needs_stepup:
            record = self._usable_grant(operator, requirement, request)
            if record is not None:
                grant = record.grant
            else:
                grant, digest = self._authenticate(operator, requirement.factor, requirement, request,
                                                   prompter, audit, purpose="step-up")
                fresh = True
        approvals = self._approvals(operator, requirement, request, prompter, audit) if requirement.approvals else ()
        # The grant exists only once the whole step-up (factor, confirmation, approvals) is done.
        if fresh:
            self.grants.put(GrantRecord(grant, requirement.max_age == 0, request.digest().hex()))
        elif grant is not None and requirement.max_age == 0:
            self.grants.mark_used(operator)
        return StepUpOutcome(grant, fresh, digest.hex() if digest else None, approvals)

    def step_up_now(self, operator: str, factor: str | None, prompter: Prompter, audit: AuditHook) -> Grant:
        """Step up now with ``factor`` (default: the strongest enrolled) and keep the grant (``opsgate auth``)."""
        creds = self.store.operator(operator)
        enrolled = creds.factors()
        if factor is None:
            if not enrolled:
                raise StepUpDenied(f"no factor enrolled for {operator}: {enroll_hint('otp')}")
            factor = (creds.usable_factors() or enrolled)[-1]  # not a key locked after a clone signal
        elif factor not in enrolled:
            raise StepUpDenied(f"{operator} has no {FACTOR_WORDS[factor]} enrolled: {enroll_hint(factor)}")
        request = StepUpRequest("opsgate.auth", "opsgate auth", (), new_nonce())
        grant, _ = self._authenticate(operator, factor, Requirement(factor), request, prompter, audit,
                                      purpose="step-up", exact=True)
        self.grants.put(GrantRecord(grant, False, None))
        return grant

    # Enrollment ------------------------------------------------------------------------------
    def enroll_otp(self, operator: str, secret: str, code: str,
                   before_save: Callable[[], None] | None = None) -> bool:
        """Save ``secret`` for ``operator`` only if ``code`` is current for it; the code is then spent.

        ``before_save`` (the audit record) runs first: if it raises, nothing is saved (fail closed)."""
        step = check_enrollment_code(secret, code, self.clock())
        if step is None:
            return False
        if before_save is not None:
            before_save()
        with self.store.transaction() as data:
            op = data.setdefault(operator, OperatorCredentials())
            op.totp_secret = secret
            op.totp_last_step = step  # the enrollment code cannot be replayed for a step-up
            op.totp_failures = 0
            op.totp_locked_until = 0.0
        return True

    def enroll_fido2(self, operator: str, name: str, prompter: Prompter,
                     before_save: Callable[[FidoCredential], None] | None = None) -> FidoCredential:
        """Register a security key for ``operator`` (one touch) and save its credential.

        ``before_save`` (the audit record) runs first: if it raises, nothing is saved (fail closed)."""
        existing = self.store.operator(operator).fido2
        if any(c.name == name for c in existing):
            raise StepUpDenied(f"{operator} already has a security key named {name!r}: pick another --name")
        attestation = self.attestation_policy()
        cancel = threading.Event()
        prompt = Prompt(operator, "fido2", "enroll", f"register security key {name!r}")
        prompter.touch_started(prompt, cancel)
        try:
            cred = self.key.register(operator, name, existing, cancel=cancel, ask_pin=pin_asker(prompter, prompt),
                                     user_verification=self.enroll_user_verification, attestation=attestation)
        finally:
            prompter.touch_finished()
        if before_save is not None:
            before_save(cred)
        with self.store.transaction() as data:
            data.setdefault(operator, OperatorCredentials()).fido2.append(cred)
        return cred

    def attestation_policy(self) -> AttestationPolicy:
        """Which authenticators enrollment accepts: ``[console] authenticators`` and ``attestation_roots``."""
        allowed = self.settings.authenticators
        return AttestationPolicy(None if allowed is None else frozenset(allowed),
                                 load_attestation_roots(self.settings.attestation_roots), self.allow_software_key)

    def remove_key(self, operator: str, name: str, prompter: Prompter, audit: AuditHook,
                   before_remove: Callable[[FidoCredential, str], None] | None = None,
                   factor: str | None = None) -> FidoCredential:
        """Remove ``operator``'s security key ``name`` after a fresh step-up with another factor: another
        (unlocked) key of theirs, or their OTP; for their last key, only their OTP. The last factor of all
        is never removed (anyone at the terminal could then enroll their own).

        ``factor``: step up with this one ("otp" or "fido2"; default: another key if there is one, else OTP).
        ``before_remove(cred, factor)`` (the audit record) runs first: if it raises, nothing is removed."""
        creds = self.store.operator(operator)
        target = next((c for c in creds.fido2 if c.name == name), None)
        if target is None:
            names = ", ".join(repr(c.name) for c in creds.fido2) or "none"
            raise StepUpDenied(f"{operator} has no security key named {name!r} (enrolled: {names})")
        others = [c for c in creds.fido2 if c.credential_id != target.credential_id and not c.locked]
        if factor == "otp" and not creds.totp_secret:
            raise StepUpDenied(f"{operator} has no OTP enrolled: step up with another security key instead")
        if factor == "fido2" and not others:
            raise StepUpDenied(f"{operator} has no other usable security key than {name!r}: step up with OTP, "
                               f"the key being removed cannot approve its own removal")
        if others and factor != "otp":
            factor, keys = "fido2", others
        elif creds.totp_secret:
            factor, keys = "otp", None
        else:
            why = ("it is their only factor" if len(creds.fido2) == 1 else
                   "their other security keys are locked after a clone signal and no OTP is enrolled")
            raise StepUpDenied(f"cannot remove {operator}'s security key {name!r}: {why}; enroll another factor "
                               f"first ({enroll_hint('otp')} or enroll a backup key), then remove it")
        summary = f"remove security key {name!r} of {operator}"
        request = StepUpRequest("opsgate.keys.remove", f"remove {target.credential_id.hex()}", (), new_nonce())
        self._authenticate(operator, factor, Requirement(factor), request, prompter, audit, purpose="step-up",
                           exact=True, summary=summary, keys=keys)
        if before_remove is not None:
            before_remove(target, factor)
        with self.store.transaction() as data:
            op = data.get(operator, OperatorCredentials())
            op.fido2 = [c for c in op.fido2 if c.credential_id != target.credential_id]
        return target

    # Factors --------------------------------------------------------------------------------
    def _pick_factor(self, operator: str, required: str, creds: OperatorCredentials) -> str:
        usable = [f for f in creds.factors() if factor_rank(f) >= factor_rank(required)]
        if not usable:
            raise StepUpDenied(f"no factor enrolled for {operator} that meets {FACTOR_WORDS[required]}: "
                               f"{enroll_hint(required)}")
        return required if required in usable else usable[0]  # the one asked for, else the next stronger

    def _authenticate(self, operator: str, factor: str, requirement: Requirement, request: StepUpRequest,
                      prompter: Prompter, audit: AuditHook, *, purpose: str, exact: bool = False,
                      summary: str | None = None,
                      keys: list[FidoCredential] | None = None) -> tuple[Grant, bytes | None]:
        """``keys``: only these security keys may answer (default: every key of the operator's)."""
        creds = self.store.operator(operator)
        use = factor if exact else self._pick_factor(operator, factor, creds)
        prompt = Prompt(operator, use, purpose, summary or request.summary())
        if use == "otp":
            self._otp(prompt, prompter, audit)
            return Grant(operator, "otp", self.clock()), None
        digest = request.digest()
        verified = self._fido2(operator, creds.fido2 if keys is None else keys, digest, requirement.user_verification,
                               prompt, prompter, audit, nonce=request.nonce)
        return Grant(operator, "fido2", self.clock(), verified), digest

    def _otp(self, prompt: Prompt, prompter: Prompter, audit: AuditHook) -> None:
        """Ask for codes until one verifies; deny on cancel, lockout, or a front end that stops asking."""
        operator = prompt.operator
        until = self.totp.locked_until(operator)
        if until is not None:
            self._event(audit, STEPUP_LOCKOUT, prompt, locked_until=until)
            raise StepUpDenied(_locked_message(operator, until, self.clock()))
        prompt.attempts_left = self.totp.attempts_left(operator)
        while True:
            code = prompter.ask_code(prompt)
            if code is None:
                # A front end that will not ask again (a script's stdin) ends here with the last reason.
                reason = f"step-up failed for {operator}: {prompt.error}" if prompt.error else f"step-up cancelled by {operator}"
                raise StepUpDenied(reason)
            result = self.totp.verify(operator, code)
            match result:
                case TotpAccepted():
                    self._event(audit, STEPUP_SUCCESS, prompt)
                    return
                case TotpMalformed(reason=reason):
                    self._event(audit, STEPUP_FAILURE, prompt, reason="malformed", attempts_left=prompt.attempts_left)
                    prompt.error = f"not a code: {reason}"
                case TotpReplay(attempts_left=left):
                    self._event(audit, STEPUP_REPLAY, prompt, attempts_left=left)
                    prompt.error, prompt.attempts_left = "code already used; wait for the next one", left
                case TotpRejected(attempts_left=left):
                    self._event(audit, STEPUP_FAILURE, prompt, reason="wrong code", attempts_left=left)
                    prompt.error = f"wrong code, {left} attempt{'s' if left != 1 else ''} left"
                    prompt.attempts_left = left
                case TotpLockedOut(locked_until=until, failures=failures):
                    prompt.locked_until = until
                    self._event(audit, STEPUP_LOCKOUT, prompt, locked_until=until, failures=failures)
                    raise StepUpDenied(_locked_message(operator, until, self.clock()))
                case TotpNotEnrolled():
                    raise StepUpDenied(f"no OTP enrolled for {operator}: {enroll_hint('otp')}")

    def _fido2(self, operator: str, credentials: list[FidoCredential], digest: bytes, user_verification: bool,
               prompt: Prompt, prompter: Prompter, audit: AuditHook, *, nonce: bytes | None = None) -> bool:
        """One touch over the request digest; refuse a bad assertion or a counter that did not grow.
        True when the key also verified the user (PIN or biometric). A key locked by a clone signal is
        not asked at all, and a clone signal locks the key until it is enrolled again."""
        usable = [c for c in credentials if not c.locked]
        if not usable:
            names = ", ".join(repr(c.name) for c in credentials)
            self._event(audit, STEPUP_FAILURE, prompt, reason="security key locked after a clone signal")
            raise StepUpDenied(f"{operator}'s security key {names} is locked after a clone signal: enroll a key "
                               f"again (`opsgate enroll fido2` after stepping up with another factor)")
        credentials = usable
        cancel = threading.Event()
        prompter.touch_started(prompt, cancel)
        try:
            wrong_pins: list[str] = []  # each wrong PIN is audited (the reason and retries left, never the PIN)

            def wrong_pin(why: str) -> None:
                wrong_pins.append(why)
                self._event(audit, STEPUP_FAILURE, prompt, reason=why, digest=digest.hex())

            result = self.key.verify(credentials, digest, user_verification=user_verification, cancel=cancel,
                                     ask_pin=pin_asker(prompter, prompt, wrong_pin))
        except SecurityKeyError as e:
            if str(e) not in wrong_pins:
                self._event(audit, STEPUP_FAILURE, prompt, reason=str(e), digest=digest.hex())
            raise
        finally:
            prompter.touch_finished()
        if isinstance(result, KeyRejected):
            self._event(audit, STEPUP_FAILURE, prompt, reason=result.reason, digest=digest.hex())
            raise StepUpDenied(f"security key assertion refused for {operator}: {result.reason}")
        # Re-check and store the counter under the store's lock: another console may have used the key.
        clone = result if isinstance(result, CloneSuspected) else None
        name = "?"
        if clone is None:
            assert isinstance(result, KeyAccepted)
            with self.store.transaction() as data:
                for cred in data.get(operator, OperatorCredentials()).fido2:
                    if cred.credential_id == result.credential_id:
                        name = cred.name
                        if counter_ok(cred.sign_count, result.sign_count):
                            cred.sign_count = result.sign_count
                            cred.last_used = self.clock()
                        else:
                            clone = CloneSuspected(cred.credential_id, cred.sign_count, result.sign_count)
        if clone is not None:
            name = next((c.name for c in credentials if c.credential_id == clone.credential_id), name)
            # Locked for good, whichever copy answered next: both the genuine key and the clone are refused
            # until the operator enrolls a key again with another factor.
            with self.store.transaction() as data:
                for cred in data.get(operator, OperatorCredentials()).fido2:
                    if cred.credential_id == clone.credential_id:
                        cred.locked = (f"clone signal: sign counter {clone.received_count} not above "
                                       f"{clone.stored_count}")
            self._event(audit, STEPUP_CLONE_SUSPECTED, prompt, credential=name, locked=True,
                        stored_count=clone.stored_count, received_count=clone.received_count, digest=digest.hex())
            raise StepUpDenied(f"security key {name!r} of {operator} reported sign counter {clone.received_count}, "
                               f"not above {clone.stored_count}: possibly cloned; refused, and the key is locked "
                               f"until it is enrolled again (with another factor)")
        # The assertion as signed (never a PIN), and the request's nonce: a reviewer re-verifies it offline.
        assertion = {**result.assertion, **({"nonce": nonce.hex()} if nonce is not None else {})} \
            if result.assertion else None
        self._event(audit, STEPUP_SUCCESS, prompt, credential=name, sign_count=result.sign_count,
                    user_verified=result.user_verified, digest=digest.hex(),
                    **({"assertion": assertion} if assertion else {}))
        return result.user_verified

    def _event(self, audit: AuditHook, name: str, prompt: Prompt, **fields) -> None:
        audit(name, {"operator": prompt.operator, "factor": prompt.factor, "purpose": prompt.purpose, **fields})

    # Confirmation and approvals -------------------------------------------------------------
    def _confirm(self, operator: str, request: StepUpRequest, requirement: Requirement, prompter: Prompter) -> None:
        expected = confirmation_text(request)
        prompt = Prompt(operator, requirement.factor, "confirm", request.summary())
        prompt.hint = confirmation_hint(request)
        typed = prompter.ask_confirmation(expected, prompt)
        if typed is None:
            raise StepUpDenied(f"confirmation cancelled by {operator}")
        if not confirmation_matches(typed, request):
            raise StepUpDenied(f"confirmation did not match: type {expected!r}")

    def _approvals(self, operator: str, requirement: Requirement, request: StepUpRequest,
                   prompter: Prompter, audit: AuditHook) -> tuple[str, ...]:
        """Two-person rule: ``requirement.approvals`` other operators each pass their own factor."""
        needed = requirement.approvals
        approved: list[str] = []
        everyone = self.store.load()
        eligible = sorted(name for name, creds in everyone.items()
                          if name != operator and any(factor_rank(f) >= factor_rank(requirement.factor)
                                                      for f in creds.factors()))
        while len(approved) < needed:
            candidates = [n for n in eligible if n not in approved]
            summary = f"approve {request.summary()} requested by {operator}"
            prompt = Prompt(operator, requirement.factor, "approval", summary)
            if not candidates:
                audit(APPROVAL_DENIED, {"operator": None, "requester": operator,
                                          "reason": "no eligible approver", "approvals": len(approved)})
                raise StepUpDenied(f"needs {needed} approval{'s' if needed > 1 else ''} by another operator "
                                   f"enrolled for {FACTOR_WORDS[requirement.factor]}; {len(approved)} available")
            approver = prompter.ask_approver(candidates, prompt)
            if approver is None:
                audit(APPROVAL_DENIED, {"operator": None, "requester": operator, "reason": "cancelled"})
                raise StepUpDenied(f"approval cancelled: {len(approved)} of {needed} approvals")
            reason = None
            if approver == operator:
                reason = "an operator cannot approve their own request"
            elif approver in approved:
                reason = f"{approver} already approved this request"
            elif approver not in candidates:
                reason = f"{approver} is not an operator enrolled for {FACTOR_WORDS[requirement.factor]}"
            if reason:
                audit(APPROVAL_DENIED, {"operator": approver, "requester": operator, "reason": reason})
                raise StepUpDenied(f"approval refused: {reason}")
            try:
                _, digest = self._authenticate(approver, requirement.factor, requirement, request,
                                               prompter, audit, purpose="approval", summary=summary)
            except StepUpDenied as e:
                audit(APPROVAL_DENIED, {"operator": approver, "requester": operator, "reason": str(e)})
                raise StepUpDenied(f"approval by {approver} failed: {e}") from None
            fields = {"operator": approver, "requester": operator, "factor": requirement.factor}
            if digest:
                fields["digest"] = digest.hex()
            audit(APPROVAL_GRANTED, fields)
            approved.append(approver)
        return tuple(approved)


def _locked_message(operator: str, until: float, now: float) -> str:
    return f"{operator} is locked out of OTP for {max(1, int(until - now + 0.999))} s after repeated wrong codes"
