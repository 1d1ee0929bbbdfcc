"""The ``opsgate`` command line: flags to handlers, each error to one line on stderr and an exit code.

Handlers live one module per command group and are imported when their command runs, so
``opsgate list`` never loads paramiko, fido2 or Textual. Exit codes: README.md.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading

from opsgate.actions.display import escape_line
from opsgate.cli.context import Context, global_flags
from opsgate.cli.imports import defer_invoke
from opsgate.console.errors import EXIT_CANCELLED, ConfigError, OpsgateError


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("opsgate")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


class _Version(argparse.Action):
    """``--version``: the installed version, looked up only when asked (importlib.metadata costs ~25 ms)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"opsgate {version()}")
        parser.exit()


def _lazy(module: str, func: str):
    def handler(ctx: Context) -> int:
        import importlib

        return getattr(importlib.import_module(module), func)(ctx)

    return handler


def build_parser() -> argparse.ArgumentParser:
    # Subcommands accept the global flags too, without resetting what was given before the command.
    common = global_flags(argparse.SUPPRESS)
    p = argparse.ArgumentParser(prog="opsgate", parents=[global_flags(None)],
                                description="Operations console: runbooks with step-up auth, SSH and a tamper-evident audit trail.")
    p.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    p.set_defaults(handler=_lazy("opsgate.cli.tui", "cmd_console"))
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, handler, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[common], help=help, description=help)
        sp.set_defaults(handler=handler)
        return sp

    command("demo", _lazy("opsgate.cli.tui", "cmd_demo"), "the console on an embedded loopback target and throwaway state")
    sp = command("check", _lazy("opsgate.cli.catalog", "cmd_check"), "validate the config")
    sp.add_argument("--ssh", action="store_true",
                    help="also reach every target (jump hosts, host key, login) without running anything")
    sp = command("list", _lazy("opsgate.cli.catalog", "cmd_list"), "actions, risk, targets, step-up requirement")
    sp.add_argument("--json", action="store_true", help="print JSON")

    sp = command("run", _lazy("opsgate.cli.run", "cmd_run"), "run an action through the pipeline")
    sp.add_argument("action")
    sp.add_argument("--target", action="append", default=[], metavar="T", help="a target or tag:NAME (repeatable)")
    sp.add_argument("--param", action="append", default=[], metavar="K=V",
                    help="a parameter (repeatable); never a secret one: argv is visible to every local user")
    sp.add_argument("--param-file", action="append", default=[], metavar="FILE",
                    help="K=V lines, secrets included: a file only you can read, a pipe, or - for stdin up to an "
                         "empty line (repeatable); a missing secret is asked without echo on a terminal")
    sp.add_argument("--dry-run", action="store_true", help="print what would run; run nothing")
    sp.add_argument("--yes", action="store_true", help="do not ask 'Run? [y/N]'")
    sp.add_argument("--json", action="store_true", help="print one JSON result document")
    sp.add_argument("--raw", action="store_true",
                    help="one target: write its stdout bytes unchanged to stdout (a file or a pipe, never a "
                         "terminal); the plan, its stderr and the summary go to stderr")
    sp.add_argument("--reason", default="", metavar="TEXT",
                    help="why you run it: in the plan, the approval request and the trail (required where policy says)")

    sp = command("auth", _lazy("opsgate.cli.auth", "cmd_auth"), "step up now and keep the grant (like sudo -v)")
    sp.add_argument("--factor", choices=["otp", "fido2"], help="factor to use (default: the strongest enrolled)")
    sp.add_argument("--operator", help="operator name (default: console.operator)")

    sp = command("enroll", _lazy("opsgate.cli.auth", "cmd_enroll"), "enroll a factor for the operator")
    sp.add_argument("factor", choices=["otp", "fido2"])
    sp.add_argument("--operator", help="operator name (default: console.operator)")
    sp.add_argument("--name", help="a name for the security key")
    sp.add_argument("--token", help="gate mode: the one-use enrollment token an admin gave you (first factor)")

    sp = command("keys", None, "list or remove your security keys")
    ksub = sp.add_subparsers(dest="keys_command", metavar="SUBCOMMAND", required=True)
    k = ksub.add_parser("list", parents=[common], help="your security keys: name, created, last used, counter, "
                                                       "AAGUID, locked or not")
    k.add_argument("--operator", help="operator name (default: console.operator)")
    k.add_argument("--json", action="store_true", help="print JSON")
    k.set_defaults(handler=_lazy("opsgate.cli.keys", "cmd_keys_list"))
    k = ksub.add_parser("remove", parents=[common], help="remove a security key (after a step-up with another "
                                                         "factor: another key, or your OTP for the last key)")
    k.add_argument("name", metavar="NAME")
    k.add_argument("--factor", choices=["otp", "fido2"],
                   help="step up with this factor (default: another of your keys if you have one, else OTP)")
    k.add_argument("--operator", help="operator name (default: console.operator)")
    k.set_defaults(handler=_lazy("opsgate.cli.keys", "cmd_keys_remove"))

    command("approvals", _lazy("opsgate.cli.gate", "cmd_approvals"), "requests waiting at the gate for approval")
    sp = command("approve", _lazy("opsgate.cli.gate", "cmd_approve"), "approve a pending request with your own factor")
    sp.add_argument("request", metavar="ID")
    sp = command("deny", _lazy("opsgate.cli.gate", "cmd_deny"), "deny a pending request (with your own factor)")
    sp.add_argument("request", metavar="ID")

    sp = command("audit", None, "verify, tail, show, export or anchor the audit trail")
    asub = sp.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)
    a = asub.add_parser("verify", parents=[common], help="check the hash chain and the recordings")
    a.add_argument("--against", metavar="FILE", help="also check a syslog collector's copy against the chain")
    a.add_argument("--head", metavar="HASH", help="fail unless the trail holds this head (from `opsgate audit head`)")
    a.add_argument("--anchor", metavar="FILE", help="fail unless the trail holds the head kept in FILE "
                   "(`opsgate audit head > FILE`)")
    a.add_argument("--pinned-policy", metavar="SHA256", help="the config digest every run must have been made "
                   "under (else [console] pinned_policy, else the trail's first config.loaded)")
    a.set_defaults(handler=_lazy("opsgate.cli.audit", "cmd_verify"))
    a = asub.add_parser("forward", parents=[common], help="send the records not yet at the syslog collector")
    a.add_argument("--follow", action="store_true", help="keep forwarding new records until interrupted")
    a.set_defaults(handler=_lazy("opsgate.cli.audit", "cmd_forward"))
    a = asub.add_parser("head", parents=[common], help="print the head hash")
    a.set_defaults(handler=_lazy("opsgate.cli.audit", "cmd_head"))
    a = asub.add_parser("tail", parents=[common], help="print the newest records")
    a.add_argument("-n", type=int, default=20, metavar="N")
    a.add_argument("-f", "--follow", action="store_true")
    a.set_defaults(handler=_lazy("opsgate.cli.audit", "cmd_tail"))
    a = asub.add_parser("show", parents=[common], help="show one run's records")
    a.add_argument("run")
    a.set_defaults(handler=_lazy("opsgate.cli.audit", "cmd_show"))
    a = asub.add_parser("export", parents=[common], help="print one run's evidence: records, chain state, recordings")
    a.add_argument("run")
    a.add_argument("--format", choices=["json"], default="json", help="output format (json)")
    a.set_defaults(handler=_lazy("opsgate.cli.audit", "cmd_export"))

    sp = command("replay", _lazy("opsgate.cli.audit", "cmd_replay"), "replay a run's recording in the terminal")
    sp.add_argument("run")
    sp.add_argument("--target", metavar="T")
    sp.add_argument("--speed", type=float, default=1.0, metavar="X")
    sp.add_argument("--force", action="store_true", help="play even when the recording does not verify")
    sp.add_argument("--text", action="store_true",
                    help="print the recordings as escaped plain text (for review and diff) instead of playing them")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command in ``argv`` (default: this process's own command line) and return its exit code.

    Called without ``argv`` (the ``opsgate`` script, ``python -m opsgate.cli``), ``opsgate run`` ends the
    process here once its code is known, without the interpreter's teardown (``exit_process``)."""
    defer_invoke()  # before any handler imports paramiko (cli/imports.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    code = dispatch(args)
    if argv is None and args.command == "run":
        exit_process(code)
    return code


def dispatch(args: argparse.Namespace) -> int:
    ctx = Context(args)
    try:
        return args.handler(ctx)
    except ConfigError as e:
        for problem in e.problems:
            print(f"opsgate: {escape_line(problem)}", file=sys.stderr)
        return e.exit_code
    except OpsgateError as e:  # may quote remote or record text (a gate's answer, a run id): escaped
        print(f"opsgate: {escape_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("opsgate: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except BrokenPipeError:  # `opsgate list | head`: the reader left; not an error
        sys.stderr.close()
        return 0


def exit_process(code: int) -> None:
    """End the process with ``code`` as ``sys.exit`` would, minus the interpreter's teardown (freeing every
    module and object one by one: tens of ms of CPU after a run, for nothing the kernel does not do anyway).

    Only when that teardown has nothing left to do: no thread but daemon ones is alive (the interpreter
    would wait for it), and stdout and stderr flush without error (else Python reports it and exits 120,
    as before). The atexit handlers run as at a normal exit. What a run writes is already durable when
    this is called (each audit record and the recording fsynced and closed: console/run.py); stdout is
    flushed to the file or pipe, which is all a normal exit does with it. Returns when it does not apply:
    the caller then exits the usual way."""
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        return
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None and not stream.closed:
                stream.flush()
        atexit._run_exitfuncs()  # what Py_Finalize runs first; the interpreter's own teardown is what is skipped
        for stream in (sys.stdout, sys.stderr):  # an atexit handler may have printed
            if stream is not None and not stream.closed:
                stream.flush()
    except BaseException:
        return
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
