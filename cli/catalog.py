"""``opsgate check`` and ``opsgate list``: the catalog as the config defines it."""

from __future__ import annotations

import json
import sys

from opsgate.cli.context import Context
from opsgate.console.catalog.model import Config
from opsgate.console.errors import EXIT_FAILED, EXIT_USAGE, ConfigError


def cmd_check(ctx: Context) -> int:
    try:
        cfg = ctx.config
    except ConfigError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    for warning in cfg.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for t in cfg.targets.values():
        if t.identity_file is not None and not t.identity_file.exists():
            print(f"warning: {cfg.path}: targets.{t.name}.identity_file: {t.identity_file} does not exist (a run "
                  f"skips it and tries ssh-agent and ~/.ssh keys)", file=sys.stderr)
    runbooks = f", {len(cfg.runbooks)} runbooks" if cfg.runbooks else ""
    print(f"OK: {len(cfg.actions)} actions{runbooks}, {len(cfg.targets)} targets")
    return _check_ssh(cfg) if getattr(ctx.args, "ssh", False) else 0


def _check_ssh(cfg: Config) -> int:
    """Reach every target as a run would (jump hosts, host keys, login; in gate mode the login is the gate's
    certificate, not tried), run nothing; one line each. 1 if some target cannot be reached."""
    from concurrent.futures import ThreadPoolExecutor

    from opsgate.actions.ssh import JumpHosts, SSHError, probe
    from opsgate.console.run import target_endpoint

    def one(target) -> tuple[bool, str]:
        try:
            proxy, hops = probe(target_endpoint(target, cfg.settings), authenticate=cfg.gate is None, jumps=jumps)
        except SSHError as e:
            text = str(e).removeprefix(f"{target.name}: ")
            return False, f"{target.name}: FAILED ({e.outcome}): {text}"
        route = " -> ".join(f"{h.where} [{'gate certificate at run time' if h.identity == 'not tried' else h.identity}"
                            f"; host key {h.host_key}]" for h in hops)
        return True, f"{target.name}: ok: " + (f"ProxyCommand {proxy!r} -> " if proxy else "") + route

    jumps = JumpHosts()
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(cfg.settings.max_parallel, len(cfg.targets)))) as pool:
            results = list(pool.map(one, cfg.targets.values()))
    finally:
        jumps.close()
    for _, line in results:
        print(line)
    return 0 if all(ok for ok, _ in results) else EXIT_FAILED


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
            "targets": [t.name for t in cfg.targets_for(rb)],
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
        for i, (name, described) in enumerate(r["params"].items()):
            print(f"{'':<{width}}  {'':<8}  {'params: ' if i == 0 else '':<9}{name}: {described}")
    return 0
