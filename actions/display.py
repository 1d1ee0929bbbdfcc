"""What untrusted text may do to a terminal: the one sanitiser, with one policy per display context.

Remote output, remote error text (SSH version strings, disconnect messages, a jump host's refusal),
audit records (anyone who can edit the file controls every field) and recordings all end up on the
operator's or the reviewer's terminal. None of it may drive that terminal: move the cursor over
opsgate's own lines, erase them, hide them, set the window title, write the clipboard (OSC 52),
answer queries into the shell's input, or switch modes that outlive opsgate.

The characters that can do that are neutralised into visible, printable text, never silently
dropped, so what was there can still be seen:

- C0 controls (U+0000-U+001F, tab and newline only where the policy keeps them) and DEL become caret
  notation: ESC is ``^[``, CR ``^M``, BEL ``^G``, DEL ``^?``. An escape sequence is thus shown as
  text (``^[[2K``, ``^[]52;c;...^G``): with its ESC gone, the terminal prints it.
- C1 controls (U+0080-U+009F; U+009B is a CSI on terminals and emulators that take 8-bit controls)
  become ``\\x9b``; the same bytes arriving raw (invalid UTF-8) become ``\\x9b`` when decoded, as does
  any other invalid byte. Lone surrogates, bidi overrides and the Unicode line/paragraph separators
  become ``\\u202e`` (they reorder or break a line without being visible).

The policies:

- ``escape_line``: one field of one line (a record value, an error message, a header). Everything
  above, tab and newline included.
- ``escape_text``: multi-line text shown as text (``opsgate replay --text``, notifications,
  modals): tab and newline kept; ``\\r\\n`` is a newline, any other CR is shown.
- ``escape_stream``: complete lines of remote output for a live view (``opsgate run``, the TUI's
  output pane): as ``escape_text``, and the allowed SGR subset (``ESC [ digits ; : m``: colours
  and attributes, nothing that moves, erases or queries) passes when ``sgr=True`` (the CLI: SREs
  expect ``systemctl status`` colours) or is removed when ``sgr=False`` (the TUI draws no remote
  colours). The caller starts every line with ``RESET`` and its own prefix.
- ``escape_json``: a JSON document printed with ``ensure_ascii=False`` (``json`` already escapes
  C0): DEL, C1, bidi controls and lone surrogates as ``\\u00XX`` escapes; the data is unchanged.
- ``ReplayFilter``: a recording played into a terminal (``opsgate replay``) or into pyte (the TUI's
  replay): cursor movement, erasing, colours and the alternate screen pass (that is what a replay
  shows), but OSC, DCS, SOS, PM and APC strings (title, clipboard, hyperlinks, terminal queries) are
  removed, as are queries whose answer would be typed into the reviewer's shell, input modes (mouse,
  bracketed paste, focus, keyboard protocols), scrollback erase and full reset; C1 controls become
  ``\\x9b`` text. ``TERMINAL_RESET`` undoes what a recording may leave behind, so opsgate's own header
  and verdict that follow are shown plainly.

Everything works on whole chunks, never a Python loop per character or line: ``bytes.translate``
tells at C speed whether there is anything to neutralise (usually not), then one compiled regular
expression does the replacing. This module is pure and imports nothing of opsgate, so
every layer can use it, the transports' own error messages included (it sits in the lowest one).
"""

from __future__ import annotations

import re

RESET = "\x1b[0m"  # SGR reset: opsgate's own lines in a live stream start with it

# Unicode that reorders or breaks a line without being visible: lone surrogates (they cannot even be
# written as UTF-8), bidi embeddings, overrides, isolates and marks, line and paragraph separators.
_UNICODE = "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_C0_NO_TAB_NL = "\x00-\x08\x0b-\x1f"

