"""A real rsyslogd on 127.0.0.1 for the forwarding tests, and a throwaway CA for its TLS listener.

Each collector has its own config, pid file, work directory and output file; it loads only imtcp
(no imuxsock, no imklog: it never touches the host's logging) and writes every message it
receives on its port, one per line, with the template below: the RFC 5424 form that
``opsgate audit verify --against`` reads.
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
GTLS_MODULE_DIRS = ("/usr/lib/x86_64-linux-gnu/rsyslog", "/usr/lib/aarch64-linux-gnu/rsyslog", "/usr/lib/rsyslog")

# What the collector writes: the RFC 5424 message again (rsyslog's RSYSLOG_SyslogProtocol23Format).
TEMPLATE = ("<%PRI%>1 %TIMESTAMP:::date-rfc3339% %HOSTNAME% %APP-NAME% %PROCID% %MSGID% "
            "%STRUCTURED-DATA% %msg%\\n")


def rsyslog_available(tls: bool = False) -> bool:
    """rsyslogd is installed (and, for TLS, its gtls network stream driver: rsyslog-gnutls)."""
    if not os.path.exists(RSYSLOGD):
        return False
    return not tls or any(os.path.exists(f"{d}/lmnsd_gtls.so") for d in GTLS_MODULE_DIRS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_file: Path  # a CA that signed nothing here: the collector must not be trusted with it


def make_pki(where: Path) -> Pki:
    """Generate the PEM files in ``where`` with the ``cryptography`` package."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    where.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key, path: Path) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)

    def make_ca(cn: str):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        return key, cert

    def leaf(ca_key, ca_cert, cn: str, usage, sans):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca_cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    ca_key, ca_cert = make_ca("opsgate test CA")
    server_key, server_cert = leaf(ca_key, ca_cert, "localhost", ExtendedKeyUsageOID.SERVER_AUTH,
                                   [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client_key, client_cert = leaf(ca_key, ca_cert, "opsgate-client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    _, other_cert = make_ca("some other CA")
    pki = Pki(where / "ca.pem", where / "server.pem", where / "server.key", where / "client.pem", where / "client.key",
              where / "other-ca.pem")
    pki.ca_file.write_bytes(ca_cert.public_bytes(pem))
    pki.server_cert.write_bytes(server_cert.public_bytes(pem))
    write_key(server_key, pki.server_key)
    pki.client_cert.write_bytes(client_cert.public_bytes(pem))
    write_key(client_key, pki.client_key)
    pki.other_ca_file.write_bytes(other_cert.public_bytes(pem))
    return pki


class Rsyslog:
    """One rsyslogd listening on 127.0.0.1:``port`` (plain TCP, or TLS when ``pki`` is given)."""

    def __init__(self, where: Path, *, pki: Pki | None = None, client_auth: bool = False):
        self.dir = where
        self.dir.mkdir(parents=True, exist_ok=True)
        self.work = self.dir / "work"
        self.work.mkdir(exist_ok=True)
        self.output = self.dir / "collected.log"
        self.conf = self.dir / "rsyslog.conf"
        self.pidfile = self.dir / "rsyslogd.pid"
        self.log = self.dir / "rsyslogd.log"
        self.port = free_port()
        self.pki = pki
        self.proc: subprocess.Popen | None = None
        tls_global = tls_module = ""
        if pki is not None:
            tls_global = (f' DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{pki.ca_file}"'
                          f' DefaultNetstreamDriverCertFile="{pki.server_cert}"'
                          f' DefaultNetstreamDriverKeyFile="{pki.server_key}"')
            mode = "x509/certvalid" if client_auth else "anon"
            tls_module = f' StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="{mode}"'
        # escapeControlCharactersOnReceive off: a DEL in a record must reach the file as it was sent.
        self.conf.write_text(f"""
global(workDirectory="{self.work}" maxMessageSize="1m" parser.escapeControlCharactersOnReceive="off"{tls_global})
module(load="imtcp"{tls_module})
template(name="opsgate" type="string" string="{TEMPLATE}")
ruleset(name="opsgate") {{ action(type="omfile" file="{self.output}" template="opsgate") }}
input(type="imtcp" address="127.0.0.1" port="{self.port}" ruleset="opsgate")
""")

    @property
    def url(self) -> str:
        return f"syslog+{'tls' if self.pki else 'tcp'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start rsyslogd in the foreground (-n) and wait until its port accepts connections."""
        assert self.proc is None, "already running"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"rsyslogd did not listen on {self.port} within {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, as an init system stops it: rsyslogd writes what it has read, then exits."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def lines(self) -> list[bytes]:
        """The complete lines written so far."""
        try:
            data = self.output.read_bytes()
        except FileNotFoundError:
            return []
        return data[:data.rfind(b"\n") + 1].splitlines()

    def wait_for(self, predicate, timeout: float = 60.0) -> list[bytes]:
        """Poll the output until ``predicate(lines)`` holds; return the lines (assert on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            if predicate(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"collector output did not reach the expected state in {timeout}s; "
                                     f"{len(lines)} lines; last: {lines[-1:]!r}")
            time.sleep(0.05)
