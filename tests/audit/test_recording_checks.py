"""The console's cache of recordings it hashed (console/audit/checked.py): an unchanged file is not read again,
anything changed is; the verdict still comes from the trail's sha256; `opsgate audit verify` never uses it."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time

import pytest

from opsgate.console.audit.checked import Cancelled, RecordingChecks
from opsgate.console.audit.trail import AuditTrail
from opsgate.console.audit.verify import check_recordings_of, verify, verify_from
from opsgate.console.paths import RECORDING_CHECKS

LATER = 10 * 1_000_000_000  # a clock 10 s ahead: files written by the test count as settled


def later() -> int:
    return time.time_ns() + LATER


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def recording(tmp_path, name: str = "a.cast", data: bytes = b"x" * 3_000_000):
    path = tmp_path / "recordings" / "run" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def trail_naming(tmp_path, *files) -> AuditTrail:
    t = AuditTrail(tmp_path / "audit.jsonl")
    for path in files:
        t.append("action.target", operator="alice", run="r1", target=path.stem, outcome="ok",
                 recording=str(path.relative_to(tmp_path)), recording_sha256=sha(path.read_bytes()))
    return t


def test_an_unchanged_file_is_not_read_again_even_by_a_new_console(tmp_path):
    path = recording(tmp_path)
    checks = RecordingChecks(tmp_path, clock=later)
    assert checks.digest(path) == sha(path.read_bytes()) and checks.hashed == 1
    assert checks.digest(path) == sha(path.read_bytes()) and checks.hashed == 1
    checks.save()
    cache = tmp_path / RECORDING_CHECKS
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    fresh = RecordingChecks(tmp_path, clock=later)
    assert fresh.known(path) == sha(path.read_bytes())
    assert fresh.digest(path) == sha(path.read_bytes()) and fresh.hashed == 0


@pytest.mark.parametrize("change", ["append", "same size, mtime put back", "replaced", "deleted"])
def test_anything_changed_is_read_again(tmp_path, change):
    path = recording(tmp_path)
    checks = RecordingChecks(tmp_path, clock=later)
    checks.digest(path)
    st = path.stat()
    if change == "append":
        with open(path, "ab") as f:
            f.write(b"more")
    elif change == "same size, mtime put back":  # its ctime still moves: that is what gives it away
        with open(path, "r+b") as f:
            f.write(b"y")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    elif change == "replaced":
        other = path.with_name("tmp")
        other.write_bytes(b"y" + path.read_bytes()[1:])
        os.replace(other, path)
    else:
        path.unlink()
        with pytest.raises(FileNotFoundError):
            checks.digest(path)
        return
    assert checks.known(path) is None
    assert checks.digest(path) == sha(path.read_bytes()) and checks.hashed == 2


def test_a_file_written_just_now_is_not_stored_until_it_settled(tmp_path):
    path = recording(tmp_path)
    checks = RecordingChecks(tmp_path)  # the real clock: the file's mtime is this second
    checks.digest(path)
    checks.digest(path)
    assert checks.hashed == 2 and checks.known(path) is None
    checks.clock = later
    checks.digest(path)
    assert checks.known(path) == sha(path.read_bytes())


def test_a_file_that_changes_while_it_is_hashed_is_not_stored(tmp_path):
    path = recording(tmp_path)
    checks = RecordingChecks(tmp_path, clock=later)

    calls = []

    def writer() -> bool:  # called between blocks: a run still writing, or an edit, lands mid-hash
        calls.append(1)
        if len(calls) == 2:
            with open(path, "ab") as f:
                f.write(b"z")
        return False

    checks.rehash(path, cancelled=writer)
    assert checks.known(path) is None


def test_cancelled_stops_between_blocks(tmp_path):
    path = recording(tmp_path)
    checks = RecordingChecks(tmp_path, clock=later)
    with pytest.raises(Cancelled):
        checks.digest(path, cancelled=lambda: True)
    assert checks.known(path) is None


@pytest.mark.parametrize("content", [b"not json", b'{"version": 2, "files": {}}', b'{"version": 1, "files": []}',
                                     b'{"version": 1, "files": {"x": [1, 2, 3, 4, 5, "00"]}}', b"[]"])
def test_a_cache_file_that_does_not_parse_is_an_empty_cache(tmp_path, content):
    path = recording(tmp_path)
    (tmp_path / RECORDING_CHECKS).write_bytes(content)
    checks = RecordingChecks(tmp_path, clock=later)
    assert len(checks) == 0 and checks.digest(path) == sha(path.read_bytes())


def test_a_symlinked_cache_file_is_not_read_and_saving_replaces_the_link(tmp_path):
    path = recording(tmp_path)
    elsewhere = tmp_path / "elsewhere.json"
    good = RecordingChecks(tmp_path, clock=later)
    good.digest(path)
    good.save()
    (tmp_path / RECORDING_CHECKS).rename(elsewhere)
    (tmp_path / RECORDING_CHECKS).symlink_to(elsewhere)
    checks = RecordingChecks(tmp_path, clock=later)
    assert len(checks) == 0
    checks.digest(path)
    checks.save()
    assert not (tmp_path / RECORDING_CHECKS).is_symlink() and len(RecordingChecks(tmp_path)) == 1


def test_the_verdict_comes_from_the_trail_and_the_cli_never_trusts_the_cache(tmp_path):
    good, bad = recording(tmp_path, "good.cast"), recording(tmp_path, "bad.cast")
    t = trail_naming(tmp_path, good, bad)
    checks = RecordingChecks(tmp_path, clock=later)
    report = verify(t.path, recording_digest=checks.digest)
    assert report.ok and report.recordings_checked == 2 and checks.hashed == 2
    # The edit is seen by the pane's check (the file's stat changed) and by verify.
    with open(bad, "r+b") as f:
        f.write(b"EDITED")
    report = verify(t.path, recording_digest=checks.digest)
    assert not report.ok and "bad.cast" in report.problems[0] and "changed since the run" in report.problems[0]
    assert checks.hashed == 3  # only the changed file was read again
    # A cache that lies (someone who can write the state dir wrote it): the pane would believe it, verify does not.
    name, (key, _) = next((n, e) for n, e in checks._entries.items() if n.endswith("bad.cast"))
    checks._entries[name] = ((*key[:2], bad.stat().st_ctime_ns, *key[3:]), sha(b"x" * 3_000_000))
    assert checks.known(bad) == sha(b"x" * 3_000_000)
    assert verify(t.path, recording_digest=checks.digest).ok
    cli = verify(t.path)
    assert not cli.ok and "bad.cast" in cli.problems[0]


def test_check_recordings_of_after_a_chain_only_verify_and_verify_from(tmp_path):
    first = recording(tmp_path, "first.cast")
    t = trail_naming(tmp_path, first)
    report = verify(t.path, check_recordings=False)
    assert report.ok and report.recordings_checked == 0 and [r[2] for r in report.recordings] == [
        "recordings/run/first.cast"]
    first.write_bytes(b"changed")
    check_recordings_of(report, tmp_path)
    assert not report.ok and report.problems[0].startswith("line 1 (seq 1): recording recordings/run/first.cast")
    second = recording(tmp_path, "second.cast", b"")
    t.append("action.target", operator="alice", run="r2", target="second", outcome="ok",
             recording="recordings/run/second.cast", recording_sha256=sha(b"other"))
    step = verify_from(t.path, report.end_offset, report.last_seq, report.head, state_dir=tmp_path,
                       recording_digest=RecordingChecks(tmp_path).digest)
    assert not step.ok and step.problems[0].startswith("seq 2: recording recordings/run/second.cast")
    assert second.exists()


def test_a_pruning_save_keeps_only_the_files_looked_at(tmp_path):
    a, b = recording(tmp_path, "a.cast", b"a"), recording(tmp_path, "b.cast", b"b")
    checks = RecordingChecks(tmp_path, clock=later)
    checks.digest(a)
    checks.digest(b)
    checks.save(prune=True)
    checks.digest(a)
    checks.save(prune=True)
    saved = json.loads((tmp_path / RECORDING_CHECKS).read_text())
    assert [name.rsplit("/", 1)[1] for name in saved["files"]] == ["a.cast"]


def old_target(state_dir, rel):
    """recording_target as it was (pathlib, resolved in full every time)."""
    from pathlib import Path

    root = Path(state_dir).resolve()
    target = (root / rel).resolve()
    return None if Path(rel).is_absolute() or not target.is_relative_to(root) else target


def test_recording_target_resolves_as_before(tmp_path):
    from opsgate.console.audit.verify import recording_target

    state = tmp_path / "state"
    (state / "recordings/run").mkdir(parents=True)
    (state / "recordings/run/a.cast").write_text("a")
    (tmp_path / "outside.cast").write_text("o")
    (state / "recordings/run/out.cast").symlink_to(tmp_path / "outside.cast")
    (state / "recordings/run/in.cast").symlink_to(state / "recordings/run/a.cast")
    (state / "recordings/link").symlink_to(tmp_path)
    (state / "recordings/inner").symlink_to("run")
    (tmp_path / "alias").symlink_to(state)
    names = ["recordings/run/a.cast", "recordings/run/out.cast", "recordings/run/in.cast", "recordings/link/outside.cast",
             "recordings/inner/a.cast", "recordings/run/missing.cast", "recordings/nodir/x.cast",
             "recordings/run/a.cast/x", "recordings/../recordings/run/a.cast", "../outside.cast", "./recordings/run/a.cast",
             "recordings//run/a.cast", "recordings/run/", "", ".", "/etc/passwd", str(state / "recordings/run/a.cast")]
    for root in (state, tmp_path / "alias"):
        for rel in names:
            assert recording_target(root, rel) == old_target(root, rel), (root, rel)


def test_known_plain_paths_give_the_verdicts_of_a_full_check(tmp_path, tmp_path_factory):
    """The pane's fast path (a stat of STATE/rel, judged on the cached sha256) against verify's own check, for
    recordings unchanged, edited, missing, symlinked inside and out, and named by an odd path."""
    files = [recording(tmp_path, f"{name}.cast", name.encode() * 1000) for name in ("a", "b", "c", "d")]
    outside = tmp_path_factory.mktemp("elsewhere") / "outside.cast"
    outside.write_bytes(b"o")
    (tmp_path / "recordings/run/in.cast").symlink_to(files[0])
    (tmp_path / "recordings/run/out.cast").symlink_to(outside)
    t = trail_naming(tmp_path, *files)
    for rel, data in [("recordings/run/in.cast", b"a" * 1000), ("recordings/run/out.cast", b"o"),
                      ("recordings/run/../run/b.cast", b"b" * 1000), ("recordings/run/gone.cast", b"")]:
        t.append("action.target", operator="alice", run="r2", target="x", outcome="ok", recording=rel,
                 recording_sha256=sha(data))
    checks = RecordingChecks(tmp_path, clock=later)

    def pane() -> list[str]:
        report = verify(t.path, check_recordings=False)
        check_recordings_of(report, tmp_path, digest=checks.digest, known=checks.known)
        return report.problems

    assert pane() == verify(t.path).problems == [
        "line 6 (seq 6): recording recordings/run/out.cast: path is outside the state dir",
        "line 8 (seq 8): recording recordings/run/gone.cast: missing"]
    read = checks.hashed
    assert pane() == verify(t.path).problems and checks.hashed == read  # all known now: nothing read
    with open(files[2], "r+b") as f:
        f.write(b"EDIT")
    files[3].unlink()
    assert pane() == verify(t.path).problems and len(verify(t.path).problems) == 4
