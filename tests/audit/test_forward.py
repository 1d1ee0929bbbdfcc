"""Forwarding the audit trail to a real rsyslogd (RFC 5424 over TCP and TLS) and checking its copy."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from opsgate.console.audit.trail import AuditTrail

from opsgate.console.paths import AUDIT_FILE, FORWARD_CURSOR
from opsgate.console.catalog.loader import load_config, parse_config
from opsgate.console.errors import ConfigError
from opsgate.console.audit.forward.collector import compare_with_collector
from opsgate.console.audit.forward.cursor import Cursor
from opsgate.console.audit.forward.forwarder import Forwarder
from opsgate.console.audit.forward.wire import parse_collector_line, sd_escape
from tests.helpers import ROOT
from tests.helpers.cli import popen_opsgate, run_opsgate
from tests.helpers.forward_fixtures import free_port, make_pki
from tests.helpers.run_fixtures import write_config

# Small delays so the tests run in seconds; the defaults (0.5 s doubling to 30 s) are for real use.
FAST = dict(poll=0.02, settle=0.1, backoff_start=0.05, backoff_cap=0.5)
LINE = re.compile(rb'^<(\d+)>1 (\S+) (\S+) (\S+) (\S+) (\S+) (\[opsgate@32473 .*?[^\\]\]) (.*)$')


@pytest.fixture
def collector(rsyslog):
    """A running rsyslogd on 127.0.0.1 (plain TCP) writing to ``collector.output``."""
    return rsyslog()


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


@pytest.fixture
def state(tmp_path) -> Path:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return path


def forwarding(url: str, extra: str = ""):
    return parse_config(f'[audit.forward]\nurl = "{url}"\n{extra}\n'.encode()).forwarding


def opsgate(config: Path, state: Path, *args: str) -> subprocess.CompletedProcess:
    return run_opsgate(*args, config=config, state=state)


def local_lines(state: Path) -> list[bytes]:
    return (state / AUDIT_FILE).read_bytes().splitlines()


def record_lines(lines: list[bytes]) -> list[tuple[int, bytes]]:
    """(seq, line) for the record messages in collector lines, in file order (head messages left out)."""
    out = []
    for line in lines:
        parsed = parse_collector_line(line)
        if parsed and parsed[0] == "record":
            out.append((json.loads(parsed[2])["seq"], line))
    return out


def has_seqs(n: int):
    return lambda lines: {seq for seq, _ in record_lines(lines)} >= set(range(1, n + 1))


def assert_in_order_and_identical(lines: list[bytes], n: int) -> int:
    """Every seq 1..n arrived; first arrivals in order; no gap ever; re-sent copies identical. Returns copies."""
    seen: dict[int, bytes] = {}
    first_order, highest = [], 0
    for seq, line in record_lines(lines):
        assert seq <= highest + 1, f"seq {seq} arrived before seq {highest + 1}"
        if seq in seen:
            assert seen[seq] == line, f"re-sent copy of seq {seq} differs"
        else:
            seen[seq] = line
            first_order.append(seq)
        highest = max(highest, seq)
    assert first_order == list(range(1, n + 1))
    return len(record_lines(lines)) - n


def fill(trail: AuditTrail, n: int, event: str = "action.start") -> list[dict]:
    return [trail.append(event, operator="alice", run="run-abcdef12", n=i) for i in range(n)]


# -- the wire format ------------------------------------------------------------------------------


def test_records_arrive_complete_in_order_as_rfc5424(collector, state):
    trail = AuditTrail(state / AUDIT_FILE)
    records = fill(trail, 5)
    # Text that RFC 5424 or rsyslog could mangle: quotes, backslash, "]", non-ASCII, DEL, a lone "}".
    records.append(trail.append("action.target", operator="alice", run="run-abcdef12",
                                target='we"ird\\]', output="héllo ✓ \x7f }"))
    records.append(trail.append("stepup.lockout", operator="alice", factor="otp"))
    records.append(trail.append("action.denied", operator="alice", reason="policy"))
    records.append(trail.append("stepup.clone_suspected.with.a.very.long.event.name", operator="alice"))
    fwd = Forwarder(trail.path, state, forwarding(collector.url, 'app_name = "opsgate-test"\nfacility = "local3"'),
                    hostname="ops-laptop", **FAST).start()
    assert fwd.drain(10)
    fwd.stop()
    lines = collector.wait_for(has_seqs(len(records)))
    local = local_lines(state)
    got = record_lines(lines)
    assert [seq for seq, _ in got] == list(range(1, len(records) + 1))
    for (seq, line), record, original in zip(got, records, local):
        m = LINE.match(line)
        assert m, line
        pri, timestamp, host, app, procid, msgid, sd, msg = m.groups()
        assert msg == original  # the exact JSON line, byte for byte (no BOM)
        assert timestamp.decode() == record["time"]
        assert (host, app, procid) == (b"ops-laptop", b"opsgate-test", str(os.getpid()).encode())
        assert msgid.decode() == record["event"][:32]
        assert sd.decode() == f'[opsgate@32473 seq="{seq}" hash="{record["hash"]}"]'
        severity = {"stepup.lockout": 4, "action.denied": 5}.get(record["event"], 6)
        assert int(pri) == 19 * 8 + severity  # local3
    assert len(got[-1][1].split()[5]) == 32
    heads = [line for line in lines if b" audit.head " in line]
    assert heads and heads[-1].split(b" [", 1)[1].startswith(
        f'opsgate@32473 head="{records[-1]["hash"]}" seq="{len(records)}"]'.encode())
    cursor = Cursor.load(state / FORWARD_CURSOR)
    assert (cursor.seq, cursor.hash, cursor.offset) == (len(records), records[-1]["hash"], trail.path.stat().st_size)


def test_sd_escaping_and_collector_line_parsing():
    assert sd_escape('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    line = b'<86>1 - h a 1 x [opsgate@32473 seq="3" hash="a\\]b\\"c"] \xef\xbb\xbf{"seq":3}'
    assert parse_collector_line(line) == ("record", {"seq": "3", "hash": 'a]b"c'}, b'{"seq":3}')
    assert parse_collector_line(b'{"seq":1,"hash":"x"}\n') == ("record", {}, b'{"seq":1,"hash":"x"}')
    assert parse_collector_line(b"<13>1 - h rsyslogd - - - started") is None
    head = parse_collector_line(b'<86>1 - h a 1 audit.head [opsgate@32473 head="abc" seq="7"] -')
    assert head == ("head", {"head": "abc", "seq": "7"}, None)
    with pytest.raises(ValueError):
        parse_collector_line(b'<86>1 - h a 1 x [opsgate@32473 seq="3 hash=] {}')


# -- outages, re-sending, verify --against --------------------------------------------------------


def test_backlog_after_an_outage_arrives_and_verifies(collector, state):
    trail = AuditTrail(state / AUDIT_FILE)
    fill(trail, 10)
    fwd = Forwarder(trail.path, state, forwarding(collector.url), **FAST).start()
    try:
        assert fwd.drain(10)
        collector.stop()
        started = time.monotonic()
        fill(trail, 15, "action.end")  # appends never wait for the collector
        assert time.monotonic() - started < 5
        time.sleep(0.5)  # the forwarder notices and backs off
        assert fwd.status().cursor.seq == 10 and fwd.status().failures >= 1
        collector.start()
        assert fwd.drain(15, give_up_when_down=False)
    finally:
        fwd.stop()
    lines = collector.wait_for(has_seqs(25))
    resent = assert_in_order_and_identical(lines, 25)
    report = compare_with_collector(trail.path, collector.output)
    assert report.ok, report.problems
    assert report.records == 25 and report.duplicates == resent and report.not_yet_forwarded == 0
    assert report.last_anchor == (25, trail.head())


def test_verify_against_counts_resent_copies_once_and_names_bad_records(collector, state, tmp_path):
    trail = AuditTrail(state / AUDIT_FILE)
    fill(trail, 8)
    fwd = Forwarder(trail.path, state, forwarding(collector.url), **FAST).start()
    assert fwd.drain(10)
    fwd.stop()
    lines = collector.wait_for(has_seqs(8))
    config = tmp_path / "empty.toml"
    config.write_text("")

    def verify_against(copy_lines: list[bytes]) -> subprocess.CompletedProcess:
        copy = tmp_path / "copy.log"
        copy.write_bytes(b"".join(line + b"\n" for line in copy_lines))
        return opsgate(config, state, "audit", "verify", "--against", str(copy))

    by_seq = dict(record_lines(lines))
    r = verify_against(lines + [by_seq[3], by_seq[4]])  # a re-sent copy is identical: counted once
    assert r.returncode == 0, r.stdout + r.stderr
    assert "collector copy matches the local chain: 8 records up to seq 8 (2 re-sent copies counted once)" in r.stdout
    assert f"last anchored head: seq 8 {trail.head()}" in r.stdout

    fill(trail, 3)  # newer than the collector's newest: not yet forwarded, not an error
    r = verify_against(lines)
    assert r.returncode == 0 and "not yet forwarded: 3" in r.stdout, r.stdout

    tampered = [line.replace(b'"n":4', b'"n":5') if seq == 5 else line for seq, line in record_lines(lines)]
    r = verify_against([line for line in tampered if b'seq="3"' not in line]
                       + [by_seq[8].replace(b'seq="8"', b'seq="99"').replace(b'"seq":8', b'"seq":99')])
    assert r.returncode == 1
    assert "FAIL: collector" in r.stdout
    assert "missing at the collector (1): seq 3" in r.stdout
    assert "different at the collector (1): seq 5" in r.stdout
    assert "extra at the collector, not in the local chain (1): seq 99" in r.stdout
    assert "not yet forwarded: 3" in r.stdout

    # A plain JSON-lines copy of the trail is a collector copy too.
    r = verify_against(local_lines(state)[:8])
    assert r.returncode == 0 and "not yet forwarded: 3" in r.stdout, r.stdout


def test_acceptance_1000_records_while_the_collector_restarts_twice(collector, state, tmp_path):
    """1,000 records written while rsyslogd is restarted twice: all arrive in order and the copy verifies."""
    n = 1000
    trail = AuditTrail(state / AUDIT_FILE)
    fwd = Forwarder(trail.path, state, forwarding(collector.url), **FAST).start()
    written = [0]

    def writer():
        for i in range(n):
            trail.append("action.target", operator="alice", run=f"run-{i // 10:06d}", target=f"web-{i % 7}",
                         exit_code=i % 3, output="x" * (i % 50))
            written[0] = i + 1
            time.sleep(0.002)

    started = time.monotonic()
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for at in (n // 3, 2 * n // 3):
            while written[0] < at and thread.is_alive():
                time.sleep(0.01)
            collector.restart(down_for=0.3)
        thread.join(60)
        assert written[0] == n
        assert fwd.drain(20, give_up_when_down=False)
    finally:
        fwd.stop()
    lines = collector.wait_for(has_seqs(n))
    elapsed = time.monotonic() - started
    resent = assert_in_order_and_identical(lines, n)
    status = fwd.status()
    print(f"\nacceptance: {n} records, 2 restarts, {elapsed:.1f}s, {resent} re-sent copies, "
          f"{status.failures} failed connections/attempts, {status.resent} records re-sent")
    assert status.failures >= 2
    config = tmp_path / "empty.toml"
    config.write_text("")
    r = opsgate(config, state, "audit", "verify", "--against", str(collector.output))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{n} records up to seq {n}" in r.stdout


def test_forwarding_never_blocks_appends_when_the_collector_does_not_read(state):
    """A collector that accepts the connection but never reads: appends go on, stop() returns."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # never accepted, never read: the kernel's buffers fill, then sends stall
    try:
        trail = AuditTrail(state / AUDIT_FILE)
        fwd = Forwarder(trail.path, state, forwarding(f"syslog+tcp://127.0.0.1:{listener.getsockname()[1]}"),
                        send_timeout=1.0, **FAST).start()
        started = time.monotonic()
        for i in range(300):
            trail.append("action.target", operator="alice", output="y" * 4000, n=i)
        assert time.monotonic() - started < 10
        assert not fwd.drain(0.5)
        t = time.monotonic()
        fwd.stop(timeout=1.0)
        assert time.monotonic() - t < 4
        assert Cursor.load(state / FORWARD_CURSOR).seq < 300
    finally:
        listener.close()


