"""Fan-out latency: opsgate (paramiko) against OpenSSH (`xargs -P ssh`), same sshd, same targets.

Run: .venv/bin/python benchmarks/fanout.py [--targets 50] [--parallel 16] [--rounds 5]
Prints the median wall time of each and the ratio opsgate/OpenSSH (goal: <= 1.0).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from actions.fanout import FanOut  # noqa: E402
from actions.ssh import Endpoint  # noqa: E402
from sshd import start_sshd  # noqa: E402


def run_opsgate(server, count: int, parallel: int) -> float:
    endpoints = [
        Endpoint(name=f"t{i}", host=server.addresses[i % len(server.addresses)], port=server.port,
                 user=server.user, identity_file=server.identity_file, known_hosts=(server.known_hosts,),
                 ssh_config=None, allow_agent=False, look_for_keys=False)
        for i in range(count)
    ]
    start = time.perf_counter()
    results = FanOut(endpoints, "true", max_parallel=parallel, sink=lambda chunk: None).run()
    elapsed = time.perf_counter() - start
    bad = [r for r in results if r.outcome != "ok"]
    if bad:
        raise SystemExit(f"opsgate: {len(bad)} targets failed, first: {bad[0]}")
    return elapsed


def run_openssh(server, count: int, parallel: int) -> float:
    addresses = "".join(f"{server.addresses[i % len(server.addresses)]}\n" for i in range(count))
    command = [
        "xargs", "-P", str(parallel), "-I", "{}",
        "ssh", "-F", "none", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={server.known_hosts}",
        "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-i", server.identity_file,
        "-p", str(server.port), f"{server.user}@{{}}", "true",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, input=addresses, text=True, capture_output=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"OpenSSH run failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not shutil.which("ssh"):
        raise SystemExit("the OpenSSH client (ssh) is needed for the comparison")

    workdir = Path(tempfile.mkdtemp(prefix="opsgate-bench-"))
    server = start_sshd(workdir)
    try:
        run_opsgate(server, 4, 4)  # warm-up: imports, first connections
        run_openssh(server, 4, 4)
        ours, theirs = [], []
        for round_no in range(1, args.rounds + 1):  # alternate so drift hits both alike
            ours.append(run_opsgate(server, args.targets, args.parallel))
            theirs.append(run_openssh(server, args.targets, args.parallel))
            print(f"round {round_no}: opsgate {ours[-1]:.3f}s  OpenSSH {theirs[-1]:.3f}s", flush=True)
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"`true` on {args.targets} targets, {args.parallel} at once, {args.rounds} rounds (median):")
        print(f"  opsgate FanOut : {a:.3f}s")
        print(f"  OpenSSH xargs  : {b:.3f}s")
        print(f"  ratio opsgate/OpenSSH: {a / b:.2f}")
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
