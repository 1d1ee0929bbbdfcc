"""The ``opsgate`` command line. Each error becomes one line on stderr and an exit code (DESIGN.md)."""

from __future__ import annotations

import argparse
import json
import sys
from functools import cached_property
from pathlib import Path

from . import paths
from .config import Config, load_config
from .errors import EXIT_CANCELLED, EXIT_USAGE, ConfigError, OpsgateError


class Context:
    """What every subcommand needs: the parsed flags, the config and the state dir, loaded once."""

    def __init__(self, args: argparse.Namespace):
        self.args = args

    @cached_property
    def config_path(self) -> Path:
        return paths.find_config(self.args.config)

    @cached_property
    def config(self) -> Config:
        return load_config(self.config_path, default_operator=getattr(self.args, "operator", None))

    @cached_property
    def state_dir(self) -> Path:
        # --state-dir or OPSGATE_STATE_DIR alone is enough (a reviewer may verify a trail without the config).
        import os

        if self.args.state_dir or os.environ.get("OPSGATE_STATE_DIR"):
            return paths.state_dir(self.args.state_dir, None)
        return paths.state_dir(None, self.config.settings.state_dir)

    @property
    def operator(self) -> str:
        return getattr(self.args, "operator", None) or self.config.settings.operator


def cmd_check(ctx: Context) -> int:
    try:
        cfg = ctx.config
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    runbooks = f", {len(cfg.runbooks)} runbooks" if cfg.runbooks else ""
    print(f"OK: {len(cfg.actions)} actions{runbooks}, {len(cfg.targets)} targets")
    return 0


def catalog_rows(cfg: Config) -> list[dict]:
    """The catalog as plain rows, shared by ``opsgate list`` and its ``--json``."""
    rows = []
    for action in cfg.actions.values():
        req = cfg.requirement_for(action)
        rows.append({
            "id": action.id,
            "title": action.title,
            "risk": action.risk,
            "targets": [t.name for t in cfg.targets_for(action)],
            "requirement": req.describe(),
            "params": {n: p.describe() for n, p in action.params.items()},
            "kind": "action",
        })
    for rb in cfg.runbooks.values():
        rows.append({
            "id": rb.id,
            "title": rb.title,
            "risk": rb.risk,
            # the same targets a run of it names: each step's own, or its action's
            "targets": list(dict.fromkeys(t.name for s in rb.steps if s.kind != "pause" for t in cfg.targets_for(s))),
            "requirement": cfg.requirement_for(rb).describe(),
            "params": {n: p.describe() for n, p in rb.params.items()},
            "kind": "runbook",
            "steps": [f"{s.index}. {s.title}" for s in rb.steps],
        })
    return rows


def cmd_list(ctx: Context) -> int:
    rows = catalog_rows(ctx.config)
    if ctx.args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max((len(r["id"]) for r in rows), default=2)
    for r in rows:
        kind = " (runbook)" if r["kind"] == "runbook" else ""
        print(f"{r['id']:<{width}}  {r['risk'].upper():<8}  {r['title']}{kind}")
        print(f"{'':<{width}}  {'':<8}  targets: {', '.join(r['targets'])}")
        print(f"{'':<{width}}  {'':<8}  step-up: {r['requirement']}")
    return 0


def _lazy(module: str, func: str):
    def handler(ctx: Context) -> int:
        import importlib

        return getattr(importlib.import_module(module, __package__), func)(ctx)

    return handler


