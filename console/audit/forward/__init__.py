"""Shipping the trail to a syslog collector: ``wire`` (RFC 5424 framing), ``cursor`` (how far the
collector has it), ``forwarder`` (the background sender), ``collector`` (comparing its copy)."""

from opsgate.console.errors import EXIT_FAILED, OpsgateError


class ForwardError(OpsgateError):
    """Forwarding cannot start or a collector copy cannot be read (one line, exit 1)."""

    exit_code = EXIT_FAILED
