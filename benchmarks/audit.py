"""Audit trail throughput: fsync'd appends with 1/4/8 concurrent writer processes, and verify rate.

    .venv/bin/python benchmarks/audit.py [--appends 2000] [--records 1000000] [--rounds 3] [--dir DIR]

The append figures depend on the disk's fsync latency (run it where the state dir lives); verify
streams the file, so its figure is CPU-bound once the file is in the page cache. Verify runs on two trails:
a realistic one (``realistic``: the records real runs write, in their order and proportions, written by
AuditTrail's own record and line code: config.loaded, step-up records, action.start with its nested params
and grant, an action.target per target with a float duration and its recording, action.end with its
outcomes, runbooks now and then), and the one-shape trail it was measured on before (one flat
action.target shape: the best case of verify's fast path). Verify runs --rounds times per trail and mode,
all taking turns (so drift hits each alike); the rows give the medians, and the CPU time it took (this
process and its worker processes): what other load on the machine moves least.
"""

from __future__ import annotations

import base64
import hashlib
import multiprocessing
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
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


def generate(path: Path, n: int) -> dict[str, int]:
    """The one-shape trail: ``n`` action.target records of one flat shape (strings and ints only), written with
    the real line encoder in one buffered write. What verify met before it had several shapes per block."""
    prev = GENESIS
    with open(path, "wb", buffering=1 << 20) as f:
        for seq in range(1, n + 1):
            record = {"seq": seq, "time": "2026-11-28T14:50:01.123456Z", "event": "action.target",
                      "operator": "alice", "run": "20261128-145001-a1b2c3", "action": "restart-nginx",
                      "target": f"web{seq % 16}", "outcome": "ok", "exit_code": 0, "bytes_out": 1234, "prev": prev}
            line, prev = _encode_line(record)
            f.write(line)
    return {"action.target": n}


# -- a realistic trail: the records real runs write, in their order and proportions ---------------------------

class _FastTrail:
    """``AuditTrail.append`` without the file lock, the read of the last record and the fsync per record: the
    same record dict (``seq``, ``time``, ``event``, ``operator``, ``run``, the fields, ``prev``) and the same
    line encoder, so the same bytes (``generate_realistic`` checks that against the real ``AuditTrail``)."""

    def __init__(self, f, now):
        self.f, self.now, self.seq, self.prev = f, now, 0, GENESIS

    def append(self, event: str, *, operator: str, run: str | None = None, **fields) -> None:
        record = {"seq": self.seq + 1, "time": self.now(), "event": event, "operator": operator, "run": run,
                  **fields, "prev": self.prev}
        line, self.prev = _encode_line(record)
        self.seq += 1
        self.f.write(line)


# (id, risk, requirement as Requirement.describe() words it, command template, params)
_ACTIONS = [
    ("restart-service", "medium", "OTP within 15m", "systemctl restart {service}", {"service": ["nginx", "php-fpm"]}),
    ("tail-log", "low", "no step-up", "tail -n {lines} /var/log/{file}", {"lines": [50, 200], "file": ["syslog", "app.log"]}),
    ("disk-usage", "low", "no step-up", "df -h / /var && du -sh /var/log/* | sort -h | tail -n 5", {}),
    ("grep-errors", "low", "no step-up", "grep -E {pattern} /var/log/app.log | tail -n 50",
     {"pattern": ["'error|fatal'", "'\"status\": 5[0-9][0-9]'"]}),
    ("deploy", "high", "security key within 5m, typed confirmation", "./bin/deploy --version {version} --canary {canary}",
     {"version": ["2026.11.3", "2026.11.4-rc1"], "canary": [True, False]}),
    ("rotate-cert", "high", "security key every run", "./bin/rotate-cert {domain} --token \"$__opsgate_secret_token\"",
     {"domain": ["api.example.internal"], "token": ["<secret>"]}),
    ("clear-cache", "medium", "OTP within 15m, a reason", "redis-cli -n {db} FLUSHDB", {"db": [0, 3]}),
]
_RUNBOOKS = [
    ("db-failover-plan", "critical", "security key every run, typed confirmation, 1 approval",
     [("Check replication lag", "./bin/lag --max 5", ["db-replica"]), ("Drain writes", None, []),
      ("Promote the replica", "./bin/failover --promote db-replica", ["db-replica"]),
      ("Repoint the apps", "./bin/repoint --primary db-replica", ["app-1", "app-2", "app-3"])]),
    ("rolling-restart", "medium", "OTP within 15m",
     [("Restart the first half", "systemctl restart nginx", ["web-1", "web-2", "web-3"]),
      ("Check health", "curl -fsS http://localhost/health", ["web-1", "web-2", "web-3"]),
      ("Restart the second half", "systemctl restart nginx", ["web-4", "web-5", "web-6"])]),
]
_OPERATORS = ["alice", "bob", "carol", "dave", "zoë"]
_HOSTS = [f"web-{i}" for i in range(1, 41)] + [f"db-{i}" for i in range(1, 5)] + ["cache-1", "cache-2", "lb-1"]


