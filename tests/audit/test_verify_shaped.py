"""verify's shaped path (``_verify_shaped``: a block whose lines all have one shape, checked on its bytes by one
pattern, without building records) accepts only what the per-line reference (``_verify_lines``) accepts, and
then says what it says: for intact trails, for hostile values, and for lines edited byte by byte (with the
hash made to match the edit, so the later checks decide, or not)."""

from __future__ import annotations

import functools
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import opsgate.console.audit.verify as audit_verify
from opsgate.console.audit.trail import GENESIS, AuditTrail
from opsgate.console.audit.verify import _verify_batch, _verify_chunk, _verify_shaped, verify
from opsgate.console.events import ACTION_TARGET, AUDIT_RECOVERED
from opsgate.console.paths import AUDIT_FILE
from tests.helpers.verify_fixtures import chain as chain_lines
from tests.helpers.verify_fixtures import reference, rehashed

chain = functools.partial(chain_lines, run="20261128-145001-a1b2c3")  # action.target records of one run
chain_of = functools.partial(chain_lines, event="action.start")  # records that name their own event, or not


@pytest.fixture(autouse=True)
def fresh_vocabulary(monkeypatch):
    """Each test's lines teach their own vocabulary (the process's is shared, and stops learning at a bound)."""
    monkeypatch.setattr(audit_verify, "_VOCABULARY", None)


def agrees(data: bytes) -> None:
    """The whole chunk check reports what the reference does; if the shaped path accepts ``data``, the
    reference accepts every line and finds the same chain, recordings and notes."""
    expected = reference(data)
    assert _verify_chunk(data) == expected
    shaped = _verify_shaped(data, None, None)
    if shaped is not None:
        n, first, first_prev, last_seq, last_hash, recordings, notes = shaped
        assert expected.problem is None and expected.lines == n == expected.count
        assert (first, first_prev, last_seq, last_hash) == (expected.first_seq, expected.first_prev,
                                                              expected.last_seq, expected.last_hash)
        assert (recordings, notes) == (expected.recordings, expected.notes)
        batch = _verify_batch(data, None, None)  # None for what it leaves to the reference (a DEL in a line)
        assert batch is None or shaped == batch


def relinked(bodies: list[bytes], prev: bytes = GENESIS.encode("ascii")) -> list[bytes]:
    """Lines for hashed bytes ``bodies``, each line's prev made the hash of the line before (where a prev of 64
    characters is found) and every hash matching: what a forger who rewrites the rest of the chain writes."""
    out = []
    for body in bodies:
        at = body.find(b'"prev":"') + 8
        if at >= 8 and len(body) >= at + 65:
            body = body[:at] + prev + body[at + 64:]
        out.append(rehashed(body))
        prev = hashlib.sha256(body).hexdigest().encode("ascii")
    return out


BENCH = {"action": "restart-nginx", "target": "web1", "outcome": "ok", "exit_code": 0, "bytes_out": 1234}


def test_a_trail_of_one_shape_takes_the_shaped_path():
    data = b"".join(chain([{**BENCH, "target": f"web{i % 16}", "bytes_out": i * 7919} for i in range(300)]))
    assert _verify_shaped(data, None, None) is not None
    agrees(data)


def test_it_goes_on_from_the_record_before_it():
    lines = chain([BENCH] * 10)
    prev_hash = lines[3][-67:-3]
    rest = b"".join(lines[4:])
    assert _verify_shaped(rest, 4, prev_hash)[:4] == (6, 5, prev_hash.decode(), 10)
    assert _verify_shaped(rest, 3, prev_hash) is None  # a seq gap at the block's start
    assert _verify_shaped(rest, 4, lines[2][-67:-3]) is None  # a broken link at the block's start


HOSTILE_VALUES = [
    "", "\x7f", "\u2028\u2029", "h\u00e9llo \U0001f600", "50% of %d", "{}", "[]", ",", ":", "a,\"b\":1",
    "\t", "\r", "\x00", "\x1b[2J", "\\", "\"", "/", "\ufeff", "null", "0", 10**18 - 1, 10**18, -(10**17),
    -1, 0, True, False, None, 1.5, -0.0, 1e16, [1, 2], {"a": 1}, 10**30,
]


