"""Ship the audit trail to a central syslog collector (RFC 5424 over TCP or TLS), in the background.

Messages are framed as ``wire.py`` describes; every ``head_interval``, and when the forwarder
drains or stops, a head message anchors the chain outside the operator's machine.

Delivery: the local trail is the source of truth and the only thing that is fail-closed. A
background thread sends what is behind a cursor (``cursor.py``: ``STATE/forward.cursor``, last
forwarded seq, byte offset after its line, and its hash). Plain syslog over TCP has no
acknowledgements, so a record counts as delivered only when the collector's kernel has acked
every byte sent (``TIOCOUTQ`` is 0) and the connection is still open ``settle`` seconds after it
was sent. After any error the forwarder reconnects with exponential backoff and re-sends from the
cursor: a record may arrive twice (byte-identical SD and MSG), never zero times as long as the
collector stores what it has read. ``collector.compare_with_collector`` counts re-sent copies once.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import socket
import ssl
import sys
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from opsgate.console.audit.forward import ForwardError
from opsgate.console.audit.forward.cursor import Cursor, cursor_matches
from opsgate.console.audit.forward.wire import Origin, frame, head_message, header_token, record_message
from opsgate.console.catalog.model import FACILITIES, Forwarding
from opsgate.console.files import FileShrank, read_complete_lines
from opsgate.console.paths import FORWARD_CURSOR, FORWARD_LOCK

_READ_BLOCK = 256 * 1024  # bytes of the trail read per batch; a longer line is read whole anyway
_CURSOR_WRITE_EVERY = 0.5  # seconds between cursor writes while records keep flowing


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
        self.origin = Origin(FACILITIES[forwarding.facility], header_token(hostname or socket.getfqdn(), 255),
                             header_token(forwarding.app_name, 48), str(os.getpid()))
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
        if not cursor_matches(self.trail_path, cursor):
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
