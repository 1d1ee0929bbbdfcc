"""verify_from: only the records after a verified point, with the same rules as verify; format_record_short."""

from __future__ import annotations

import json

from opsgate.console.audit.format import format_record_short
from opsgate.console.audit.trail import AuditTrail
from opsgate.console.audit.verify import verify, verify_from


def trail(tmp_path, n: int) -> AuditTrail:
    t = AuditTrail(tmp_path / "audit.jsonl")
    for i in range(n):
        t.append("note", operator="alice", run=None, text=f"record {i}")
    return t


def test_verify_from_checks_only_new_records_and_goes_on(tmp_path):
    t = trail(tmp_path, 3)
    full = verify(t.path)
    assert full.ok and full.last_seq == 3 and full.end_offset == t.path.stat().st_size
    t.append("note", operator="alice", text="four")
    t.append("note", operator="alice", text="five")
    step = verify_from(t.path, full.end_offset, full.last_seq, full.head)
    assert step.ok and step.count == 2 and step.last_seq == 5
    assert step.head == verify(t.path).head and step.end_offset == t.path.stat().st_size
    again = verify_from(t.path, step.end_offset, step.last_seq, step.head)
    assert again.ok and again.count == 0 and again.end_offset == step.end_offset


def test_verify_from_empty_trail_and_first_records(tmp_path):
    path = tmp_path / "audit.jsonl"
    assert verify_from(path, 0, 0, None).ok
    t = AuditTrail(path)
    t.append("note", operator="alice", text="first")
    report = verify_from(path, 0, 0, None)
    assert report.ok and report.count == 1 and report.last_seq == 1


def test_verify_from_finds_a_changed_new_record(tmp_path):
    t = trail(tmp_path, 2)
    full = verify(t.path)
    t.append("note", operator="alice", text="three")
    t.path.write_bytes(t.path.read_bytes().replace(b'"text":"three"', b'"text":"thr3e"'))
    report = verify_from(t.path, full.end_offset, full.last_seq, full.head)
    assert not report.ok and "hash mismatch" in report.problems[0] and report.first_bad_seq == 3


def test_verify_from_finds_a_broken_link(tmp_path):
    t = trail(tmp_path, 2)
    full = verify(t.path)
    t.append("note", operator="alice", text="three")
    # Verified against another head: the new record does not link to it.
    report = verify_from(t.path, full.end_offset, full.last_seq, "f" * 64)
    assert not report.ok and "broken link" in report.problems[0]
    gap = verify_from(t.path, full.end_offset, full.last_seq - 1, full.head)
    assert not gap.ok and "seq gap" in gap.problems[0]


def test_verify_from_non_canonical_line(tmp_path):
    t = trail(tmp_path, 1)
    full = verify(t.path)
    t.append("note", operator="alice", text="two")
    lines = t.path.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[-1])
    lines[-1] = (json.dumps(record) + "\n").encode()  # spaces: not opsgate's canonical form
    t.path.write_bytes(b"".join(lines))
    report = verify_from(t.path, full.end_offset, full.last_seq, full.head)
    assert not report.ok and report.count == 0


def test_verify_from_leaves_a_line_being_written(tmp_path):
    t = trail(tmp_path, 1)
    full = verify(t.path)
    with open(t.path, "ab") as f:
        f.write(b'{"event":"note","operator"')  # a writer half way through
    report = verify_from(t.path, full.end_offset, full.last_seq, full.head)
    assert report.ok and report.count == 0 and report.end_offset == full.end_offset


def test_verify_from_shrunk_trail(tmp_path):
    t = trail(tmp_path, 2)
    full = verify(t.path)
    t.path.write_bytes(t.path.read_bytes()[:10])
    report = verify_from(t.path, full.end_offset, full.last_seq, full.head)
    assert not report.ok and "shrank" in report.problems[0]


def test_verify_from_checks_new_recordings(tmp_path):
    t = trail(tmp_path, 1)
    full = verify(t.path)
    (tmp_path / "rec.cast").write_text("x")
    t.append("action.target", operator="alice", run="r1", target="web-1", outcome="ok",
             recording="rec.cast", recording_sha256="0" * 64)
    report = verify_from(t.path, full.end_offset, full.last_seq, full.head, state_dir=tmp_path)
    assert not report.ok and report.recordings_checked == 1 and "changed since the run" in report.problems[0]


def test_format_record_short():
    base = {"seq": 9, "time": "2026-11-28T15:21:55.123456Z", "operator": "demo", "run": "r", "prev": "0"}
    assert format_record_short({**base, "event": "action.target", "action": "tail-log", "target": "web-2",
                                "outcome": "ok", "exit_code": 0}) == "15:21:55 demo action.target tail-log web-2 ok"
    failed = format_record_short({**base, "event": "action.target", "action": "x", "target": "t", "outcome": "failed",
                                  "exit_code": 3})
    assert failed.endswith("x t exit 3")
    step = format_record_short({**base, "event": "runbook.step", "runbook": "failover", "step": 2, "status": "ok"})
    assert step == "15:21:55 demo runbook.step failover step 2 ok"
    end = format_record_short({**base, "event": "action.end", "action": "a", "exit_code": 1, "outcomes": {}})
    assert end.endswith("action.end a exit 1")
    evil = format_record_short({**base, "event": "note\x1b[31m", "operator": "x"})
    assert "\x1b" not in evil


def test_format_record_short_fits_a_width_by_shortening_the_action():
    record = {"time": "2026-11-28T15:21:55.1Z", "operator": "demo", "event": "action.target",
              "action": "database-failover#4", "target": "db-replica", "outcome": "ok"}
    line = format_record_short(record, 46)
    assert len(line) <= 46 and line.endswith(" db-replica ok") and "…" in line
    assert format_record_short(record, 200) == format_record_short(record)
