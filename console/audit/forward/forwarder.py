"""Ship the audit trail to a central syslog collector (RFC 5424 over TCP or TLS) and check its copy.

Wire format (one message per record, RFC 6587 octet-counting framing: ``LEN SP MSG``)::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [opsgate@32473 seq="N" hash="H"] {"seq":N,...,"hash":"H"}

``PRI`` = facility * 8 + severity (info; notice for denials and failed step-ups; warning for
lockouts, replays, clone suspicions and recovered trails). ``TIMESTAMP`` is the record's own
``time``; ``MSGID`` is the event name (at most 32 characters). The MSG is the exact bytes of the
record's line in the local trail, without the newline and **without a BOM**: JSON is UTF-8 by
definition (RFC 8259), and collectors and the JSON tools behind them parse it directly. A reader
(``compare_with_collector``) accepts a leading BOM anyway. Every ``head_interval``, and when the
forwarder drains or stops, a head message anchors the chain outside the operator's machine::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID audit.head [opsgate@32473 head="H" seq="N"] -

Delivery: the local trail is the source of truth and the only thing that is fail-closed. A
background thread sends what is behind a cursor (``STATE/forward.cursor``: last forwarded seq,
byte offset after its line, and its hash; written atomically). Plain syslog over TCP has no
acknowledgements, so a record counts as delivered only when the collector's kernel has acked
every byte sent (``TIOCOUTQ`` is 0) and the connection is still open ``settle`` seconds after it
was sent. After any error the forwarder reconnects with exponential backoff and re-sends from the
cursor: a record may arrive twice (byte-identical SD and MSG), never zero times as long as the
collector stores what it has read. ``compare_with_collector`` counts re-sent copies once.

Collector file format (what ``opsgate audit verify --against FILE`` reads), one message per line:
any line holding the ``[opsgate@32473 ...]`` structured data followed by a space and the JSON, as
rsyslog writes with ``"<%PRI%>1 %TIMESTAMP:::date-rfc3339% %HOSTNAME% %APP-NAME% %PROCID% %MSGID%
%STRUCTURED-DATA% %msg%\\n"`` (the built-in ``RSYSLOG_SyslogProtocol23Format``), or plain JSON lines
(a copy of the trail). Other lines are counted and ignored. The collector must keep the MSG intact:
for rsyslog, ``parser.escapeControlCharactersOnReceive="off"`` (a DEL in a record would otherwise
become ``#177``) and a ``maxMessageSize`` above the largest record.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import select
import socket
import ssl
import sys
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from opsgate.console.catalog.model import FACILITIES, Forwarding
from opsgate.console.errors import EXIT_FAILED, OpsgateError
from opsgate.console.files import FileShrank, read_complete_lines, write_private
from opsgate.console.paths import FORWARD_CURSOR, FORWARD_LOCK

SD_ID = "opsgate@32473"
HEAD_MSGID = "audit.head"
BOM = b"\xef\xbb\xbf"

SEVERITY = {"warning": 4, "notice": 5, "info": 6}
EVENT_SEVERITY = {
    "action.denied": "notice", "approval.denied": "notice", "stepup.failure": "notice",
    "action.cancelled": "notice",
    "stepup.lockout": "warning", "stepup.clone_suspected": "warning", "stepup.replay": "warning",
    "audit.recovered": "warning",
}

_READ_BLOCK = 256 * 1024  # bytes of the trail read per batch; a longer line is read whole anyway
_CURSOR_WRITE_EVERY = 0.5  # seconds between cursor writes while records keep flowing


class ForwardError(OpsgateError):
    """Forwarding cannot start or a collector copy cannot be read (one line, exit 1)."""

    exit_code = EXIT_FAILED


# -- messages -------------------------------------------------------------------------------------


def sd_escape(value: str) -> str:
    """A PARAM-VALUE per RFC 5424 section 6.3.3: ``"``, ``\\`` and ``]`` escaped with a backslash."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_token(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit`` characters, ``-`` if empty."""
    text = "".join(ch if 33 <= ord(ch) <= 126 else "_" for ch in value)[:limit]
    return text or "-"


def severity_for(event: str) -> int:
    """The syslog severity of an event: info, or notice/warning for denials, lockouts and clone signals."""
    return SEVERITY[EVENT_SEVERITY.get(event, "info")]


@dataclass(frozen=True)
class _Origin:
    """The header fields that do not come from the record."""

    facility: int
    hostname: str
    app_name: str
    procid: str


def _timestamp(value: object) -> str:
    """The record's RFC 3339 time if it is a valid RFC 5424 TIMESTAMP, else the NILVALUE."""
    text = str(value)
    ok = len(text) <= 32 and text.endswith("Z") and text[4:5] == "-" and text[10:11] == "T" and text.isascii()
    return text if ok and " " not in text else "-"


def record_message(line: bytes, record: dict, origin: _Origin) -> bytes:
    """The RFC 5424 message for one trail line (``line`` without its newline) and its parsed record."""
    event = str(record.get("event", ""))
    pri = origin.facility * 8 + severity_for(event)
    sd = f'[{SD_ID} seq="{sd_escape(str(record.get("seq")))}" hash="{sd_escape(str(record.get("hash")))}"]'
    header = (f"<{pri}>1 {_timestamp(record.get('time'))} {origin.hostname} {origin.app_name} {origin.procid} "
              f"{_header_token(event, 32)} {sd} ")
    return header.encode("ascii") + line


def head_message(seq: int, head: str, origin: _Origin, when: str) -> bytes:
    """The ``audit.head`` message: the chain's head hash at ``seq``, to anchor it at the collector."""
    pri = origin.facility * 8 + SEVERITY["info"]
    sd = f'[{SD_ID} head="{sd_escape(head)}" seq="{seq}"]'
    return (f"<{pri}>1 {when} {origin.hostname} {origin.app_name} {origin.procid} {HEAD_MSGID} {sd} -"
            ).encode("ascii")


def frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: the message length in decimal, a space, the message."""
    return str(len(message)).encode("ascii") + b" " + message


# -- the cursor -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """The last record the collector is known to have: its seq, the byte offset after its line, its hash."""

    seq: int = 0
    offset: int = 0
    hash: str | None = None

    @classmethod
    def load(cls, path: Path) -> Cursor:
        """The cursor in ``path``; a missing file is the start of the trail."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as e:
            raise ForwardError(f"{path}: cannot read the forward cursor: {e}") from None
        try:
            cursor = cls(int(data["seq"]), int(data["offset"]), data["hash"])
        except (KeyError, TypeError, ValueError):
            raise ForwardError(f"{path}: not a forward cursor (expected seq, offset, hash)") from None
        if cursor.seq < 0 or cursor.offset < 0:
            raise ForwardError(f"{path}: not a forward cursor (negative seq or offset)")
        return cursor

    def save(self, path: Path) -> None:
        """Write atomically and durably (temp file, fsync, rename, fsync the directory)."""
        write_private(path, (json.dumps({"seq": self.seq, "offset": self.offset, "hash": self.hash}) + "\n").encode("ascii"))


def _cursor_matches(trail_path: Path, cursor: Cursor) -> bool:
    """Whether the line that ends at ``cursor.offset`` is the record the cursor names."""
    if cursor.offset == 0:
        return cursor.seq == 0
    try:
        with open(trail_path, "rb") as f:
            if os.fstat(f.fileno()).st_size < cursor.offset:
                return False
            start = max(0, cursor.offset - _READ_BLOCK)
            f.seek(start)
            data = f.read(cursor.offset - start)
    except FileNotFoundError:
        return False
    if not data.endswith(b"\n"):
        return False
    line = data[data.rfind(b"\n", 0, len(data) - 1) + 1:]
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("seq") == cursor.seq and record.get("hash") == cursor.hash


# -- the forwarder --------------------------------------------------------------------------------


@dataclass
class _Pending:
    """Something sent but not yet known to be at the collector."""

    offset: int  # byte offset after the record's line (a head message: after the record it anchors)
    seq: int
    hash: str
    sent_at: float
    head: bool = False


@dataclass
class ForwardStatus:
    """A snapshot for the CLI and the TUI."""

    connected: bool
    cursor: Cursor
    sent_seq: int
    failures: int  # connection attempts or connections that failed, since start
    last_error: str | None
    anchored_seq: int  # the newest head message known to be at the collector
    waiting_for_lock: bool  # another process holds STATE/forward.lock and forwards this state dir
    resent: int  # records sent again after a broken connection


class Forwarder:
    """A background thread that sends the audit trail to the collector of ``forwarding``.

    ``start()`` returns at once; the pipeline never waits for it. ``drain(timeout)`` waits until
    what the trail holds now is at the collector and anchored by a head message; ``stop()`` drains
    briefly and ends the thread. One process forwards a state dir at a time (``STATE/forward.lock``);
    another forwarder waits for the lock and meanwhile sends nothing.

    ``backoff_start``/``backoff_cap`` bound the reconnect delays (doubling), ``poll`` is how often the
    trail is checked for new records, ``settle`` how long a connection must stay open after a
    record's bytes were acked before the record counts as delivered.
    """

    def __init__(self, trail_path: Path, state_dir: Path, forwarding: Forwarding, *,
                 backoff_start: float = 0.5, backoff_cap: float = 30.0, poll: float = 0.2, settle: float = 0.3,
                 connect_timeout: float = 5.0, send_timeout: float = 10.0, hostname: str | None = None,
                 warn=None):
        self.trail_path = Path(trail_path)
        self.state_dir = Path(state_dir)
        self.forwarding = forwarding
        self.cursor_path = self.state_dir / FORWARD_CURSOR
        self.backoff_start, self.backoff_cap = backoff_start, backoff_cap
        self.poll, self.settle = poll, settle
        self.connect_timeout, self.send_timeout = connect_timeout, send_timeout
        self.origin = _Origin(FACILITIES[forwarding.facility], _header_token(hostname or socket.getfqdn(), 255),
                              _header_token(forwarding.app_name, 48), str(os.getpid()))
        self._warn = warn or (lambda message: None)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._head_requested = False
        self._sock: socket.socket | None = None
        self._lock_fd: int | None = None
        self._lock_busy = False  # another process holds STATE/forward.lock
        self._pending: list[_Pending] = []
        self._sent_offset = 0
        self._sent_seq = 0
        self._sent_hash: str | None = None
        self._max_sent_offset = 0  # to count re-sent records
        self._cursor = Cursor()
        self._cursor_saved = Cursor()
        self._cursor_saved_at = 0.0
        self._anchored_seq = 0
        self._anchor_sent_seq = -1
        self._last_head_at = 0.0
        self._failures = 0
        self._last_error: str | None = None
        self._resent = 0
        self._next_attempt = 0.0
        self._backoff = backoff_start
        self._error: BaseException | None = None  # an unexpected error that ended the thread

    # -- public ----------------------------------------------------------------------------------

    def start(self) -> Forwarder:
        """Start the background thread (a daemon: it never keeps the process alive)."""
        if self._thread is not None:
            raise RuntimeError("forwarder already started")
        self._thread = threading.Thread(target=self._main, name="opsgate-forward", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> bool:
        """Drain for up to ``timeout`` seconds, then end the thread and close the connection.

        Returns whether everything was delivered. Undelivered records stay behind the cursor.
        """
        done = self.drain(timeout) if self._thread is not None else False
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            # Short: the thread may sit in a connect or send timeout; it is a daemon, and a cursor
            # that lags only means re-sending.
            self._thread.join(1.0)
        return done

    def drain(self, timeout: float, *, give_up_when_down: bool = True) -> bool:
        """Wait until the records in the trail now are at the collector and a head message anchors them.

        Returns True when they are; False after ``timeout`` seconds, or, with ``give_up_when_down``,
        as soon as a connection fails while waiting (a down collector should not hold anyone up).
        """
        target = _complete_end(self.trail_path)
        deadline = time.monotonic() + timeout
        with self._cond:
            failures = self._failures
            self._head_requested = True
            self._cond.notify_all()
            while True:
                if self._error is not None or self._thread is None or not self._thread.is_alive():
                    return False
                if self._lock_busy:  # another process forwards this state dir, our records included
                    return False
                if self._cursor.offset >= target:
                    if target == 0 or self._anchored_seq >= self._cursor.seq:
                        return True
                    self._head_requested = True  # records came in after the last head was sent
                # A failure while waiting, or a collector already known to be down: do not hold anyone up.
                if give_up_when_down and (self._failures > failures
                                          or (self._sock is None and self._last_error is not None)):
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))

    def status(self) -> ForwardStatus:
        """What the forwarder has done so far."""
        with self._cond:
            return ForwardStatus(self._sock is not None, self._cursor, self._sent_seq, self._failures,
                                 self._last_error, self._anchored_seq, self._lock_busy, self._resent)

    @property
    def error(self) -> BaseException | None:
        """The unexpected error that ended the thread, if one did."""
        return self._error

    def backlog(self) -> int:
        """Bytes of complete trail lines not yet known to be at the collector."""
        with self._cond:
            offset = self._cursor.offset
        return max(0, _complete_end(self.trail_path) - offset)

    # -- the thread ------------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # never dies silently: drain() sees it, the user gets one line
            with self._cond:
                self._error = e
                self._last_error = f"forwarder stopped: {e}"
                self._cond.notify_all()
            self._warn(f"audit forwarding stopped: {e}")
        finally:
            self._disconnect()
            self._save_cursor(force=True)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
            if self._lock_fd is None and not self._take_lock():
                self._sleep(self.poll)
                continue
            if self._sock is None:
                if time.monotonic() < self._next_attempt:
                    self._sleep(min(self.poll, self._next_attempt - time.monotonic()))
                    continue
                if not self._connect():
                    continue
            try:
                sent = self._send_new()
                self._maybe_send_head()
                self._check_delivered()
            except (OSError, ssl.SSLError) as e:
                self._broken(e)
                continue
            if not sent:
                self._sleep(self.poll if not self._pending else min(self.poll, self.settle / 3))

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            if not self._stopping and seconds > 0:
                self._cond.wait(seconds)

    def _take_lock(self) -> bool:
        """Take STATE/forward.lock; then load the cursor and check it against the trail."""
        try:
            fd = os.open(self.state_dir / FORWARD_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            self._failed(f"{self.state_dir / FORWARD_LOCK}: cannot open: {e.strerror or e}")
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            with self._cond:
                self._lock_busy = True
                self._cond.notify_all()
            return False
        cursor = Cursor.load(self.cursor_path)
        if not _cursor_matches(self.trail_path, cursor):
            # The trail was replaced or truncated: send it all again (the collector counts copies once,
            # and a trail that differs from what was sent shows up in `audit verify --against`).
            self._warn(f"{self.cursor_path}: the cursor (seq {cursor.seq}) does not match {self.trail_path}; "
                       "forwarding the whole trail again")
            cursor = Cursor()
        with self._cond:
            self._lock_fd, self._lock_busy = fd, False
            self._cursor = self._cursor_saved = cursor
            self._sent_offset, self._sent_seq, self._sent_hash = cursor.offset, cursor.seq, cursor.hash
            self._max_sent_offset = cursor.offset
        return True

    def _connect(self) -> bool:
        fw = self.forwarding
        try:
            sock = socket.create_connection((fw.host, fw.port), timeout=self.connect_timeout)
            try:
                if fw.transport == "tls":
                    sock = self._tls_context().wrap_socket(sock, server_hostname=fw.host)
                sock.settimeout(self.send_timeout)
            except BaseException:
                sock.close()
                raise
        except (OSError, ssl.SSLError, ValueError) as e:
            self._failed(f"cannot connect to {fw.url}: {_describe(e)}")
            return False
        with self._cond:
            self._sock = sock
            self._last_error = None
            # Everything not known to be delivered is sent again, in order, from the cursor.
            self._pending.clear()
            self._sent_offset, self._sent_seq, self._sent_hash = (self._cursor.offset, self._cursor.seq,
                                                                  self._cursor.hash)
            self._anchor_sent_seq = -1
            self._cond.notify_all()
        return True

    def _tls_context(self) -> ssl.SSLContext:
        fw = self.forwarding
        ctx = ssl.create_default_context(cafile=str(fw.ca_file) if fw.ca_file else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if fw.cert_file:
            ctx.load_cert_chain(str(fw.cert_file), str(fw.key_file) if fw.key_file else None)
        return ctx

    def _failed(self, message: str) -> None:
        with self._cond:
            self._failures += 1
            first = self._last_error is None
            self._last_error = message
            self._next_attempt = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self.backoff_cap)
            self._cond.notify_all()
        if first:
            self._warn(message)

    def _broken(self, e: BaseException) -> None:
        self._disconnect()
        self._failed(f"connection to {self.forwarding.url} lost: {_describe(e)}")

    def _disconnect(self) -> None:
        with self._cond:
            sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _send_new(self) -> bool:
        """Send the complete lines after what was sent; True if anything was sent."""
        try:
            data = read_complete_lines(self.trail_path, self._sent_offset, _READ_BLOCK)
        except FileNotFoundError:
            data = b"" if self._sent_offset == 0 else None
        except FileShrank:
            data = None
        if data is None:  # the trail shrank below what was sent
            raise ForwardError(f"{self.trail_path}: the trail is shorter than what was forwarded "
                               f"(byte {self._sent_offset}); was it replaced?")
        if not data:
            return False
        out, pending = bytearray(), []
        offset, seq, digest = self._sent_offset, self._sent_seq, self._sent_hash
        resent = 0
        for line in data.splitlines(keepends=True):
            end = offset + len(line)
            body = line[:-1]
            try:
                record = json.loads(body)
                seq, digest = int(record["seq"]), str(record["hash"])
            except (ValueError, TypeError, KeyError):
                # Not a record (verify names it); forwarding it would hide the problem from nobody,
                # and skipping it would make the collector's copy look complete: stop here, loudly.
                raise ForwardError(f"{self.trail_path}: the line at byte {offset} is not an audit record; "
                                   "run `opsgate audit verify`") from None
            out += frame(record_message(body, record, self.origin))
            if end <= self._max_sent_offset:
                resent += 1
            offset = end
            pending.append(_Pending(end, seq, digest, 0.0))
        self._sock.sendall(out)
        now = time.monotonic()
        for p in pending:
            p.sent_at = now
        with self._cond:
            self._pending += pending
            self._sent_offset, self._sent_seq, self._sent_hash = offset, seq, digest
            self._max_sent_offset = max(self._max_sent_offset, offset)
            self._resent += resent
        return True

    def _maybe_send_head(self) -> None:
        """Anchor the head every head_interval, and when drain/stop asks, once the records are sent."""
        with self._cond:
            due = self._head_requested or time.monotonic() - self._last_head_at >= self.forwarding.head_interval
            seq, digest = self._sent_seq, self._sent_hash
            if not due or seq == 0 or seq == self._anchor_sent_seq:
                if self._head_requested and seq == self._anchor_sent_seq:
                    self._head_requested = False
                return
        from opsgate.console.audit.trail import utc_now

        self._sock.sendall(frame(head_message(seq, digest, self.origin, utc_now())))
        with self._cond:
            self._pending.append(_Pending(self._sent_offset, seq, digest, time.monotonic(), head=True))
            self._anchor_sent_seq = seq
            self._last_head_at = time.monotonic()
            self._head_requested = False

    def _check_delivered(self) -> None:
        """Advance the cursor over what the collector's kernel acked and the connection outlived."""
        if not self._pending:
            return
        _check_open(self._sock)
        if _unacked_bytes(self._sock) != 0:
            return
        horizon = time.monotonic() - self.settle
        with self._cond:
            done = 0
            for p in self._pending:
                if p.sent_at > horizon:
                    break
                done += 1
                if p.head:
                    self._anchored_seq = max(self._anchored_seq, p.seq)
                else:
                    self._cursor = Cursor(p.seq, p.offset, p.hash)
            if done:
                del self._pending[:done]
                self._backoff = self.backoff_start  # a connection that delivers resets the backoff
                self._cond.notify_all()
        if done:
            self._save_cursor()

    def _save_cursor(self, force: bool = False) -> None:
        with self._cond:
            cursor = self._cursor
        if cursor == self._cursor_saved or self._lock_fd is None:
            return
        now = time.monotonic()
        if not force and now - self._cursor_saved_at < _CURSOR_WRITE_EVERY and self._pending:
            return  # more is on its way; the next commit writes it (a crash only means re-sending)
        cursor.save(self.cursor_path)
        self._cursor_saved, self._cursor_saved_at = cursor, now


def _describe(e: BaseException) -> str:
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {e.verify_message}"
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _check_open(sock) -> None:
    """Raise if the collector closed or reset the connection (it never sends us application data)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return
    if isinstance(sock, ssl.SSLSocket):
        # TLS 1.3 servers send session tickets after the handshake: reading them is not a close.
        timeout = sock.gettimeout()
        sock.setblocking(False)
        try:
            data = sock.recv(4096)
        except ssl.SSLWantReadError:
            return
        finally:
            sock.settimeout(timeout)
        if not data:
            raise ConnectionResetError(errno.ECONNRESET, "the collector closed the TLS connection")
        return
    data = sock.recv(4096, socket.MSG_DONTWAIT)
    if not data:
        raise ConnectionResetError(errno.ECONNRESET, "the collector closed the connection")


def _unacked_bytes(sock) -> int:
    """Bytes sent that the peer has not acked (Linux TIOCOUTQ); 0 where it cannot be asked."""
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    return int.from_bytes(buf, sys.byteorder)


def _complete_end(path: Path) -> int:
    """The byte offset after the last complete line of ``path`` (0 if missing)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            pos = size
            while pos > 0:
                start = max(0, pos - 65536)
                f.seek(start)
                block = f.read(pos - start)
                i = block.rfind(b"\n")
                if i >= 0:
                    return start + i + 1
                pos = start
    except FileNotFoundError:
        pass
    return 0


@dataclass
class CatchUp:
    """What ``forward_trail_once`` did."""

    ok: bool
    before: Cursor
    after: Cursor
    anchored_seq: int
    error: str | None


def forward_trail_once(trail_path: Path, state_dir: Path, forwarding: Forwarding, *, stall: float = 30.0,
                       **kwargs) -> CatchUp:
    """Send everything behind the cursor and a head message, then stop (``opsgate audit forward``).

    Waits while progress is made; gives up when a connection fails, when another process holds
    the forward lock, or when nothing moves for ``stall`` seconds.
    """
    before = Cursor.load(Path(state_dir) / FORWARD_CURSOR)
    fwd = Forwarder(trail_path, state_dir, forwarding, **kwargs).start()
    ok, error = False, None
    try:
        last, moved_at = fwd.status().cursor, time.monotonic()
        while not ok:
            ok = fwd.drain(1.0)
            status = fwd.status()
            if ok or status.failures or fwd.error is not None:
                break
            if status.cursor != last:
                last, moved_at = status.cursor, time.monotonic()
            elif time.monotonic() - moved_at > stall:
                error = ("another opsgate process is forwarding this state dir" if status.waiting_for_lock
                         else f"no progress for {stall:.0f}s")
                break
    finally:
        fwd.stop(timeout=2.0 if ok else 0.5)
    status = fwd.status()
    error = error or status.last_error or (str(fwd.error) if fwd.error else None)
    return CatchUp(ok, before, status.cursor, status.anchored_seq, None if ok else error)


# -- reading a collector's copy -------------------------------------------------------------------


@dataclass
class CollectorReport:
    """What ``compare_with_collector`` found. ``ok`` when every record the collector should have matches."""

    ok: bool = True
    records: int = 0  # distinct records in the collector copy
    copies: int = 0  # record messages, re-sent copies included
    duplicates: int = 0  # identical re-sent copies (counted once)
    missing: list[int] = field(default_factory=list)
    different: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)
    conflicting: list[int] = field(default_factory=list)  # two different copies of one seq at the collector
    unparsed: list[str] = field(default_factory=list)  # opsgate lines that could not be read
    ignored_lines: int = 0  # lines that are not opsgate messages
    not_yet_forwarded: int = 0
    newest: int = 0  # the collector's newest seq
    local_count: int = 0
    last_anchor: tuple[int, str] | None = None
    bad_anchors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _sd_params(text: str, start: int) -> tuple[dict[str, str], int] | None:
    """Parse ``[opsgate@32473 k="v" ...]`` at ``start``: (params, index after ``]``), or None."""
    head = "[" + SD_ID
    if not text.startswith(head, start):
        return None
    i, n, params = start + len(head), len(text), {}
    while i < n:
        if text[i] == "]":
            return params, i + 1
        if text[i] != " ":
            return None
        eq = text.find("=", i + 1)
        if eq < 0 or eq + 1 >= n or text[eq + 1] != '"':
            return None
        name, i, value = text[i + 1:eq], eq + 2, []
        while i < n and text[i] != '"':
            if text[i] == "\\" and i + 1 < n and text[i + 1] in '"\\]':
                i += 1
            value.append(text[i])
            i += 1
        if i >= n:
            return None
        params[name] = "".join(value)
        i += 1
    return None


