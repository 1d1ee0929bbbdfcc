"""The CLI's byte path (printable ASCII to a file or a pipe) writes what the text path would, in order."""

from __future__ import annotations

import io

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
