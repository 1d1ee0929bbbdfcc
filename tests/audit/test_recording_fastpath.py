"""Recordings, the hot path: ASCII chunks escaped as bytes must give exactly what the JSON encoder gives,
batches written with os.writev survive short writes and report a failed one at once, and one flusher
thread serves every recording (a forked child gets its own)."""

from __future__ import annotations

import codecs
import errno
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from opsgate.console.audit import recording as recording_module
from opsgate.console.audit.recording import Recording
from tests.helpers import ROOT

RED, RESET = "\x1b[31m", "\x1b[0m"


def new_recording(path: Path) -> Recording:
    return Recording(path, run="r", action="a", target="t", command="c")


def expected_events(chunks: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """What the recording of ``chunks`` holds, computed as the JSON-encoder path always did: decode per
    stream, bare LF to CRLF (a CR ending a chunk pairs with an LF starting the next), stderr in red."""
    decoders = {s: codecs.getincrementaldecoder("utf-8")(errors="replace") for s in ("stdout", "stderr")}
    ends_cr = dict.fromkeys(decoders, False)
    out: list[tuple[str, str]] = []

    def add(stream: str, text: str) -> None:
        if not text:
            return
        crlf = text.replace("\r\n", "\n").replace("\n", "\r\n")
        if ends_cr[stream] and text[0] == "\n":
            crlf = crlf[1:]
        ends_cr[stream] = text[-1] == "\r"
        out.append(("o", f"{RED}{crlf}{RESET}" if stream == "stderr" else crlf))

    for stream, data in chunks:
        add(stream, decoders[stream].decode(data))
    for stream in ("stdout", "stderr"):  # close() flushes stdout's decoder first, then stderr's
        add(stream, decoders[stream].decode(b"", final=True))
    return out


# Bytes that exercise every branch: plain ASCII, the characters JSON escapes, CR/LF, other controls
# (which leave the fast path), and the pieces of multi-byte and invalid UTF-8.
byte = st.sampled_from([b"a", b"Z", b"0", b" ", b"\\", b'"', b"\r", b"\n", b"\t", b"\x1b", b"\x00", b"\x7f",
                        b"/", "é".encode()[:1], "é".encode()[1:], "🚀".encode()[:2], "🚀".encode()[2:], b"\xff"])
plain = st.sampled_from([b"a", b" ", b"\\", b'"', b"\r", b"\n"])  # the fast path's own bytes
stream = st.sampled_from(["stdout", "stderr"])
chunk = st.one_of(st.tuples(stream, st.lists(plain, min_size=1, max_size=6).map(b"".join)),
                  st.tuples(stream, st.lists(byte, min_size=1, max_size=12).map(b"".join)))


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(chunk, max_size=10))
@example(chunks=[("stdout", b"a\r"), ("stdout", b"\nb")])  # a CRLF split between two fast chunks
@example(chunks=[("stdout", "é".encode()[:1]), ("stdout", "é".encode()[1:] + b"\\\n")])  # then a plain chunk
def test_events_are_those_of_the_json_encoder_byte_for_byte(tmp_path_factory, chunks):
    path = tmp_path_factory.mktemp("rec") / "t.cast"
    rec = new_recording(path)
    for stream, data in chunks:
        rec.output(stream, data, t=0.0)
    digest = rec.close()
    raw = path.read_bytes()
    assert digest == hashlib.sha256(raw).hexdigest()
    lines = raw.decode("utf-8").splitlines(keepends=True)[1:]
    events = [json.loads(line) for line in lines]
    assert [(kind, text) for _, kind, text in events] == expected_events(chunks)
    for line, (t, kind, text) in zip(lines, events):  # the bytes path escapes exactly as the encoder does
        assert line == f"[{t:.6f}, {json.dumps(kind)}, {json.dumps(text, ensure_ascii=False)}]\n"


def test_a_flood_of_plain_text_is_recorded_whole(tmp_path):
    """Chunks of a large ASCII flood, split anywhere (in a CRLF too), come back as the flood with CRLF."""
    text = b"".join(b"line %d with \\ and \"quotes\"\n" % i for i in range(20_000)) + b"cr\r\nbare cr\r"
    rec = new_recording(tmp_path / "f.cast")
    for i in range(0, len(text), 65_537):
        rec.output("stdout", text[i:i + 65_537])
    rec.output("stderr", b"err\n" * 10_000)  # a large stderr chunk, in red
    rec.close()
    raw = (tmp_path / "f.cast").read_text(encoding="utf-8")
    *lines, err = raw.splitlines()[1:]
    got = "".join(json.loads(line)[2] for line in lines)
    assert got == text.decode().replace("\r\n", "\n").replace("\n", "\r\n")
    assert json.loads(err)[2] == RED + "err\r\n" * 10_000 + RESET
    for line in [*lines, err]:
        t, kind, text_ = json.loads(line)
        assert line == f"[{t:.6f}, {json.dumps(kind)}, {json.dumps(text_, ensure_ascii=False)}]"


