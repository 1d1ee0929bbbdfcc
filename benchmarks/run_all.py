"""Run every benchmark, each in its own process, and print one table (Markdown).

    .venv/bin/python benchmarks/run_all.py [--quick] [--only fanout,audit] [--markdown FILE]

`make bench` runs this. A benchmark that fails is reported as a failed row; the others still run.
Takes 11 to 13 minutes on 2 cores (the fan-out benchmarks are most of it); --quick is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import JSON_MARK, Row, machine, table  # noqa: E402

BENCHMARKS = {  # name: extra arguments for the full run
    "fanout": ["--rounds", "3"],
    "fanout_scale": [],
    "throughput": [],
    "cli_stream": ["--rounds", "5"],
    "ui": [],
    "startup": ["--rounds", "9"],
    "audit": [],
    "replay": [],
    "recordings": [],
    "gate": [],
    "jump": [],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    parser.add_argument("--markdown", type=Path, help="also write the table, machine and date to this file")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    rows: list[Row] = []
    began = time.monotonic()
    for name in names:
        extra = ["--quick"] if args.quick else BENCHMARKS[name]
        print(f"== {name} ...", file=sys.stderr, flush=True)
        os.sync()  # the last benchmark's files are on disk, not being written back during this one
        started = time.monotonic()
        proc = subprocess.run([sys.executable, str(HERE / f"{name}.py"), "--json", *extra], stdout=subprocess.PIPE,
                              text=True)
        found = [line[len(JSON_MARK):] for line in proc.stdout.splitlines() if line.startswith(JSON_MARK)]
        if proc.returncode != 0 or not found:
            tail = proc.stdout.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            rows.append(Row(name, "FAILED", note=tail[0][:120], met=False))
        else:
            rows += [Row(**r) for r in json.loads(found[-1])]
        print(f"== {name}: {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    header = (f"Machine: {machine()}. Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. "
              f"Total time: {time.monotonic() - began:.0f}s.")
    text = f"{header}\n\n{table(rows)}\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 1 if any(r.opsgate == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
