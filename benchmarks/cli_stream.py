"""`opsgate run` to a pipe, as a user runs it: 100 MB from one target, default (`target | line`) and `--raw`,
each against `ssh host cmd > file` in the same run.

    .venv/bin/python benchmarks/cli_stream.py [--mb 100] [--rounds 3]

Each opsgate round is a fresh `python -m opsgate.cli run dump --yes [--raw] > file` process (config
load, audit trail, recording, the sanitiser on every line in the default mode), timed from spawn to
exit, like OpenSSH's `ssh host 'cat FILE' > file`. The remote data is base64 text made once. Checks:
`--raw` writes exactly the file's bytes (sha256); the default mode writes one `t0 | ` line per line of
the file.

Each mode is timed twice per round: with a fresh state dir (the first run ever: no trail to check yet) and in
a steady state, the same state dir run after run as a user's (each run's trail check then hashes the recording
of the run before, 140 MB for a 100 MB output; recordings older than that are deleted between rounds, as they
were checked already).

The children run with bytecode caching on (PYTHONDONTWRITEBYTECODE removed) after one untimed warm-up
round of each mode, so opsgate's .pyc files exist as after installing it and no round compiles source.
Besides the whole-process figure, the note gives opsgate's streaming phase (first byte to last byte, from
the recording's own timestamps: when the reader received the first and the last output chunk), the time
before the first byte and after the last one, and the process's CPU time (user + system, all threads),
each a median over the rounds.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Row, alternate, cli, emit, log, ssh_argv, sshd_server
from pipeline_harness import write_config
from throughput import make_data

from opsgate.console.audit.recording import file_sha256


def output_span(cast: Path) -> tuple[float, float]:
    """The recording's first and last output event times (seconds since it started): the streaming phase."""
    first = last = None
    with open(cast, "rb") as f:
        f.readline()  # header
        for line in f:
            event = json.loads(line)
            if event[1] == "o":
                first = event[0]
                break
        size, tail = os.fstat(f.fileno()).st_size, 4 << 20
        while last is None:  # an event holds up to a 1 MiB chunk: read back until a whole "o" line is in view
            f.seek(max(0, size - tail))
            lines = f.read().splitlines()
            for line in lines[1:]:  # the first is the header or a cut line
                event = json.loads(line)
                if event[1] == "o":
                    last = event[0]
            if size <= tail:
                break
            tail *= 2
    assert first is not None and last is not None, f"{cast}: no output events"
    return first, last


def main() -> None:
    parser = cli(__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    mb = 20 if args.quick else args.mb
    rounds = 1 if args.quick else args.rounds
    work = Path(tempfile.mkdtemp(prefix="opsgate-bench-cli-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    phases: dict[str, dict[str, list[float]]] = {}
    try:
        data = work / "data.b64"
        size, digest = make_data(data, mb)
        with open(data, "rb") as f:
            lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
        log(f"cli stream: {size / 1e6:.0f} MB, {lines} lines")
        with sshd_server() as server:
            config = write_config(work, server, {"dump": f"cat {data}"})
            out = work / "out"
            counter = [0]

            def opsgate(*extra: str, keep: bool = True, steady: bool = False) -> float:
                counter[0] += 1
                mode = ("raw" if extra else "default") + (" steady" if steady else "")
                state = work / (mode.replace(" ", "-") if steady else f"state{counter[0]}")
                argv = [sys.executable, "-m", "opsgate.cli", "--config", str(config), "--state-dir", str(state),
                        "run", "dump", "--yes", *extra]
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                with open(out, "wb") as f:
                    subprocess.run(argv, stdout=f, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, check=True,
                                   env=env)
                elapsed = time.perf_counter() - start
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if extra:
                    assert file_sha256(out) == digest, "--raw did not write the target's bytes unchanged"
                else:
                    with open(out, "rb") as f:
                        got = sum(1 for line in f if line.startswith(b"t0 | "))
                    assert got == lines, f"{got} prefixed lines, expected {lines}"
                casts = sorted((state / "recordings").glob("*/t0.cast"), key=lambda p: p.stat().st_mtime)
                first, last = output_span(casts[-1])
                if keep:
                    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                    for name, value in (("stream", last - first), ("cpu", cpu)):
                        phases.setdefault(mode, {}).setdefault(name, []).append(value)
                out.unlink()
                if not steady:
                    shutil.rmtree(state)
                for cast in casts[:-1]:  # checked by this run's trail check: the next run checks the last one
                    shutil.rmtree(cast.parent)
                return elapsed

            def openssh() -> float:
                start = time.perf_counter()
                with open(out, "wb") as f:
                    subprocess.run([*ssh_argv(server), f"cat {data}"], stdout=f, check=True)
                elapsed = time.perf_counter() - start
                assert out.stat().st_size == size
                out.unlink()
                return elapsed

            opsgate(keep=False)  # warm-up: writes the .pyc files, as installing opsgate does
            opsgate("--raw", keep=False)
            for _ in range(2):  # the first run leaves a trail; the second checks it and leaves the first checkpoint
                opsgate(keep=False, steady=True)
                opsgate("--raw", keep=False, steady=True)
            med = alternate(rounds, {"default": opsgate, "raw": lambda: opsgate("--raw"),
                                     "default steady": lambda: opsgate(steady=True),
                                     "raw steady": lambda: opsgate("--raw", steady=True), "openssh": openssh},
                            log=log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    theirs = size / med["openssh"] / 1e6
    rows = []
    for mode, target in (("default", 0.8), ("raw", 0.9), ("default steady", 0.8), ("raw steady", 0.9)):
        ours = size / med[mode] / 1e6
        stream = statistics.median(phases[mode]["stream"])
        cpu = statistics.median(phases[mode]["cpu"])
        note = (f"median of {rounds}, whole process; streaming phase {size / stream / 1e6:.0f} MB/s "
                f"({stream:.2f} s first to last byte, {ours / (size / stream / 1e6):.0%} of the wall time); "
                f"process CPU {cpu:.2f} s; OpenSSH whole transfer {med['openssh']:.2f} s")
        name = mode.replace(" steady", " mode, steady state (the trail check hashes the run before)")
        name = name if "steady" in mode else f"{mode} mode"
        rows.append(Row(f"opsgate run > file, {name}, {size / 1e6:.0f} MB (recorded)", f"{ours:.0f} MB/s",
                        f"OpenSSH ssh > file {theirs:.0f} MB/s", ours / theirs, f">= {target}x OpenSSH (throughput)",
                        ours / theirs >= target, note))
    emit(rows, args.json)


if __name__ == "__main__":
    main()