def test_cursor_that_does_not_match_the_trail_sends_everything_again(collector, state):
    trail = AuditTrail(state / AUDIT_FILE)
    fill(trail, 4)
    Cursor(3, 100, "f" * 64).save(state / FORWARD_CURSOR)  # not where record 3 ends
    warnings = []
    fwd = Forwarder(trail.path, state, forwarding(collector.url), warn=warnings.append, **FAST).start()
    assert fwd.drain(10)
    fwd.stop()
    assert any("does not match" in w for w in warnings)
    collector.wait_for(has_seqs(4))
    assert Cursor.load(state / FORWARD_CURSOR).seq == 4


def test_one_forwarder_per_state_dir(collector, state):
    """A second forwarder (another console) waits for the lock and sends nothing; the first sends all."""
    trail = AuditTrail(state / AUDIT_FILE)
    fill(trail, 3)
    first = Forwarder(trail.path, state, forwarding(collector.url), **FAST).start()
    assert first.drain(10)
    second = Forwarder(trail.path, state, forwarding(collector.url), **FAST).start()
    fill(trail, 2)
    started = time.monotonic()
    assert not second.drain(5)
    assert time.monotonic() - started < 2 and second.status().waiting_for_lock
    assert first.drain(10)
    second.stop()
    first.stop()
    lines = collector.wait_for(has_seqs(5))
    assert assert_in_order_and_identical(lines, 5) == 0


