"""The audit trail: chain, tamper detection, crash recovery, concurrency and real write failures."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opsgate.console.paths import AUDIT_FILE
from opsgate.console.audit.format import format_record
from opsgate.console.audit.trail import GENESIS, AuditFormatError, AuditTrail, record_hash
from opsgate.console.audit.verify import verify
from opsgate.console.errors import AuditWriteError, UsageError
from tests.helpers import ROOT



@pytest.fixture
def trail(tmp_path) -> AuditTrail:
    return AuditTrail(tmp_path / AUDIT_FILE)


def fill(trail: AuditTrail, n: int, run: str | None = "run-abcdef12") -> list[dict]:
    return [trail.append("action.start", operator="alice", run=run, n=i, command="echo héllo") for i in range(n)]


def lines(trail: AuditTrail) -> list[bytes]:
    return trail.path.read_bytes().splitlines(keepends=True)


def write_lines(trail: AuditTrail, new: list[bytes]) -> None:
    trail.path.write_bytes(b"".join(new))


def mount_tmpfs(where: Path, size: str = "1m") -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    where.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mount_tmpfs(mnt)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# -- the chain ------------------------------------------------------------------------------------


def test_chain_verifies_and_records_have_the_documented_shape(trail):
    records = fill(trail, 20)
    report = verify(trail.path)
    assert report.ok and report.count == 20 and report.problems == []
    assert report.head == trail.head() == records[-1]["hash"]
    assert [r["seq"] for r in trail.records()] == list(range(1, 21))
    first = next(trail.records())
    assert first["prev"] == GENESIS and first["run"] == "run-abcdef12"
    assert len(first["time"]) == 27 and first["time"].endswith("Z") and first["time"][19] == "."
    for record, line in zip(records, lines(trail)):
        assert record_hash(record) == record["hash"]
        body = {k: v for k, v in record.items() if k != "hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        # The documented line format: canonical JSON with the hash spliced in before the closing brace.
        assert line == canonical[:-1] + b',"hash":"' + record["hash"].encode() + b'"}\n'
        assert hashlib.sha256(canonical).hexdigest() == record["hash"]
    assert "héllo".encode() in lines(trail)[0]  # ensure_ascii=False


def test_events_outside_a_run_have_null_run(trail):
    record = trail.append("config.loaded", operator="alice", path="/etc/opsgate.toml")
    assert record["run"] is None and '"run":null' in trail.path.read_text()
    assert verify(trail.path).ok


def test_reserved_field_names_are_refused(trail):
    with pytest.raises(ValueError, match="seq"):
        trail.append("action.start", operator="alice", seq=5)
    assert not trail.path.exists()


def test_tampering_one_byte_names_the_record(trail):
    fill(trail, 10)
    data = bytearray(trail.path.read_bytes())
    line5 = sum(len(line) for line in lines(trail)[:4])
    at = data.index(b'"n":4', line5) + 4
    data[at] = ord("7")
    trail.path.write_bytes(bytes(data))
    report = verify(trail.path)
    assert not report.ok
    assert (report.first_bad_seq, report.first_bad_line, report.count) == (5, 5, 4)
    assert "hash mismatch" in report.problems[0] and "line 5" in report.problems[0]


def test_deleted_line_is_a_seq_gap_and_broken_link(trail):
    fill(trail, 10)
    all_lines = lines(trail)
    write_lines(trail, all_lines[:3] + all_lines[4:])
    report = verify(trail.path)
    assert not report.ok and report.first_bad_line == 4 and report.first_bad_seq == 5
    assert "seq gap" in report.problems[0] and "broken link" in report.problems[0]


def test_bad_json_line(trail):
    fill(trail, 5)
    all_lines = lines(trail)
    all_lines[2] = b'{"seq":3,"event":oops}\n'
    write_lines(trail, all_lines)
    report = verify(trail.path)
    assert not report.ok and report.first_bad_line == 3 and "bad JSON" in report.problems[0]
    with pytest.raises(AuditFormatError, match="line 3"):
        list(trail.records())


def test_rehashed_but_not_canonical_line_is_reported(trail):
    fill(trail, 3)
    all_lines = lines(trail)
    record = json.loads(all_lines[2])
    del record["hash"]
    spaced = json.dumps(record, sort_keys=True, ensure_ascii=False).encode()  # ", " and ": "
    digest = hashlib.sha256(spaced).hexdigest().encode()
    all_lines[2] = spaced[:-1] + b',"hash":"' + digest + b'"}\n'
    write_lines(trail, all_lines)
    report = verify(trail.path)
    assert not report.ok and report.first_bad_seq == 3 and "canonical" in report.problems[0]


def test_truncated_last_line_is_reported_then_recovered(trail):
    fill(trail, 5)
    good = trail.path.read_bytes()
    crashed = json.dumps({"seq": 6, "event": "action.end"}).encode()[:17]
    trail.path.write_bytes(good + crashed)

    report = verify(trail.path)
    assert not report.ok and report.first_bad_line == 6 and report.count == 5
    assert "truncated last line" in report.problems[0]
    with pytest.raises(AuditFormatError, match="truncated"):
        list(trail.records())
    assert trail.head() == json.loads(good.splitlines()[-1])["hash"]

    record = trail.append("action.end", operator="bob", run="run-abcdef12", status="ok")
    assert record["seq"] == 7
    recovered = list(trail.records())[5]
    assert recovered["event"] == "audit.recovered" and recovered["seq"] == 6
    assert recovered["offset"] == len(good) and recovered["length"] == len(crashed)
    assert base64.b64decode(recovered["cut_b64"]) == crashed  # nothing silently dropped
    assert recovered["preview"].startswith('{"seq": 6')
    after = verify(trail.path)
    assert after.ok and after.count == 7 and "audit.recovered" in after.notes[0]
    assert not list(trail.path.parent.glob("*.partial-*"))


def test_append_refuses_when_the_last_record_is_corrupt(trail):
    fill(trail, 3)
    all_lines = lines(trail)
    all_lines[-1] = all_lines[-1].replace(b'"n":2', b'"n":9')
    write_lines(trail, all_lines)
    before = trail.path.read_bytes()
    with pytest.raises(AuditWriteError, match="does not match its hash"):
        trail.append("action.start", operator="alice")
    assert trail.path.read_bytes() == before


def test_missing_directory_raises_audit_write_error(tmp_path):
    with pytest.raises(AuditWriteError, match="cannot open"):
        AuditTrail(tmp_path / "nope" / AUDIT_FILE).append("action.start", operator="alice")


def test_a_symlinked_trail_is_refused_with_a_clear_error(tmp_path):
    """A link in the trail's place would send the records (and every reader) to another file: appending and
    reading refuse it (O_NOFOLLOW), name the link, and leave the file it points to untouched."""
    elsewhere = tmp_path / "elsewhere.jsonl"
    real = AuditTrail(elsewhere)
    fill(real, 2)
    before = elsewhere.read_bytes()
    state = tmp_path / "state"
    state.mkdir()
    (state / AUDIT_FILE).symlink_to(elsewhere)
    trail = AuditTrail(state / AUDIT_FILE)
    message = rf"{AUDIT_FILE}: .*it is a symbolic link \(to {elsewhere}\); opsgate never follows one"
    with pytest.raises(AuditWriteError, match=message):
        trail.append("action.start", operator="alice")
    assert elsewhere.read_bytes() == before
    for read in (trail.head, lambda: list(trail.records()), lambda: trail.tail(5)):
        with pytest.raises(AuditFormatError, match=message):
            read()
    dangling = tmp_path / "dangling"
    dangling.mkdir()
    (dangling / AUDIT_FILE).symlink_to(tmp_path / "not-yet")  # O_CREAT would have created the link's target
    with pytest.raises(AuditWriteError, match="symbolic link"):
        AuditTrail(dangling / AUDIT_FILE).append("action.start", operator="alice")
    assert not (tmp_path / "not-yet").exists()


# -- concurrency ----------------------------------------------------------------------------------

WRITER = """
import os, sys, time
from pathlib import Path
from opsgate.console.audit.trail import AuditTrail
path, go, name, n = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
while not go.exists():
    time.sleep(0.001)
