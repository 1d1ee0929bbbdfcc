"""verify's batch path (``_verify_batch``: a sub-block of lines checked at once) accepts exactly what the
per-line reference (``_verify_lines``) accepts, and reports the same thing for every trail: intact ones,
edited ones (re-hashed so the hash check passes and the later checks are reached), and lines that are
only JSON when joined to their neighbours."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import opsgate.console.audit.verify as audit_verify
from opsgate.console.audit.trail import GENESIS, AuditTrail
from opsgate.console.audit.verify import _verify_batch, _verify_chunk, verify
from opsgate.console.paths import AUDIT_FILE
from tests.helpers.verify_fixtures import chain, reference, rehashed


def line(body: str) -> bytes:
    """A line whose hash matches ``body`` (the hashed text, ending in ``}``), whatever ``body`` is."""
    return rehashed(body.encode("utf-8"))


FIELDS = [
    {"action": "restart", "target": "web1", "exit_code": 0, "bytes_out": 12},
    {"recording": "recordings/r1/web1.cast", "recording_sha256": "ab" * 32, "duration": 0.125},
    {"command": 'grep "x" /var/log/a\\b', "params": {"b": [1, 2.5, None], "a": {"z": True}}, "n": -7},
    {"text": "h\u00e9llo \u2028 \U0001f600 \x80\x01\t", "empty": {}, "list": []},
    {"event": "audit.recovered", "length": 12, "offset": 345, "preview": "{\"seq\":3"},
    {"big": 10**30, "small": 1e-7, "neg": -0.0, "x": 1e16},
]


def test_a_valid_trail_takes_the_batch_path_and_reports_what_the_reference_does():
    data = b"".join(chain(FIELDS * 5))
    assert _verify_batch(data, None, None) is not None
    assert _verify_chunk(data) == reference(data)


def test_lines_that_are_json_only_when_joined_never_pass():
    # Line 1 leaves its object open and line 2 closes it; line 3 holds two records. Parsed as one array, the
    # three lines are three chained records in canonical form; each line on its own is not a record.
    def body(seq, prev, extra=""):
        return (f'{{"event":"x","operator":"o","prev":"{prev}","run":null,"seq":{seq},"time":"t"{extra}')
    t1 = body(1, GENESIS, ',"z":{"b":1}')  # ends in the inner object's "}"
    t2 = '"zz":2}'
    h1, h2 = (hashlib.sha256(t.encode()).hexdigest() for t in (t1, t2))
    t3 = body(2, h1) + "}," + body(3, h2) + "}"
    data = line(t1) + line(t2) + line(t3)
    joined = json.loads("[" + ",".join((t1, t2, t3)) + "]")
    assert [r["seq"] for r in joined] == [1, 2, 3]  # the naive batch would see a good chain
    assert _verify_batch(data, None, None) is None
    got = _verify_chunk(data)
    assert got == reference(data) and got.problem[0].startswith("bad JSON")


def test_a_line_holding_the_sentinel_goes_line_by_line():
    data = b"".join(chain([{"note": audit_verify._SENTINEL}, {"note": "x"}]))
    assert _verify_batch(data, None, None) is None
    assert _verify_chunk(data) == reference(data) and reference(data).problem is None


MUTATIONS = [
    lambda b: b.replace(":", ": ", 1),  # whitespace
    lambda b: b.replace('"run":"r1"', '"run":"r1","run":"r1"', 1),  # a duplicate key
    lambda b: b.replace('"event":', '"aaa":1,"event":', 1).replace('"action":', '"zz":0,"action":'),
    lambda b: b.replace('"seq":', '"seq":-0,"zzz":', 1),
    lambda b: b.replace('"seq":', '"seq":1.0,"zzz":', 1),
    lambda b: b.replace("e", "\\u0065", 1),  # an escape where none is needed
    lambda b: b.replace("/", "\\/", 1),
    lambda b: b.replace('"time"', '"time "', 1),  # unsorted keys
    lambda b: " " + b,
    lambda b: b + " ",
    lambda b: "[" + b + "]",
    lambda b: b.replace('"operator":"alice"', '"operator":NaN', 1),
    lambda b: b.replace('"prev":"', '"prev":"0', 1),
    lambda b: b.replace('"seq":', '"seq":true,"zzz":', 1),
    lambda b: b.replace('"run":"r1",', "", 1),  # a required field missing
    lambda b: b.replace('"seq":', '"seq":"', 1).replace(',"time"', '","time"', 1),
    lambda b: b[:-1],  # not JSON
    lambda b: b.replace("}", "}\r", 1),
    lambda b: b.replace('"alice"', '"al\x01ice"', 1),
    lambda b: b.replace('"r1"', '"\u00e9\ud800"'.encode("utf-8", "surrogatepass").decode("latin-1"), 1),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 14), picks=st.lists(st.tuples(st.integers(0, 13), st.integers(0, len(MUTATIONS) - 1),
                                                      st.booleans()), max_size=3),
       fields=st.lists(st.sampled_from(FIELDS), min_size=14, max_size=14))
def test_edited_lines_get_the_same_report_from_both_paths(n, picks, fields):
    lines = chain(fields[:n])
    for index, mutation, rehash in picks:
        if index >= n:
            continue
        text = lines[index].decode("utf-8", "surrogateescape")
        body = text[:-76] + "}"
        try:
            changed = MUTATIONS[mutation](body)
        except ValueError:
            continue
        if rehash:  # the hash matches the edit: the later checks decide
            lines[index] = line(changed) if changed.endswith("}") else changed.encode("utf-8", "surrogateescape")
        else:
            lines[index] = (changed[:-1] + text[-76:]).encode("utf-8", "surrogateescape")
    data = b"".join(lines)
    assert _verify_chunk(data) == reference(data)


def test_the_batch_path_goes_on_from_the_record_before_it(monkeypatch):
    monkeypatch.setattr(audit_verify, "_SUB_BLOCK", 1000)  # a few records per sub-block
    lines = chain(FIELDS * 6)
    good = b"".join(lines)
    assert _verify_chunk(good) == reference(good)
    for i in (3, 7, len(lines) - 1):  # a removed record, at and inside sub-blocks
        data = b"".join(lines[:i] + lines[i + 1:])
        assert _verify_chunk(data) == reference(data)
    swapped = lines[:]
    swapped[4], swapped[5] = swapped[5], swapped[4]
    data = b"".join(swapped)
    assert _verify_chunk(data) == reference(data)


@pytest.mark.parametrize("workers", [2, 3])
def test_worker_processes_report_what_one_process_does(tmp_path, monkeypatch, workers):
    monkeypatch.setattr(audit_verify, "_PARALLEL_BLOCK", 3000)
    trail = AuditTrail(tmp_path / AUDIT_FILE)
    for i in range(60):
        trail.append("action.target", operator="alice", run="r", target=f"t{i}", n=i, text="é" * (i % 7))
    assert verify(trail.path, workers=workers) == verify(trail.path, workers=1)
    lines = trail.path.read_bytes().splitlines(keepends=True)
    rng = random.Random(5)
    for _ in range(4):
        edited = lines[:]
        i = rng.randrange(len(edited))
        edited[i] = edited[i].replace(b'"n":', b'"n": ', 1)
        trail.path.write_bytes(b"".join(edited))
        assert verify(trail.path, workers=workers) == verify(trail.path, workers=1)


def test_a_worker_that_cannot_start_leaves_the_work_to_the_caller(tmp_path, monkeypatch):
    monkeypatch.setattr(audit_verify, "_PARALLEL_BLOCK", 3000)
    monkeypatch.setattr(audit_verify, "_WORKER", "import sys; sys.exit(3)")
    trail = AuditTrail(tmp_path / AUDIT_FILE)
    for i in range(30):
        trail.append("note", operator="alice", run=None, n=i)
    report = verify(trail.path, workers=2)
    assert report.ok and report.count == 30 and report == verify(trail.path, workers=1)


# -- a block of like records (one shape, one type per field): the template instead of the encoder -----------

LIKE = [
    {"action": "restart", "target": "web%d", "exit_code": 0, "bytes_out": 1234, "outcome": "ok"},
    {"duration": 0.125, "error": None, "n%s": "50% of %d", "text": "h\u00e9llo \u2028 \U0001f600 \x80"},
    {"big": 10**30, "small": 1e-7, "neg": -0.0, "x": 1e16, "y": -3, "z": ""},
]
EDITS = [
    lambda b: b.replace(":", ": ", 1),
    lambda b: b.replace(',"', ' ,"', 1),
    lambda b: b.replace('"run":"r1"', '"run":"r1","run":"r1"', 1),
    lambda b: b.replace('"event":', '"aaa":1,"event":', 1),
    lambda b: b.replace('"seq":', '"seq":-0,"zzz":', 1),
    lambda b: b.replace(":0,", ":-0,", 1),
    lambda b: b.replace(":0.125,", ":0.1250,", 1),
    lambda b: b.replace(":1e-07,", ":1E-07,", 1),
    lambda b: b.replace(":1e+16,", ":1e16,", 1),
    lambda b: b.replace(":1e+16,", ":10000000000000000.0,", 1),
    lambda b: b.replace(":-0.0,", ":-0.00,", 1),
    lambda b: b.replace(":1e+16,", ":Infinity,", 1),
    lambda b: b.replace(":-3,", ":NaN,", 1),
    lambda b: b.replace(":null,", ':"null",', 1),
    lambda b: b.replace(":-3,", ":-3.0,", 1),
    lambda b: b.replace(":1234,", ":true,", 1),
    lambda b: b.replace('"time"', '"time "', 1),
    lambda b: b.replace('"action":', '"zaction":', 1),
    lambda b: b.replace('"ok"', '"o\\u006b"', 1),
    lambda b: b.replace('"ok"', '"ok\t"', 1),
    lambda b: b.replace('"50% of %d"', '"50%% of %s"', 1),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.integers(0, len(LIKE) - 1), n=st.integers(1, 12), index=st.integers(0, 11),
       edit=st.integers(0, len(EDITS) - 1), rehash=st.booleans())
def test_a_block_of_like_records_gets_the_same_report_from_both_paths(kind, n, index, edit, rehash):
    lines = chain([LIKE[kind]] * n)
    good = b"".join(lines)
    assert _verify_chunk(good) == reference(good) and reference(good).problem is None
    i = index % n
    text = lines[i].decode("utf-8")
    body = text[:-76] + "}"
    changed = EDITS[edit](body)
    lines[i] = line(changed) if rehash else (changed[:-1] + text[-76:]).encode("utf-8")
    data = b"".join(lines)
    assert _verify_chunk(data) == reference(data)


def test_like_records_take_the_template():
    import opsgate.console.audit.verify as v

    for fields in LIKE:
        lines = chain([fields] * 5)
        text = "[" + v._SEPARATOR.join(l[:-76] + b"}" for l in lines).decode() + "]"
        records = json.loads(text)[0::2]
        assert isinstance(v._canonical_by_template(records, text), tuple), fields
        assert v._canonical_by_template(records, text.replace(":", ": ", 1)) is None  # the encoder decides
    mixed = chain([LIKE[0], LIKE[1]])
    text = "[" + v._SEPARATOR.join(l[:-76] + b"}" for l in mixed).decode() + "]"
    assert v._canonical_by_template(json.loads(text)[0::2], text) is None  # not alike: the encoder decides


def test_a_value_of_another_type_is_never_filled_into_a_template_slot():
    # "%r" of the list [1, 2] is "[1, 2]": JSON that parses back to the same list, but not canonical JSON.
    # Every value's type is checked, so the line is refused, as the reference refuses it.
    body = ('{"event":"x","operator":"o","prev":"%s","run":null,"seq":%d,"time":"t","x":%s}')
    first = body % (GENESIS, 1, "1.5")
    second = body % (hashlib.sha256(first.encode()).hexdigest(), 2, "[1, 2]")
    data = line(first) + line(second)
    got = _verify_chunk(data)
    assert got == reference(data) and got.count == 1 and got.problem[0].startswith("not canonical")