# -- TLS ------------------------------------------------------------------------------------------


def test_tls_with_a_generated_ca_and_server_certificate(rsyslog, state, pki):
    server = rsyslog(pki=pki)
    trail = AuditTrail(state / AUDIT_FILE)
    fill(trail, 6)
    # A CA that did not sign the collector's certificate: nothing is sent, the error says why.
    warnings = []
    wrong = Forwarder(trail.path, state, forwarding(server.url, f'ca_file = "{pki.other_ca_file}"'),
                      warn=warnings.append, **FAST).start()
    assert not wrong.drain(5)
    wrong.stop()
    assert "certificate" in (wrong.status().last_error or "") and warnings
    assert not record_lines(server.lines())

    fwd = Forwarder(trail.path, state, forwarding(server.url, f'ca_file = "{pki.ca_file}"'), **FAST).start()
    assert fwd.drain(10)
    server.restart(down_for=0.2)
    fill(trail, 4)
    assert fwd.drain(15, give_up_when_down=False)
    fwd.stop()
    lines = server.wait_for(has_seqs(10))
    assert_in_order_and_identical(lines, 10)
    assert compare_with_collector(trail.path, server.output).ok


def test_tls_client_certificate_when_the_collector_requires_one(rsyslog, state, pki):
    server = rsyslog(pki=pki, client_auth=True)
    trail = AuditTrail(state / AUDIT_FILE)
    fill(trail, 3)
    extra = f'ca_file = "{pki.ca_file}"\ncert_file = "{pki.client_cert}"\nkey_file = "{pki.client_key}"'
    fwd = Forwarder(trail.path, state, forwarding(server.url, extra), **FAST).start()
    assert fwd.drain(10)
    fwd.stop()
    assert_in_order_and_identical(server.wait_for(has_seqs(3)), 3)


