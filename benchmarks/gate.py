"""The gate's added latency per run: plan, policy, audit and one certificate per target, 1 and 50 targets.

    .venv/bin/python benchmarks/gate.py [--quick] [--json]

A gate serves on a Unix socket in this process (as ``opsgate demo`` runs it); a console connects, asks to
run a low-risk action, and answers the gate's ``execute`` at once with every target ok, so what is timed
is the gate's side of a run: connect, plan from its catalog, audit action.start (fsync), sign one
certificate per target (each audited as gate.certificate, fsync), record each reported target (fsync)
and action.end. The peer is local mode's side of the same run (plan, action.start, the targets'
records, action.end: the same audit writes without the gate). Signing alone is timed too.
"""

from __future__ import annotations

import getpass
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import Row, cli, emit, log  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402

from opsgate.actions.outcome import TargetResult  # noqa: E402
from opsgate.console.catalog.loader import parse_config  # noqa: E402
from opsgate.console.gate.ca import UserCA, ephemeral_key  # noqa: E402
from opsgate.console.gate.client import GateClient  # noqa: E402
from opsgate.console.gate.server import listen, serve_socket  # noqa: E402
from opsgate.console.gate.service import GateService  # noqa: E402
from opsgate.console.run import Executed, Pipeline, RunRequest  # noqa: E402
from opsgate.console.wiring import assemble  # noqa: E402


def catalog(n: int, socket_path: Path | None) -> str:
    """``n`` targets and one low-risk action on all; with a [gate] when ``socket_path`` is given."""
    targets = "".join(f'[targets.t{i}]\nhost = "10.0.{i // 250}.{i % 250 + 1}"\nuser = "sre"\n' for i in range(n))
    names = ", ".join(f'"t{i}"' for i in range(n))
    gate = "" if socket_path is None else (f'[gate]\nsocket = "{socket_path}"\n[gate.operators]\n'
                                           f'"{getpass.getuser()}" = "bench"\n')
    return (f'[console]\nknown_hosts = []\n{gate}{targets}'
            f'[actions.check]\ntitle = "check"\nrisk = "low"\ntargets = [{names}]\ncommand = "uptime"\n')


def gate_run(client: GateClient, n: int) -> float:
    _, public = ephemeral_key()

    def answer(name: str, args: dict, cid: int):
        if name == "execute":
            for t in args["targets"]:
                client.send_event(cid, {"result": {"target": t["name"], "outcome": "ok", "exit_code": 0},
                                        "recording": f"recordings/x/{t['name']}.cast", "recording_sha256": "0" * 64})
            return {"done": True}
        return None

    started = time.perf_counter()
    result = client.request("run", {"action": "check", "public_key": public}, answer)
    elapsed = time.perf_counter() - started
    assert result["exit_code"] == 0, result
    return elapsed


class _Instant:
    """Local mode's executor without SSH: every target ok at once (the same audit writes as a real run)."""

    def run(self, plan, frontend, marker, on_result, *, cancel, pool=None, capture=None):
        results = []
        for t in plan.targets:
            r = TargetResult(t.name, "ok", 0, 0.0, 0, 0)
            on_result(r, Executed(f"recordings/x/{t.name}.cast", "0" * 64))
            results.append(r)
        return results

    def cancel(self) -> None:
        pass


class _Quiet:
    def __getattr__(self, name):
        return lambda *a, **k: None


def local_run(pipeline: Pipeline) -> float:
    started = time.perf_counter()
    report = pipeline.execute(pipeline.plan(RunRequest("check", (), {}, "bench")), _Quiet())
    elapsed = time.perf_counter() - started
    assert report.exit_code == 0
    return elapsed


def main() -> int:
    args = cli(__doc__.splitlines()[0]).parse_args()
    rounds = 5 if args.quick else 30
    rows: list[Row] = []
    for n in (1, 50):
        base = Path(tempfile.mkdtemp(prefix="opsgate-bench-gate-"))
        stop = threading.Event()
        try:
            gate_dir, local_dir = base / "gate", base / "local"
            gate_dir.mkdir(mode=0o700)
            local_dir.mkdir(mode=0o700)
            UserCA.create(gate_dir)
            config = parse_config(catalog(n, base / "gate.sock").encode(), "bench.toml")
            sock = listen(base / "gate.sock")
            threading.Thread(target=serve_socket, args=(GateService(config, gate_dir), sock, stop), daemon=True).start()
            local = assemble(parse_config(catalog(n, None).encode(), "local.toml"), local_dir,
                             persist_grants=False).pipeline
            local.executor = _Instant()
            gate_times, local_times = [], []
            for _ in range(rounds):  # interleaved, so drift hits both alike
                client = GateClient(config.gate)
                try:
                    gate_times.append(gate_run(client, n))
                finally:
                    client.close()
                local_times.append(local_run(local))
            g, loc = statistics.median(gate_times), statistics.median(local_times)
            added = g - loc
            limit = 0.050 if n == 1 else None
            log(f"{n} target(s): gate {g * 1000:.1f} ms, local {loc * 1000:.1f} ms, added {added * 1000:.1f} ms")
            rows.append(Row(f"gate run, {n} target{'s' if n > 1 else ''} (plan, certificates, audit)",
                            f"{g * 1000:.1f} ms", f"{loc * 1000:.1f} ms local mode", g / loc if loc else None,
                            "added < 50 ms" if limit else "(reported)", added < limit if limit else None,
                            note=f"added {added * 1000:.1f} ms, median of {rounds}"))
        finally:
            stop.set()
            shutil.rmtree(base, ignore_errors=True)
    ca = UserCA(ed25519.Ed25519PrivateKey.generate())
    _, public = ephemeral_key()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(50):
            ca.sign(public, key_id=f"run bench {i}", principal="sre", command="uptime")
        times.append(time.perf_counter() - started)
    sign = statistics.median(times)
    log(f"signing 50 certificates: {sign * 1000:.1f} ms")
    rows.append(Row("signing 50 certificates", f"{sign * 1000:.1f} ms", target="< 100 ms", met=sign < 0.1))
    emit(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
