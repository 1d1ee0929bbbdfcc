"""Fan-out at scale: `true` on 500 targets against `xargs -P 32 ssh`, and the client's cost per target.

    .venv/bin/python benchmarks/fanout_scale.py [--large 500] [--small 50] [--parallel 32]

Both runners check host keys against the same known_hosts file of about 2,000 hashed lines (as an
SRE's is), with the sshd fixture's own lines at its end. For opsgate (the real FanOut, in this
process) it also measures the client's CPU time (this process: the targets' sshd and shells are other
processes) per target at --small and --large targets, and the most Python threads alive at once
(sampled every 5 ms). Goals: wall time <= 0.85x OpenSSH at --large; CPU per target at --large <= 1.2x
that at --small; peak threads <= max_parallel + a constant (8: the main thread, the sampler, pools).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from common import Row, cli, emit, log, sshd_server

from fanout import run_openssh

from opsgate.actions.fanout import FanOut
from opsgate.actions.ssh import Endpoint

EXTRA_THREADS = 8


def big_known_hosts(path: Path, server, lines: int = 2000) -> None:
    """``lines`` hashed entries for other hosts, then the fixture's own entries (found last)."""
    key = Path(server.known_hosts).read_text().split()[-2:]  # a real key type and blob to reuse
    out = []
    for i in range(lines):
        salt = os.urandom(20)
        name = hmac.new(salt, f"host-{i}.example.net".encode(), hashlib.sha1).digest()
        out.append(f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(name).decode()} {key[0]} {key[1]}\n")
    path.write_text("".join(out) + Path(server.known_hosts).read_text())


def run_opsgate(server, known: Path, count: int, parallel: int) -> tuple[float, float, int]:
    """(wall seconds, client CPU seconds, peak Python threads)."""
    endpoints = [
        Endpoint(name=f"t{i}", host=server.addresses[i % len(server.addresses)], port=server.port,
                 user=server.user, identity_file=server.identity_file, known_hosts=(str(known),),
                 ssh_config=None, allow_agent=False, look_for_keys=False)
        for i in range(count)
    ]
    peak = [threading.active_count()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], threading.active_count())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu, start = time.process_time(), time.perf_counter()
    results = FanOut(endpoints, "true", max_parallel=parallel, sink=lambda chunk: None).run()
    elapsed, used = time.perf_counter() - start, time.process_time() - cpu
    done.set()
    sampler.join()
    bad = [r for r in results if r.outcome != "ok"]
    if bad or len(results) != count:
        raise SystemExit(f"opsgate: {len(bad)} of {count} targets failed, first: {bad[0] if bad else 'missing'}")
    return elapsed, used, peak[0]


def main() -> None:
    parser = cli(__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=500)
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=32)
    args = parser.parse_args()
    large, small = (100, 20) if args.quick else (args.large, args.small)
    work = Path(tempfile.mkdtemp(prefix="opsgate-bench-scale-"))
    try:
        with sshd_server() as server:
            known = work / "known_hosts"
            big_known_hosts(known, server)
            run_opsgate(server, known, 4, 4)  # warm-up: imports, page cache
            run_openssh(server, 4, 4, str(known))
            _, small_cpu, small_peak = run_opsgate(server, known, small, args.parallel)
            log(f"fan-out scale: {small} targets: {small_cpu / small * 1000:.1f} ms CPU per target, "
                f"peak {small_peak} threads")
            wall, large_cpu, peak = run_opsgate(server, known, large, args.parallel)
            log(f"fan-out scale: {large} targets: opsgate {wall:.1f} s, {large_cpu / large * 1000:.1f} ms CPU per "
                f"target, peak {peak} threads")
            theirs = run_openssh(server, large, args.parallel, str(known))
            log(f"fan-out scale: {large} targets: OpenSSH {theirs:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    per_small, per_large = small_cpu / small * 1000, large_cpu / large * 1000
    emit([
        Row(f"fan-out `true`, {large} targets, P={args.parallel}, 2,000-line hashed known_hosts", f"{wall:.1f} s",
            f"OpenSSH xargs {theirs:.1f} s", wall / theirs, "<= 0.85x OpenSSH", wall / theirs <= 0.85, "one round each"),
        Row(f"client CPU per target, {large} vs {small} targets", f"{per_large:.1f} ms", f"{per_small:.1f} ms",
            per_large / per_small, "<= 1.2x", per_large / per_small <= 1.2, "this process's CPU time"),
        Row(f"peak threads, {large} targets, max_parallel {args.parallel}", f"{peak}", "", None,
            f"<= {args.parallel} + {EXTRA_THREADS}", peak <= args.parallel + EXTRA_THREADS,
            "sampled every 5 ms; a worker and paramiko's transport thread per open connection"),
    ], args.json)


if __name__ == "__main__":
    main()