def test_short_writes_are_resumed(tmp_path, monkeypatch):
    """os.writev may write less than asked (a pipe, a signal): the rest follows, in order, nothing twice."""
    real = recording_module.os.writev
    calls = []

    def stingy(fd, buffers):
        calls.append(len(buffers))
        return real(fd, [bytes(memoryview(buffers[0])[:7])])  # at most 7 bytes of the first buffer

    monkeypatch.setattr(recording_module.os, "writev", stingy)
    rec = new_recording(tmp_path / "s.cast")
    rec.output("stdout", b"x" * 1000 + b"\n")
    rec.output("stderr", b"oops\n")
    rec.marker("end ok exit 0")
    digest = rec.close()
    monkeypatch.undo()
    raw = (tmp_path / "s.cast").read_bytes()
    assert digest == hashlib.sha256(raw).hexdigest() and len(calls) > 100
    _, out, err, mark = raw.decode().splitlines()
    assert json.loads(out)[2] == "x" * 1000 + "\r\n"
    assert json.loads(err)[2] == f"{RED}oops\r\n{RESET}"
    assert json.loads(mark)[1:] == ["m", "end ok exit 0"]


def test_one_flusher_thread_for_all_recordings_and_none_when_all_are_closed(tmp_path, monkeypatch):
    flusher = recording_module._Flusher()  # its own, so recordings other tests left open do not count
    monkeypatch.setattr(recording_module, "_FLUSHER", flusher)
    recs = [new_recording(tmp_path / f"{i}.cast") for i in range(20)]
    thread = flusher._thread
    assert thread is not None and thread.is_alive() and len(flusher._open) == 20
    for rec in recs:
        rec.output("stdout", b"quiet\n")
    for rec in recs[:10]:
        rec.close()
    assert flusher._thread is thread and len(flusher._open) == 10
    for rec in recs[10:]:
        rec.close()
    thread.join(timeout=30)  # it notices on its next tick that nothing is open, and ends
    assert not thread.is_alive() and flusher._thread is None
    again = new_recording(tmp_path / "again.cast")  # a new recording starts one again
    assert flusher._thread is not None and flusher._thread.is_alive()
    again.close()
    assert all(b"quiet" in rec.path.read_bytes() for rec in recs)


FILE_LIMIT = r"""
import json, resource, signal, sys
from pathlib import Path
from opsgate.console.audit.recording import Recording, file_sha256
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, a write fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
heard = []
rec = Recording(Path(sys.argv[1]), run="r", action="a", target="t", command="c", on_error=heard.append)
for i in range(40):  # 40 chunks of 10 kB on the fast path: the file would pass the limit halfway
    rec.output("stdout", (b"%09d\n" % i) * 1000)
before_close = list(heard)
rec.marker("end ok exit 0")
digest = rec.close()
print(json.dumps({"heard": heard, "before_close": before_close, "error": rec.error, "digest": digest,
                  "file": file_sha256(rec.path)}))
"""


def test_a_write_that_fails_midway_is_reported_once_at_once_and_nothing_more_is_written(tmp_path):
    """A file-size limit stands in for a full disk: the write that crosses it is short, the next fails.
    on_error hears of it while output still arrives (not at close), once; close returns the file's hash."""
    path = tmp_path / "limited.cast"
    result = subprocess.run([sys.executable, "-c", FILE_LIMIT, str(path)], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert len(out["heard"]) == 1 and out["before_close"] == out["heard"] and out["error"] == out["heard"][0]
    assert "cannot write the recording" in out["error"] and "File too large" in out["error"]
    assert out["digest"] == out["file"] and path.stat().st_size == 100_000
    lines = path.read_bytes().split(b"\n")
    assert all(json.loads(line) for line in lines[:-1])  # complete events, then the cut one
    assert b"end ok" not in path.read_bytes()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_flushes_its_own_recordings(tmp_path):
    parent = new_recording(tmp_path / "parent.cast")  # the parent's flusher thread is running
    pid = os.fork()
    if pid == 0:  # the child: no flusher thread came along; its first recording starts one
        code = 1
        try:
            rec = new_recording(tmp_path / "child.cast")
            rec.output("stdout", b"from the child\n")
            deadline = time.monotonic() + 30
            while b"from the child" not in rec.path.read_bytes() and time.monotonic() < deadline:
                time.sleep(0.02)  # polling the file for the flusher's write, not a fixed wait
            code = 0 if b"from the child" in rec.path.read_bytes() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    parent.close()
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_large_recording_is_synced_as_it_grows_and_a_failed_sync_is_reported_at_once(tmp_path, monkeypatch):
    """The flusher syncs a recording each SYNC_BYTES (close then has little left); a sync that fails
    (an I/O error the disk reports late) is the recording's failure, heard while the command runs."""
    synced = []
    failed = threading.Event()

    def fdatasync(fd):
        synced.append(os.fstat(fd).st_size)
        if len(synced) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(recording_module, "SYNC_BYTES", 1000)
    monkeypatch.setattr(recording_module.os, "fdatasync", fdatasync)
    heard = []
    rec = Recording(tmp_path / "big.cast", run="r", action="a", target="t", command="c",
                    on_error=lambda error: (heard.append(error), failed.set()))
    rec.output("stdout", b"a" * 2000 + b"\n")  # below FLUSH_BYTES: the flusher writes it, then syncs
    deadline = time.monotonic() + 30
    while not synced and time.monotonic() < deadline:  # polling for the flusher's first sync
        failed.wait(0.05)
    rec.output("stdout", b"b" * 2000 + b"\n")
    assert failed.wait(30), "the failed sync was never reported"
    assert len(heard) == 1 and "cannot sync the recording: Input/output error" in heard[0]
    assert synced[0] > 2000 and rec.error == heard[0]
    rec.close()
    assert rec.error == heard[0]
