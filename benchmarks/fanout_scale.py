"""Fan-out at scale: `true` on 500 targets against `xargs -P 32 ssh`, and the client's cost per target.

    .venv/bin/python benchmarks/fanout_scale.py [--large 500] [--small 50] [--parallel 32] [--rounds 1]
                                                [--no-clean-shell]

Both runners check host keys against the same known_hosts file of about 2,000 hashed lines (as an
SRE's is), with the sshd fixture's own lines at its end. For opsgate (the real FanOut, in this
process) it also measures the client's CPU time (this process: the targets' sshd and shells are other
processes) per target at --small and --large targets, and the most Python threads alive at once
(sampled every 5 ms). Goals: wall time <= 0.85x OpenSSH at --large; CPU per target at --large <= 1.2x
that at --small; peak threads <= max_parallel + a constant (8: the main thread, the sampler, pools).

It also reports what each runner costs the server per login: the CPU of every process the sshd forked
(its reaped children: the per-connection sshd, the login shell and whatever the shell's rc files run),
divided by the targets. Every target here is the same machine, so whatever the remote shell's rc files
serialise on is shared by all of them: root's ``.bashrc`` on the benchmark machine runs ``pyenv init -``,
whose ``pyenv rehash`` takes one lock file for the whole machine and polls it every 0.1 s (a ``sleep``
and two subshells per try). With 32 logins at once the logins queue on that lock, and the more of them
sit in their shell at once, the more CPU the polling takes. So the same rounds are run again against a
second sshd whose sessions get ``HOME`` set to an empty directory (sshd_config ``SetEnv``): the shell
reads no rc file, as on 500 separate hosts that share no lock ("clean shell" rows, reported, no goal).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from common import Row, clean_shell, cli, emit, log, sshd_server

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


def server_cpu(server) -> float:
    """CPU seconds of every process the sshd forked and reaped so far (sessions, shells, what they ran)."""
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime + cstime


def per_login(server, count: int, run: Callable[[], float]) -> tuple[float, float]:
    """(wall seconds of ``run()``, the sshd's CPU per login in ms) for a run over ``count`` targets."""
    time.sleep(0.5)  # the previous run's sessions reaped
    before = server_cpu(server)
    wall = run()
    time.sleep(0.5)
    return wall, (server_cpu(server) - before) / count * 1000


def compare(server, known: Path, count: int, parallel: int, rounds: int, label: str) -> dict[str, list]:
    """``rounds`` interleaved rounds of opsgate and OpenSSH on ``count`` targets: wall, sshd CPU per login."""
    out: dict[str, list] = {"opsgate": [], "openssh": [], "peak": [], "cpu": []}
    for i in range(rounds):
        ours: list[tuple[float, float, int]] = []  # run_opsgate's (wall, client CPU, peak threads)

        def opsgate() -> float:
            ours.append(run_opsgate(server, known, count, parallel))
            return ours[0][0]

        wall, login = per_login(server, count, opsgate)
        out["opsgate"].append((wall, login))
        out["cpu"].append(ours[0][1])
        out["peak"].append(ours[0][2])
        theirs = per_login(server, count, lambda: run_openssh(server, count, parallel, str(known)))
        out["openssh"].append(theirs)
        log(f"fan-out scale ({label}): {count} targets, round {i + 1}: opsgate {wall:.1f} s ({login:.0f} ms server CPU "
            f"per login, {ours[0][1] / count * 1000:.1f} ms client CPU per target, peak {ours[0][2]} threads); "
            f"OpenSSH {theirs[0]:.1f} s ({theirs[1]:.0f} ms server CPU per login)")
    return out


def med(pairs: list, i: int) -> float:
    return statistics.median(p[i] for p in pairs)


def main() -> None:
    parser = cli(__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=500)
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds at --large (medians)")
    parser.add_argument("--no-clean-shell", action="store_true", help="skip the clean-shell rounds")
    args = parser.parse_args()
    large, small = (100, 20) if args.quick else (args.large, args.small)
    work = Path(tempfile.mkdtemp(prefix="opsgate-bench-scale-"))
    clean: dict[str, list] | None = None
    try:
        with sshd_server() as server:
            known = work / "known_hosts"
            big_known_hosts(known, server)
            run_opsgate(server, known, 4, 4)  # warm-up: imports, page cache
            run_openssh(server, 4, 4, str(known))
            _, small_cpu, small_peak = run_opsgate(server, known, small, args.parallel)
            log(f"fan-out scale: {small} targets: {small_cpu / small * 1000:.1f} ms CPU per target, "
                f"peak {small_peak} threads")
            rc = compare(server, known, large, args.parallel, args.rounds, "shell rc as is")
        if not args.no_clean_shell:
            with sshd_server(options=clean_shell(work)) as server:
                known = work / "known_hosts"
                big_known_hosts(known, server)
                run_opsgate(server, known, 4, 4)
                run_openssh(server, 4, 4, str(known))
                clean = compare(server, known, large, args.parallel, args.rounds, "clean shell")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    wall, theirs = med(rc["opsgate"], 0), med(rc["openssh"], 0)
    peak, large_cpu = max(rc["peak"]), statistics.median(rc["cpu"])
    per_small, per_large = small_cpu / small * 1000, large_cpu / large * 1000
    how = "one round each" if args.rounds == 1 else f"median of {args.rounds} interleaved rounds"
    rows = [
        Row(f"fan-out `true`, {large} targets, P={args.parallel}, 2,000-line hashed known_hosts", f"{wall:.1f} s",
            f"OpenSSH xargs {theirs:.1f} s", wall / theirs, "<= 0.85x OpenSSH", wall / theirs <= 0.85, how),
        Row("sshd + shell CPU per login in that run (the sshd's reaped children; shared pyenv rehash lock)",
            f"{med(rc['opsgate'], 1):.0f} ms", f"OpenSSH {med(rc['openssh'], 1):.0f} ms",
            med(rc["opsgate"], 1) / med(rc["openssh"], 1), "(reported)", None, how),
        Row(f"client CPU per target, {large} vs {small} targets", f"{per_large:.1f} ms", f"{per_small:.1f} ms",
            per_large / per_small, "<= 1.2x", per_large / per_small <= 1.2, "this process's CPU time"),
        Row(f"peak threads, {large} targets, max_parallel {args.parallel}", f"{peak}", "", None,
            f"<= {args.parallel} + {EXTRA_THREADS}", peak <= args.parallel + EXTRA_THREADS,
            "sampled every 5 ms; a worker and paramiko's transport thread per open connection"),
    ]
    if clean is not None:
        c_wall, c_theirs = med(clean["opsgate"], 0), med(clean["openssh"], 0)
        rows += [
            Row(f"fan-out `true`, {large} targets, P={args.parallel}, clean remote shell (no rc file, no shared lock)",
                f"{c_wall:.1f} s", f"OpenSSH xargs {c_theirs:.1f} s", c_wall / c_theirs, "(reported)", None, how),
            Row("sshd + shell CPU per login, clean remote shell", f"{med(clean['opsgate'], 1):.0f} ms",
                f"OpenSSH {med(clean['openssh'], 1):.0f} ms", med(clean["opsgate"], 1) / med(clean["openssh"], 1),
                "(reported)", None, how),
        ]
    emit(rows, args.json)


if __name__ == "__main__":
    main()