@pytest.mark.parametrize("value", HOSTILE_VALUES, ids=repr)
def test_hostile_values_get_the_reference_report(value):
    lines = chain([{**BENCH, "note": value}, {**BENCH, "note": "plain"}, {**BENCH, "note": value}])
    agrees(b"".join(lines))
    agrees(b"".join(chain([{**BENCH, "note": value}] * 3)))


def hostile_lines() -> dict[str, list[bytes]]:
    """Chains of one shape, each with one line that the reference refuses or reads differently."""
    good = chain([BENCH] * 4)
    body = [line[:-76] + b"}" for line in good]
    two = good[1][:-1] + good[2]  # two records on one line
    cases = {
        "garbage before the record": [good[0], b"x" + good[1], *good[2:]],
        "a record before the record": [good[0], good[0][:-1] + good[1], *good[2:]],
        "two records on one line": [good[0], two, good[3]],
        "a line cut in two": [good[0], good[1][:40] + b"\n", good[1][40:], *good[2:]],
        "an empty line": [good[0], b"\n", *good[1:]],
        "no newline at the end": [*good[:-1], good[-1][:-1]],
        "CRLF": [good[0], good[1][:-1] + b"\r\n", *good[2:]],
        "uppercase hash": [good[0], good[1][:-67] + good[1][-67:-3].upper() + b'"}\n', *good[2:]],
    }
    edits = {
        "space": lambda b: b.replace(b":", b": ", 1),
        "duplicate key": lambda b: b.replace(b'"outcome":"ok"', b'"outcome":"ok","outcome":"ok"', 1),
        "swapped keys": lambda b: b.replace(b'"action":"restart-nginx","bytes_out":1234',
                                            b'"bytes_out":1234,"action":"restart-nginx"', 1),
        "missing key": lambda b: b.replace(b'"outcome":"ok",', b"", 1),
        "missing run": lambda b: b.replace(b'"run":"20261128-145001-a1b2c3",', b"", 1),
        "missing time": lambda b: b.replace(b',"time":"2026-11-28T14:50:01.123456Z"', b"", 1),
        "extra key": lambda b: b.replace(b'"outcome":"ok",', b'"outcome":"ok","outcomf":1,', 1),
        "escaped key": lambda b: b.replace(b'"outcome"', b'"outcom\\u0065"', 1),
        "escaped value": lambda b: b.replace(b'"ok"', b'"o\\u006b"', 1),
        "escaped slash": lambda b: b.replace(b"restart-nginx", b"restart\\/nginx", 1),
        "raw tab": lambda b: b.replace(b'"ok"', b'"o\tk"', 1),
        "raw DEL": lambda b: b.replace(b'"ok"', b'"o\x7fk"', 1),
        "raw NUL": lambda b: b.replace(b'"ok"', b'"o\x00k"', 1),
        "raw newline": lambda b: b.replace(b'"ok"', b'"o\nk"', 1),
        "invalid UTF-8": lambda b: b.replace(b'"ok"', b'"o\xffk"', 1),
        "UTF-8 surrogate": lambda b: b.replace(b'"ok"', b'"o\xed\xa0\x80k"', 1),
        "overlong UTF-8": lambda b: b.replace(b'"ok"', b'"o\xc1\xbfk"', 1),
        "minus zero": lambda b: b.replace(b'"exit_code":0', b'"exit_code":-0', 1),
        "leading zero": lambda b: b.replace(b'"bytes_out":1234', b'"bytes_out":01234', 1),
        "plus sign": lambda b: b.replace(b'"bytes_out":1234', b'"bytes_out":+1234', 1),
        "float for int": lambda b: b.replace(b'"bytes_out":1234', b'"bytes_out":1234.0', 1),
        "exponent": lambda b: b.replace(b'"bytes_out":1234', b'"bytes_out":1e3', 1),
        "19 digits": lambda b: b.replace(b'"bytes_out":1234', b'"bytes_out":1234567890123456789', 1),
        "5000 digits": lambda b: b.replace(b'"bytes_out":1234', b'"bytes_out":1' + b"0" * 5000, 1),
        "NaN": lambda b: b.replace(b'"bytes_out":1234', b'"bytes_out":NaN', 1),
        "Infinity": lambda b: b.replace(b'"bytes_out":1234', b'"bytes_out":Infinity', 1),
        "string seq": lambda b: b.replace(b'"seq":2', b'"seq":"2"', 1),
        "bool seq": lambda b: b.replace(b'"seq":2', b'"seq":true', 1),
        "float seq": lambda b: b.replace(b'"seq":2', b'"seq":2.0', 1),
        "seq gap": lambda b: b.replace(b'"seq":2', b'"seq":3', 1),
        "uppercase prev": lambda b: b.replace(good[0][-67:-3], good[0][-67:-3].upper(), 1),
        "null prev": lambda b: b.replace(b'"prev":"' + good[0][-67:-3] + b'"', b'"prev":null', 1),
        "null run": lambda b: b.replace(b'"run":"20261128-145001-a1b2c3"', b'"run":null', 1),
        "true for a string": lambda b: b.replace(b'"ok"', b"true", 1),
        "object value": lambda b: b.replace(b'"ok"', b'{"a":1}', 1),
        "array": lambda b: b"[" + b + b"]",
        "unclosed": lambda b: b[:-1],
        "trailing space": lambda b: b[:-1] + b" }",
    }
    for name, edit in edits.items():
        changed = edit(body[1])
        cases[name] = [good[0], changed[:-1] + good[1][-76:], *good[2:]]
        cases[name + " (rehashed)"] = [good[0], rehashed(changed), *good[2:]]
        cases[name + " (the chain rewritten from there)"] = relinked([body[0], changed, *body[2:]])
        cases[name + " (the last line)"] = [*good[:3], rehashed(edit(body[3]))]
        cases[name + " (every line)"] = relinked([edit(b) for b in body])
    # The first line's prev slot is 64 characters of anything but a newline: here a short prev, then a
    # second "run" key (not canonical), exactly 64 characters from the prev's opening quote on.
    head = body[0].replace(b'"prev":"' + GENESIS.encode(), b'"prev":"0","run":"' + b"r" * 54, 1)
    assert head != body[0]
    cases["a duplicate key inside the first prev's 64 characters"] = [rehashed(head)]
    cases["... and the chain goes on"] = [rehashed(head),
                                          *relinked(body[1:], hashlib.sha256(head).hexdigest().encode())]
    return cases


