"""Shared helpers for the step-up tests: a scripted prompter, an audit recorder, enrolled operators."""

from __future__ import annotations

import threading
from pathlib import Path

import pyotp

from opsgate.console.catalog.model import Settings
from opsgate.console.stepup.credentials import CredentialStore, OperatorCredentials
from opsgate.console.stepup.verifier import Prompt, StepUp, StepUpRequest
from opsgate.console.stepup.totp import STEP, new_secret


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def settings(rp_id: str = "opsgate.local") -> Settings:
    return Settings("alice", None, (), rp_id=rp_id)


class ScriptedPrompter:
    """Answers from queues; records every prompt it was shown."""

    def __init__(self, codes=(), confirmations=(), approvers=(), cancel_touch: bool = False):
        self.codes = list(codes)
        self.confirmations = list(confirmations)
        self.approvers = list(approvers)
        self.cancel_touch = cancel_touch
        self.prompts: list[tuple[str, Prompt]] = []
        self.touches = 0

    def ask_code(self, prompt: Prompt):
        self.prompts.append(("code", Prompt(**vars(prompt))))
        if not self.codes:
            return None
        code = self.codes.pop(0)
        return code() if callable(code) else code

    def touch_started(self, prompt: Prompt, cancel: threading.Event) -> None:
        self.prompts.append(("touch", Prompt(**vars(prompt))))
        self.touches += 1
        if self.cancel_touch:
            threading.Timer(0.2, cancel.set).start()

    def touch_finished(self) -> None:
        pass

    def ask_confirmation(self, expected: str, prompt: Prompt):
        self.prompts.append(("confirm", prompt))
        return self.confirmations.pop(0) if self.confirmations else None

    def ask_approver(self, candidates, prompt: Prompt):
        self.prompts.append(("approver", prompt))
        self.candidates = list(candidates)
        return self.approvers.pop(0) if self.approvers else None


class AuditLog(list):
    def __call__(self, event: str, fields: dict) -> None:
        self.append((event, dict(fields)))

    def events(self) -> list[str]:
        return [e for e, _ in self]


def enroll_totp(state_dir: Path, operator: str, secret: str | None = None) -> str:
    """Put a TOTP secret straight into the store (the enrollment flow has its own tests)."""
    secret = secret or new_secret()
    with CredentialStore(state_dir).transaction() as data:
        data.setdefault(operator, OperatorCredentials()).totp_secret = secret
    return secret


def code(secret: str, clock, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(clock() + offset_steps * STEP)


def request(action="restart-service", command="sudo systemctl restart nginx", targets=("db-1", "db-2"),
            nonce=b"n" * 16) -> StepUpRequest:
    return StepUpRequest(action, command, tuple(targets), nonce)


def make_stepup(state_dir: Path, clock=None, key=None, persist=True, **kw) -> StepUp:
    """A StepUp on ``state_dir``; with ``key`` (a SoftKey, or a list of them: several plugged in) it may enroll
    the software key, as the demo and $OPSGATE_SOFTKEY allow it."""
    stepup = StepUp(state_dir, settings(), persist_grants=persist, authenticator=(lambda: key) if key else None,
                    clock=clock or FakeClock(), **kw)
    stepup.allow_software_key = key is not None
    return stepup
