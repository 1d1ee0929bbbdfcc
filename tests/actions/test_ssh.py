"""opsgate.actions.ssh against a real OpenSSH sshd on loopback (no paramiko mocks)."""

from __future__ import annotations

import hashlib
import shlex
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from opsgate.actions.ssh import (
    AuthFailed,
    Chunk,
    Connection,
    Endpoint,
    HostKeyMismatch,
    HostKeyRevoked,
    HostKeyUnknown,
    TargetResult,
    Unreachable,
    connect,
)
from tests.helpers.ssh import endpoint, marker, remote_processes, wait_gone
from tests.helpers.sshd import free_port, keygen


class Collector:
    """A sink that keeps every chunk, thread-safe."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self.lock = threading.Lock()

    def __call__(self, chunk: Chunk) -> None:
        with self.lock:
            self.chunks.append(chunk)

    def data(self, stream: str) -> bytes:
        return b"".join(c.data for c in self.chunks if c.stream == stream)


@pytest.fixture(scope="module")
def conn(sshd):
    with connect(endpoint(sshd)) as connection:
        yield connection


def run(conn: Connection, command: str, **kwargs) -> tuple[TargetResult, Collector]:
    sink = Collector()
    return conn.run(command, sink, **kwargs), sink


# --- execution -------------------------------------------------------------------------


def test_exit_zero_is_ok(conn):
    result, sink = run(conn, "echo hello")
    assert (result.outcome, result.exit_code, result.error) == ("ok", 0, None)
    assert sink.data("stdout") == b"hello\n"
    assert result.bytes_out == 6 and result.bytes_err == 0
    assert result.target == "t1" and result.duration > 0


def test_non_zero_exit_is_failed_with_code(conn):
    result, _ = run(conn, "exit 7")
    assert (result.outcome, result.exit_code) == ("failed", 7)


def test_stdout_and_stderr_are_separate_streams(conn):
    result, sink = run(conn, "echo out; echo err >&2; echo out2")
    assert sink.data("stdout") == b"out\nout2\n"
    assert sink.data("stderr") == b"err\n"
    assert (result.bytes_out, result.bytes_err) == (9, 4)
    assert all(c.target == "t1" and c.t > 0 for c in sink.chunks)


def test_shell_syntax_and_quoting_reach_the_remote_shell_untouched(conn):
    tricky = "it's \"quoted\" $HOME `id` ; echo injected"
    command = (
        f"printf '%s\\n' {shlex.quote(tricky)} | tr a A && X='a  b' && echo \"[$X]\" "
        "&& echo $((6*7)) || echo never; read line; echo \"stdin:[$line]\""
    )
    result, sink = run(conn, command)
    assert result.outcome == "ok", sink.data("stderr")
    assert sink.data("stdout") == b"it's \"quoted\" $HOME `id` ; echo injected\n".replace(b"a", b"A") \
        + b"[a  b]\n42\nstdin:[]\n"


def test_wrapper_line_is_not_passed_on_even_without_output(conn):
    result, sink = run(conn, "true")
    assert result.outcome == "ok" and sink.chunks == [] and result.bytes_out == 0


def test_50_mb_of_output_arrive_intact(conn):
    lines = 6_500_000  # `seq` output, about 51 MB
    expected = hashlib.sha256()
    expected.update("".join(f"{i}\n" for i in range(1, lines + 1)).encode())
    got = hashlib.sha256()
    sizes: list[int] = []

    def sink(chunk: Chunk) -> None:
        assert chunk.stream == "stdout"
        got.update(chunk.data)
        sizes.append(len(chunk.data))

    result = conn.run(f"seq 1 {lines}", sink, timeout=60)
    assert result.outcome == "ok"
    assert result.bytes_out == sum(sizes) > 50_000_000
    assert got.hexdigest() == expected.hexdigest()
    assert max(sizes) > 16 * 1024  # read in large chunks, not line by line


def test_5_mb_on_stderr_only_does_not_deadlock(conn):
    result, sink = run(conn, "head -c 5000000 /dev/zero | tr '\\0' e >&2; echo done", timeout=30)
    assert result.outcome == "ok"
    assert result.bytes_err == 5_000_000 and sink.data("stderr") == b"e" * 5_000_000
    assert sink.data("stdout") == b"done\n"


def test_timeout_stops_the_remote_process(conn):
    a, b = marker(), marker()
    start = time.monotonic()
    result, _ = run(conn, f"sleep {a} & sleep {b}; wait", timeout=0.5)
    assert result.outcome == "timeout" and "timed out" in result.error
    assert time.monotonic() - start < 8  # 0.5 s, then TERM and KILL: not the sleeps (minutes), with slack for load
    assert wait_gone(f"sleep ({a}|{b})", 2) == []


def test_cancel_kills_the_remote_process_group(conn):
    started = threading.Event()
    cancel = threading.Event()
    results: list[TargetResult] = []

    def sink(chunk: Chunk) -> None:
        if b"started" in chunk.data:
            started.set()

    a, b = marker(), marker()
    worker = threading.Thread(target=lambda: results.append(
        conn.run(f"echo started; sleep {a} & sleep {b}; wait", sink, cancel=cancel)))
    worker.start()
    try:
        assert started.wait(10)
        deadline = time.monotonic() + 10  # "started" is printed before the two sleeps exist: wait for them
        while len(remote_processes(f"^sleep ({a}|{b})")) < 2:
            assert time.monotonic() < deadline, "the remote sleeps never started"
            time.sleep(0.02)
    finally:
        cancelled_at = time.monotonic()
        cancel.set()
        worker.join(10)
    assert results and results[0].outcome == "cancelled"
    # TERM, then KILL after STOP_GRACE (1 s): well before the sleeps would end on their own (minutes), with
    # slack for a loaded 2-core machine; a cancel that waited for the command would take far longer.
    assert wait_gone(f"sleep ({a}|{b})", 10) == []
    assert time.monotonic() - cancelled_at < 10


def test_cancel_is_heard_while_a_flood_outruns_the_sink(conn):
    """A flood faster than its sink (a slow terminal, a recording on a full disk) never leaves the channel's
    buffer empty: the read loop still looks at cancel between reads, so the command is stopped, not read
    to its end (or to its timeout). Seen in CI: a disk-full run ran on until the action's timeout."""
    cancel = threading.Event()
    after_cancel = 0

    def slow_sink(chunk: Chunk) -> None:  # a consumer slower than the producer, not a synchronisation
        nonlocal after_cancel
        if cancel.is_set():
            after_cancel += len(chunk.data)
        cancel.set()
        time.sleep(0.01)

    m = marker()
    result = conn.run(f"yes {m} | head -c 300000000", slow_sink, cancel=cancel)
    assert result.outcome == "cancelled", result
    # what was in flight when the stop landed (read budget, channel window, pipes), not the 300 MB
    assert after_cancel < 32 * 1024 * 1024, after_cancel
    assert wait_gone(f"yes {m}", 10) == []