_LINE_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f{_UNICODE}]")
_TEXT_UNSAFE = re.compile(f"[{_C0_NO_TAB_NL}\x7f-\x9f{_UNICODE}]")
# A character to neutralise, or an ESC that starts an SGR sequence of the allowed subset (then the match
# is the whole sequence: a bounded parameter list, then "m"). One leading character class keeps the scan fast.
_STREAM_UNSAFE = re.compile(f"[{_C0_NO_TAB_NL}\x7f-\x9f{_UNICODE}](?:(?<=\x1b)\\[[0-9;:]{{0,48}}m)?")
_SGR_BYTES = re.compile(rb"\x1b\[[0-9;:]{0,48}m")
_JSON_UNSAFE = re.compile(f"[\x7f-\x9f{_UNICODE}]")
_C1 = re.compile("[\x80-\x9f\ud800-\udfff]")  # for the replay: C1 controls (and lone surrogates) as text
# Fast checks on bytes: what is not printable ASCII, tab or newline; then whether UTF-8 text holds a C1
# control or one of the invisible line-breaking or reordering characters (see _UNICODE).
_SAFE_BYTES = bytes(range(0x20, 0x7F)) + b"\t\n"
_HIGH_BYTES = bytes(range(0x80, 0x100))
_UNSAFE_UTF8 = re.compile(rb"\xc2[\x80-\x9f]|\xd8\x9c|\xe2\x80[\x8e\x8f\xa8-\xae]|\xe2\x81[\xa6-\xa9]")


def _visible(code: int) -> str:
    if code < 0x20:
        return "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def _table() -> dict[str, str]:
    chars = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))]
    chars += [chr(c) for c in (0x061C, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F),
                               *range(0x2066, 0x206A))]
    return {c: _visible(ord(c)) for c in chars}


_VISIBLE = _table()


def _replace(match: re.Match) -> str:
    ch = match.group()
    visible = _VISIBLE.get(ch)
    return visible if visible is not None else f"\\u{ord(ch):04x}"  # a lone surrogate


def _stream_keep_sgr(match: re.Match) -> str:
    found = match.group()
    return found if len(found) > 1 else _replace(match)


def _stream_drop_sgr(match: re.Match) -> str:
    found = match.group()
    return "" if len(found) > 1 else _replace(match)


def _json_replace(match: re.Match) -> str:
    return f"\\u{ord(match.group()):04x}"


def decode(data: bytes) -> str:
    """UTF-8, with every invalid byte shown as ``\\xNN`` (raw 8-bit C1 bytes included)."""
    return data.decode("utf-8", "backslashreplace")


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return decode(bytes(value))
    return str(value)


def escape_line(value: object, limit: int | None = None) -> str:
    """One field of one line: every control character visible, tab and newline too (``^I``, ``^J``).

    ``value`` may be text, bytes (decoded, invalid bytes shown) or anything else (its ``str``).
    With ``limit``, a longer result is cut to ``limit`` characters ending in ``...``.
    """
    text = _as_text(value)
    if _LINE_UNSAFE.search(text) is not None:
        text = _LINE_UNSAFE.sub(_replace, text)
    if limit is not None and len(text) > limit:
        text = text[:max(limit - 3, 0)] + "..."
    return text


def escape_text(value: object) -> str:
    """Multi-line text: tab and newline kept, ``\\r\\n`` read as a newline, every other control visible."""
    text = _as_text(value)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if text.isascii() and is_plain(text.encode("ascii")):
        return text  # the usual case, checked at C speed
    if _TEXT_UNSAFE.search(text) is not None:
        text = _TEXT_UNSAFE.sub(_replace, text)
    return text


def is_plain(data: bytes) -> bool:
    """Whether ``data`` is only printable ASCII, tabs and newlines: what the stream policy leaves unchanged
    (a CR counts as not plain). One ``bytes.translate``."""
    return not data.translate(None, _SAFE_BYTES)