def _render(template: str, values: dict) -> str:
    return template.format(**{k: (str(v).lower() if isinstance(v, bool) else v) for k, v in values.items()})


class _Runs:
    """What the run pipeline (console/run.py) appends for runs of the catalog above, with the fields it gives them:
    per CLI run config.loaded, the step-up's records (stepup.success, sometimes a wrong code first, an approver's
    for the two-person rule), action.start, one action.target per target (1 to 10), action.end; now and then a
    denial, a dry run, a cancelled run, or a runbook (runbook.start, each step's action records and runbook.step,
    runbook.end)."""

    def __init__(self, append, rnd: random.Random):
        self.append, self.rnd = append, rnd
        self.config_sha256 = hashlib.sha256(b"opsgate.toml").hexdigest()

    def _run_id(self) -> str:
        rnd = self.rnd
        return (f"202611{rnd.randint(1, 30):02d}T{rnd.randint(0, 23):02d}{rnd.randint(0, 59):02d}{rnd.randint(0, 59):02d}Z-"
                f"{rnd.getrandbits(24):06x}")

    def _stepup(self, operator: str, run: str, label: str, requirement: str) -> dict:
        """The step-up's records for a run (none when a kept grant covers it) and the grant fields action.start gets."""
        rnd, append = self.rnd, self.append
        fido2 = requirement.startswith("security key")
        fresh = fido2 and "every run" in requirement or rnd.random() < 0.4
        digest = hashlib.sha256(run.encode()).hexdigest() if fido2 else None
        factor = "fido2" if fido2 else "otp"
        approvals = []
        if fresh:
            if not fido2 and rnd.random() < 0.05:
                append("stepup.failure", operator=operator, run=run, action=label, factor=factor, purpose="step-up",
                       reason="wrong code", attempts_left=4)
            if fido2:
                append("stepup.success", operator=operator, run=run, action=label, factor=factor, purpose="step-up",
                       credential="yubikey-5c", sign_count=rnd.randint(1, 5000), user_verified=True, digest=digest,
                       assertion={"credential_id": rnd.randbytes(32).hex(), "rp_id": "opsgate",
                                  "authenticator_data": base64.b64encode(rnd.randbytes(37)).decode(),
                                  "client_data_json": base64.b64encode(rnd.randbytes(120)).decode(),
                                  "signature": base64.b64encode(rnd.randbytes(71)).decode(),
                                  "nonce": rnd.randbytes(16).hex()})
            else:
                append("stepup.success", operator=operator, run=run, action=label, factor=factor, purpose="step-up")
            if "approval" in requirement:
                approver = next(o for o in _OPERATORS if o != operator)
                append("stepup.success", operator=approver, run=run, action=label, factor=factor, purpose="approval",
                       credential="backup-key", sign_count=rnd.randint(1, 5000), user_verified=False, digest=digest)
                append("approval.granted", operator=approver, run=run, action=label, requester=operator,
                       factor=factor, digest=digest)
                approvals = [approver]
        auth_time = f"2026-11-{rnd.randint(1, 30):02d}T{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:00+00:00"
        grant = None if requirement == "no step-up" else {"auth_time": auth_time, "factor": factor, "fresh": fresh}
        return {"requirement": requirement, "grant": grant, "approvals": approvals,
                "fido2_digest": digest if fido2 else None}

    def _targets(self, run: str, action: str, operator: str, targets: list[str], link: dict | None = None) -> int:
        """action.target per target, action.end; returns the exit code."""
        rnd, append = self.rnd, self.append
        counts: dict[str, int] = {}
        for target in targets:
            roll = rnd.random()
            outcome, exit_code, error = "ok", 0, None
            if roll < 0.06:
                outcome, exit_code = "failed", rnd.choice([1, 2, 3, 127])
            elif roll < 0.075:
                outcome, exit_code, error = "error", None, f"{target}: connection refused (port 22)"
            recording = f"recordings/{run}/{target}.cast"
            append("action.target", operator=operator, run=run, action=action, target=target, outcome=outcome,
                   exit_code=exit_code, duration=round(rnd.uniform(0.05, 40.0), 6),
                   bytes_out=rnd.randint(0, 2_000_000), bytes_err=rnd.choice([0, 0, 0, rnd.randint(1, 4000)]),
                   error=error, recording=recording, recording_sha256=hashlib.sha256(recording.encode()).hexdigest(),
                   recording_error=None)
            counts[outcome] = counts.get(outcome, 0) + 1
        exit_code = 0 if counts.get("ok", 0) == len(targets) else 1
        append("action.end", operator=operator, run=run, action=action, outcomes=dict(sorted(counts.items())),
               exit_code=exit_code)
        return exit_code

    def action(self) -> None:
        rnd, append = self.rnd, self.append
        label, risk, requirement, template, choices = rnd.choice(_ACTIONS)
        operator = rnd.choice(_OPERATORS)
        run = self._run_id()
        values = {name: rnd.choice(options) for name, options in choices.items()}
        targets = rnd.sample(_HOSTS, rnd.randint(1, 10))
        fields = {"action": label, "risk": risk, "targets": targets, "command": _render(template, values),
                  "params": values, **({"reason": "INC-4711: cache poisoned"} if "reason" in requirement else {})}
        roll = rnd.random()
        if roll < 0.02:
            append("action.dry_run", operator=operator, run=run, **fields, requirement=requirement)
            return
        stepup = self._stepup(operator, run, label, requirement)
        if roll < 0.035 and requirement != "no step-up" and "reason" not in fields:  # (run.py would raise there)
            append("action.denied", operator=operator, run=run, **fields, reason=f"OTP cancelled by {operator}")
            return
        append("action.start", operator=operator, run=run, **fields, **stepup, config_sha256=self.config_sha256)
        if roll < 0.045:
            append("action.cancelled", operator=operator, run=run, action=label, stage="running", targets=targets[:1])
        self._targets(run, label, operator, targets)

    def runbook(self) -> None:
        rnd, append = self.rnd, self.append
        label, risk, requirement, steps = rnd.choice(_RUNBOOKS)
        operator = rnd.choice(_OPERATORS)
        run = self._run_id()
        targets = sorted({t for _, _, ts in steps for t in ts})
        fields = {"runbook": label, "risk": risk, "targets": targets,
                  "steps": [{"step": i, "title": title, "kind": "command" if command else "pause",
                             "run": f"{run}.{i}" if command else None, "targets": ts, "command": command,
                             "pause": None if command else "Wait for the writes to drain"}
                            for i, (title, command, ts) in enumerate(steps, 1)],
                  "params": {}}
        stepup = self._stepup(operator, run, label, requirement)
        append("runbook.start", operator=operator, run=run, **fields, **stepup, config_sha256=self.config_sha256)
        statuses = {}
        for i, (title, command, ts) in enumerate(steps, 1):
            step_run = f"{run}.{i}" if command else None
            if command:
                append("action.start", operator=operator, run=step_run, action=f"{label}#{i}", risk=risk, targets=ts,
                       command=command, params={}, **{**stepup, "grant": stepup["grant"] and
                                                      {**stepup["grant"], "fresh": False}},
                       runbook=label, runbook_run=run, step=i, config_sha256=self.config_sha256)
                status = "ok" if self._targets(step_run, f"{label}#{i}", operator, ts) == 0 else "failed"
                detail = "ok" if status == "ok" else f"{ts[0]}: exit 1, expected 0"
            else:
                status, detail = "ok", "operator continued"
            append("runbook.step", operator=operator, run=run, runbook=label, step=i, title=title, step_run=step_run,
                   status=status, detail=detail)
            statuses[str(i)] = status
        append("runbook.end", operator=operator, run=run, runbook=label, steps=statuses,
               exit_code=0 if all(v == "ok" for v in statuses.values()) else 1)


