"""Back-to-back runs through the Pipeline leak no threads, descriptors or sshd sessions.

500 target-runs in all: 25 runs on 20 targets (a fresh connection per target per run). 500 runs of
20 targets would be 10,000 SSH sessions, about 15 minutes here, where each session costs the 2 cores
~0.1 s of sshd and login-shell work; 25 x 20 keeps every code path and the full width of a run in
about a minute. (Eight processes appending to one trail: tests/audit/test_trail.py::
test_eight_processes_appending_at_once_keep_one_chain.)
"""

from __future__ import annotations

import threading
import time

from opsgate.console.audit.verify import verify

from opsgate.console.paths import AUDIT_FILE
from opsgate.console.run import RunRequest
from tests.helpers.reliability import Recorder, children, config_text, load, open_fds, pipeline
from tests.helpers.waiting import wait_until

RUNS = 25
TARGETS = 20


def test_500_target_runs_back_to_back_leak_nothing(tmp_path, start_sshd):
    server = start_sshd()  # its own sshd, so its session count is ours alone
    targets = [(f"t{i:02d}", server.addresses[i % len(server.addresses)], server.port) for i in range(TARGETS)]
    text = config_text(server, targets, {"noop": ("echo ok", "30s")}, max_parallel=8)
    config = load(text, tmp_path)
    state = tmp_path / "state"
    pipe = pipeline(config, state)
    # one warm-up run: lazy imports, the trail file, logging handlers
    assert pipe.execute(pipe.plan(RunRequest("noop")), Recorder()).exit_code == 0
    wait_until(lambda: not children(server.process.pid), 10, "warm-up sessions to end")
    threads, fds = threading.active_count(), open_fds()
    started = time.monotonic()
    for n in range(RUNS):
        front = Recorder()
        report = pipe.execute(pipe.plan(RunRequest("noop")), front)
        assert report.exit_code == 0, [r for r in report.results if r.outcome != "ok"]
        assert len(report.results) == TARGETS
        wrong = {name: front.text(name) for name, _, _ in targets if front.text(name).strip() != b"ok"}
        assert not wrong, wrong
    elapsed = time.monotonic() - started
    # sshd forks one process per connection; all of them must be gone once the runs closed their connections
    wait_until(lambda: not children(server.process.pid), 15, "sshd sessions to end")
    wait_until(lambda: threading.active_count() <= threads, 10,
               f"threads to return to {threads} (now {threading.active_count()}: "
               f"{[t.name for t in threading.enumerate()]})")
    wait_until(lambda: open_fds() <= fds, 10, f"descriptors to return to {fds} (now {open_fds()})")
    report = verify(state / AUDIT_FILE, state_dir=state)
    assert report.ok, report.problems
    # config.loaded + (start, 20 targets, end) per run, warm-up included
    assert report.count == 1 + (RUNS + 1) * (TARGETS + 2)
    assert report.recordings_checked == (RUNS + 1) * TARGETS
    print(f"{RUNS * TARGETS} target-runs in {elapsed:.1f}s")
