"""Output throughput: one target printing ~200 MB, opsgate's Pipeline WITH recording vs `ssh host cmd > file`.

    .venv/bin/python benchmarks/throughput.py [--mb 200] [--rounds 3]

The data is base64 text of random bytes, generated once into a file that the remote command
`cat`s, so every round sends the same bytes and both sides can be checksummed (the random
generation and base64 would otherwise cost the shared 2 cores as much as the transfer itself).
opsgate's side is the real run pipeline (audit trail, asciicast recording, low-risk action, a
front end that shows nothing); afterwards the recording's "o" events are decoded, the recording's
"\\r\\n" turned back into "\\n", and the sha256 compared with the file's; the audit record's bytes_out
must equal the file's size. OpenSSH's side writes to a file in the same temp dir and is checked too.
The note gives the CPU opsgate's process used per MB (every thread: transport, reader, recorder), a
figure that, unlike the wall-clock ratio, hardly moves when other work shares the cores.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import Row, alternate, cli, emit, log, ssh_argv, sshd_server
from pipeline_harness import NullFrontend, load, make_pipeline, write_config

from opsgate.console.run import RunRequest


def make_data(path: Path, mb: int) -> tuple[int, str]:
    raw = mb * 1_000_000 * 3 // 4  # base64 (with newlines every 76 chars) is ~4/3 + 1/76 of it
    subprocess.run(f"head -c {raw} /dev/urandom | base64 > {path}", shell=True, check=True)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return path.stat().st_size, h.hexdigest()


def cast_output_sha256(path: Path) -> tuple[int, str]:
    """Bytes and sha256 of the stdout a recording holds, with its CRLF turned back into LF."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        f.readline()  # header
        for line in f:
            t, kind, text = json.loads(line)
            if kind == "o":
                data = text.replace("\r\n", "\n").encode("utf-8")
                h.update(data)
                n += len(data)
    return n, h.hexdigest()


def main() -> None:
    parser = cli(__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    mb = 20 if args.quick else args.mb
    rounds = 1 if args.quick else args.rounds
    work = Path(tempfile.mkdtemp(prefix="opsgate-bench-tp-"))
    try:
        data = work / "data.b64"
        size, digest = make_data(data, mb)
        log(f"throughput: {size / 1e6:.0f} MB of base64 text (sha256 {digest[:12]}...)")
        with sshd_server() as server:
            config = load(write_config(work, server, {"dump": f"cat {data}"}))
            counter = [0]
            cpu: list[float] = []  # opsgate's process CPU seconds per round

            def opsgate() -> float:
                counter[0] += 1
                state = work / f"state{counter[0]}"
                pipeline = make_pipeline(config, state)
                plan = pipeline.plan(RunRequest("dump"))
                start, cpu_start = time.perf_counter(), time.process_time()
                report = pipeline.execute(plan, NullFrontend())
                elapsed = time.perf_counter() - start
                cpu.append(time.process_time() - cpu_start)
                result = report.results[0]
                assert report.exit_code == 0 and result.bytes_out == size, (report.exit_code, result)
                target = [r for r in pipeline.audit.records() if r["event"] == "action.target"][0]
                assert target["bytes_out"] == size, target
                got = cast_output_sha256(report.recordings["t0"])
                assert got == (size, digest), f"recording holds {got[0]} bytes, sha256 {got[1][:12]}..."
                shutil.rmtree(state)
                return elapsed

            out = work / "ssh.out"

            def openssh() -> float:
                start = time.perf_counter()
                with open(out, "wb") as f:
                    subprocess.run([*ssh_argv(server), f"cat {data}"], stdout=f, check=True)
                elapsed = time.perf_counter() - start
                assert out.stat().st_size == size
                out.unlink()
                return elapsed

            med = alternate(rounds, {"opsgate": opsgate, "openssh": openssh}, log=log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours, theirs = size / med["opsgate"] / 1e6, size / med["openssh"] / 1e6
    ratio = ours / theirs
    emit([Row(f"throughput, 1 target, {size / 1e6:.0f} MB, recorded", f"{ours:.0f} MB/s",
              f"OpenSSH ssh > file {theirs:.0f} MB/s", ratio, ">= 0.8x OpenSSH (throughput)", ratio >= 0.8,
              f"median of {rounds}; recording sha256 checked; opsgate process CPU "
              f"{statistics.median(cpu) * 1e3 / (size / 1e6):.1f} ms/MB")], args.json)


if __name__ == "__main__":
    main()