# -- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, message", [
    ('url = "https://logs:6514"', "audit.forward.url: expected syslog+tcp://HOST:PORT or syslog+tls://HOST:PORT"),
    ('url = "syslog+tcp://logs"', "audit.forward.url: no port in 'syslog+tcp://logs'"),
    ('url = "syslog+tcp://:6514"', "audit.forward.url: no host in"),
    ('url = "syslog+tcp://logs:70000"', "audit.forward.url: bad port"),
    ('url = "syslog+tls://logs:6514"', "audit.forward.ca_file: syslog+tls needs ca_file"),
    ('url = "syslog+tcp://logs:6514"\nca_file = "ca.pem"', "audit.forward.ca_file: only for syslog+tls:// URLs"),
    ('url = "syslog+tls://logs:6514"\nca_file = "ca.pem"\nkey_file = "k.pem"', "audit.forward.key_file: needs cert_file"),
    ('url = "syslog+tcp://logs:6514"\nfacility = "local9"', "audit.forward.facility: unknown facility 'local9'"),
    ('url = "syslog+tcp://logs:6514"\napp_name = "ops gate"', "audit.forward.app_name: expected 1 to 48"),
    ('url = "syslog+tcp://logs:6514"\nhead_interval = "soon"', "audit.forward.head_interval: bad duration"),
    ('url = "syslog+tcp://logs:6514"\nport = 1', "audit.forward.port: unknown key"),
    ('facility = "auth"', "audit.forward.url: missing required key"),
])
def test_config_errors_name_the_key_path(body, message):
    with pytest.raises(ConfigError) as e:
        parse_config(f"[audit.forward]\n{body}\n".encode())
    assert any(p.startswith(f"config.toml: {message}") for p in e.value.problems), e.value.problems


