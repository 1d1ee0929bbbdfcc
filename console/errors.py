"""Typed errors. Each carries the message the user must read and the CLI exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DENIED = 3
EXIT_AUDIT = 4
EXIT_CANCELLED = 130


class OpsgateError(Exception):
    """Base of every error the CLI turns into one line and an exit code."""

    exit_code = EXIT_USAGE


class UsageError(OpsgateError):
    exit_code = EXIT_USAGE


class ConfigError(OpsgateError):
    """A config problem. ``str()`` names the file and the key path; several may be bundled."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = problems or [message]
        super().__init__(message)


class ParamError(OpsgateError):
    """A bad parameter value on the command line or in the form."""

    exit_code = EXIT_USAGE


class StepUpDenied(OpsgateError):
    """Policy, failed step-up, lockout or missing approval: nothing runs."""

    exit_code = EXIT_DENIED


class CredentialsError(StepUpDenied):
    """The credentials store cannot be trusted or read (fail closed)."""


class AuditWriteError(OpsgateError):
    """The audit trail could not be written; the action must not run."""

    exit_code = EXIT_AUDIT
