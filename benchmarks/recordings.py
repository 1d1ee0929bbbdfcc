"""Console start with a recordings archive: 0 vs about 1 GB of recordings named by the trail (issue #19).

    .venv/bin/python benchmarks/recordings.py [--mb 1000] [--files 1000] [--rounds 15]

Two state dirs, the same config and the same number of records: in one, each record is an ``action.target``
naming a recording of MB/FILES megabytes (sparse files: cheap to make, yet every byte is read when hashed); in
the other, plain records and no recordings. Each round starts a fresh interpreter through the real CLI (as
benchmarks/startup.py does: headless, 120x40) and takes two marks from the spawn: the first paint, and the
audit pane's verdict (its ``AuditVerified``, after every recording was checked); at each, the child's CPU time
too (all its threads), which other jobs on a shared machine disturb far less than the wall clock. The first start with the
archive has no ``recordings.checked`` yet (every recording is read, after the first paint); the other rounds
alternate between the two dirs with the cache as the first start left it, and a third start on the archive
with the check as it was before the cache (``--reread``: the pane's start verify reads every recording, from
mount, as ``opsgate audit verify`` does).
Target: the archive adds < 20 ms to the start (first paint); the verdict's added time is reported.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CONFIG = """
[console]
operator = "bench"
[policy.low]
factor = "none"
[targets.web-0]
host = "10.0.0.1"
[actions.restart]
title = "Restart"
risk = "low"
targets = ["web-0"]
command = "systemctl restart nginx"
"""


def child(config: str, state: str, reread: bool) -> None:
    """The console, headless: prints PAINT at the first paint and VERIFIED at the pane's verdict, then exits."""
    import opsgate.screens.app as app_mod
    import opsgate.screens.audit_pane as pane_mod
    import opsgate.screens.console_screen as cs

    if reread:  # the start's verify as it was: chain and every recording read, in the poll thread from mount
        from opsgate.console.audit.verify import verify

        def verify_full(self, *, cached: bool = False):
            report = verify(self.trail.path, state_dir=self.state_dir)
            with self._chain_lock:
                self.full_verifies += 1
                self._chain, self._chain_count = report, report.count
            self.post_message(pane_mod.AuditVerified(report.ok, report.count, (report.problems or [None])[0]))
            return report

        pane_mod.AuditPane.verify_full = verify_full

    seen: set[str] = set()

    def mark(name: str, app) -> None:
        print(f"{name} {time.time():.6f} {time.process_time():.6f}", flush=True)
        seen.add(name)
        if {"PAINT", "VERIFIED"} <= seen:
            app.exit()

    original_mount = cs.ConsoleScreen.on_mount

    def on_mount(self) -> None:
        original_mount(self)
        self.call_after_refresh(lambda: mark("PAINT", self.app))

    original_verified = pane_mod.AuditPane.on_audit_verified

    def on_audit_verified(self, message) -> None:
        original_verified(self, message)
        if "VERIFIED" not in seen:
            if not message.ok:
                print(f"BROKEN {message.problem}", flush=True)
            print(f"HASHED {self.checks.hashed} {self.checks.bytes_hashed}", flush=True)
            mark("VERIFIED", self.app)

    cs.ConsoleScreen.on_mount = on_mount
    pane_mod.AuditPane.on_audit_verified = on_audit_verified
    run = app_mod.OpsgateApp.run
    app_mod.OpsgateApp.run = lambda self, **kw: run(self, headless=True, size=(120, 40), **kw)
    from opsgate.cli.main import main

    main(["--config", config, "--state-dir", state])


def make_state(state: Path, files: int, size: int) -> None:
    """``files`` records; with ``size``, each an action.target naming a sparse recording of that many bytes."""
    from opsgate.console.audit.trail import AuditTrail

    state.mkdir(mode=0o700)
    trail = AuditTrail(state / "audit.jsonl")
    digest = hashlib.sha256(bytes(size)).hexdigest() if size else None
    for i in range(files):
        if not size:
            trail.append("note", operator="bench", text=f"record {i}")
            continue
        rel = f"recordings/run-{i:05d}/web-0.cast"
        path = state / rel
        path.parent.mkdir(parents=True, mode=0o700)
        with open(path, "wb") as f:
            f.truncate(size)  # sparse: no disk, read back as zeros
        trail.append("action.target", operator="bench", run=f"run-{i:05d}", target="web-0", outcome="ok",
                     recording=rel, recording_sha256=digest)


def measure(config: Path, state: Path, reread: bool = False) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.time()
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(config), str(state),
                          "--reread" if reread else "--cached"],
                         capture_output=True, text=True, timeout=300, env={**env, "TERM": "xterm-256color"})
    marks = {}
    for line in out.stdout.splitlines():
        word, *rest = line.split()
        if word in ("PAINT", "VERIFIED"):
            marks[word] = float(rest[0]) - start
            marks[word + "-cpu"] = float(rest[1])  # the process's CPU time (all its threads) at the mark
        elif word == "HASHED":
            marks["hashed"], marks["bytes"] = float(rest[0]), float(rest[1])
        elif word == "BROKEN":
            raise SystemExit(f"the audit pane says the chain is broken: {line}")
    if out.returncode != 0 or "PAINT" not in marks or "VERIFIED" not in marks:
        raise SystemExit(f"console child failed ({out.returncode}): {out.stderr[-1500:]}")
    return marks


