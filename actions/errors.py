"""Why a target could not be reached: typed errors whose message is meant for the operator.

Kept apart from ssh.py so sshconfig.py can raise them without an import cycle; ssh.py re-exports them.
"""

from __future__ import annotations

from opsgate.actions.display import escape_line


class SSHError(Exception):
    """Connecting to a target failed; the message is meant for the operator.

    It often quotes the network (a version string, a jump host's refusal, what a ProxyCommand printed):
    its text is escaped (``display.escape_line``) before it reaches any message, log or audit record.
    """

    outcome = "unreachable"

    def __init__(self, *args: object):
        super().__init__(*(escape_line(a) if isinstance(a, str) else a for a in args))


class Unreachable(SSHError):
    """DNS failure, refused connection, connect timeout, no SSH banner, a jump host or proxy that failed."""


class AuthFailed(SSHError):
    """The server accepted none of the keys tried."""

    outcome = "auth"


class SSHConfigError(SSHError):
    """The ssh_config asks for something opsgate does not do (or is broken): refused before connecting.

    The target is reported "unreachable": nothing was opened, nothing ran.
    """