trail = AuditTrail(path)
for i in range(n):
    trail.append("action.target", operator=name, run="run-" + name, i=i)
"""


def test_eight_processes_appending_at_once_keep_one_chain(trail, tmp_path):
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(trail.path), str(go), f"w{k}", "500"], cwd=ROOT)
             for k in range(8)]
    time.sleep(0.3)  # let every writer reach the start line
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0] * 8
    report = verify(trail.path)
    assert report.ok, report.problems
    assert report.count == 4000
    records = list(trail.records())
    assert [r["seq"] for r in records] == list(range(1, 4001))
    for k in range(8):
        assert [r["i"] for r in records if r["operator"] == f"w{k}"] == list(range(500))
    # Interleaved, so the lock really was contended.
    assert len({r["operator"] for r in records[:500]}) > 1


def test_read_new_picks_up_records_from_another_process(trail, tmp_path):
    fill(trail, 2)
    first, offset = trail.read_new(0)
    assert [r["seq"] for r in first] == [1, 2]
    script = ("import sys; from pathlib import Path; from opsgate.console.audit.trail import AuditTrail; "
              "t = AuditTrail(Path(sys.argv[1])); [t.append('stepup.success', operator='bob', factor='otp') for _ in range(3)]")
    subprocess.run([sys.executable, "-c", script, str(trail.path)], cwd=ROOT, check=True)
    new, offset2 = trail.read_new(offset)
    assert [(r["seq"], r["operator"]) for r in new] == [(3, "bob"), (4, "bob"), (5, "bob")]
    assert offset2 == trail.path.stat().st_size
    # A line still being written is left for the next call.
    with open(trail.path, "ab") as f:
        f.write(b'{"seq":6,"ev')
    assert trail.read_new(offset2) == ([], offset2)


def test_tail_returns_the_newest_records_and_the_offset(trail):
    fill(trail, 30)
    records, end = trail.tail(3)
    assert [r["seq"] for r in records] == [28, 29, 30] and end == trail.path.stat().st_size
    assert [r["seq"] for r in trail.tail(100)[0]] == list(range(1, 31))
    assert AuditTrail(trail.path.with_name("missing.jsonl")).tail(5) == ([], 0)


def test_run_records_and_run_prefixes(trail):
    fill(trail, 2, run="20261128-aaaaaa01")
    fill(trail, 3, run="20261128-bbbbbb02")
    trail.append("action.start", operator="eve", note='"run":"20261128-aaaaaa01"')  # a decoy in a field
    assert [r["seq"] for r in trail.run_records("20261128-bbbbbb02")] == [3, 4, 5]
    assert len(trail.run_records("20261128-aaaaaa01")) == 2
    assert trail.find_run("20261128-b") == "20261128-bbbbbb02"
    with pytest.raises(UsageError, match="ambiguous"):
        trail.find_run("20261128-")
    with pytest.raises(UsageError, match="no run"):
        trail.find_run("nothing")
    with pytest.raises(UsageError, match="at least 6"):
        trail.find_run("2026")


def test_format_record_is_one_readable_line_and_escapes_controls():
    line = format_record({"seq": 3, "time": "2026-11-28T14:50:01.123456Z", "event": "action.target",
                          "operator": "alice", "run": "r1", "target": "web1", "exit_code": 0,
                          "note": "evil\x1b[2J\nline", "prev": GENESIS, "hash": GENESIS})
    assert line.startswith("#3 2026-11-28T14:50:01Z alice action.target run=r1 target=web1 exit_code=0")
    assert "\x1b" not in line and "\n" not in line and "\\u001b" in line
    assert GENESIS not in line


# -- recordings named in the trail ----------------------------------------------------------------


def test_verify_checks_recordings_named_by_action_target(trail, tmp_path):
    cast = tmp_path / "recordings" / "run1" / "web1.cast"
    cast.parent.mkdir(parents=True)
    cast.write_bytes(b'{"version": 2}\n[0.1, "o", "hi"]\n')
    trail.append("action.target", operator="alice", run="run1", target="web1", exit_code=0,
                 recording="recordings/run1/web1.cast", recording_sha256=hashlib.sha256(cast.read_bytes()).hexdigest())
    assert verify(trail.path).ok and verify(trail.path).recordings_checked == 1

    cast.write_bytes(cast.read_bytes().replace(b"hi", b"ho"))
    report = verify(trail.path)
    assert not report.ok and "changed" in report.problems[0] and "web1.cast" in report.problems[0]
    assert verify(trail.path, check_recordings=False).ok

    cast.unlink()
    report = verify(trail.path, state_dir=tmp_path)
    assert not report.ok and "missing" in report.problems[0]


def test_recording_path_outside_the_state_dir_is_a_problem(trail):
    trail.append("action.target", operator="alice", run="r", recording="../../etc/passwd", recording_sha256="0" * 64)
    report = verify(trail.path)
    assert not report.ok and "outside the state dir" in report.problems[0]


# -- real write failures (the kernel decides) -----------------------------------------------------


def test_disk_full_raises_and_leaves_the_trail_valid(small_tmpfs):
    trail = AuditTrail(small_tmpfs / AUDIT_FILE)
    fill(trail, 3)
    before = trail.path.read_bytes()
    fd = os.open(small_tmpfs / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    # Larger than the slack in the trail's last page, so the kernel must refuse part of it.
    with pytest.raises(AuditWriteError, match="No space left"):
        trail.append("action.start", operator="alice", output="x" * 20000)
    assert trail.path.read_bytes() == before
    assert verify(trail.path).ok
    (small_tmpfs / "filler").unlink()
    assert trail.append("action.end", operator="alice")["seq"] == 4
    assert verify(trail.path).count == 4


def test_read_only_filesystem_raises(small_tmpfs):
    trail = AuditTrail(small_tmpfs / AUDIT_FILE)
    fill(trail, 2)
    before = trail.path.read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    with pytest.raises(AuditWriteError, match="Read-only file system"):
        trail.append("action.start", operator="alice")
    assert trail.path.read_bytes() == before and verify(trail.path).ok


# -- parallel verify gives the same report ---------------------------------------------------------


def test_parallel_verify_reports_exactly_what_sequential_does(trail, monkeypatch):
    import opsgate.console.audit.verify as audit_verify

    monkeypatch.setattr(audit_verify, "_PARALLEL_BLOCK", 700)  # a chunk boundary every few records
    fill(trail, 40)
    good = lines(trail)
    cases = {
        "intact": good,
        "tampered": good[:17] + [good[17].replace(b'"n":17', b'"n":71')] + good[18:],
        "deleted at a boundary": good[:3] + good[4:],
        "bad json": good[:25] + [b"not json\n"] + good[26:],
    }
    for name, content in cases.items():
        write_lines(trail, content)
        sequential = verify(trail.path, workers=1)
        parallel = verify(trail.path, workers=2)
        assert parallel == sequential, name
    trail.path.write_bytes(b"".join(good) + b'{"seq":41')
    assert verify(trail.path, workers=2) == verify(trail.path, workers=1)
    assert "truncated" in verify(trail.path, workers=2).problems[0]


# -- any JSON value round-trips and verifies --------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.dictionaries(st.text(max_size=10).filter(lambda k: k not in ("self", "seq", "time", "event", "operator",
                                                                              "run", "prev", "hash")),
                              json_values, max_size=5),
       operator=st.text(min_size=1, max_size=10))
def test_any_json_fields_round_trip_and_verify(tmp_path_factory, fields, operator):
    trail = AuditTrail(tmp_path_factory.mktemp("h") / AUDIT_FILE)
    written = trail.append("action.start", operator=operator, run="r\u2028\n", **fields)
    trail.append("action.end", operator=operator)
    assert next(trail.records()) == written
    report = verify(trail.path)
    assert report.ok, report.problems
    assert report.count == 2


def test_fields_that_are_not_json_text_fail_before_writing(trail):
    fill(trail, 1)
    before = trail.path.read_bytes()
    for bad in ({"x": float("nan")}, {"x": "\ud800"}, {"x": object()}):
        with pytest.raises(ValueError, match="JSON text"):
            trail.append("action.start", operator="alice", **bad)
    assert trail.path.read_bytes() == before
