"""Edited records and hostile recordings in the core: a seq that is not an integer is a verify error (its
text escaped in the problem), every field is escaped when formatted, and a recording is filtered when
played and escaped when rendered as text."""

from __future__ import annotations

import io

import pytest

from opsgate.console.audit.format import format_record, format_record_short
from opsgate.console.audit.replay import Cast, Event, play, text_lines
from opsgate.console.audit.trail import AuditTrail
from opsgate.console.audit.verify import verify, verify_from
from opsgate.console.paths import AUDIT_FILE

from tests.helpers.hostile import CLIPBOARD, OSC52, assert_inert, rechain, write_cast

FAKE_OK = "\r\x1b[2KOK: 12 records, head 0123\x1b[8m"


@pytest.fixture
def trail(tmp_path) -> AuditTrail:
    trail = AuditTrail(tmp_path / AUDIT_FILE)
    for i in range(5):
        trail.append("note", operator="alice", run=None, text=f"r{i}")
    return trail


@pytest.mark.parametrize("seq", [FAKE_OK, 3.0, True, None, [3], "3"])
def test_a_seq_that_is_not_an_integer_is_a_verify_error(trail, seq):
    records = list(trail.records())
    records[2]["seq"] = seq
    rechain(trail.path, records)  # the chain itself is rebuilt: only the seq is wrong
    report = verify(trail.path)
    assert not report.ok and report.count == 2
    assert "seq is not an integer" in report.problems[0]
    assert_inert(report.problems[0])
    follow = verify_from(trail.path, 0, 0, None)
    assert not follow.ok and "seq is not an integer" in follow.problems[0]


def test_a_hash_mismatch_names_an_edited_seq_escaped(trail):
    data = trail.path.read_text().replace('"seq":3,', '"seq":"\\r\\u001b[2KOK",')
    trail.path.write_text(data)
    report = verify(trail.path)
    assert not report.ok
    assert_inert(report.problems[0])
    assert 'seq "\\r\\u001b[2KOK"' in report.problems[0]  # as JSON: quoted, escaped


def test_every_field_of_a_record_is_escaped_when_formatted():
    record = {"seq": FAKE_OK, "time": "\x1b]0;t\x07" + "2026-01-01T00:00:00.000000Z", "event": "note\u009b2J",
              "operator": OSC52.decode(), "run": "r\x7f", "target": "\u202eweb-1", "exit_code": "\x1b[1A0",
              "outcome": "failed", "error": "x\ny", "prev": "0" * 64, "hash": "0" * 64}
    for line in (format_record(record), format_record_short(record), format_record_short(record, 40)):
        assert_inert(line)
        assert "\n" not in line
    assert format_record(record).startswith("#^M^[[2KOK: 12 records")
    assert CLIPBOARD.decode() not in format_record(record)


def test_play_filters_what_reaches_the_terminal(tmp_path):
    events = [Event(0.0, "o", "a" + OSC52.decode() + "\x1b]0;t\x07b\u009b2J\x1b[31mc\x1b[0m\x1b[6n\x1b[?2004h"),
              Event(0.1, "o", "\x1b]8;;http://e\x1b"), Event(0.2, "o", "\\d\x1b[3")]
    out = io.BytesIO()
    play(iter(events), out, speed=1000, sleep=lambda s: None)
    shown = out.getvalue().decode()
    assert shown == "ab\\x9b2J\x1b[31mc\x1b[0md^[[3"


def test_text_lines_escape_everything_and_prefix_every_line(tmp_path):
    path = tmp_path / "r.cast"
    write_cast(path, [(0.0, "m", "start\x1b[2J"), (0.1, "o", "one\r\n\x1b[8mhidden\x1b[0m\r"),
                      (0.2, "o", "\ntwo\rthree\x9b"), (0.3, "o", "\r\n=== fake (exit 0) ===\r\nlast")])
    lines = "".join(text_lines(Cast(path).events(), "web-1")).splitlines()
    assert lines == ["web-1 # start^[[2J", "web-1 | one", "web-1 | ^[[8mhidden^[[0m", "web-1 | two^Mthree\\x9b",
                     "web-1 | === fake (exit 0) ===", "web-1 | last"]
    for line in lines:
        assert_inert(line)
