"""The CLI's byte path (printable ASCII to a file or a pipe) writes what the text path would, in order."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import opsgate.cli.run as run_module
from opsgate.actions.display import escape_stream, plain_stream
from opsgate.actions.outcome import Chunk
from opsgate.cli.run import CliFrontend


def test_plain_stream_is_escape_stream_for_plain_text_and_none_otherwise():
    for data in (b"a\tb\n", b"x\r\ny\n", b"\n\n"):
        assert plain_stream(data).decode() == escape_stream(data, sgr=True)
    for data in (b"\x1b[31mred\n", b"bell\x07\n", b"caf\xc3\xa9\n", b"cr\ronly\n", b"\x9b2J\n"):
        assert plain_stream(data) is None


def frontend() -> tuple[CliFrontend, io.BytesIO]:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", write_through=False)
    fe = CliFrontend(None, out=out)
    fe.width = 2
    return fe, raw


def test_mixed_plain_and_hostile_chunks_keep_their_order_and_prefixes():
    fe, raw = frontend()
    fe._print("run 1: start")
    for data in (b"one\ntw", b"o\n\x1b]0;title\x07three\n", b"four\nfive\n"):
        fe.on_output(Chunk("t1", "stdout", data, 0.0))
    fe.on_output(Chunk("t1", "stderr", b"oops\n", 0.0))
    fe._print("--- done")
    assert raw.getvalue().decode() == ("run 1: start\nt1 | one\nt1 | two\nt1 | ^[]0;title^Gthree\n"
                                       "t1 | four\nt1 | five\nt1 ! oops\n--- done\n")


CHUNKS = st.lists(st.tuples(st.sampled_from(["web-1", "db"]), st.sampled_from(["stdout", "stderr"]),
                            st.one_of(st.binary(max_size=80),
                                      st.lists(st.sampled_from([b"plain line\n", b"a\tb", b"\n", b"\r", b"\r\n",
                                                                b"\x1b[31mred\x1b[0m", b"\x07", b"caf\xc3\xa9",
                                                                b"\xe2\x80\xae", b"x" * 40]),
                                               max_size=8).map(b"".join))),
                  max_size=14)


@settings(max_examples=300, deadline=None)
@given(CHUNKS, st.sampled_from([None, 7, 64]))
def test_the_byte_path_writes_what_the_text_path_writes(chunks, partial_max):
    """Any chunking of any bytes: the byte path (a file or a pipe) and the text path give the same lines."""
    text_out = io.StringIO()  # no bytes under it: every line through escape_stream
    by_text = CliFrontend(None, out=text_out)
    by_bytes, raw = frontend()
    by_text.width = by_bytes.width = 5
    with pytest.MonkeyPatch.context() as mp:
        if partial_max is not None:  # lines without end, cut into pieces
            mp.setattr(run_module, "PARTIAL_MAX", partial_max)
        for fe in (by_text, by_bytes):
            for target, stream, data in chunks:
                fe.on_output(Chunk(target, stream, data, 0.0))
            for target in ("web-1", "db"):
                fe.on_target_done(type("R", (), {"target": target})())
            fe._print("--- end")
    by_bytes.out.flush()
    assert raw.getvalue().decode() == text_out.getvalue()


def test_a_chunk_is_written_from_one_replace_without_joining_it_to_the_carried_line():
    fe, raw = frontend()
    for data in (b"abc", b"def\nghi\njk", b"l\n", b"\n", b"mn"):
        fe.on_output(Chunk("t1", "stdout", data, 0.0))
    fe.on_target_done(type("R", (), {"target": "t1"})())
    fe.out.flush()
    assert raw.getvalue() == b"t1 | abcdef\nt1 | ghi\nt1 | jkl\nt1 | \nt1 | mn\n"


class ShortWrites(io.RawIOBase):
    """A raw stream that takes at most 5 bytes per write, as an unbuffered stdout (python -u) may."""

    def __init__(self):
        self.data = bytearray()

    def writable(self):
        return True

    def write(self, b):
        taken = bytes(b[:5])
        self.data += taken
        return len(taken)


def test_raw_and_line_output_survive_short_writes():
    sink = ShortWrites()
    fe = CliFrontend(None, out=io.StringIO(), raw_out=sink)
    fe.on_output(Chunk("t1", "stdout", b"0123456789abcdef\x1b[2J", 0.0))
    assert bytes(sink.data) == b"0123456789abcdef\x1b[2J"
    lines = ShortWrites()
    fe = CliFrontend(None, out=io.TextIOWrapper(lines, write_through=True))
    fe.out_bytes = lines  # what `python -u` gives: sys.stdout.buffer is the raw file
    fe.width = 2
    fe.on_output(Chunk("t1", "stdout", b"one\ntwo\nthree", 0.0))
    fe.on_target_done(type("R", (), {"target": "t1"})())
    assert bytes(lines.data) == b"t1 | one\nt1 | two\nt1 | three\n"
