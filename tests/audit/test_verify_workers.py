"""verify's worker processes: whatever they do (answer, die after one answer, never start), the report is the
one a single process gives, for an intact trail and for a forged one."""

from __future__ import annotations

import pytest

import opsgate.console.audit.verify as audit_verify
from opsgate.console.audit.trail import AuditTrail
from opsgate.console.audit.verify import verify
from opsgate.console.paths import AUDIT_FILE

# A worker that answers its first task and then exits: its other tasks are left to the caller.
_ONE_ANSWER = audit_verify._WORKER.replace(
    "from opsgate.console.audit.verify import _serve; _serve()",
    "from opsgate.console.audit.verify import _receive, _send, _verify_range; "
    "_send(sys.stdout.buffer, _verify_range(*_receive(sys.stdin.buffer)))")


def trail_of(tmp_path, n: int) -> AuditTrail:
    trail = AuditTrail(tmp_path / AUDIT_FILE)
    for i in range(n):
        trail.append("action.target", operator="alice", run="r", target=f"t{i % 7}", n=i, text="é" * (i % 3))
    return trail


@pytest.mark.parametrize("workers", [2, 3])
def test_a_worker_that_dies_after_one_answer_leaves_the_rest_to_the_caller(tmp_path, monkeypatch, workers):
    assert _ONE_ANSWER != audit_verify._WORKER
    monkeypatch.setattr(audit_verify, "_PARALLEL_BLOCK", 2000)
    trail = trail_of(tmp_path, 120)
    alone = verify(trail.path, workers=1)
    monkeypatch.setattr(audit_verify, "_WORKER", _ONE_ANSWER)
    assert alone.ok and verify(trail.path, workers=workers) == alone
    lines = trail.path.read_bytes().splitlines(keepends=True)
    lines[90] = lines[90].replace(b'"n":', b'"n": ', 1)
    trail.path.write_bytes(b"".join(lines))
    report = verify(trail.path, workers=workers)
    assert not report.ok and report.first_bad_seq == 91
    monkeypatch.setattr(audit_verify, "_WORKER", audit_verify._WORKER)
    assert report == verify(trail.path, workers=1)


@pytest.mark.parametrize("workers", [2, 4])
def test_many_small_ranges_come_back_in_file_order(tmp_path, monkeypatch, workers):
    monkeypatch.setattr(audit_verify, "_PARALLEL_BLOCK", 700)  # a record or two per range
    trail = trail_of(tmp_path, 150)
    report = verify(trail.path, workers=workers)
    assert report.ok and report.count == 150 and report == verify(trail.path, workers=1)
    lines = trail.path.read_bytes().splitlines(keepends=True)
    for cut in (lines[:70] + lines[71:], lines[:149], lines[1:]):
        trail.path.write_bytes(b"".join(cut))
        assert verify(trail.path, workers=workers) == verify(trail.path, workers=1)
