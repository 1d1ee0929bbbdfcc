"""``opsgate enroll otp|fido2`` and ``opsgate auth``."""

from __future__ import annotations

import getpass
import sys
from typing import TYPE_CHECKING

from opsgate.console.durations import format_clock
from opsgate.console.errors import EXIT_OK, StepUpDenied, UsageError
from opsgate.console.events import ENROLL_FIDO2, ENROLL_OTP
from opsgate.console.catalog.policy import FACTOR_WORDS, RISKS, Requirement, satisfies, seconds_left
from opsgate.console.stepup.verifier import Prompt, StepUp, enroll_fido2_fields
from opsgate.console.stepup.totp import DIGITS, new_secret, provisioning_uri

if TYPE_CHECKING:
    from opsgate.cli.context import Context

def cmd_enroll(ctx: "Context") -> int:
    """Enroll a TOTP secret or a security key for the operator.

    An operator who already has a factor must step up with it first, so a borrowed terminal
    cannot quietly add the borrower's phone or key.
    """
    from opsgate.cli.prompt import TerminalPrompter

    prompter = TerminalPrompter()
    parts = ctx.parts
    if ctx.config.gate is not None:  # the gate knows who you are, and keeps the factor
        result = parts.pipeline.enroll(ctx.args.factor, prompter, token=ctx.args.token, name=ctx.args.name)
        print(f"{'OTP' if result['factor'] == 'otp' else 'Security key'} enrolled at the gate.")
        return EXIT_OK
    if ctx.args.token:
        raise UsageError("--token is for a gate's first enrollment; this config has no [gate]")
    operator = ctx.operator
    if operator not in (getpass.getuser(), ctx.config.settings.operator):
        # Local mode has no identity but the login and the config: a factor for anyone else is refused.
        raise UsageError(f"cannot enroll a factor for {operator!r} here: local mode enrolls only you "
                         f"({ctx.config.settings.operator}); a gate enrolls each operator with their own login")
    # Every enrollment record names the OS user who made it as well as the operator it is for.
    stepup, audit = parts.stepup, parts.pipeline.stepup_audit(operator, os_user=getpass.getuser())
    creds = stepup.store.operator(operator)
    if creds.factors():
        have = ", ".join([f"security key {c.name!r}" + (" (locked)" if c.locked else "") for c in creds.fido2]
                         + (["OTP"] if creds.totp_secret else []))
        if ctx.args.factor == "fido2" and creds.fido2:
            print(f"{operator} already has a factor enrolled ({have}): a backup security key is enrolled only "
                  f"after a step-up with a factor you already have: step up with it first, then touch the NEW key",
                  file=sys.stderr)
        else:
            print(f"{operator} already has a factor enrolled ({have}): step up with it first", file=sys.stderr)
        parts.pipeline.step_up_now(operator, None, prompter)
    if ctx.args.factor == "otp":
        return _enroll_otp(stepup, operator, prompter, audit)
    name = ctx.args.name or "security key"
    if not name.isprintable():
        raise UsageError("--name: a security key's name must be printable text")
    # Audited before it is saved: a factor the trail does not know must not exist (exit 4, nothing saved).
    cred = stepup.enroll_fido2(operator, name, prompter,
                               before_save=lambda cred: audit(ENROLL_FIDO2, enroll_fido2_fields(operator, cred)))
    print(f"Security key {name!r} enrolled for {operator} (relying party {ctx.config.settings.rp_id}; "
          f"AAGUID {cred.aaguid}; attestation {cred.attestation}).")
    if len(creds.fido2) == 0 and not creds.totp_secret:
        print(f"It is {operator}'s only factor: enroll a backup key (`opsgate enroll fido2 --name backup`) or OTP "
              f"so that a lost key does not lock you out.")
    return EXIT_OK


def _enroll_otp(stepup: StepUp, operator: str, prompter, audit) -> int:
    from opsgate.cli.prompt import show_enrollment

    secret = new_secret()
    show_enrollment(provisioning_uri(secret, operator))
    prompt = Prompt(operator, "otp", "enroll", f"confirm the new OTP secret for {operator}")
    while True:
        code = prompter.ask_code(prompt)
        if code is None:
            raise StepUpDenied(f"OTP enrollment for {operator} not saved: "
                               f"{prompt.error or 'cancelled'}")
        # Audited before it is saved: a factor the trail does not know must not exist (exit 4, nothing saved).
        if stepup.enroll_otp(operator, secret, code, before_save=lambda: audit(ENROLL_OTP, {"operator": operator})):
            break
        prompt.error = f"that code does not match the new secret (enter the current {DIGITS}-digit code)"
    print(f"OTP enrolled for {operator}.")
    return EXIT_OK


def cmd_auth(ctx: "Context") -> int:
    """Step up now and keep the grant, then say what it allows (like ``sudo -v``)."""
    from opsgate.cli.prompt import TerminalPrompter

    parts = ctx.parts
    grant = parts.pipeline.step_up_now(ctx.operator, ctx.args.factor, TerminalPrompter())
    print(describe_grant(grant, ctx.config.policy, parts.stepup.clock()))
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

