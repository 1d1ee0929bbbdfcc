"""Recordings: asciicast v2 that asciinema itself can read, written incrementally, hashed on close."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from opsgate.console.audit.recording import Recording, RecordingError, recording_path
from tests.helpers import ROOT

ASCIINEMA = Path(sys.executable).parent / "asciinema"


def new_recording(tmp_path: Path, target: str = "web1") -> Recording:
    return Recording(recording_path(tmp_path, "run-0001", target), run="run-0001", action="restart-nginx",
                     target=target, command="systemctl restart nginx", width=100, height=30)


def events(path: Path) -> tuple[dict, list[list]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]


def asciinema_cat(path: Path) -> str:
    # A new session has no controlling terminal, so asciinema does not switch one to raw mode.
    result = subprocess.run([str(ASCIINEMA), "cat", str(path)], capture_output=True, start_new_session=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode("utf-8")


def test_header_markers_and_hash(tmp_path):
    rec = new_recording(tmp_path)
    rec.marker("step-up otp")
    rec.marker("start")
    rec.output("stdout", b"hello\n")
    rec.marker("end ok exit 0")
    digest = rec.close()
    assert rec.path == tmp_path / "recordings" / "run-0001" / "web1.cast"
    assert digest == hashlib.sha256(rec.path.read_bytes()).hexdigest()
    assert rec.close() == digest  # idempotent
    header, evs = events(rec.path)
    assert header["version"] == 2 and (header["width"], header["height"]) == (100, 30)
    assert header["title"] == "run-0001 restart-nginx@web1" and header["command"] == "systemctl restart nginx"
    assert header["env"] == {"TERM": "xterm-256color"} and abs(header["timestamp"] - time.time()) < 60
    assert [e[2] for e in evs if e[1] == "m"] == ["step-up otp", "start", "end ok exit 0"]
    times = [e[0] for e in evs]
    assert times == sorted(times)
    assert all(len(line.split(",")[0].split(".")[1]) == 6 for line in rec.path.read_text().splitlines()[1:])
    assert oct(rec.path.stat().st_mode & 0o777) == "0o600"


@pytest.mark.system  # the asciinema CLI reads it back
def test_asciinema_cat_reproduces_stdout_stderr_and_split_characters(tmp_path):
    rec = new_recording(tmp_path)
    text = "héllo wörld 日本 🚀\n"
    data = text.encode()
    for i in range(len(data)):  # one byte per chunk: every multi-byte character is split
        rec.output("stdout", data[i:i + 1])
    rec.output("stderr", b"disk almost full\n")
    rec.output("stdout", "done ✓".encode()[:-1])
    rec.output("stdout", "done ✓".encode()[-1:] + b"\n")
    rec.close()
    out = asciinema_cat(rec.path)
    assert "héllo wörld 日本 🚀\r\n" in out
    assert "\x1b[31mdisk almost full\r\n\x1b[0m" in out
    assert "done ✓\r\n" in out and "\ufffd" not in out


@pytest.mark.system  # the asciinema CLI reads it back
def test_newlines_become_crlf_once(tmp_path):
    rec = new_recording(tmp_path)
    rec.output("stdout", b"a\r")
    rec.output("stdout", b"\nb\nc\r\n")
    rec.close()
    assert asciinema_cat(rec.path) == "a\r\nb\r\nc\r\n"


@pytest.mark.system  # the asciinema CLI reads it back
def test_invalid_bytes_and_a_cut_character_at_close_become_replacement_chars(tmp_path):
    rec = new_recording(tmp_path)
    rec.output("stdout", b"ok \xff ")
    rec.output("stdout", "é".encode()[:1])  # the command ended mid-character
    rec.close()
    assert asciinema_cat(rec.path) == "ok \ufffd \ufffd"


@pytest.mark.system  # the asciinema CLI reads it back
def test_crash_keeps_what_was_received(tmp_path):
    path = recording_path(tmp_path, "run-crash", "db1")
    script = (
        "import os, sys, time; from pathlib import Path; from opsgate.console.audit.recording import Recording\n"
        "rec = Recording(Path(sys.argv[1]), run='run-crash', action='a', target='db1', command='c')\n"
        "rec.output('stdout', b'before the crash\\n')\n"
        "time.sleep(0.5)\n"
        "os._exit(9)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT)
    assert result.returncode == 9
    assert "before the crash\r\n" in asciinema_cat(path)


def test_output_is_written_while_the_command_runs(tmp_path):
    rec = new_recording(tmp_path)
    rec.output("stdout", b"still running\n")
    deadline = time.monotonic() + 5
    while b"still running" not in rec.path.read_bytes():
        assert time.monotonic() < deadline, "output never reached the file"
        time.sleep(0.02)
    rec.output("stdout", b"x" * 100_000)  # past the batch size: written by the caller at once
    assert rec.path.stat().st_size > 100_000
    rec.close()


@pytest.mark.system  # the asciinema CLI reads it back
def test_concurrent_writers_lose_nothing(tmp_path):
    rec = new_recording(tmp_path)

    def pump(stream: str, tag: str) -> None:
        for i in range(500):
            rec.output(stream, f"{tag}{i}\n".encode())

    threads = [threading.Thread(target=pump, args=(s, f"{s[3]}{k}-")) for k in range(2) for s in ("stdout", "stderr")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec.close()
    out = asciinema_cat(rec.path)
    for tag in ("o0-", "o1-", "e0-", "e1-"):
        assert all(f"{tag}{i}\r\n" in out for i in range(500))
    _, evs = events(rec.path)
    assert [e[0] for e in evs] == sorted(e[0] for e in evs)


def test_recording_path_cannot_escape_and_recordings_are_not_overwritten(tmp_path):
    path = recording_path(tmp_path, "../../x", "../etc/passwd")
    assert path.parent.parent == tmp_path / "recordings" and ".." not in path.parts
    new_recording(tmp_path).close()
    with pytest.raises(RecordingError, match="exists already"):
        new_recording(tmp_path)
    with pytest.raises(ValueError):
        new_recording(tmp_path, "web2").output("stdin", b"x")
