"""The pytest fixtures for real system services, loaded by ``tests/conftest.py`` (``pytest_plugins``).

Every test that uses one of ``SYSTEM_FIXTURES`` (directly or through another fixture) gets the ``system``
marker from ``tests/conftest.py``: ``pytest -m "not system"`` leaves them out.
"""

from __future__ import annotations

import os

import pytest

from tests.helpers import sshd as sshd_helper
from tests.helpers.forward_fixtures import Rsyslog, rsyslog_available

SYSTEM_FIXTURES = frozenset({"sshd", "start_sshd", "rsyslog"})


def _missing(what: str, package: str) -> None:
    """Fail as root (``make test`` installs ``package``), else skip: the test cannot run here."""
    if os.geteuid() == 0:
        pytest.fail(f"{what} is missing; `make test` installs {package}")
    pytest.skip(f"{what} is missing and we are not root to install {package}")


# --- real OpenSSH sshd on loopback -------------------------------------------------


def _require_sshd() -> None:
    if not sshd_helper.sshd_available():
        _missing(f"{sshd_helper.SSHD} or ssh-keygen", "openssh-server")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> sshd_helper.SshServer:
    """One sshd for the whole session, listening on 127.0.0.1-16 (see tests/helpers/sshd.py)."""
    _require_sshd()
    server = sshd_helper.start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_sshd(tmp_path_factory):
    """Start extra sshd servers for one test: `start_sshd(user_key=..., addresses=...)`."""
    _require_sshd()
    servers: list[sshd_helper.SshServer] = []

    def start(**kwargs) -> sshd_helper.SshServer:
        server = sshd_helper.start_sshd(tmp_path_factory.mktemp("sshd-extra"), **kwargs)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


# --- real rsyslogd on loopback (the audit forwarding tests) ------------------------


@pytest.fixture
def rsyslog(tmp_path_factory):
    """Make rsyslogd collectors for one test: `rsyslog(start=True, pki=None, client_auth=False)`.

    With ``pki`` the collector listens with TLS (needs rsyslog-gnutls); ``start=False`` leaves it down
    until the test calls ``start()``. Every collector is stopped after the test.
    """
    servers: list[Rsyslog] = []

    def make(*, start: bool = True, **kwargs) -> Rsyslog:
        tls = kwargs.get("pki") is not None
        if not rsyslog_available(tls):
            _missing("rsyslogd or its gtls driver" if tls else "rsyslogd", "rsyslog-gnutls" if tls else "rsyslog")
        server = Rsyslog(tmp_path_factory.mktemp("rsyslog"), **kwargs)
        servers.append(server)
        if start:
            server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()
