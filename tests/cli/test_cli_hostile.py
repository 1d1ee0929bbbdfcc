"""What the operator and the reviewer see is what happened: hostile remote output, a MITM's version line,
edited audit records, a collector's file and recordings never drive their terminal through the CLI.

The targets are the demo's loopback SSH server (no system sshd needed); the hostile output is a file each
target ``cat``s. ``opsgate run`` is checked piped and on a pty (where resets and row fitting apply), with
``--raw`` byte-exact; ``opsgate replay`` in both modes; ``opsgate audit`` over a trail someone edited.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import termios

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opsgate.actions.display import RESET, TERMINAL_RESET
from opsgate.actions.outcome import Chunk
from opsgate.cli.run import CliFrontend
from opsgate.console.audit.forward.wire import SD_ID
from opsgate.console.audit.trail import AuditTrail
from opsgate.console.paths import AUDIT_FILE

from tests.helpers.cli import popen_opsgate, read_until, run_opsgate
from tests.helpers.hostile import (CLIPBOARD, CORPUS, HOSTILE_BANNER, SCENARIO, BannerServer, assert_inert, pyte_screen,
                                   rechain)
from tests.helpers.tui_fixtures import start_demo

TARGET = "db-primary"
OUT = SCENARIO + b"".join(CORPUS[k] + b"\n" for k in sorted(CORPUS) if k != "very long line")
ERR = b"warn: \x1b]0;title from stderr\x07\x1b[31mred\x1b[0m\r\x1b[2Kerased?\n"
PREFIXES = (f"{TARGET} | ", f"{TARGET} ! ", f"{TARGET} + ")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The demo's targets, one that prints the hostile corpus, one behind a MITM; a config and a state dir."""
    root = tmp_path_factory.mktemp("hostile")
    demo = start_demo(root)
    banner = BannerServer(HOSTILE_BANNER).__enter__()
    try:
        host = demo.hosts_dir / TARGET
        (host / "out.bin").write_bytes(OUT)
        (host / "err.bin").write_bytes(ERR)
        (host / "long.bin").write_bytes(b"x" * 150 + b"web-1 | faked by wrapping\n" + CORPUS["very long line"] + b"\n")
        config = root / "opsgate.toml"
        config.write_text(demo.config_text() + f"""
[targets.mitm]
host = "127.0.0.1"
port = {banner.port}
user = "x"
identity_file = "{demo.key_path}"

[actions.evil]
title = "Hostile output"
risk = "low"
targets = ["{TARGET}"]
command = "cat out.bin; cat err.bin >&2; exit 3"

[actions.evil-long]
title = "Very long lines"
risk = "low"
targets = ["{TARGET}"]
command = "cat long.bin"

[actions.evil-two]
title = "Hostile on two targets"
risk = "low"
targets = ["{TARGET}", "web-1"]
command = "printf 'ok\\\\033]52;c;QUJD\\\\007\\\\n'"

[actions.via-mitm]
title = "Through a MITM"
risk = "low"
targets = ["mitm"]
command = "true"
""")
        yield demo, config, root / "state"
    finally:
        banner.__exit__()
        demo.close()


def opsgate(env, *args, **kwargs):
    _, config, state = env
    return run_opsgate(*args, config=config, state=state, **kwargs)


def last_run(state) -> dict:
    records = list(AuditTrail(state / AUDIT_FILE).records())
    return next(r for r in reversed(records) if r["event"] == "action.target")


# -- opsgate run -------------------------------------------------------------------------------------------