def plain_stream(data: bytes) -> bytes | None:
    """``data`` (complete lines, ``\\r\\n`` read as ``\\n``) as bytes when it is only printable ASCII, tabs
    and newlines, so ``escape_stream`` would return it unchanged; else None. One ``bytes.translate``:
    for front ends that write bytes and want the common case without a decode and an encode."""
    data, rest = _lines_and_rest(data)
    return None if rest else data


def _lines_and_rest(data: bytes) -> tuple[bytes, bytes]:
    """``data`` with ``\r\n`` read as ``\n``, and what in it is not printable ASCII, tab or newline."""
    data = bytes(data)
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    return data, data.translate(None, _SAFE_BYTES)


def escape_stream(data: bytes, *, sgr: bool) -> str:
    """Complete lines of remote output (newlines kept, ``\\r\\n`` read as one) as text: every control
    visible except the allowed SGR subset, which is kept (``sgr=True``) or removed (``sgr=False``).

    Afterwards an ESC can only be the start of an allowed SGR sequence. Output without controls (or
    with colours only) is checked with ``bytes.translate`` and one SGR pass: no per-character work.
    """
    data, rest = _lines_and_rest(data)
    if not rest:
        return data.decode("ascii")
    controls = rest.translate(None, _HIGH_BYTES)
    # A UTF-8 sequence's bytes are all >= 0x80, so they stay next to each other in `rest`.
    if len(controls) < len(rest) and (b"\xc2" in rest or b"\xd8\x9c" in rest or b"\xe2\x80" in rest
                                      or b"\xe2\x81" in rest) and _UNSAFE_UTF8.search(rest) is not None:
        controls = b"\x00"  # a C1 or an invisible reordering character: the careful way below
    if controls and not controls.translate(None, b"\x1b"):  # ESC is the only control: colours?
        stripped = _SGR_BYTES.sub(b"", data)
        if b"\x1b" not in stripped:
            return decode(data if sgr else stripped)
    elif not controls:
        return decode(data)  # invalid bytes become \xNN: printable
    return _STREAM_UNSAFE.sub(_stream_keep_sgr if sgr else _stream_drop_sgr, decode(data))


def escape_json(document: str) -> str:
    """A JSON document (``json.dumps(..., ensure_ascii=False)``) with DEL, C1, bidi controls and lone
    surrogates written as ``\\u`` escapes: the same data, nothing a terminal acts on."""
    if _JSON_UNSAFE.search(document) is None:
        return document
    return _JSON_UNSAFE.sub(_json_replace, document)


# -- replaying a recording into a terminal --------------------------------------------------------------

# Undo what a recording may leave behind, without clearing the screen (the reviewer keeps what was
# played): leave the alternate screen, soft reset (DECSTR), attributes, scroll region, origin mode,
# autowrap, insert mode, reverse video, cursor shown, cursor keys and keypad, every mouse and focus
# mode, bracketed paste, character sets; then the cursor to the bottom row and a fresh line.
TERMINAL_RESET = (
    "\x1b[?1049l\x1b[?1047l\x1b[?47l\x1b[!p\x1b[0m\x1b[r\x1b[?6l\x1b[?7h\x1b[4l\x1b[?5l\x1b[?25h"
    "\x1b[?1l\x1b>\x1b[?9l\x1b[?1000l\x1b[?1001l\x1b[?1002l\x1b[?1003l\x1b[?1004l\x1b[?1005l"
    "\x1b[?1006l\x1b[?1015l\x1b[?1016l\x1b[?2004l\x0f\x1b(B\x1b[9999;1H\r\n"
)