@pytest.mark.parametrize("name", sorted(hostile_lines()))
def test_hostile_lines_get_the_reference_report(name):
    lines = hostile_lines()[name]
    data = b"".join(lines)
    agrees(data)


def test_records_that_carry_notes_get_them_from_the_shaped_path():
    recorded = {**BENCH, "recording": "recordings/r1/web1.cast", "recording_sha256": "ab" * 32,
                "recording_error": None}
    lines = chain([recorded, {**recorded, "recording_error": "disk full"}, recorded])
    data = b"".join(lines)
    assert _verify_shaped(data, None, None) is not None
    agrees(data)
    assert len(reference(data).recordings) == 3
    lines = chain([{**BENCH, "note": "x"}, {**BENCH, "note": "y"}])
    event = f'"{ACTION_TARGET}"'.encode(), f'"{AUDIT_RECOVERED}"'.encode()
    data = lines[0] + rehashed(lines[1][:-76].replace(*event) + b"}")
    agrees(data)
    assert len(reference(data).notes) == 1 and _verify_shaped(data, None, None) is None  # _verify_batch's


# -- byte-level edits of chains of one shape, at random ---------------------------------------------------

KEYS = ["action", "bytes_out", "error", "exit_code", "note", "ok", "outcome", "target", "zz"]
VALUES = st.one_of(st.text(max_size=6), st.integers(-(10**19), 10**19), st.none(), st.booleans(),
                   st.sampled_from(["\x7f", "\u2028", "%s", "\\", '"', "\U0001f600", "audit.recovered"]))
BYTES = [b'"', b"\\", b"\n", b"\r", b"\x00", b"\x1f", b"\x7f", b"\xff", b"\xc3", b"\xa9", b"0", b"9", b"-",
         b"{", b"}", b",", b":", b" ", b"a", b"A", b"n", b"e", b".", b"[", b"]"]