def _clock(rnd: random.Random):
    """Times that go forward as a console's do: a few ms to a minute between records (RFC 3339, microseconds)."""
    at = [datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp()]

    def now() -> str:
        at[0] += rnd.choice((0.002, 0.03, 0.4, 2.5, 61.0)) * rnd.random()
        return datetime.fromtimestamp(at[0], timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    return now


def realistic(append, n: int, seed: int = 7) -> dict[str, int]:
    """Call ``append`` (``AuditTrail.append``'s signature) for the first ``n`` records real runs write: per run,
    config.loaded for a CLI run (60%), then an action (92%) or a runbook (8%). Returns the count per event."""
    counts: dict[str, int] = {}

    def counted(event: str, **fields) -> None:
        if sum(counts.values()) < n:
            append(event, **fields)
            counts[event] = counts.get(event, 0) + 1

    rnd = random.Random(seed)
    runs = _Runs(counted, rnd)
    while sum(counts.values()) < n:
        if rnd.random() < 0.6:
            counted("config.loaded", operator=rnd.choice(_OPERATORS), run=None, path="/etc/opsgate/opsgate.toml",
                    sha256=runs.config_sha256)
        runs.runbook() if rnd.random() < 0.08 else runs.action()
    return counts


def generate_realistic(path: Path, n: int) -> dict[str, int]:
    """Write a realistic trail of ``n`` records (``realistic``) with ``_FastTrail``; first check, on a few hundred
    records, that it writes the very bytes the real ``AuditTrail`` writes. Returns the count per event."""
    import opsgate.console.audit.trail as trail_module

    check = path.with_name(path.name + ".check")
    check.unlink(missing_ok=True)
    original = trail_module.utc_now
    trail_module.utc_now = _clock(random.Random(1))
    try:
        realistic(AuditTrail(check).append, 400)
    finally:
        trail_module.utc_now = original
    with open(path, "wb") as f:
        realistic(_FastTrail(f, _clock(random.Random(1))).append, 400)
    if check.read_bytes() != path.read_bytes():
        raise SystemExit("the benchmark's fast writer does not write the bytes AuditTrail writes")
    check.unlink()
    with open(path, "wb", buffering=1 << 20) as f:
        return realistic(_FastTrail(f, _clock(random.Random(2))).append, n)


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
        trails = {}  # name: (path, what it holds)
        for name, make in (("realistic trail", generate_realistic), ("one-shape trail", generate)):
            path = directory / f"verify-{name.split()[0]}.jsonl"
            started = time.perf_counter()
            events = make(path, records)
            gen = time.perf_counter() - started
            size = path.stat().st_size
            mix = ""
            if events:
                top = sorted(events.items(), key=lambda kv: -kv[1])
                mix = ", ".join(f"{event} {count / records:.0%}" for event, count in top[:4]) + ", ..."
            log(f"{name}: {records} records in {gen:.1f}s ({size / records:.0f} B/record){'; ' + mix if mix else ''}")
            trails[name] = path, size, mix
        modes = (("1 process", 1), (f"default: {os.cpu_count()} cpus", None))
        runs = [(name, label, workers) for name in trails for label, workers in modes]
        times: dict[tuple, list[float]] = {(name, label): [] for name, label, _ in runs}
        cpus: dict[tuple, list[float]] = {key: [] for key in times}
        oks = {key: True for key in times}
        for round_no in range(1, rounds + 1):
            for name, label, workers in runs:  # every trail and mode in turn, round after round
                path, size, _ = trails[name]
                key = (name, label)
                # the CLI's code path: `opsgate audit verify` calls verify() with the default workers
                cpu = _cpu_seconds()
                started = time.perf_counter()
                report = verify(path, check_recordings=False, workers=workers)
                elapsed = time.perf_counter() - started
                cpus[key].append(_cpu_seconds() - cpu)  # verify has waited for its workers
                oks[key] = oks[key] and report.ok and report.count == records
                times[key].append(elapsed)
                log(f"verify round {round_no}, {name}, {label}: {records / elapsed:,.0f} r/s "
                    f"({size / elapsed / 1e6:,.0f} MB/s, CPU {cpus[key][-1]:.2f} s), ok: {oks[key]}")
        for name, label, workers in runs:
            key = (name, label)
            path, size, mix = trails[name]
            elapsed = statistics.median(times[key])
            rate = records / elapsed
            spread = (f"; {rounds} rounds, {records / max(times[key]):,.0f} to {records / min(times[key]):,.0f}/s"
                      if rounds > 1 else "")
            goal = 500_000 if workers is None else None  # what `opsgate audit verify` (the default) must reach
            rows.append(Row(f"audit verify, {name}, {records:,} records, {label}", f"{rate:,.0f} records/s",
                            ratio=None, target=f">= {goal:,}/s" if goal else "(reported)",
                            met=oks[key] and rate >= (goal or 0),
                            note=f"{elapsed:.2f} s, {size / elapsed / 1e6:,.0f} MB/s, {size / records:.0f} B/record, "
                                 f"CPU {statistics.median(cpus[key]):.2f} s{spread}{'; ' + mix if mix else ''}"))
    emit(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
