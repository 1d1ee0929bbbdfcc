"""Fan-out through a bastion: opsgate (one login to the bastion, a channel per target) vs OpenSSH
(`xargs -P 32 ssh -J bastion target true`, one bastion login per target).

    .venv/bin/python benchmarks/jump.py [--targets 50] [--parallel 32] [--rounds 5]

Two sshd: the bastion (127.0.0.1) and the targets (16 loopback addresses, repeated). Both runners use
the same ssh_config (ProxyJump), keys and known_hosts; every target must report ok. Also counts the
bastion's logins during one opsgate run (its log, LogLevel VERBOSE): one is the point.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from common import Row, alternate, cli, emit, log, sshd_server

from opsgate.actions.fanout import FanOut
from opsgate.actions.ssh import Endpoint


def ssh_config(path: Path, bastion, targets, names: list[str]) -> Path:
    text = (f"Host bastion\n  HostName 127.0.0.1\n  Port {bastion.port}\n  User {bastion.user}\n"
            f"  IdentityFile {bastion.identity_file}\n  IdentitiesOnly yes\n"
            f"Host t*\n  Port {targets.port}\n  User {targets.user}\n  IdentityFile {targets.identity_file}\n"
            f"  IdentitiesOnly yes\n  ProxyJump bastion\n")
    text += "".join(f"Host {n}\n  HostName {targets.addresses[i % len(targets.addresses)]}\n" for i, n in enumerate(names))
    known = path.with_name("known_hosts")
    known.write_text(Path(bastion.known_hosts).read_text() + Path(targets.known_hosts).read_text())
    path.write_text(text)
    # OpenSSH's jump process does not inherit -o options: its own copy says which known_hosts to trust
    # (opsgate refuses UserKnownHostsFile in ssh_config: it trusts only its own known_hosts setting)
    path.with_name("ssh_config.openssh").write_text(
        text + f"Host *\n  UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n  BatchMode yes\n")
    return known


def run_opsgate(config: Path, known: Path, names: list[str], parallel: int) -> float:
    endpoints = [Endpoint(name=n, host=n, ssh_config=str(config), known_hosts=(str(known),), allow_agent=False,
                          look_for_keys=False) for n in names]
    start = time.perf_counter()
    results = FanOut(endpoints, "true", max_parallel=parallel, sink=lambda chunk: None).run()
    elapsed = time.perf_counter() - start
    bad = [r for r in results if r.outcome != "ok"]
    if bad or len(results) != len(names):
        raise SystemExit(f"opsgate: {len(bad)} of {len(names)} targets failed, first: {bad[0] if bad else 'missing'}")
    return elapsed


def run_openssh(config: Path, known: Path, names: list[str], parallel: int) -> float:
    command = ["xargs", "-P", str(parallel), "-I", "{}", "ssh", "-F", f"{config}.openssh", "-o", "BatchMode=yes",
               "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes", "{}", "true && echo ok"]
    start = time.perf_counter()
    done = subprocess.run(command, input="".join(f"{n}\n" for n in names), text=True, capture_output=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0 or done.stdout.count("ok\n") != len(names):
        raise SystemExit(f"OpenSSH run failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed


def main() -> None:
    parser = cli(__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    names = [f"t{i:03d}" for i in range(args.targets)]
    with sshd_server() as targets, sshd_server(("127.0.0.1",), options={"LogLevel": "VERBOSE"}) as bastion, \
            tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "ssh_config"
        known = ssh_config(config, bastion, targets, names)
        run_opsgate(config, known, names[:4], 4)  # warm-up
        run_openssh(config, known, names[:4], 4)
        before = bastion.log().count("Accepted publickey")
        run_opsgate(config, known, names, args.parallel)
        logins = bastion.log().count("Accepted publickey") - before
        log(f"one opsgate run of {len(names)} targets: {logins} bastion login(s)")
        med = alternate(rounds, {
            "opsgate": lambda: run_opsgate(config, known, names, args.parallel),
            "openssh": lambda: run_openssh(config, known, names, args.parallel),
        }, log=log)
    ratio = med["opsgate"] / med["openssh"]
    emit([
        Row(f"fan-out through one bastion, {len(names)} targets, P={args.parallel}", f"{med['opsgate']:.3f} s",
            f"OpenSSH xargs ssh -J {med['openssh']:.3f} s", ratio, "<= 0.85x OpenSSH", ratio <= 0.85,
            f"median of {rounds}"),
        Row(f"bastion logins for one run of {len(names)} targets", f"{logins}", target="1", met=logins == 1),
    ], args.json)


if __name__ == "__main__":
    main()