def main() -> None:
    sys.path.insert(0, str(HERE))
    from common import Row, cli, emit, log

    parser = cli(__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1000)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    mb = 100 if args.quick else args.mb
    size = mb * 1_000_000 // args.files
    with tempfile.TemporaryDirectory(prefix="opsgate-bench-recordings-") as tmp:
        config = Path(tmp, "opsgate.toml")
        config.write_text(CONFIG)
        empty, archive = Path(tmp, "empty"), Path(tmp, "archive")
        make_state(empty, args.files, 0)
        made = time.time()
        make_state(archive, args.files, size)
        total = sum(p.stat().st_size for p in (archive / "recordings").rglob("*.cast"))
        log(f"recordings: {args.files} records; {args.files} recordings, {total / 1e6:.0f} MB (sparse)")
        measure(config, empty)  # warm the page cache and write .pyc files
        time.sleep(max(0.0, made + 2.5 - time.time()))  # files must settle (2 s) before the cache keeps them
        cold = measure(config, archive)
        if cold["hashed"] != args.files:
            raise SystemExit(f"the first start read {cold['hashed']:.0f} recordings, not {args.files}")
        log(f"  cold: paint {cold['PAINT'] * 1e3:.0f} ms, verdict {cold['VERIFIED'] * 1e3:.0f} ms "
            f"({cold['bytes'] / 1e6:.0f} MB read)")
        runs: dict[str, list[dict[str, float]]] = {"empty": [], "archive": [], "reread": []}
        for i in range(rounds):
            for name, state in (("empty", empty), ("archive", archive), ("reread", archive)):
                marks = measure(config, state, reread=name == "reread")
                runs[name].append(marks)
                log(f"  round {i + 1} {name}: paint {marks['PAINT'] * 1e3:.0f} ms (cpu {marks['PAINT-cpu'] * 1e3:.0f}), "
                    f"verdict {marks['VERIFIED'] * 1e3:.0f} ms (cpu {marks['VERIFIED-cpu'] * 1e3:.0f}), "
                    f"{marks.get('hashed', 0):.0f} files read")
        if any(m["hashed"] for m in runs["archive"]):
            raise SystemExit("a warm start read recordings again")

    def med(name: str, mark: str) -> float:
        return statistics.median(m[mark] for m in runs[name])

    def added(mark: str) -> float:  # the median of each round's difference: drift between rounds cancels out
        return statistics.median(a[mark] - e[mark] for a, e in zip(runs["archive"], runs["empty"]))

    paint_added, paint_cpu_added = added("PAINT"), added("PAINT-cpu")
    after_paint = statistics.median(m["VERIFIED"] - m["PAINT"] for m in runs["archive"])
    emit([
        Row(f"console start with {total / 1e9:.1f} GB of recordings ({args.files} files), first paint",
            f"{med('archive', 'PAINT') * 1e3:.0f} ms", f"no recordings {med('empty', 'PAINT') * 1e3:.0f} ms",
            med("archive", "PAINT") / med("empty", "PAINT"), "adds < 20 ms", paint_added < 0.020,
            f"added {paint_added * 1e3:.0f} ms wall, {paint_cpu_added * 1e3:.0f} ms CPU (median of the {rounds} rounds' "
            f"differences); "
            f"recordings.checked warm; the first start, which reads every recording after the paint: "
            f"{cold['PAINT'] * 1e3:.0f} ms"),
        Row(f"audit pane's verdict with {total / 1e9:.1f} GB of recordings ({args.files} files)",
            f"{med('archive', 'VERIFIED') * 1e3:.0f} ms",
            f"reading them all (as before) {med('reread', 'VERIFIED') * 1e3:.0f} ms",
            med("archive", "VERIFIED") / med("reread", "VERIFIED"), "(reported)", None,
            f"{after_paint * 1e3:.0f} ms after the first paint (a stat per recording, nothing read); no recordings: "
            f"{med('empty', 'VERIFIED') * 1e3:.0f} ms (the chain alone, before the paint); the first start: "
            f"{cold['VERIFIED'] * 1e3:.0f} ms ({cold['bytes'] / 1e6:.0f} MB read, one sample)"),
        Row(f"the same start as before the cache ({total / 1e9:.1f} GB read at every start), first paint",
            f"{med('reread', 'PAINT') * 1e3:.0f} ms", f"no recordings {med('empty', 'PAINT') * 1e3:.0f} ms",
            med("reread", "PAINT") / med("empty", "PAINT"), "(reported)", None,
            f"median of {rounds}: the check the pane made before (--reread), hashing from mount"),
    ], args.json)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, str(HERE.parent))
        child(sys.argv[2], sys.argv[3], sys.argv[4] == "--reread")
    else:
        main()