# One escape sequence, complete: CSI (parameters, intermediates, final), a string introducer
# (OSC, DCS, SOS, PM, APC: the string follows), or an nF / Fp / Fe / Fs escape.
# The final byte of an nF/Fp/Fe/Fs escape is never one that starts a CSI or a string: "ESC [" that is
# not a complete CSI is not let through as a two-byte escape (the terminal would read on as a CSI).
_ESCAPE = re.compile(r"\x1b(?:\[([0-?]*)([ -/]*)([@-~])|([\]PX^_])|([ -/]*)([0-OQ-WYZ\\`a-~]))")
_PARTIAL = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|[ -/]*)\Z")  # an escape cut by the end of a chunk
_STRING_END = re.compile("[\x07\x18\x1a\x1b]")  # BEL (OSC), CAN, SUB, or ESC (ST is ESC \)
_MAX_PARTIAL = 256
_INPUT_MODES = frozenset({"9", "1000", "1001", "1002", "1003", "1004", "1005", "1006", "1007", "1015", "1016",
                          "2004", "3"})  # mouse, focus, bracketed paste; 3 (DECCOLM) resizes the window
_QUERIES = frozenset("nctxyi")  # status and cursor reports, device attributes, window ops, tests, printing


def _csi_allowed(params: str, intermediates: str, final: str) -> bool:
    if final in _QUERIES:
        return False
    if params[:1] in ("<", "=", ">"):  # keyboard protocols, version and attribute queries
        return False
    if intermediates and (intermediates, final) not in ((" ", "q"), ("!", "p")):  # cursor style, DECSTR
        return False
    if params.startswith("?"):
        if final in ("h", "l") and _INPUT_MODES.intersection(params[1:].split(";")):
            return False
        if final in ("S", "u"):  # graphics and keyboard queries
            return False
    if final == "J" and params == "3":  # erase the scrollback: the reviewer's, outside the replay
        return False
    return True


def _escape_allowed(intermediates: str, final: str) -> bool:
    if not intermediates:
        return final not in ("c", "Z")  # full reset (can clear the scrollback), identify terminal
    return intermediates[0] in "()*+-./#"  # character set designation, DEC line/alignment tests


class ReplayFilter:
    """What of a recording may reach a terminal or an emulator (see the module's doc). Stateful: feed
    a recording's output events in order; an escape cut between two events is held for the next one,
    and a string (OSC...) is dropped until its terminator, even across events.
    """

    def __init__(self) -> None:
        self._carry = ""
        self._in_string = False

    @property
    def idle(self) -> bool:
        """Nothing held back and not inside a string: a fresh filter would do the same from here."""
        return not self._carry and not self._in_string

    def feed(self, text: str) -> str:
        if self._carry:
            text, self._carry = self._carry + text, ""
        if _C1.search(text) is not None:
            text = _C1.sub(_replace, text)
        if not self._in_string and "\x1b" not in text:
            return text
        out: list[str] = []
        pos, end = 0, len(text)
        while pos < end:
            if self._in_string:
                m = _STRING_END.search(text, pos)
                if m is None:
                    return "".join(out)  # all of it is the string's
                if m.group() != "\x1b":
                    pos = m.end()
                elif m.end() == end:
                    self._carry = "\x1b"  # ESC \ may be completed by the next event
                    return "".join(out)
                elif text[m.end()] == "\\":
                    pos = m.end() + 1
                else:
                    pos = m.start()  # an ESC ends the string and starts a sequence of its own
                self._in_string = False
                continue
            i = text.find("\x1b", pos)
            if i < 0:
                out.append(text[pos:])
                break
            out.append(text[pos:i])
            m = _ESCAPE.match(text, i)
            if m is None:
                if end - i <= _MAX_PARTIAL and _PARTIAL.match(text, i):
                    self._carry = text[i:]
                    break
                out.append("^[")  # not an escape sequence: shown, the rest is text
                pos = i + 1
                continue
            pos = m.end()
            if m.group(4) is not None:
                self._in_string = True
            elif m.group(3) is not None:
                if _csi_allowed(m.group(1), m.group(2), m.group(3)):
                    out.append(m.group())
            elif _escape_allowed(m.group(5), m.group(6)):
                out.append(m.group())
        return "".join(out)

    def flush(self) -> str:
        """The end of the recording: an escape still held back is shown as text, never sent."""
        carry, self._carry = self._carry, ""
        self._in_string = False
        return escape_line(carry)
