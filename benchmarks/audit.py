"""Audit trail throughput: fsync'd appends with 1/4/8 concurrent writer processes, and verify rate.

    .venv/bin/python benchmarks/audit.py [--appends 2000] [--records 1000000] [--dir DIR]

The append figures depend on the disk's fsync latency (run it where the state dir lives); verify
streams the file, so its figure is CPU-bound once the file is in the page cache.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from console.audit import GENESIS, AuditTrail, _encode_line, verify  # noqa: E402


def _writer(path: str, n: int, name: str, go) -> None:
    trail = AuditTrail(Path(path))
    go.wait()
    for i in range(n):
        trail.append("action.target", operator=name, run="run-bench", target=f"web{i % 16}", exit_code=0, i=i)


def append_rate(directory: Path, writers: int, total: int) -> tuple[float, bool]:
    path = directory / f"append-{writers}.jsonl"
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(path), total // writers, f"w{k}", go)) for k in range(writers)]
    for p in procs:
        p.start()
    time.sleep(0.2)
    started = time.perf_counter()
    go.set()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - started
    report = verify(path, check_recordings=False)
    return (total // writers * writers) / elapsed, report.ok and report.count == total // writers * writers


def generate(path: Path, n: int) -> None:
    """Write ``n`` valid records quickly: the real line encoder, one buffered write, no fsync per record."""
    prev = GENESIS
    with open(path, "wb", buffering=1 << 20) as f:
        for seq in range(1, n + 1):
            record = {"seq": seq, "time": "2026-11-28T14:50:01.123456Z", "event": "action.target",
                      "operator": "alice", "run": "20261128-145001-a1b2c3", "action": "restart-nginx",
                      "target": f"web{seq % 16}", "outcome": "ok", "exit_code": 0, "bytes_out": 1234, "prev": prev}
            line, prev = _encode_line(record)
            f.write(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=2000, help="records per append run (split over writers)")
    parser.add_argument("--records", type=int, default=1_000_000, help="records for the verify run")
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        print(f"{'benchmark':<34} {'records':>9} {'rate':>14}  ok")
        for writers in (1, 4, 8):
            rate, ok = append_rate(directory, writers, args.appends)
            print(f"{f'append+fsync, {writers} writer(s)':<34} {args.appends:>9} {rate:>10,.0f} r/s  {ok}")
        path = directory / "verify.jsonl"
        started = time.perf_counter()
        generate(path, args.records)
        gen = time.perf_counter() - started
        size = path.stat().st_size
        print(f"{'generate (no fsync)':<34} {args.records:>9} {args.records / gen:>10,.0f} r/s"
              f"   ({size / args.records:.0f} B/record)")
        for label, workers in (("verify, 1 process", 1), (f"verify, default ({os.cpu_count()} cpus)", None)):
            started = time.perf_counter()
            report = verify(path, check_recordings=False, workers=workers)
            elapsed = time.perf_counter() - started
            print(f"{label:<34} {report.count:>9} {report.count / elapsed:>10,.0f} r/s  {report.ok}"
                  f"   ({size / elapsed / 1e6:,.0f} MB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