def edited_chain_agrees(records: list[dict], data) -> None:
    """Chain ``records``, make up to three byte edits drawn from ``data`` (each line re-hashed to match, or
    not; the rest of the chain rewritten to match, or not), and check every path reports what the reference
    does. Nothing is checked when the writer refuses a value."""
    n = len(records)
    try:
        lines = chain(records)
    except ValueError:  # a value the writer refuses
        return
    relink = data.draw(st.booleans())
    for _ in range(data.draw(st.integers(0, 3))):
        i = data.draw(st.integers(0, n - 1))
        body = lines[i][:-76] + b"}"
        at = data.draw(st.integers(0, len(body)))
        op = data.draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = data.draw(st.sampled_from(BYTES))
        if op == "replace":
            body = body[:at] + byte + body[at + 1:]
        elif op == "insert":
            body = body[:at] + byte + body[at:]
        else:
            body = body[:at] + body[at + 1:]
        if data.draw(st.booleans()) and body.endswith(b"}"):
            lines[i] = rehashed(body)
        else:
            lines[i] = body[:-1] + lines[i][-76:]
    if relink:  # the rest of the chain rewritten to match: the edit itself must be caught
        lines = relinked([line[:-76] + b"}" for line in lines])
    agrees(b"".join(lines))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keys=st.sets(st.sampled_from(KEYS), max_size=4), n=st.integers(1, 6), data=st.data())
def test_byte_edits_get_the_same_report_from_every_path(keys, n, data):
    records = [{key: data.draw(VALUES) for key in sorted(keys)} for _ in range(n)]
    if data.draw(st.booleans()):
        for record in records:
            record["event"] = data.draw(st.sampled_from(["action.target", "audit.recovered", "x"]))
    edited_chain_agrees(records, data)


def test_sub_blocks_link_on_the_shaped_path(monkeypatch):
    monkeypatch.setattr(audit_verify, "_SUB_BLOCK", 1000)  # a few records per sub-block
    lines = chain([{**BENCH, "bytes_out": i} for i in range(40)])
    good = b"".join(lines)
    assert _verify_chunk(good) == reference(good) and reference(good).count == 40
    for i in (2, 3, 7, 39):  # a removed record, at and inside sub-blocks
        data = b"".join(lines[:i] + lines[i + 1:])
        assert _verify_chunk(data) == reference(data)
    for i in (2, 5, 6):
        swapped = lines[:]
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
        data = b"".join(swapped)
        assert _verify_chunk(data) == reference(data)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_forged_or_cut_trail_of_one_shape_fails(tmp_path, monkeypatch, workers):
    monkeypatch.setattr(audit_verify, "_PARALLEL_BLOCK", 3000)
    trail = AuditTrail(tmp_path / AUDIT_FILE)
    for i in range(80):
        trail.append("action.target", operator="alice", run="r", target=f"t{i % 5}", exit_code=0, n=i)
    lines = trail.path.read_bytes().splitlines(keepends=True)
    assert _verify_shaped(b"".join(lines), None, None) is not None
    assert verify(trail.path, workers=workers).ok
    forged = lines[:]
    forged[40] = rehashed(lines[40][:-76].replace(b'"t0"', b'"t9"') + b"}")  # edited, hash recomputed
    reordered = lines[:]
    reordered[10], reordered[11] = lines[11], lines[10]
    for bad, seq in ((forged, 42), (reordered, 12), (lines[:30] + lines[31:], 32), (lines[1:], 2)):
        trail.path.write_bytes(b"".join(bad))
        report = verify(trail.path, workers=workers)
        assert not report.ok and report.first_bad_seq == seq and report == verify(trail.path, workers=1)
    trail.path.write_bytes(b"".join(lines)[:-5])  # truncated
    report = verify(trail.path, workers=workers)
    assert not report.ok and report.count == 79 and "truncated last line" in report.problems[0]


# -- many shapes in one block: the vocabulary's pattern (floats, objects, lists, escapes) -------------------------

