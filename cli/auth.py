"""``opsgate enroll otp|fido2`` and ``opsgate auth``.

``OPSGATE_SOFTKEY=PATH`` makes both use the software authenticator (console/softkey.py) kept in PATH
instead of a USB security key. It is for tests and the demo only: the key's private keys sit in a
plain file, so it proves nothing about who is at the keyboard. A warning says so every time.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Callable

from opsgate.console.durations import format_clock
from opsgate.console.errors import EXIT_OK, StepUpDenied
from opsgate.console.catalog.policy import FACTOR_WORDS, RISKS, Requirement, satisfies, seconds_left
from opsgate.console.stepup.verifier import Prompt, StepUp
from opsgate.console.stepup.totp import DIGITS, new_secret, provisioning_uri

if TYPE_CHECKING:
    from opsgate.cli.context import Context

SOFTKEY_ENV = "OPSGATE_SOFTKEY"


def authenticator_from_env() -> Callable | None:
    """The software key named by $OPSGATE_SOFTKEY (tests/demo), else None: discover a USB key."""
    path = os.environ.get(SOFTKEY_ENV)
    if not path:
        return None
    from opsgate.console.demo.softkey import SoftKey

    print(f"opsgate: WARNING: using the DEMO/TEST software key {path} (${SOFTKEY_ENV}); "
          "it is not a security key", file=sys.stderr)
    return lambda: SoftKey(path)


def _stepup(ctx: "Context") -> StepUp:
    return StepUp(ctx.state_dir, ctx.config.settings, persist_grants=True, authenticator=authenticator_from_env())


def _audit_hook(ctx: "Context"):
    """Step-up events go to the state dir's audit trail when that module is present."""
    try:
        from opsgate.console.audit.trail import AuditTrail
        from opsgate.console.paths import AUDIT_FILE
    except ImportError:  # the audit trail is not part of this build yet
        return lambda event, fields: None
    trail = AuditTrail(ctx.state_dir / AUDIT_FILE)

    def hook(event: str, fields: dict) -> None:
        fields = dict(fields)
        who = fields.pop("operator", None) or ctx.operator
        trail.append(event, operator=who, run=None, **fields)

    return hook


def cmd_enroll(ctx: "Context") -> int:
    """Enroll a TOTP secret or a security key for the operator.

    An operator who already has a factor must step up with it first, so a borrowed terminal
    cannot quietly add the borrower's phone or key.
    """
    from opsgate.cli.prompt import TerminalPrompter

    operator = ctx.operator
    prompter = TerminalPrompter()
    stepup = _stepup(ctx)
    audit = _audit_hook(ctx)
    if stepup.store.operator(operator).factors():
        print(f"{operator} already has a factor enrolled: step up with it first", file=sys.stderr)
        stepup.step_up_now(operator, None, prompter, audit)
    if ctx.args.factor == "otp":
        return _enroll_otp(stepup, operator, prompter, audit)
    name = ctx.args.name or "security key"
    cred = stepup.enroll_fido2(operator, name, prompter)
    audit("enroll.fido2", {"operator": operator, "credential": name, "credential_id": cred.credential_id.hex()})
    print(f"Security key {name!r} enrolled for {operator} (relying party {ctx.config.settings.rp_id}).")
    return EXIT_OK


def _enroll_otp(stepup: StepUp, operator: str, prompter, audit) -> int:
    import segno

    secret = new_secret()
    uri = provisioning_uri(secret, operator)
    print(f"Add this account to your authenticator app (scan the QR code or enter the URI):\n{uri}\n")
    segno.make(uri, error="m").terminal(out=sys.stdout, compact=True)
    sys.stdout.flush()
    prompt = Prompt(operator, "otp", "enroll", f"confirm the new OTP secret for {operator}")
    while True:
        code = prompter.ask_code(prompt)
        if code is None:
            raise StepUpDenied(f"OTP enrollment for {operator} not saved: "
                               f"{prompt.error or 'cancelled'}")
        if stepup.enroll_otp(operator, secret, code):
            break
        prompt.error = f"that code does not match the new secret (enter the current {DIGITS}-digit code)"
    audit("enroll.otp", {"operator": operator})
    print(f"OTP enrolled for {operator}.")
    return EXIT_OK


def cmd_auth(ctx: "Context") -> int:
    """Step up now and keep the grant, then say what it allows (like ``sudo -v``)."""
    from opsgate.cli.prompt import TerminalPrompter

    operator = ctx.operator
    stepup = _stepup(ctx)
    grant = stepup.step_up_now(operator, ctx.args.factor, TerminalPrompter(), _audit_hook(ctx))
    print(describe_grant(grant, ctx.config.policy, stepup.clock()))
    return EXIT_OK


def describe_grant(grant, policy: dict[str, Requirement], now: float) -> str:
    """"OTP grant valid for 14:59 for medium and high actions" (grouped by time left)."""
    by_time: dict[int, list[str]] = {}
    every_run = []
    for risk in RISKS:
        req = policy.get(risk)
        if req is None or not req.needs_stepup:
            continue
        if req.max_age == 0:
            if satisfies(grant, Requirement(req.factor, 3600), now):
                every_run.append(risk)
            continue
        if satisfies(grant, req, now):
            by_time.setdefault(int(seconds_left(grant, req, now)), []).append(risk)
    word = FACTOR_WORDS[grant.factor]
    head = word[0].upper() + word[1:]
    if not by_time:
        text = f"{head} step-up done, but no action accepts a kept grant of this factor"
    else:
        parts = [f"{format_clock(left)} for {_and(risks)} actions" for left, risks in sorted(by_time.items(), reverse=True)]
        text = f"{head} grant valid for " + "; ".join(parts)
    if every_run:
        text += f" ({_and(every_run)} actions still ask at every run)"
    return text


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