def test_config_defaults_and_the_example_block():
    assert parse_config(b"").forwarding is None
    with pytest.raises(ConfigError) as e:
        parse_config(b"[audit]\nship = true\n")
    assert e.value.problems == ["config.toml: audit.ship: unknown key (expected one of: forward)"]
    fw = forwarding("syslog+tls://logs.example.net:6514", 'ca_file = "~/ca.pem"')
    assert (fw.transport, fw.host, fw.port, fw.app_name, fw.facility, fw.head_interval) == (
        "tls", "logs.example.net", 6514, "opsgate", "authpriv", 60.0)
    assert fw.ca_file == Path("~/ca.pem").expanduser()
    example = (ROOT / "config.example.toml").read_text()
    assert load_config(ROOT / "config.example.toml").forwarding is None  # off unless uncommented
    block = re.search(r"^# \[audit\.forward\]\n(?:#.*\n)+", example, re.M).group(0)
    uncommented = "\n".join(line[2:] for line in block.splitlines())
    fw = parse_config(uncommented.encode()).forwarding
    assert fw is not None and fw.transport == "tls"


# -- through the real CLI -------------------------------------------------------------------------


def test_opsgate_run_forwards_and_the_collector_copy_verifies(collector, tmp_path, sshd):
    config = write_config(tmp_path, sshd, extra=f'[audit.forward]\nurl = "{collector.url}"\nhead_interval = "5s"\n')
    state = tmp_path / "state"
    r = opsgate(config, state, "run", "hello")
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr
    lines = collector.wait_for(has_seqs(5))
    assert [json.loads(parse_collector_line(line)[2])["event"] for _, line in record_lines(lines)] == [
        "config.loaded", "action.start", "action.target", "action.target", "action.end"]
    r = opsgate(config, state, "audit", "verify", "--against", str(collector.output))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "collector copy matches the local chain: 5 records up to seq 5" in r.stdout
    assert Cursor.load(state / FORWARD_CURSOR).seq == 5

    r = opsgate(config, state, "audit", "forward")
    assert r.returncode == 0 and "nothing new to forward" in r.stdout, r.stdout + r.stderr


def test_a_down_collector_never_blocks_or_fails_opsgate_run(tmp_path, sshd, rsyslog):
    server = rsyslog(start=False)  # configured, not started yet: the collector is down
    config = write_config(tmp_path, sshd, extra=f'[audit.forward]\nurl = "{server.url}"\n')
    state = tmp_path / "state"
    started = time.monotonic()
    r = opsgate(config, state, "run", "hello")
    elapsed = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    assert "t1  ok" in r.stdout
    warnings = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "not yet at the collector" in warnings[0] and "audit forward" in warnings[0]
    assert elapsed < 15
    r = opsgate(config, state, "audit", "forward")
    assert r.returncode == 1 and "cannot connect" in r.stderr

    server.start()
    r = opsgate(config, state, "audit", "forward")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "forwarded seq 1-5" in r.stdout and "head anchored at seq 5" in r.stdout
    server.wait_for(has_seqs(5))
    r = opsgate(config, state, "audit", "verify", "--against", str(server.output))
    assert r.returncode == 0, r.stdout + r.stderr


def test_audit_forward_follow_keeps_going_until_interrupted(collector, tmp_path, state):
    config = tmp_path / "opsgate.toml"
    config.write_text(f'[audit.forward]\nurl = "{collector.url}"\n')
    trail = AuditTrail(state / AUDIT_FILE)
    fill(trail, 2)
    proc = popen_opsgate("audit", "forward", "--follow", config=config, state=state, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        collector.wait_for(has_seqs(2))
        fill(trail, 3)
        collector.wait_for(has_seqs(5))
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert out.startswith("forwarding ") and "stopped at seq 5\n" in out


def test_audit_forward_without_config_is_a_usage_error(tmp_path, state):
    config = tmp_path / "opsgate.toml"
    config.write_text("")
    r = opsgate(config, state, "audit", "forward")
    assert r.returncode == 2 and "no [audit.forward]" in r.stderr


def test_unreachable_port_is_reported(state):
    trail = AuditTrail(state / AUDIT_FILE)
    fill(trail, 1)
    fwd = Forwarder(trail.path, state, forwarding(f"syslog+tcp://127.0.0.1:{free_port()}"), **FAST).start()
    assert not fwd.drain(5)
    fwd.stop()
    assert "cannot connect" in fwd.status().last_error and fwd.status().cursor.seq == 0
