"""Fan-out latency: opsgate's FanOut vs OpenSSH (`xargs -P N ssh`) vs Fabric's ThreadingGroup.

    .venv/bin/python benchmarks/fanout.py [--sizes 10,50,200] [--parallel 32] [--rounds 5]

`true` on N targets (sshd on 16 loopback addresses, addresses repeat), the three runners in
turn each round; prints the medians and the ratios opsgate/OpenSSH (goal <= 0.85) and
opsgate/Fabric (goal < 1). Every runner must report every target ok, or the run fails.

Fabric runs each batch of `--parallel` hosts as one ThreadingGroup (one thread per host, so
the same concurrency cap as the others); its connections check host keys against the same
known_hosts file and use the same key, no agent.
"""

from __future__ import annotations

import subprocess
import time

from common import Row, alternate, cli, emit, log, ssh_argv, sshd_server

from opsgate.actions.fanout import FanOut
from opsgate.actions.ssh import Endpoint


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
    if bad or len(results) != count:
        raise SystemExit(f"opsgate: {len(bad)} of {count} targets failed, first: {bad[0] if bad else 'missing'}")
    return elapsed


def run_openssh(server, count: int, parallel: int, known_hosts: str | None = None) -> float:
    addresses = "".join(f"{server.addresses[i % len(server.addresses)]}\n" for i in range(count))
    # each ssh prints one line when `true` succeeded, so a dropped target is counted, not assumed
    command = ["xargs", "-P", str(parallel), "-I", "{}", *ssh_argv(server, "{}", known_hosts), "true && echo ok"]
    start = time.perf_counter()
    done = subprocess.run(command, input=addresses, text=True, capture_output=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0 or done.stdout.count("ok\n") != count:
        raise SystemExit(f"OpenSSH run failed ({done.returncode}, {done.stdout.count('ok')} ok): {done.stderr[-500:]}")
    return elapsed


def run_fabric(server, count: int, parallel: int) -> float:
    from fabric import Connection, ThreadingGroup
    from fabric.exceptions import GroupException

    class Conn(Connection):  # Connections compare by host/user/port: repeated addresses must stay apart
        __eq__ = object.__eq__
        __hash__ = object.__hash__

    hosts = [server.addresses[i % len(server.addresses)] for i in range(count)]
    kwargs = {"key_filename": server.identity_file, "allow_agent": False, "look_for_keys": False}
    start = time.perf_counter()
    ok = 0
    for i in range(0, count, parallel):
        conns = [Conn(h, user=server.user, port=server.port, connect_kwargs=kwargs) for h in hosts[i:i + parallel]]
        for conn in conns:
            conn.client.load_host_keys(server.known_hosts)
        group = ThreadingGroup.from_connections(conns)
        try:
            results = group.run("true", hide=True, warn=True)
        except GroupException as e:
            results = e.result
        finally:
            group.close()
        ok += sum(1 for r in results.values() if getattr(r, "exited", 1) == 0)
    elapsed = time.perf_counter() - start
    if ok != count:
        raise SystemExit(f"Fabric: {count - ok} of {count} targets failed")
    return elapsed


def main() -> None:
    parser = cli(__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,50,200")
    parser.add_argument("--parallel", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rounds = 2 if args.quick else args.rounds
    rows: list[Row] = []
    with sshd_server() as server:
        for fn in (run_opsgate, run_openssh, run_fabric):  # warm-up: imports, page cache, first connections
            fn(server, 4, 4)
        for n in sizes:
            log(f"fan-out: `true` on {n} targets, {args.parallel} at once")
            med = alternate(rounds, {
                "opsgate": lambda: run_opsgate(server, n, args.parallel),
                "openssh": lambda: run_openssh(server, n, args.parallel),
                "fabric": lambda: run_fabric(server, n, args.parallel),
            }, log=log)
            ours = med["opsgate"]
            r_ssh = ours / med["openssh"]
            r_fab = ours / med["fabric"]
            rows.append(Row(f"fan-out `true`, {n} targets, P={args.parallel}", f"{ours:.3f} s",
                            f"OpenSSH xargs {med['openssh']:.3f} s", r_ssh, "<= 0.85x OpenSSH", r_ssh <= 0.85,
                            f"median of {rounds}"))
            rows.append(Row(f"fan-out `true`, {n} targets, P={args.parallel}", f"{ours:.3f} s",
                            f"Fabric ThreadingGroup {med['fabric']:.3f} s", r_fab, "< 1.0x Fabric", r_fab < 1.0,
                            f"median of {rounds}"))
    emit(rows, args.json)


if __name__ == "__main__":
    main()