def build_parser() -> argparse.ArgumentParser:
    def globals_parser(default) -> argparse.ArgumentParser:
        g = argparse.ArgumentParser(add_help=False)
        g.add_argument("--config", metavar="PATH", default=default,
                       help="config file (else $OPSGATE_CONFIG, ./opsgate.toml, user config dir)")
        g.add_argument("--state-dir", metavar="DIR", default=default,
                       help="state dir (else $OPSGATE_STATE_DIR, console.state_dir, user state dir)")
        return g

    # Subcommands accept the global flags too, without resetting what was given before the command.
    common = globals_parser(argparse.SUPPRESS)
    p = argparse.ArgumentParser(prog="opsgate", parents=[globals_parser(None)],
                                description="Operations console: runbooks with step-up auth, SSH and a tamper-evident audit trail.")
    p.set_defaults(handler=_lazy(".cli_tui", "cmd_console"))
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, handler, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[common], help=help, description=help)
        sp.set_defaults(handler=handler)
        return sp

    command("demo", _lazy(".cli_tui", "cmd_demo"), "the console on an embedded loopback target and throwaway state")
    command("check", cmd_check, "validate the config")
    sp = command("list", cmd_list, "actions, risk, targets, step-up requirement")
    sp.add_argument("--json", action="store_true", help="print JSON")

    sp = command("run", _lazy(".cli_run", "cmd_run"), "run an action through the pipeline")
    sp.add_argument("action")
    sp.add_argument("--target", action="append", default=[], metavar="T", help="a target or tag:NAME (repeatable)")
    sp.add_argument("--param", action="append", default=[], metavar="K=V", help="a parameter (repeatable)")
    sp.add_argument("--dry-run", action="store_true", help="print what would run; run nothing")
    sp.add_argument("--yes", action="store_true", help="do not ask 'Run? [y/N]'")
    sp.add_argument("--json", action="store_true", help="print one JSON result document")

    sp = command("auth", _lazy(".cli_auth", "cmd_auth"), "step up now and keep the grant (like sudo -v)")
    sp.add_argument("--factor", choices=["otp", "fido2"], help="factor to use (default: the strongest enrolled)")
    sp.add_argument("--operator", help="operator name (default: console.operator)")

    sp = command("enroll", _lazy(".cli_auth", "cmd_enroll"), "enrol a factor for the operator")
    sp.add_argument("factor", choices=["otp", "fido2"])
    sp.add_argument("--operator", help="operator name (default: console.operator)")
    sp.add_argument("--name", help="a name for the security key")

    sp = command("audit", None, "verify, tail, show, export or anchor the audit trail")
    asub = sp.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)
    a = asub.add_parser("verify", parents=[common], help="check the hash chain and the recordings")
    a.add_argument("--against", metavar="FILE", help="also check a syslog collector's copy against the chain")
    a.set_defaults(handler=_lazy(".cli_audit", "cmd_verify"))
    a = asub.add_parser("forward", parents=[common], help="send the records not yet at the syslog collector")
    a.add_argument("--follow", action="store_true", help="keep forwarding new records until interrupted")
    a.set_defaults(handler=_lazy(".cli_audit", "cmd_forward"))
    a = asub.add_parser("head", parents=[common], help="print the head hash")
    a.set_defaults(handler=_lazy(".cli_audit", "cmd_head"))
    a = asub.add_parser("tail", parents=[common], help="print the newest records")
    a.add_argument("-n", type=int, default=20, metavar="N")
    a.add_argument("-f", "--follow", action="store_true")
    a.set_defaults(handler=_lazy(".cli_audit", "cmd_tail"))
    a = asub.add_parser("show", parents=[common], help="show one run's records")
    a.add_argument("run")
    a.set_defaults(handler=_lazy(".cli_audit", "cmd_show"))
    a = asub.add_parser("export", parents=[common], help="print one run's evidence: records, chain state, recordings")
    a.add_argument("run")
    a.add_argument("--format", choices=["json"], default="json", help="output format (json)")
    a.set_defaults(handler=_lazy(".cli_audit", "cmd_export"))

    sp = command("replay", _lazy(".cli_audit", "cmd_replay"), "replay a run's recording in the terminal")
    sp.add_argument("run")
    sp.add_argument("--target", metavar="T")
    sp.add_argument("--speed", type=float, default=1.0, metavar="X")
    sp.add_argument("--force", action="store_true", help="play even when the recording does not verify")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    ctx = Context(args)
    try:
        return args.handler(ctx)
    except ConfigError as e:
        for problem in e.problems:
            print(f"opsgate: {problem}", file=sys.stderr)
        return e.exit_code
    except OpsgateError as e:
        print(f"opsgate: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("opsgate: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except BrokenPipeError:  # `opsgate list | head`: the reader left; not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
