"""TOTP (RFC 6238) verification with replay protection and a persistent, growing lockout.

Each verification is one read-modify-write of the credentials store under its exclusive lock, so
two consoles cannot both accept the same code, and lockout state survives a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Callable

import pyotp

from opsgate.console.stepup.credentials import CredentialStore, OperatorCredentials

STEP = 30  # seconds per code (RFC 6238 default)
DIGITS = 6
WINDOW = 1  # accept the previous, current and next step (clock skew)
MAX_FAILURES = 5  # consecutive failures before the first lockout
LOCKOUT_BASE = 30.0  # seconds; doubles with each further failure
LOCKOUT_MAX = 15 * 60.0
ISSUER = "opsgate"


def new_secret() -> str:
    """A fresh 160-bit secret, base32 (RFC 4226 recommends 160 bits)."""
    return pyotp.random_base32(32)  # 32 base32 characters = 160 bits


def provisioning_uri(secret: str, operator: str) -> str:
    """The ``otpauth://`` URI an authenticator app scans (issuer "opsgate")."""
    return pyotp.TOTP(secret, issuer=ISSUER, name=operator).provisioning_uri()


def time_step(now: float) -> int:
    return int(now // STEP)


def code_at_step(secret: str, step: int, *, digits: int = DIGITS, digest=hashlib.sha1) -> str:
    """The code for time step ``step`` (the verifier's own generator; RFC 6238 Appendix B tests it)."""
    return pyotp.TOTP(secret, digits=digits, digest=digest, interval=STEP).generate_otp(step)


def normalize_code(code: str, digits: int = DIGITS) -> str | None:
    """The code without surrounding blanks or inner spaces, or None when it is not ``digits`` digits."""
    code = code.strip().replace(" ", "")
    if len(code) != digits or not code.isascii() or not code.isdigit():
        return None
    return code


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The step within ±WINDOW whose code equals ``code`` (constant-time compare), or None."""
    current = time_step(now)
    found = None
    for step in range(current - WINDOW, current + WINDOW + 1):
        # Compare every candidate, without an early exit, so timing does not say which step matched.
        if hmac.compare_digest(code_at_step(secret, step).encode(), code.encode()) and found is None:
            found = step
    return found


def lockout_seconds(failures: int) -> float:
    """How long the ``failures``-th consecutive failure locks out: 30 s at 5, doubling, at most 15 min."""
    if failures < MAX_FAILURES:
        return 0.0
    return min(LOCKOUT_BASE * 2 ** min(failures - MAX_FAILURES, 16), LOCKOUT_MAX)


# Typed results: the step-up layer turns each into an audit event and a prompt or a denial.
@dataclass(frozen=True)
class TotpAccepted:
    step: int


@dataclass(frozen=True)
class TotpMalformed:
    """Not a code at all (wrong length, not digits): it is not counted as a guess."""

    reason: str


@dataclass(frozen=True)
class TotpRejected:
    attempts_left: int  # failures left before a lockout


@dataclass(frozen=True)
class TotpReplay:
    """A correct code whose step is at or before the last accepted one (RFC 6238 §5.2)."""

    step: int
    attempts_left: int


@dataclass(frozen=True)
class TotpLockedOut:
    locked_until: float
    failures: int


@dataclass(frozen=True)
class TotpNotEnrolled:
    pass


TotpResult = TotpAccepted | TotpMalformed | TotpRejected | TotpReplay | TotpLockedOut | TotpNotEnrolled


class TotpVerifier:
    """Checks operators' codes against the credentials store."""

    def __init__(self, store: CredentialStore, clock: Callable[[], float] = time.time):
        self.store = store
        self.clock = clock

    def locked_until(self, operator: str) -> float | None:
        """When the operator's lockout ends, or None when they may try now."""
        until = self.store.operator(operator).totp_locked_until
        return until if until > self.clock() else None

    def attempts_left(self, operator: str) -> int:
        """Failures left before the next lockout (1 after a lockout has run out: the next failure re-locks)."""
        return max(1, MAX_FAILURES - self.store.operator(operator).totp_failures)

    def verify(self, operator: str, code: str) -> TotpResult:
        """Check ``code`` for ``operator`` now and record the outcome (last step, failures, lockout)."""
        with self.store.transaction() as data:
            now = self.clock()
            op = data.get(operator)
            if op is None or not op.totp_secret:
                return TotpNotEnrolled()
            if op.totp_locked_until > now:
                return TotpLockedOut(op.totp_locked_until, op.totp_failures)
            normalized = normalize_code(code)
            if normalized is None:
                return TotpMalformed(f"a code is {DIGITS} digits")
            step = matching_step(op.totp_secret, normalized, now)
            if step is not None and step > op.totp_last_step:
                op.totp_last_step = step
                op.totp_failures = 0
                op.totp_locked_until = 0.0
                return TotpAccepted(step)
            # A replayed code counts as a failure too: an attacker replaying a seen code must not get free tries.
            return self._fail(op, now, replay_step=step)

    @staticmethod
    def _fail(op: OperatorCredentials, now: float, replay_step: int | None) -> TotpResult:
        op.totp_failures += 1
        seconds = lockout_seconds(op.totp_failures)
        if seconds:
            op.totp_locked_until = now + seconds
            return TotpLockedOut(op.totp_locked_until, op.totp_failures)
        left = MAX_FAILURES - op.totp_failures
        if replay_step is not None:
            return TotpReplay(replay_step, left)
        return TotpRejected(left)


def check_enrollment_code(secret: str, code: str, now: float) -> int | None:
    """The matched step when ``code`` is current for a secret being enrolled, else None."""
    normalized = normalize_code(code)
    if normalized is None:
        return None
    return matching_step(secret, normalized, now)
