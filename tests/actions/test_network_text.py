"""Text from the network (a MITM's SSH version line, what paramiko logs of the server) is escaped before it
reaches an error message, hence the CLI, the TUI and the audit record that show it."""

from __future__ import annotations

import logging

from opsgate.actions.errors import SSHConfigError, SSHError, Unreachable
from opsgate.actions.outcome import Endpoint
from opsgate.actions.ssh import connect

from tests.helpers.hostile import HOSTILE_BANNER, BannerServer, assert_inert


def test_a_hostile_version_line_is_escaped_in_the_error(tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    with BannerServer(HOSTILE_BANNER) as server:
        endpoint = Endpoint("evil", "127.0.0.1", server.port, "x", known_hosts=(str(known_hosts),), ssh_config=None,
                            allow_agent=False, look_for_keys=False, connect_timeout=5)
        try:
            connect(endpoint)
        except Unreachable as e:
            message = str(e)
        else:
            raise AssertionError("a bad version line connected")
    assert "Incompatible version" in message
    assert_inert(message)
    assert "^[]52;c;" in message and "^[]0;pwned^G" in message and "\\x9b2J" in message  # shown, not dropped


def test_every_ssh_error_escapes_its_message():
    for cls in (SSHError, Unreachable, SSHConfigError):
        e = cls("t: \x1b]52;c;QUJD\x07 \r\x1b[2K\u009b2J\nfake line")
        assert_inert(str(e))
        assert "\n" not in str(e)
    assert SSHError(3).args == (3,)  # not text: left alone


def test_paramiko_transport_log_is_escaped(caplog):
    with caplog.at_level(logging.DEBUG, logger="paramiko.transport"):
        logging.getLogger("paramiko.transport").info("Disconnect (code %d): %s", 2, "\x1b]0;pwned\x07\x1b[2J")
    assert caplog.records and all("\x1b" not in r.getMessage() for r in caplog.records)
    assert "^[]0;pwned^G" in caplog.records[-1].getMessage()