def run_records(n_targets: int, run: str) -> list[tuple[str, dict]]:
    """(event, fields) as the pipeline writes them for one run (console/run.py)."""
    targets = [f"web-{i}" for i in range(n_targets)]
    records = [
        ("config.loaded", {"run": None, "path": "/etc/opsgate.toml", "sha256": "ab" * 32}),
        ("stepup.success", {"run": run, "action": "restart", "factor": "otp", "purpose": "step-up"}),
        ("action.start", {"run": run, "action": "restart", "risk": "medium", "targets": targets,
                          "command": 'grep -E "a|b" /var/log/x\\y', "params": {"service": "nginx", "lines": 50},
                          "requirement": "OTP within 15m", "approvals": [], "fido2_digest": None,
                          "grant": {"auth_time": "2026-11-27T22:00:00+00:00", "factor": "otp", "fresh": True},
                          "config_sha256": "cd" * 32}),
    ]
    for i, target in enumerate(targets):
        records.append(("action.target", {
            "run": run, "action": "restart", "target": target, "outcome": "ok" if i % 3 else "failed",
            "exit_code": 0 if i % 3 else 1, "duration": [0.5, 12.345678, 0.0001, 100.0][i % 4], "bytes_out": i * 999,
            "bytes_err": 0, "error": None if i % 3 else "exit 1", "recording": f"recordings/{run}/{target}.cast",
            "recording_sha256": hashlib.sha256(target.encode()).hexdigest(), "recording_error": None}))
    records.append(("action.end", {"run": run, "action": "restart", "outcomes": {"failed": 1, "ok": n_targets - 1},
                                   "exit_code": 1}))
    records.append(("runbook.end", {"run": run, "runbook": "rb", "steps": {"1": "ok", "2": "failed"}, "exit_code": 1}))
    records.append(("runbook.start", {"run": run, "runbook": "rb", "targets": targets, "params": {},
                                      "steps": [{"step": 1, "title": "t\u00e9", "kind": "command", "run": f"{run}.1",
                                                 "targets": targets[:2], "command": "ls", "pause": None}]}))
    return records


def mixed_trail(tmp_path, runs: int = 6) -> bytes:
    """A trail of runs written by the real AuditTrail: many shapes, interleaved."""
    trail = AuditTrail(tmp_path / AUDIT_FILE)
    for r in range(runs):
        for event, fields in run_records(1 + r % 5, f"run-{r}"):
            run = fields.pop("run")
            trail.append(event, operator="zo\u00eb" if r % 2 else "alice", run=run, **fields)
    return trail.path.read_bytes()


def test_a_trail_of_many_shapes_takes_the_shaped_path(tmp_path):
    data = mixed_trail(tmp_path)
    shaped = _verify_shaped(data, None, None)
    assert shaped is not None and shaped[0] == data.count(b"\n")
    agrees(data)
    assert len(reference(data).recordings) == 16


NEW_VALUES = [
    0.5, -0.0, 0.0, 1.0, 100.0, 0.0001, 0.00001, 1e-7, 1e15, 1e16, 123456789012345.0, 1234567890123456.0,
    0.1 + 0.2, 12.345678, -3.25, 2.5e-5, 1.7976931348623157e308, 5e-324,
    {}, {"a": 1}, {"b": 1, "a": 2}, {"a": {"b": 1}}, {"a": [1, 2.5, None, "x"]}, {"": 0}, {"\u00e9": 1, "z": 2},
    {"a\"b": 1}, {"a\\b": 1}, {"\n": 1}, [], [[]], [{"a": 1}, {"b": 2}], [{"a": 1}, 2], [1.5, "a", True],
    [{"a": [1]}], ["\"", "\\", "\n", "\x1f", "\x7f", "\u2028"], "a\"b", "a\\b", "\x00\x08\x09\x0a\x0b\x0c\x0d\x1f",
    "\x7f", "/", "\u00e9\U0001f600", "audit.recovered",
]


@pytest.mark.parametrize("value", NEW_VALUES, ids=repr)
def test_floats_objects_lists_and_escapes_get_the_reference_report(value):
    plain = {"action": "restart", "targets": ["web-1"], "command": "ls"}
    records = [{**plain, "params": value}, {**plain, "params": {"x": 1}}, plain, {**plain, "params": value}]
    agrees(b"".join(chain_of(records)))
    agrees(b"".join(chain_of([{**plain, "params": value}] * 3)))
    agrees(b"".join(chain_of([{"params": value}, {"duration": value}, {"zz": [value]}, {"params": [value]}])))


def test_the_vocabulary_takes_the_values_it_proves_canonical(fresh_vocabulary):
    """The slots are not needlessly narrow: floats in repr's fixed notation, objects, lists of objects and escaped
    strings take the shaped path."""
    for value in (0.5, -0.0, 0.0001, 12345678901234.0, 12.345678, {"b": [1, "x"], "a": None}, [{"a": 1}, {}],
                  "a\"b\\c\n\x01\x7f\u00e9", ["\t"], {"\u00e9": "\u2028"}):
        data = b"".join(chain_of([{"params": value}, {"params": value, "x": 1}]))
        assert _verify_shaped(data, None, None) is not None, value
        agrees(data)
    # beyond what the slots take (an exponent, 16 or more digits, objects two deep, lists of lists, 19 digits)
    for value in (0.00001, 1e16, 123456789012345.0, 0.1 + 0.2, {"a": {"b": 1}}, [[1]], 10**19):
        data = b"".join(chain_of([{"params": value}]))
        assert _verify_shaped(data, None, None) is None, value
        agrees(data)


