"""`opsgate run` to a pipe, as a user runs it: 100 MB from one target, default (`target | line`) and `--raw`,
each against `ssh host cmd > file` in the same run.

    .venv/bin/python benchmarks/cli_stream.py [--mb 100] [--rounds 3]

Each opsgate round is a fresh `python -m opsgate.cli run dump --yes [--raw] > file` process (config
load, audit trail, recording, the sanitiser on every line in the default mode), timed from spawn to
exit, like OpenSSH's `ssh host 'cat FILE' > file`. The remote data is base64 text made once. Checks:
`--raw` writes exactly the file's bytes (sha256); the default mode writes one `t0 | ` line per line of
the file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Row, alternate, cli, emit, log, ssh_argv, sshd_server
from pipeline_harness import write_config
from throughput import make_data

from opsgate.console.audit.recording import file_sha256


def main() -> None:
    parser = cli(__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    mb = 20 if args.quick else args.mb
    rounds = 1 if args.quick else args.rounds
    work = Path(tempfile.mkdtemp(prefix="opsgate-bench-cli-"))
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

            def opsgate(*extra: str) -> float:
                counter[0] += 1
                state = work / f"state{counter[0]}"
                argv = [sys.executable, "-m", "opsgate.cli", "--config", str(config), "--state-dir", str(state),
                        "run", "dump", "--yes", *extra]
                start = time.perf_counter()
                with open(out, "wb") as f:
                    subprocess.run(argv, stdout=f, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, check=True)
                elapsed = time.perf_counter() - start
                if extra:
                    assert file_sha256(out) == digest, "--raw did not write the target's bytes unchanged"
                else:
                    with open(out, "rb") as f:
                        got = sum(1 for line in f if line.startswith(b"t0 | "))
                    assert got == lines, f"{got} prefixed lines, expected {lines}"
                out.unlink()
                shutil.rmtree(state)
                return elapsed

            def openssh() -> float:
                start = time.perf_counter()
                with open(out, "wb") as f:
                    subprocess.run([*ssh_argv(server), f"cat {data}"], stdout=f, check=True)
                elapsed = time.perf_counter() - start
                assert out.stat().st_size == size
                out.unlink()
                return elapsed

            med = alternate(rounds, {"default": opsgate, "raw": lambda: opsgate("--raw"), "openssh": openssh},
                            log=log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    theirs = size / med["openssh"] / 1e6
    rows = []
    for mode, target in (("default", 0.8), ("raw", 0.9)):
        ours = size / med[mode] / 1e6
        rows.append(Row(f"opsgate run > file, {mode} mode, {size / 1e6:.0f} MB (recorded)", f"{ours:.0f} MB/s",
                        f"OpenSSH ssh > file {theirs:.0f} MB/s", ours / theirs, f">= {target}x OpenSSH (throughput)",
                        ours / theirs >= target, f"median of {rounds}, whole process"))
    emit(rows, args.json)


if __name__ == "__main__":
    main()
