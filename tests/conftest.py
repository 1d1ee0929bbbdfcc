"""Shared pytest fixtures. Keep one section per concern."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helper modules (sshd.py)

import sshd as sshd_helper  # noqa: E402


# --- real OpenSSH sshd on loopback -------------------------------------------------


def _require_sshd() -> None:
    if sshd_helper.sshd_available():
        return
    if os.geteuid() == 0:
        pytest.fail(f"{sshd_helper.SSHD} or ssh-keygen is missing; `make test` installs openssh-server")
    pytest.skip(f"{sshd_helper.SSHD} or ssh-keygen is missing and we are not root to install it")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> sshd_helper.SshServer:
    """One sshd for the whole session, listening on 127.0.0.1-16 (see tests/sshd.py)."""
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