def new_hostile_lines() -> dict[str, list[bytes]]:
    """Chains of many shapes, each with one line edited so the reference refuses it or reads it differently."""
    good = chain_of([
        {"action": "restart", "duration": 12.5, "params": {"a": 1, "b": "x"}, "targets": ["w1", "w2"],
         "command": 'say "hi"\\n', "steps": [{"k": 1, "t": [1]}, {"k": 2, "t": []}]},
        {"action": "restart", "outcomes": {"failed": 1, "ok": 2}},
        {"action": "restart", "duration": 0.25, "params": {"a": 1, "b": "x"}, "targets": ["w1", "w2"],
         "command": 'say "hi"\\n', "steps": [{"k": 1, "t": [1]}, {"k": 2, "t": []}]},
        {"action": "restart", "outcomes": {"ok": 3}},
    ])
    body = [line[:-76] + b"}" for line in good]
    edits = {
        "float trailing zero": lambda b: b.replace(b'"duration":0.25', b'"duration":0.250', 1),
        "float leading zero": lambda b: b.replace(b'"duration":0.25', b'"duration":00.25', 1),
        "float exponent": lambda b: b.replace(b'"duration":0.25', b'"duration":2.5e-1', 1),
        "float upper exponent": lambda b: b.replace(b'"duration":0.25', b'"duration":2.5E-1', 1),
        "float no fraction digit": lambda b: b.replace(b'"duration":0.25', b'"duration":0.', 1),
        "float no integer digit": lambda b: b.replace(b'"duration":0.25', b'"duration":.25', 1),
        "float 17 digits": lambda b: b.replace(b'"duration":0.25', b'"duration":0.30000000000000004', 1),
        "float too many digits": lambda b: b.replace(b'"duration":0.25', b'"duration":0.25000000000000001', 1),
        "float plus": lambda b: b.replace(b'"duration":0.25', b'"duration":+0.25', 1),
        "float point last": lambda b: b.replace(b'"duration":0.25', b'"duration":12.', 1),
        "float trailing zero after a whole part": lambda b: b.replace(b'"duration":0.25', b'"duration":12.50', 1),
        "float two zeros": lambda b: b.replace(b'"duration":0.25', b'"duration":12.00', 1),
        "float five zeros": lambda b: b.replace(b'"duration":0.25', b'"duration":0.00001', 1),
        "float minus zero point": lambda b: b.replace(b'"duration":0.25', b'"duration":-0.', 1),
        "nested keys swapped": lambda b: b.replace(b'{"a":1,"b":"x"}', b'{"b":"x","a":1}', 1),
        "nested duplicate key": lambda b: b.replace(b'{"a":1,"b":"x"}', b'{"a":1,"a":1,"b":"x"}', 1),
        "nested trailing comma": lambda b: b.replace(b'{"a":1,"b":"x"}', b'{"a":1,"b":"x",}', 1),
        "nested leading comma": lambda b: b.replace(b'{"a":1,"b":"x"}', b'{,"a":1,"b":"x"}', 1),
        "nested space": lambda b: b.replace(b'{"a":1,"b":"x"}', b'{"a": 1,"b":"x"}', 1),
        "nested missing value": lambda b: b.replace(b'{"a":1,"b":"x"}', b'{"a":,"b":"x"}', 1),
        "nested unknown key": lambda b: b.replace(b'{"a":1,"b":"x"}', b'{"a":1,"c":"x"}', 1),
        "nested escaped key": lambda b: b.replace(b'{"a":1,"b":"x"}', b'{"\\u0061":1,"b":"x"}', 1),
        "nested float": lambda b: b.replace(b'{"a":1,"b":"x"}', b'{"a":1.0,"b":"x"}', 1),
        "list trailing comma": lambda b: b.replace(b'["w1","w2"]', b'["w1","w2",]', 1),
        "list empty slot": lambda b: b.replace(b'["w1","w2"]', b'["w1",,"w2"]', 1),
        "list unclosed": lambda b: b.replace(b'["w1","w2"]', b'["w1","w2"', 1),
        "list of objects swapped keys": lambda b: b.replace(b'{"k":2,"t":[]}', b'{"t":[],"k":2}', 1),
        "list of objects trailing comma": lambda b: b.replace(b'{"k":2,"t":[]}]', b'{"k":2,"t":[]},]', 1),
        "escape not needed": lambda b: b.replace(b'say \\"hi\\"', b'say \\"h\\u0069\\"', 1),
        "escape as \\u": lambda b: b.replace(b'\\"hi\\"', b'\\u0022hi\\"', 1),
        "uppercase \\u": lambda b: b.replace(b'\\"hi\\"', b'\\u001Fhi\\"', 1),
        "\\u for \\n": lambda b: b.replace(b'hi\\"\\\\n', b'hi\\"\\u000a', 1),
        "escaped slash": lambda b: b.replace(b'hi\\"\\\\n', b'hi\\"\\/', 1),
        "unknown escape": lambda b: b.replace(b'hi\\"\\\\n', b'hi\\"\\q', 1),
        "lone backslash": lambda b: b.replace(b'hi\\"\\\\n', b'hi\\"\\', 1),
        "quote unescaped": lambda b: b.replace(b'say \\"hi', b'say "hi', 1),
        "escaped surrogate": lambda b: b.replace(b'say \\"hi', b'say \\ud800hi', 1),
        "outcomes swapped": lambda b: b.replace(b'{"failed":1,"ok":2}', b'{"ok":2,"failed":1}', 1),
    }
    cases = {}
    for name, edit in edits.items():
        target = 2 if edit(body[2]) != body[2] else 1
        changed = edit(body[target])
        assert changed != body[target], name
        cases[name] = [*good[:target], changed[:-1] + good[target][-76:], *good[target + 1:]]
        cases[name + " (rehashed)"] = [*good[:target], rehashed(changed), *good[target + 1:]]
        cases[name + " (the chain rewritten from there)"] = relinked([*body[:target], changed, *body[target + 1:]])
    return cases