def test_connection_runs_commands_in_parallel_channels(conn, tmp_path):
    # Each command waits until all four are running: they succeed only if the channels run at once
    # (one at a time, the first would give up after 10 s). No wall-clock bound on a loaded machine.
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    command = (f"touch {barrier}/$$; n=0; while [ $(ls {barrier} | wc -l) -lt 4 ] && [ $n -lt 200 ]; do "
               f"sleep 0.05; n=$((n+1)); done; [ $(ls {barrier} | wc -l) -ge 4 ]")
    results: list[TargetResult] = []
    threads = [threading.Thread(target=lambda: results.append(run(conn, command)[0])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.outcome for r in results] == ["ok"] * 4


# --- host keys -------------------------------------------------------------------------


def test_unknown_host_key_is_refused_with_fingerprint_and_keyscan_hint(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyUnknown) as info:
        connect(endpoint(sshd, known_hosts=(str(empty),)))
    error = info.value
    assert error.outcome == "hostkey"
    assert (error.host, error.port, error.key_type) == (sshd.host, sshd.port, "ssh-ed25519")
    assert error.fingerprint == sshd.host_fingerprint
    assert sshd.host_fingerprint in str(error)
    assert f"ssh-keyscan -p {sshd.port}" in str(error) and sshd.host in str(error)


def test_changed_host_key_is_refused_with_both_fingerprints(sshd, start_sshd, tmp_path):
    other = start_sshd(user_key=sshd.identity_file, addresses=("127.0.0.1",))
    stale = tmp_path / "known_hosts"  # the first server's key recorded for the second's address
    stale.write_text(f"[127.0.0.1]:{other.port} {sshd.host_key_pub}\n")
    with pytest.raises(HostKeyMismatch) as info:
        connect(endpoint(other, known_hosts=(str(stale),)))
    error = info.value
    assert error.outcome == "hostkey"
    assert sshd.host_fingerprint in error.expected
    assert error.actual == other.host_fingerprint
    assert sshd.host_fingerprint in str(error) and other.host_fingerprint in str(error)


def test_hashed_known_hosts_entries_are_accepted(sshd, tmp_path):
    hashed = tmp_path / "known_hosts"
    hashed.write_text(Path(sshd.known_hosts).read_text())
    subprocess.run(["ssh-keygen", "-H", "-f", str(hashed)], check=True, capture_output=True)
    text = hashed.read_text()
    assert text.startswith("|1|") and "127.0.0.1" not in text
    with connect(endpoint(sshd, host="127.0.0.4", known_hosts=(str(hashed),))) as c:
        assert c.run("true", lambda chunk: None).outcome == "ok"


def test_known_key_type_is_preferred_over_the_default_order(start_sshd, tmp_path):
    server = start_sshd(addresses=("127.0.0.1",), extra_host_keys=("ecdsa",))
    ecdsa_pub = " ".join(Path(server.workdir, "ssh_host_ecdsa_key.pub").read_text().split()[:2])
    known = tmp_path / "known_hosts"  # only the ecdsa key is on record, ed25519 would come first
    known.write_text(f"[127.0.0.1]:{server.port} {ecdsa_pub}\n")
    with connect(endpoint(server, known_hosts=(str(known),))) as c:
        assert c.run("true", lambda chunk: None).outcome == "ok"


def test_revoked_host_key_is_refused(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(Path(sshd.known_hosts).read_text() + f"@revoked * {sshd.host_key_pub}\n")
    with pytest.raises(HostKeyRevoked) as info:
        connect(endpoint(sshd, known_hosts=(str(known),)))
    assert info.value.outcome == "hostkey"


# --- authentication and reachability ---------------------------------------------------


def test_wrong_user_key_is_refused_naming_what_was_tried(sshd, tmp_path):
    wrong = tmp_path / "id_wrong"
    keygen(wrong)
    with pytest.raises(AuthFailed) as info:
        connect(endpoint(sshd, identity_file=str(wrong)))
    assert info.value.outcome == "auth"
    assert str(wrong) in str(info.value) and "rejected" in str(info.value)


def test_closed_port_is_unreachable(sshd):
    port = free_port()
    with pytest.raises(Unreachable, match="refused") as info:
        connect(endpoint(sshd, port=port))
    assert info.value.outcome == "unreachable" and str(port) in str(info.value)


def test_dns_failure_is_unreachable(sshd):
    with pytest.raises(Unreachable, match="cannot resolve no-such-host.invalid"):
        connect(endpoint(sshd, host="no-such-host.invalid"))


def test_silent_server_is_unreachable_no_banner(sshd):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(Unreachable, match="no SSH banner"):
            connect(endpoint(sshd, port=port, connect_timeout=0.5))


def test_a_stalled_key_exchange_times_out_without_a_timer_thread(sshd):
    """A server that sends its banner and then nothing: the handshake times out, named as such, and no
    thread is left behind (paramiko's handshake timer thread is replaced by a deadline)."""
    before = set(threading.enumerate())  # the module's shared connection keeps its own transport thread
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        accepted = []

        def serve():
            peer, _ = listener.accept()
            accepted.append(peer)
            peer.sendall(b"SSH-2.0-stalled\r\n")  # then never a KEXINIT

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        try:
            with pytest.raises(Unreachable, match="SSH handshake with 127.0.0.1:[0-9]+ timed out after 0.5s"):
                connect(endpoint(sshd, port=listener.getsockname()[1], connect_timeout=0.5))
        finally:
            server.join(10)
            for peer in accepted:
                peer.close()
    assert not [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
    for transport in [t for t in set(threading.enumerate()) - before if type(t).__name__ == "_Transport"]:
        transport.join(10)
        assert not transport.is_alive(), "a transport thread outlived its failed handshake"


def test_ssh_config_alias_is_honoured(sshd, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host db-primary\n"
        "  HostName 127.0.0.2\n"
        f"  Port {sshd.port}\n"
        f"  User {sshd.user}\n"
        f"  IdentityFile {sshd.identity_file}\n"
    )
    alias = Endpoint(name="db", host="db-primary", known_hosts=(sshd.known_hosts,), ssh_config=str(config),
                     allow_agent=False, look_for_keys=False, connect_timeout=5.0)
    with connect(alias) as c:
        result, sink = run(c, "echo $SSH_CONNECTION")
    assert result.outcome == "ok" and result.target == "db"
    assert sink.data("stdout").split()[2] == b"127.0.0.2"  # the server address that was reached


def test_closing_the_connection_stops_commands_still_running(sshd):
    connection = connect(endpoint(sshd))
    started = threading.Event()
    a = marker()
    worker = threading.Thread(target=connection.run, args=(
        f"echo started; sleep {a}", lambda chunk: started.set()))
    worker.start()
    assert started.wait(10)
    connection.close()
    worker.join(10)
    assert wait_gone(f"sleep {a}", 2) == []
