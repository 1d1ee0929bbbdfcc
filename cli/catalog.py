"""``opsgate check`` and ``opsgate list``: the catalog as the config defines it."""

from __future__ import annotations

import json
import sys

from opsgate.cli.context import Context
from opsgate.console.catalog.model import Config
from opsgate.console.errors import EXIT_USAGE, ConfigError


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
    return 0
