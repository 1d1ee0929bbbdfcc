"""``opsgate keys list`` and ``opsgate keys remove NAME``: the operator's security keys in this state dir.

Removing a key needs a fresh step-up with another factor than that key: another of the operator's keys,
or their OTP (for the last key, only the OTP); the last factor of all is never removed. Each removal is
audited (``keys.removed``) before the key is gone. In gate mode the gate keeps the keys: not here.
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from typing import TYPE_CHECKING

from opsgate.console.errors import EXIT_OK, UsageError
from opsgate.console.events import KEYS_REMOVED
from opsgate.console.stepup.credentials import CredentialStore, FidoCredential
from opsgate.console.stepup.securitykey import SOFTWARE_KEY_AAGUID

if TYPE_CHECKING:
    from opsgate.cli.context import Context

GATE_MODE = ("in gate mode your security keys are kept and managed at the gate, not in this console's "
             "state dir: ask the gate's admin to list or remove them")


def _local_only(ctx: "Context") -> None:
    if ctx.config.gate is not None:
        raise UsageError(GATE_MODE)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "never"


def _text(value: str) -> str:
    """A stored name, shown as text (never a control sequence)."""
    return value if value.isprintable() else repr(value)


def _model(cred: FidoCredential) -> str:
    return cred.aaguid + (" (opsgate software key)" if cred.aaguid == SOFTWARE_KEY_AAGUID else "")


def cmd_keys_list(ctx: "Context") -> int:
    """One line per security key of the operator: name, created, last used, counter, AAGUID, locked or not."""
    _local_only(ctx)
    operator = ctx.operator
    keys = CredentialStore(ctx.state_dir).operator(operator).fido2
    if ctx.args.json:
        print(json.dumps([{"name": c.name, "created": c.created, "last_used": c.last_used or None,
                           "sign_count": c.sign_count, "aaguid": c.aaguid, "attestation": c.attestation,
                           "attestation_verified": c.attestation_verified, "locked": c.locked,
                           "credential_id": c.credential_id.hex()} for c in keys], indent=1))
        return EXIT_OK
    if not keys:
        print(f"{operator} has no security key enrolled: run `opsgate enroll fido2`")
        return EXIT_OK
    rows = [("NAME", "CREATED", "LAST USED", "COUNTER", "AAGUID", "STATUS")]
    for c in keys:
        rows.append((_text(c.name), _when(c.created), _when(c.last_used), str(c.sign_count), _model(c),
                     f"LOCKED: {_text(c.locked)}" if c.locked else "ok"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    return EXIT_OK


def cmd_keys_remove(ctx: "Context") -> int:
    """Remove one of the operator's security keys after a step-up with another factor."""
    from opsgate.cli.prompt import TerminalPrompter

    _local_only(ctx)
    operator = ctx.operator
    if operator not in (getpass.getuser(), ctx.config.settings.operator):
        raise UsageError(f"cannot remove a security key of {operator!r} here: local mode manages only your own "
                         f"({ctx.config.settings.operator})")
    parts = ctx.parts
    audit = parts.pipeline.stepup_audit(operator, os_user=getpass.getuser())
    name = ctx.args.name

    def record(cred: FidoCredential, factor: str) -> None:
        # Before the key is gone: a removal the trail does not know must not happen (exit 4, nothing removed).
        audit(KEYS_REMOVED, {"operator": operator, "credential": cred.name, "credential_id": cred.credential_id.hex(),
                             "aaguid": cred.aaguid, "factor": factor})

    creds = parts.stepup.store.operator(operator)
    others = [c.name for c in creds.fido2 if c.name != name and not c.locked]
    factor = ctx.args.factor
    if others and factor != "otp":
        print(f"removing security key {_text(name)!r}: step up with another of your keys "
              f"({', '.join(repr(_text(n)) for n in others)}), not this one", file=sys.stderr, flush=True)
    elif creds.totp_secret and any(c.name == name for c in creds.fido2) and factor != "fido2":
        last = "" if others else ", your last one"
        print(f"removing security key {_text(name)!r}{last}: step up with your OTP", file=sys.stderr, flush=True)
    removed = parts.stepup.remove_key(operator, name, TerminalPrompter(), audit, before_remove=record, factor=factor)
    print(f"Security key {_text(removed.name)!r} removed for {operator}.")
    return EXIT_OK