@pytest.mark.parametrize("name", sorted(new_hostile_lines()))
def test_hostile_floats_objects_lists_and_escapes_get_the_reference_report(name):
    data = b"".join(new_hostile_lines()[name])
    agrees(data)  # a vocabulary that learns from these very lines
    audit_verify._VOCABULARY = None
    good = b"".join(chain_of([{"action": "restart", "duration": 12.5, "params": {"a": 1, "b": "x", "c": 2.5},
                               "targets": ["w1"], "command": "\\", "outcomes": {"ok": 1},
                               "steps": [{"k": 1, "t": [1]}]}]))
    assert _verify_shaped(good, None, None) is not None
    agrees(data)  # one that learned the good lines' shapes first


def test_recording_fields_of_other_events_are_not_noted():
    recorded = {"recording": "recordings/r/w.cast", "recording_sha256": "ab" * 32, "recording_error": None}
    records = [{**recorded, "event": "action.start"}, {**recorded, "event": ACTION_TARGET},
               {"recording": None, "event": ACTION_TARGET}, {"recording": "x", "event": "action.targets"},
               {"recording_sha256": "cd", "event": ACTION_TARGET}]
    data = b"".join(chain_of(records))
    assert _verify_shaped(data, None, None) is not None
    agrees(data)
    assert [r[0] for r in reference(data).recordings] == [2, 3]


SCALARS = st.one_of(st.text(max_size=5), st.integers(-(10**19), 10**19), st.none(), st.booleans(),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from([0.5, -0.0, 0.0001, 0.00001, 12.345678, 1e16, "\x7f", '"', "\\", "\n"]))
NESTED = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(["a", "b", "\u00e9", "", "a\"", "seq"]), inner, max_size=3),
                      max_leaves=6)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 6), data=st.data())
def test_byte_edits_of_many_shapes_get_the_same_report_from_every_path(n, data):
    audit_verify._VOCABULARY = None  # each example learns afresh (the bound on learning is per process)
    records = []
    for _ in range(n):
        keys = data.draw(st.sets(st.sampled_from(KEYS), max_size=3))
        record = {key: data.draw(NESTED) for key in sorted(keys)}
        if data.draw(st.booleans()):
            record["event"] = data.draw(st.sampled_from(["action.target", "audit.recovered", "x"]))
        if data.draw(st.booleans()):
            record.update(recording=data.draw(NESTED), recording_sha256=data.draw(SCALARS))
        records.append(record)
    edited_chain_agrees(records, data)
    audit_verify._VOCABULARY = None
