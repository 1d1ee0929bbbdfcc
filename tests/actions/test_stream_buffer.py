"""The channel receive buffer (ssh._StreamBuffer): BufferedPipe's behaviour, without moving the buffer on
every read; swapping it into a channel loses and reorders nothing; the cipher and MAC preference."""

from __future__ import annotations

import threading

import paramiko
import pytest
from paramiko.buffered_pipe import BufferedPipe, PipeTimeout

from opsgate.actions import ssh
from opsgate.actions.ssh import _preferred, _stream_buffers, _StreamBuffer


class Event:
    def __init__(self):
        self.is_set = False

    def set(self):
        self.is_set = True

    def clear(self):
        self.is_set = False


def test_reads_return_what_was_fed_in_order_whatever_the_sizes():
    buf, ref = _StreamBuffer(), BufferedPipe()
    packets = [bytes([i]) * n for i, n in enumerate((5, 1, 32768, 7, 300, 2, 1))]
    for p in packets:
        buf.feed(p)
        ref.feed(p)
    assert len(buf) == len(ref) == sum(map(len, packets))
    got, want = [], []
    for n in (3, 3, 1, 16, 40000, 1, 1 << 20, 1 << 20):
        if buf.read_ready():
            got.append(buf.read(n, 0.0))
            want.append(ref.read(n, 0.0))
    assert got == want and not buf.read_ready()
    with pytest.raises(PipeTimeout):
        buf.read(10, 0.0)


def test_a_whole_packet_is_handed_back_as_it_arrived():
    buf = _StreamBuffer()
    packet = b"x" * 32768
    buf.feed(packet)
    assert buf.read(1 << 20) is packet


def test_event_close_and_empty_behave_as_in_buffered_pipe():
    buf, event = _StreamBuffer(), Event()
    buf.set_event(event)
    assert not event.is_set
    buf.feed(b"abc")
    assert event.is_set
    assert buf.read(2) == b"ab" and event.is_set
    assert buf.read(5) == b"c" and not event.is_set
    buf.feed(b"de")
    assert buf.empty() == b"de" and not event.is_set and len(buf) == 0
    buf.feed(b"f")
    buf.close()
    assert event.is_set
    assert buf.read(10) == b"f" and event.is_set  # closed: stays set, so a select() returns
    assert buf.read(10) == b""
    late = Event()
    buf.set_event(late)
    assert late.is_set


def test_a_blocked_read_wakes_on_feed_and_times_out_without_one():
    buf = _StreamBuffer()
    with pytest.raises(PipeTimeout):
        buf.read(1, 0.05)
    threading.Timer(0.05, buf.feed, (b"late",)).start()
    assert buf.read(10, 10) == b"late"
    threading.Timer(0.05, buf.close).start()
    assert buf.read(10, 10) == b""


class FakeChannel:
    def __init__(self):
        self.in_buffer, self.in_stderr_buffer = BufferedPipe(), BufferedPipe()


def test_swapping_keeps_what_arrived_before_and_passes_on_a_feed_in_flight():
    channel = FakeChannel()
    old = channel.in_buffer
    old.feed(b"banner\r\n")
    channel.in_stderr_buffer.feed(b"err")
    _stream_buffers(channel)
    assert isinstance(channel.in_buffer, _StreamBuffer) and isinstance(channel.in_stderr_buffer, _StreamBuffer)
    old.feed(b"in flight")  # paramiko's thread looked the old buffer up before the swap
    channel.in_buffer.feed(b" next")
    assert channel.in_buffer.read(100) == b"banner\r\nin flight next"
    assert channel.in_stderr_buffer.read(100) == b"err"


def test_a_closed_channel_stays_closed_after_the_swap():
    channel = FakeChannel()
    channel.in_buffer.close()
    _stream_buffers(channel)
    assert channel.in_buffer.read(10, 0.0) == b""


def test_gcm_then_etm_first_when_paramiko_has_them():
    ciphers = paramiko.Transport._preferred_ciphers
    assert _preferred(ciphers, ssh.PREFERRED_CIPHERS)[:2] == ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
    assert sorted(_preferred(ciphers, ssh.PREFERRED_CIPHERS)) == sorted(ciphers)
    macs = paramiko.Transport._preferred_macs
    assert _preferred(macs, ssh.PREFERRED_MACS)[:2] == ("hmac-sha2-256-etm@openssh.com",
                                                         "hmac-sha2-512-etm@openssh.com")
    assert _preferred(("aes128-ctr",), ssh.PREFERRED_CIPHERS) == ("aes128-ctr",)  # an older paramiko: as it is


def test_a_real_connection_negotiates_gcm_and_streams_a_large_output_intact(sshd):
    from tests.helpers.ssh import endpoint

    size = 5 * 1024 * 1024 + 17
    got: list[bytes] = []
    with ssh.connect(endpoint(sshd)) as conn:
        assert conn._transport.remote_cipher == conn._transport.local_cipher == "aes128-gcm@openssh.com"
        assert isinstance(conn._transport, paramiko.Transport)
        result = conn.run(f"head -c {size} /dev/zero | tr '\\0' x; echo err >&2",
                          lambda chunk: got.append(chunk.data) if chunk.stream == "stdout" else None)
    assert result.outcome == "ok" and result.bytes_out == size and result.bytes_err == 4
    assert b"".join(got) == b"x" * size