def parse_collector_line(raw: bytes) -> tuple[str, dict, bytes | None] | None:
    """One line of a collector's file: ("record", sd params, JSON bytes) or ("head", sd params, None).

    None for a line that is not an opsgate message. Raises ValueError for an opsgate line that is broken.
    A plain JSON line (a copy of the trail) is a record with no structured data.
    """
    line = raw.rstrip(b"\r\n")
    if line.startswith(BOM):
        line = line[len(BOM):]
    if line.startswith(b"{"):
        return "record", {}, line
    marker = ("[" + SD_ID).encode("ascii")
    at = line.find(marker)
    if at < 0:
        return None
    text = line.decode("utf-8", "surrogateescape")
    at = text.find("[" + SD_ID)
    parsed = _sd_params(text, at)
    if parsed is None:
        raise ValueError("unreadable structured data")
    params, end = parsed
    while end < len(text) and text[end] == "[":  # other SD elements a relay may have added
        close = _skip_sd_element(text, end)
        if close is None:
            raise ValueError("unreadable structured data")
        end = close
    msg = text[end:].lstrip(" ").encode("utf-8", "surrogateescape")
    if msg.startswith(BOM):
        msg = msg[len(BOM):]
    if "head" in params:
        return "head", params, None
    if not msg.startswith(b"{"):
        raise ValueError("no JSON record after the structured data")
    return "record", params, msg