def test_run_piped_shows_remote_output_as_text_with_real_prefixes(env):
    result = opsgate(env, "run", "evil", "--yes")
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert_inert(out, sgr=True, where="opsgate run stdout")
    lines = out.splitlines()
    remote = [line for line in lines if line.startswith(PREFIXES)]
    own = [line for line in lines if not line.startswith(PREFIXES)]
    assert own[0].startswith("run ") and own[1].startswith("--- run ") and own[2].startswith(f"{TARGET}  exit 3")
    assert len(own) == 3, own  # nothing remote made a line of its own
    plain = [line.removesuffix(RESET) for line in lines]  # a block that used colour ends every line plainly
    assert f"{TARGET} | ERROR: replication broken^M^[[2K^[[1A^[[2Kweb-1 | replication healthy" in plain
    assert f"{TARGET} | db-9 | failover done" in plain
    assert any("^[]52;c;" in line for line in remote) and any("rm: deleted" in line for line in remote)
    assert any(line.startswith(f"{TARGET} ! warn: ^[]0;title from stderr^G") for line in remote)
    assert "\\x9b2J" in out  # C1 as UTF-8 and as a raw byte: shown
    for line in lines:
        if "\x1b" in line:
            assert line.endswith(RESET), line  # a line that used colour ends plainly


def run_on_pty(env, *args, columns: int = 100) -> tuple[int, str]:
    _, config, state = env
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = popen_opsgate(*args, config=config, state=state, stdin=subprocess.DEVNULL, stdout=slave,
                         stderr=subprocess.PIPE)
    os.close(slave)
    try:
        data = read_until(master, proc, None)
        proc.wait(timeout=60)
    finally:
        os.close(master)
        proc.stderr.close()
    return proc.returncode, data.decode("utf-8")


def test_run_on_a_terminal_every_line_starts_with_a_reset_and_the_summary_is_intact(env):
    code, out = run_on_pty(env, "run", "evil", "--yes")
    assert code == 1
    text = out.replace("\r\n", "\n")
    assert_inert(text, sgr=True, where="opsgate run on a pty")
    lines = text.rstrip("\n").split("\n")
    assert all(line.startswith(RESET) for line in lines), [line for line in lines if not line.startswith(RESET)]
    screen = [row + " " for row in pyte_screen(out, columns=100, lines=200) if row]  # " ": an empty line's prefix
    assert screen[-2].startswith("--- run ") and screen[-1].startswith(f"{TARGET}  exit 3")
    assert all(row.startswith(PREFIXES + ("run ", "--- run ", f"{TARGET}  exit")) for row in screen), \
        [row for row in screen if not row.startswith(PREFIXES + ("run ", "--- run ", f"{TARGET}  exit"))]


def test_run_on_a_terminal_no_remote_text_starts_a_row_by_wrapping(env):
    code, out = run_on_pty(env, "run", "evil-long", "--yes", columns=80)
    assert code == 0
    assert_inert(out.replace("\r\n", "\n"), sgr=True)
    tail = out[-4000:]  # the end of the 200 kB line and the summary
    rows = [row + " " for row in pyte_screen(out, columns=80, lines=2700) if row]
    assert all(row.startswith(PREFIXES + ("run ", "--- run ", f"{TARGET}  ok")) for row in rows), \
        [row for row in rows if not row.startswith(PREFIXES + ("run ", "--- run ", f"{TARGET}  ok"))][:3]
    assert f"{TARGET} + " in tail and rows[-1].startswith(f"{TARGET}  ok")
    assert not any(row.startswith("web-1 |") for row in rows)


def test_raw_writes_the_targets_bytes_exactly_and_the_rest_to_stderr(env):
    result = opsgate(env, "run", "evil", "--yes", "--raw", text=False)
    assert result.returncode == 1
    assert result.stdout == OUT  # byte-exact, as before the sanitiser
    err = result.stderr.decode()
    assert_inert(err, sgr=True, where="--raw stderr")
    assert "--- run " in err and f"{TARGET}  exit 3" in err and f"{TARGET} ! warn: ^[]0;" in err


def test_raw_is_for_one_target_and_never_a_terminal(env):
    two = opsgate(env, "run", "evil-two", "--yes", "--raw")
    assert two.returncode == 2 and "one target" in two.stderr
    code, out = run_on_pty(env, "run", "evil", "--yes", "--raw")
    assert code == 2 and "\x1b" not in out


