"""``opsgate approvals``, ``approve ID``, ``deny ID``: the two-person rule across terminals, at the gate."""

from __future__ import annotations

import time

from opsgate.actions.display import escape_line

from opsgate.cli.context import Context, authenticator_from_env
from opsgate.console.errors import EXIT_OK, UsageError


def _client(ctx: Context):
    if ctx.config.gate is None:
        raise UsageError("approvals live at a gate: this config has no [gate] (local mode has no second identity)")
    from opsgate.console.gate.client import GateClient

    return GateClient(ctx.config.gate, timeout=ctx.config.settings.connect_timeout)


def cmd_approvals(ctx: Context) -> int:
    client = _client(ctx)
    try:
        pending = client.request("approvals", {})
    finally:
        client.close()
    if not pending:
        print("no requests waiting for approval")
    for p in pending:  # the gate's words, but a requester's reason and plan: shown escaped
        left = max(0, int(p["expires"] - time.time()))
        print(f"{escape_line(p['id'])}  {escape_line(p['requester'])} asks: {escape_line(p['summary'])}")
        print(f"        why: {escape_line(p['reason']) or '(no reason given)'}; needs {int(p['needed'])} approval(s) "
              f"with {escape_line(p['factor'])}; approved by: {escape_line(', '.join(p['approved'])) or 'nobody yet'}; "
              f"expires in {left} s")
    return EXIT_OK


def _answer(ctx: Context, op: str) -> int:
    from opsgate.cli.prompt import TerminalPrompter
    from opsgate.console.gate.client import answers_for

    client = _client(ctx)
    try:
        result = client.request(op, {"request": ctx.args.request},
                                answers_for(client, TerminalPrompter(), authenticator_from_env()))
    finally:
        client.close()
    verb = "approved" if op == "approve" else "denied"
    print(f"{verb} request {escape_line(result['id'])} of {escape_line(result['requester'])}: "
          f"{escape_line(result['summary'])}")
    return EXIT_OK


def cmd_approve(ctx: Context) -> int:
    return _answer(ctx, "approve")


def cmd_deny(ctx: Context) -> int:
    return _answer(ctx, "deny")