def _skip_sd_element(text: str, i: int) -> int | None:
    """Index after the SD element starting at ``i`` (honouring escapes), or None."""
    quoted = False
    i += 1
    while i < len(text):
        ch = text[i]
        if quoted and ch == "\\":
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == "]" and not quoted:
            return i + 1
        i += 1
    return None


def _ranges(seqs: list[int], limit: int = 12) -> str:
    """``3, 5-9, 12`` for a sorted list of seqs, cut after ``limit`` ranges."""
    out, i = [], 0
    seqs = sorted(set(seqs))
    while i < len(seqs):
        j = i
        while j + 1 < len(seqs) and seqs[j + 1] == seqs[j] + 1:
            j += 1
        out.append(str(seqs[i]) if i == j else f"{seqs[i]}-{seqs[j]}")
        i = j + 1
    more = f", ... ({len(out) - limit} more ranges)" if len(out) > limit else ""
    return ", ".join(out[:limit]) + more


def compare_with_collector(trail_path: Path, collector_path: Path) -> CollectorReport:
    """Check a collector's copy against the local trail, by seq: missing, extra or different records.

    Identical copies of one record count once. Records newer than the collector's newest are "not
    yet forwarded", not an error. Head messages are not records; each is checked against the local
    record it names, and the newest is reported.
    """
    report = CollectorReport()
    copies: dict[int, bytes] = {}  # seq -> sha256 of the collector's JSON
    anchors: list[tuple[int, str, int]] = []
    try:
        f = open(collector_path, "rb")
    except OSError as e:
        raise ForwardError(f"{collector_path}: cannot read the collector copy: {e.strerror or e}") from None
    with f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                parsed = parse_collector_line(raw)
            except ValueError as e:
                report.unparsed.append(f"line {number}: {e}")
                continue
            if parsed is None:
                report.ignored_lines += 1
                continue
            kind, params, msg = parsed
            if kind == "head":
                try:
                    anchors.append((int(params["seq"]), params["head"], number))
                except (KeyError, ValueError):
                    report.unparsed.append(f"line {number}: a head message without a seq")
                continue
            try:
                record = json.loads(msg)
                seq = record["seq"]
                if type(seq) is not int:
                    raise ValueError("seq is not an integer")
            except (ValueError, TypeError, KeyError) as e:
                report.unparsed.append(f"line {number}: the record is not JSON with a seq ({e})")
                continue
            if params and (params.get("seq") != str(seq) or params.get("hash") != record.get("hash")):
                report.unparsed.append(f"line {number} (seq {seq}): the structured data (seq {params.get('seq')}, "
                                       f"hash {str(params.get('hash'))[:16]}...) does not match the record")
            report.copies += 1
            digest = hashlib.sha256(msg).digest()
            if seq in copies:
                if copies[seq] == digest:
                    report.duplicates += 1
                elif seq not in report.conflicting:
                    report.conflicting.append(seq)
                continue
            copies[seq] = digest
    report.records = len(copies)
    local_digests: dict[int, bytes] = {}  # 32 bytes a record: fine for millions
    local_hashes: dict[int, str] = {}
    anchor_seqs = {s for s, _, _ in anchors}
    try:
        local = open(trail_path, "rb")
    except OSError as e:
        raise ForwardError(f"{trail_path}: cannot read the audit trail: {e.strerror or e}") from None
    with local:
        for raw in local:
            if not raw.endswith(b"\n"):
                break  # a truncated last line is verify's to report
            body = raw[:-1]
            try:
                record = json.loads(body)
                seq = record["seq"]
                hash(seq)
            except (ValueError, TypeError, KeyError):
                continue  # verify names it
            local_digests[seq] = hashlib.sha256(body).digest()
            if seq in anchor_seqs:
                local_hashes[seq] = record.get("hash")
    report.local_count = len(local_digests)
    # The collector's newest record that the local chain also has: local records after it are
    # "not yet forwarded"; an extra record beyond the local chain does not make them missing.
    report.newest = max((s for s in copies if s in local_digests), default=0)
    for seq, digest in local_digests.items():
        if seq > report.newest:
            report.not_yet_forwarded += 1
        elif seq not in copies:
            report.missing.append(seq)
        elif copies[seq] != digest or seq in report.conflicting:
            report.different.append(seq)
    report.extra = sorted(s for s in copies if s not in local_digests)
    for seq, head, number in anchors:
        if local_hashes.get(seq) != head:
            report.bad_anchors.append(f"line {number}: head anchored at seq {seq} ({head[:16]}...) "
                                      + ("is not in the local chain" if seq not in local_hashes
                                         else f"does not match the local record ({str(local_hashes[seq])[:16]}...)"))
        elif report.last_anchor is None or seq >= report.last_anchor[0]:
            report.last_anchor = (seq, head)
    if report.missing:
        report.problems.append(f"missing at the collector ({len(report.missing)}): seq {_ranges(report.missing)}")
    if report.different:
        report.problems.append(f"different at the collector ({len(report.different)}): seq {_ranges(report.different)}")
    if report.extra:
        report.problems.append(f"extra at the collector, not in the local chain ({len(report.extra)}): "
                               f"seq {_ranges(report.extra)}")
    if report.conflicting:
        report.problems.append(f"the collector holds different copies of seq {_ranges(report.conflicting)}")
    report.problems += report.unparsed[:20] + report.bad_anchors[:20]
    report.ok = not report.problems
    return report


__all__ = [
    "FORWARD_CURSOR", "CatchUp", "CollectorReport", "Cursor", "ForwardError", "ForwardStatus", "Forwarder",
    "compare_with_collector", "forward_trail_once", "frame", "head_message", "parse_collector_line",
    "record_message", "sd_escape", "severity_for",
]