def test_a_mitm_version_line_reaches_no_message_record_or_terminal(env):
    result = opsgate(env, "run", "via-mitm", "--yes")
    assert result.returncode == 1
    assert_inert(result.stdout, where="stdout")
    assert_inert(result.stderr, where="stderr")
    assert "Incompatible version (^[]52;c;" in result.stdout
    record = last_run(env[2])
    assert record["target"] == "mitm" and record["outcome"] == "unreachable"
    assert_inert(record["error"], where="the audit record")
    shown = opsgate(env, "audit", "tail", "-n", "3")
    assert_inert(shown.stdout)
    assert "error=\"mitm: SSH handshake with" in shown.stdout  # cut at 60 characters, as every value


# -- opsgate replay ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evil_run(env):
    result = opsgate(env, "run", "evil", "--yes")
    assert result.returncode == 1
    return last_run(env[2])


def test_replay_header_and_verdict_come_from_the_trail_after_a_reset(env, evil_run):
    result = opsgate(env, "replay", evil_run["run"], "--speed", "1000", text=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    for s in ("\x1b]", "\x1bP", "\x1b_", "\x1b^", "\x1bX", "\x1b[?2004h", "\x1b[?1000h", "\x1b[6n", "\x1b[21t"):
        assert s not in out, s
    assert not any("\x80" <= c <= "\x9f" for c in out)
    assert CLIPBOARD.decode() not in out  # (a raw 8-bit OSC is U+FFFD text in the recording: harmless)
    end = out.rindex(TERMINAL_RESET) + len(TERMINAL_RESET)
    verdict = out[end:]
    assert "\x1b" not in verdict  # nothing of the recording after the last reset
    assert f"{evil_run['run']} evil@{TARGET}: the audit trail records exit 3" in verdict
    assert "the recording verifies" in verdict
    # What a terminal shows at the end: the trail's verdict, whatever the recording painted before it.
    screen = pyte_screen(out, columns=200, lines=40)
    shown = [row for row in screen if row]
    assert "the audit trail records exit 3" in shown[-2] and "--text" in shown[-1]


def test_replay_text_shows_every_byte_escaped_for_review(env, evil_run):
    result = opsgate(env, "replay", evil_run["run"], "--text")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert_inert(out, where="replay --text")
    assert "\x1b" not in out
    lines = out.splitlines()
    assert lines[0].startswith("=== ") and "the audit trail records exit 3" in lines[0]
    assert lines[-1].startswith("=== end of the recording.") and "exit 3" in lines[-1]
    body = lines[1:-1]
    assert all(line.startswith((f"{TARGET} | ", f"{TARGET} # ")) for line in body), body[:3]
    assert any("rm: deleted /var/lib/pg/base" in line for line in body)  # hidden by SGR 8 on a terminal
    assert any("^[[1A^[[2K=== RUN fake (exit 0) ===" in line for line in body)  # the forged header, as text
    assert f"{TARGET} # end failed exit 3" in body or any(line.startswith(f"{TARGET} # ") for line in body)


# -- opsgate audit -----------------------------------------------------------------------------------------

FAKE_OK = "\r\x1b[2KOK: 12 records, head {head}\x1b[8m"
EDITED_RUN = "20260101T000000Z-aaaaaa"


@pytest.fixture
def edited_trail(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    trail = AuditTrail(state / AUDIT_FILE)
    for i in range(12):
        trail.append("note", operator="alice", run=EDITED_RUN, text=f"record {i}")
    records = list(trail.records())
    head = records[-1]["hash"]
    records[4]["seq"] = FAKE_OK.format(head=head)
    records[5]["time"] = "\x1b]0;pwned\x07\x1b[1A\x1b[2K"
    records[6]["operator"] = "\u009b2J\x1b]52;c;QUJD\x07"
    rechain(state / AUDIT_FILE, records)
    return state, head


def test_verify_cannot_be_made_to_show_ok_by_an_edited_seq(edited_trail):
    state, head = edited_trail
    result = run_opsgate("audit", "verify", state=state)
    assert result.returncode == 1
    assert_inert(result.stdout)
    assert_inert(result.stderr)
    assert result.stdout.startswith("FAIL: ") and "seq is not an integer" in result.stdout
    screen = [row for row in pyte_screen(result.stdout) if row]
    assert not any(row.startswith("OK:") for row in screen) and screen[0].startswith("FAIL:")


def test_tail_and_show_escape_every_field(edited_trail):
    state, _ = edited_trail
    for args in (("audit", "tail", "-n", "20"), ("audit", "show", EDITED_RUN)):
        result = run_opsgate(*args, state=state)
        assert result.returncode == 0, result.stderr
        assert_inert(result.stdout)
        lines = result.stdout.splitlines()
        assert len(lines) == 12 and all(line.startswith("#") for line in lines)
        assert lines[4].startswith("#^M^[[2KOK: 12 records") and "^[]0;pwned^G" in lines[5]
        assert "\\x9b2J" in lines[6]


def test_export_is_json_with_nothing_a_terminal_acts_on(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    trail = AuditTrail(state / AUDIT_FILE)
    trail.append("action.start", operator="alice", run="20260101-aaaaaa01", action="x",
                 reason="\u009b2J\x7f\u202eevil\x1b]52;c;QUJD\x07")
    result = run_opsgate("audit", "export", "20260101-aaaaaa01", state=state)
    assert_inert(result.stdout)
    doc = json.loads(result.stdout)
    assert doc["records"][0]["reason"] == "\u009b2J\x7f\u202eevil\x1b]52;c;QUJD\x07"  # the data, unchanged


def test_verify_against_prints_the_collectors_text_escaped(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    trail = AuditTrail(state / AUDIT_FILE)
    for i in range(3):
        trail.append("note", operator="alice", run=None, text=f"r{i}")
    lines = [line for line in (state / AUDIT_FILE).read_bytes().splitlines()]
    evil = "\x1b]52;c;QUJD\x07\r\x1b[2KOK: collector copy matches\x1b[8m"
    collector = tmp_path / "collector.log"
    collector.write_bytes(b"\n".join(lines) + b"\n" + (
        f'<14>1 2026-01-01T00:00:00Z host opsgate 1 audit.head [{SD_ID} head="{evil}" seq="2"] -\n'
        f'<14>1 2026-01-01T00:00:00Z host opsgate 1 note [{SD_ID} seq="\u009b2J" hash="x"] '
    ).encode() + lines[0] + b"\n")
    result = run_opsgate("audit", "verify", "--against", collector, state=state)
    assert result.returncode == 1
    assert_inert(result.stdout)
    assert_inert(result.stderr)
    assert "FAIL: collector" in result.stdout and "^[]52;c;" in result.stdout
    assert not any(row.startswith("OK: collector") for row in pyte_screen(result.stdout))


# -- the live stream, for any bytes ------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


CHUNKS = st.lists(st.tuples(st.sampled_from(["web-1", "db"]), st.sampled_from(["stdout", "stderr"]),
                            st.one_of(st.binary(max_size=120),
                                      st.lists(st.sampled_from(list(CORPUS.values())[:-1] + [b"\n", b"\r", b"x" * 50]),
                                               max_size=6).map(b"".join))),
                  max_size=12)


@settings(max_examples=150, deadline=None)
@given(CHUNKS, st.booleans())
def test_any_remote_bytes_leave_opsgates_lines_intact(chunks, tty):
    out = _Terminal() if tty else io.StringIO()
    frontend = CliFrontend(None, out=out)
    frontend.width, frontend.columns = 5, 60
    for target, stream, data in chunks:
        frontend.on_output(Chunk(target, stream, data, 0.0))
    for target in ("web-1", "db"):
        frontend.on_target_done(type("R", (), {"target": target})())
    frontend._print("--- run 20260101-aaaaaa01")
    text = out.getvalue()
    assert_inert(text, sgr=True)
    assert text.endswith("--- run 20260101-aaaaaa01\n")
    prefixes = ("web-1 | ", "web-1 ! ", "db    | ", "db    ! ", "--- run ")
    if tty:
        assert all(line.startswith(RESET) for line in text.splitlines())
        rows = [row + " " for row in pyte_screen(text, columns=60, lines=400) if row]
        assert rows[-1] == "--- run 20260101-aaaaaa01 "
        assert all(row.startswith(prefixes + ("web-1 + ", "db    + ")) for row in rows), rows
    else:
        assert all(line.startswith(prefixes) for line in text.splitlines())
