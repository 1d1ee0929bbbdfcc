"""The sanitiser (actions/display.py): every policy against the hostile corpus, and hypothesis over arbitrary
bytes and text: nothing a terminal acts on gets through, outside the allowed SGR subset."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opsgate.actions.display import (RESET, TERMINAL_RESET, ReplayFilter, decode, escape_json, escape_line,
                                     escape_stream, escape_text)

from tests.helpers.hostile import CORPUS, SCENARIO, assert_inert

# A terminal sequence that may come out of the replay filter: a complete CSI or a short escape, never a string.
_REPLAY_ALLOWED = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[ -/]*[0-OQ-WYZ\\`a-~])")
_STRING_INTRODUCERS = ("\x1b]", "\x1bP", "\x1bX", "\x1b^", "\x1b_")


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_every_trick_is_shown_as_text_by_each_policy(name):
    data = CORPUS[name]
    for text in (escape_line(data), escape_text(data), escape_stream(data + b"\n", sgr=False)):
        assert_inert(text, where=name)
    assert_inert(escape_stream(data + b"\n", sgr=True), sgr=True, where=name)
    line = escape_line(data)
    assert "\n" not in line and "\t" not in line
    if b"\x1b" in data and not re.fullmatch(rb"(\x1b\[[0-9;:]*m|[^\x1b])*", data):
        assert "^[" in escape_stream(data + b"\n", sgr=True), "an ESC that is not colour is shown, not dropped"


def test_replacements_are_visible_and_named():
    assert escape_line("\x1b[2J\r\x07\x7f\x00\t\n") == "^[[2J^M^G^?^@^I^J"
    assert escape_line("\u009b2J") == "\\x9b2J"  # C1 as UTF-8
    assert escape_line(b"\x9b2J") == "\\x9b2J"  # the same as a raw 8-bit byte
    assert escape_line("\u202eabc\u2028") == "\\u202eabc\\u2028"
    assert escape_line("\ud800") == "\\ud800"  # a lone surrogate (JSON can carry one) is not even writable
    assert escape_line("héllo ✓ 日本") == "héllo ✓ 日本"
    assert escape_line("x" * 100, limit=10) == "xxxxxxx..."
    assert escape_text("a\tb\r\nc\rd\x1b[8m") == "a\tb\nc^Md^[[8m"


def test_stream_keeps_colours_only_when_asked_and_shows_everything_else():
    data = b"\x1b[1;32mok\x1b[0m \x1b[38:2::1:2:3mx\x1b[0m\r\n\x1b[2Kgone\rback\n"
    assert escape_stream(data, sgr=True) == "\x1b[1;32mok\x1b[0m \x1b[38:2::1:2:3mx\x1b[0m\n^[[2Kgone^Mback\n"
    assert escape_stream(data, sgr=False) == "ok x\n^[[2Kgone^Mback\n"
    assert escape_stream(b"plain ascii\n", sgr=True) == "plain ascii\n"
    assert escape_stream("é ● 日本\n".encode(), sgr=True) == "é ● 日本\n"
    assert escape_stream(b"\xff\xc2\x9b\x9b\n", sgr=True) == "\\xff\\x9b\\x9b\n"


def test_json_documents_keep_their_data():
    import json

    doc = json.dumps({"a": "\x1b]52;c;x\x07 \u009b2J \x7f \u202e"}, ensure_ascii=False)
    shown = escape_json(doc)
    assert_inert(shown)
    assert json.loads(shown) == json.loads(doc)


def test_the_scenario_cannot_fake_a_line_or_hide_one():
    text = escape_stream(SCENARIO + b"\n", sgr=True)
    assert_inert(text, sgr=True)
    lines = text.split("\n")
    assert lines[0] == "ERROR: replication broken^M^[[2K^[[1A^[[2Kweb-1 | replication healthy"  # still there
    assert any("^[]52;c;" in line for line in lines) and any("rm: deleted" in line for line in lines)


# -- the replay filter ----------------------------------------------------------------------------------


def replay(text: str, pieces: int = 1) -> str:
    f = ReplayFilter()
    size = max(1, len(text) // pieces)
    out = "".join(f.feed(text[i:i + size]) for i in range(0, len(text), size))
    return out + f.flush()


def test_replay_keeps_what_a_replay_shows_and_strips_what_drives_the_terminal():
    shown = "\x1b[31mred\x1b[0m\r\n\x1b[1A\x1b[2K\x1b[?1049h\x1b[10;5Hx\x1b(0q\x1b(B\x1b[?25l"
    assert replay(shown) == shown
    for name in ("osc52 clipboard", "osc52 st", "osc0 title", "osc8 hyperlink", "dcs", "apc", "pm", "sos",
                 "device status query", "window ops", "kitty keyboard", "mouse tracking", "full reset",
                 "erase scrollback"):
        out = replay(CORPUS[name].decode("utf-8", "replace"))
        assert "\x1b" not in out.replace("\x1b[200~", "").replace("\x1b[201~", ""), (name, out)
    assert replay("\x1b[?2004h") == ""
    assert replay("a\u009b2Jb\u009d0;t\u009c") == "a\\x9b2Jb\\x9d0;t\\x9c"  # C1 shown, never executed
    assert replay("x\x1b]8;;http://e\x1b\\link\x1b]8;;\x1b\\y") == "xlinky"


def test_replay_holds_a_sequence_cut_between_events_and_drops_a_string_across_them():
    assert replay("a\x1b[31mb", pieces=8) == "a\x1b[31mb"
    f = ReplayFilter()
    assert f.feed("a\x1b]52;c;QU") == "a" and not f.idle
    assert f.feed("JD") == ""
    assert f.feed("\x1b") == ""
    assert f.feed("\\b") == "b" and f.idle
    f = ReplayFilter()
    assert f.feed("x\x1b[1") == "x"
    assert f.flush() == "^[[1"  # the end: what was held is shown, never sent


def test_terminal_reset_leaves_no_mode_on():
    for mode in ("?1049l", "?2004l", "?1000l", "?1006l", "?25h", "?7h", "!p", "0m", "r"):
        assert f"\x1b[{mode}" in TERMINAL_RESET
    assert TERMINAL_RESET.endswith("\r\n") and RESET == "\x1b[0m"


# -- properties --------------------------------------------------------------------------------------------

ESCAPY = st.lists(st.sampled_from([b"\x1b", b"[", b"]", b"P", b"_", b"^", b"X", b"\\", b"\x07", b"\x9b", b"\xc2",
                                   b"\x9d", b"\x9c", b"?", b";", b"1", b"2004", b"m", b"h", b"8", b"\r", b"\n",
                                   b"\t", b"\x7f", b"\x00", b"a", "é".encode(), "\u202e".encode(), b"\xff"]),
                  max_size=60).map(b"".join)
ANY_BYTES = st.one_of(st.binary(max_size=300), ESCAPY)


@settings(max_examples=400, deadline=None)
@given(ANY_BYTES)
def test_no_policy_lets_a_control_through_for_any_bytes(data):
    assert_inert(escape_line(data))
    assert_inert(escape_text(data))
    assert_inert(escape_stream(data, sgr=False))
    assert_inert(escape_stream(data, sgr=True), sgr=True)
    assert "\n" not in escape_line(data)
    assert escape_stream(data, sgr=True).count("\n") == data.replace(b"\r\n", b"\n").count(b"\n")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_no_policy_lets_a_control_through_for_any_text(text):
    assert_inert(escape_line(text))
    assert_inert(escape_text(text))
    escape_line(text).encode("utf-8")  # always writable


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(ESCAPY, st.binary(max_size=80)), max_size=8))
def test_replay_filter_never_emits_a_string_a_query_or_a_c1_for_any_events(events):
    f = ReplayFilter()
    out = "".join(f.feed(decode(e)) for e in events) + f.flush()
    assert not re.search("[\x80-\x9f\ud800-\udfff]", out)
    assert not any(s in out for s in _STRING_INTRODUCERS)
    for m in re.finditer("\x1b", out):
        seq = _REPLAY_ALLOWED.match(out, m.start())
        assert seq is not None, repr(out[m.start():m.start() + 20])
        body = seq.group()
        assert body[-1] not in "nctxyi" or not body.startswith("\x1b["), body  # no query, report or print
        assert not body.startswith(("\x1b[>", "\x1b[<", "\x1b[=")), body
        assert body not in ("\x1bc", "\x1bZ", "\x1b[3J")
        if body.startswith("\x1b[?") and body[-1] == "h":
            assert not set(body[3:-1].split(";")) & {"1000", "1002", "1003", "1006", "2004", "1004"}, body


def test_streaming_is_chunk_fast(monkeypatch):
    """Output with no controls, or with colours only, is checked a chunk at a time (one translate, one SGR
    pass): never the per-character substitution. How fast: benchmarks/cli_stream.py."""
    from opsgate.actions import display

    real, careful = display._STREAM_UNSAFE, []

    class Spy:
        def sub(self, *args, **kwargs):
            careful.append(args)
            return real.sub(*args, **kwargs)

    monkeypatch.setattr(display, "_STREAM_UNSAFE", Spy())
    plain = b"2026-01-01T00:00:00Z web-1 nginx[123]: GET /index.html 200 0.003s\n" * 16_000  # ~1 MB
    coloured = b"\x1b[0;1;32m\xe2\x97\x8f\x1b[0m nginx.service - high performance web server\n" * 16_000
    assert escape_stream(plain, sgr=True) == plain.decode()
    assert escape_stream(coloured, sgr=True) == coloured.decode()
    assert not careful
    assert escape_stream(b"bell \x07\n", sgr=True) == "bell ^G\n" and careful  # the spy sees the careful path
