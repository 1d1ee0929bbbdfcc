"""Audit trail throughput: fsync'd appends with 1/4/8 concurrent writer processes, and verify rate.

    .venv/bin/python benchmarks/audit.py [--appends 2000] [--records 1000000] [--rounds 3] [--dir DIR]

The append figures depend on the disk's fsync latency (run it where the state dir lives); verify
streams the file, so its figure is CPU-bound once the file is in the page cache. Verify runs --rounds
times in each mode, the modes taking turns (so drift hits both alike); the rows give the medians, and
the CPU time it took (this process and its worker processes): what other load on the machine moves
least.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import Row, cli, emit, log  # noqa: E402  (puts the repo root on sys.path)

from opsgate.console.audit.trail import GENESIS, AuditTrail, _encode_line  # noqa: E402
from opsgate.console.audit.verify import verify  # noqa: E402


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


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its children that have exited."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> int:
    parser = cli(__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=2000, help="records per append run (split over writers)")
    parser.add_argument("--records", type=int, default=1_000_000, help="records for the verify run")
    parser.add_argument("--rounds", type=int, default=3, help="verify runs per mode, taking turns (median reported)")
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    appends = 400 if args.quick else args.appends
    records = 100_000 if args.quick else args.records
    rounds = 1 if args.quick else max(1, args.rounds)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        for writers in (1, 4, 8):
            rate, ok = append_rate(directory, writers, appends)
            log(f"append+fsync, {writers} writer(s): {appends} records, {rate:,.0f} r/s, chain ok: {ok}")
            rows.append(Row(f"audit append + fsync, {writers} writer process(es)", f"{rate:,.0f} records/s",
                            target="(reported)", met=ok or False, note=f"{appends} records, one chain verified"))
        path = directory / "verify.jsonl"
        started = time.perf_counter()
        generate(path, records)
        gen = time.perf_counter() - started
        size = path.stat().st_size
        log(f"generated {records} records in {gen:.1f}s ({size / records:.0f} B/record)")
        modes = (("1 process", 1), (f"default: {os.cpu_count()} cpus", None))
        times: dict[str, list[float]] = {label: [] for label, _ in modes}
        cpus: dict[str, list[float]] = {label: [] for label, _ in modes}
        oks = {label: True for label, _ in modes}
        for round_no in range(1, rounds + 1):
            for label, workers in modes:
                # the CLI's code path: `opsgate audit verify` calls verify() with the default workers
                cpu = _cpu_seconds()
                started = time.perf_counter()
                report = verify(path, check_recordings=False, workers=workers)
                elapsed = time.perf_counter() - started
                cpus[label].append(_cpu_seconds() - cpu)  # verify has waited for its workers
                oks[label] = oks[label] and report.ok and report.count == records
                times[label].append(elapsed)
                log(f"verify round {round_no}, {label}: {records / elapsed:,.0f} r/s "
                    f"({size / elapsed / 1e6:,.0f} MB/s, CPU {cpus[label][-1]:.2f} s), ok: {oks[label]}")
        for label, _ in modes:
            elapsed = statistics.median(times[label])
            rate = records / elapsed
            spread = (f"; {rounds} rounds, {records / max(times[label]):,.0f} to {records / min(times[label]):,.0f}/s"
                      if rounds > 1 else "")
            rows.append(Row(f"audit verify, {records:,} records, {label}", f"{rate:,.0f} records/s",
                            ratio=None, target=">= 200,000/s (stretch 500,000)", met=oks[label] and rate >= 200_000,
                            note=f"{elapsed:.2f} s, {size / elapsed / 1e6:,.0f} MB/s, "
                                 f"CPU {statistics.median(cpus[label]):.2f} s{spread}"))
    emit(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
