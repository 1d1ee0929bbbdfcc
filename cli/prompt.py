"""The command line's Prompter: asks on the terminal, or reads a script's standard input.

On a terminal, codes are read without echo (getpass) and a wrong code may be retyped. When standard
input is not a terminal, each question reads the next line of standard input: the first line is the
code; a second code for the same question is never read (``ask_code`` returns None after a failed
attempt), so a wrong code in a script is a denial rather than a loop. Approvals from a script read
the approver's name and then their code, one line each.
"""

from __future__ import annotations

import getpass
import sys
import threading
from typing import TextIO

from opsgate.console.stepup.verifier import Prompt


class TerminalPrompter:
    """Prompter for ``opsgate auth``, ``opsgate enroll`` and ``opsgate run``."""

    def __init__(self, stdin: TextIO | None = None, out: TextIO | None = None):
        self.stdin = stdin or sys.stdin
        self.out = out or sys.stderr  # prompts go to stderr, so stdout stays the command's output
        self.interactive = _isatty(self.stdin)

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _line(self, label: str) -> str | None:
        """The next line of a script's stdin (None at end of input)."""
        line = self.stdin.readline()
        if not line:
            self._say(f"{label}: no input")
            return None
        return line.rstrip("\r\n")

    def ask_code(self, prompt: Prompt) -> str | None:
        """A one-time code; None when cancelled (Ctrl-D, end of input, or a script's second attempt)."""
        if prompt.error:
            self._say(f"opsgate: {prompt.error}")
        who = f"{prompt.operator}'s" if prompt.purpose == "approval" else "your"
        label = f"{who} OTP code"
        if not self.interactive:
            if prompt.error:
                return None  # a script gets one attempt per question
            return self._line(label)
        self._say(f"{prompt.purpose}: {prompt.summary}")
        try:
            return getpass.getpass(f"Enter {label} ({prompt.operator}): ", stream=self.out)
        except EOFError:
            return None

    def ask_pin(self, prompt: Prompt) -> str | None:
        """The security key's PIN, without echo; None when cancelled. Never logged or kept.

        From a script, the next line of stdin, once per question: after a wrong PIN it returns None (a denial
        that says how many attempts the key has left), never a second line.
        """
        if prompt.error:
            self._say(f"opsgate: {prompt.error}")
        left = "" if prompt.attempts_left is None else f", {prompt.attempts_left} attempts left"
        if not self.interactive:
            if prompt.error:
                return None
            return self._line("security key PIN")
        try:
            return getpass.getpass(f"Enter the PIN of {prompt.operator}'s security key{left}: ", stream=self.out)
        except EOFError:
            return None

    def touch_started(self, prompt: Prompt, cancel: threading.Event) -> None:
        who = f"{prompt.operator}: touch" if prompt.purpose == "approval" else "Touch"
        self._say(f"{prompt.purpose}: {prompt.summary}")
        self._say(f"{who} your security key now (Ctrl-C to cancel)...")

    def touch_finished(self) -> None:
        pass

    def ask_confirmation(self, expected: str, prompt: Prompt) -> str | None:
        """The typed confirmation: a short text the prompt names (a target's or runbook's name, a count)."""
        label = f"Type {expected} to confirm" + (f" ({prompt.hint})" if prompt.hint else "")
        if not self.interactive:
            self._say(label)
            return self._line("confirmation")
        try:
            return input_to(self.out, self.stdin, f"{label}: ")
        except EOFError:
            return None

    def notice(self, text: str) -> None:
        """A message from the gate while it works (a pending approval's id, ...)."""
        print(f"opsgate: {text}", file=sys.stderr, flush=True)

    def show_enrollment(self, uri: str) -> None:
        show_enrollment(uri)

    def ask_approver(self, candidates: list[str], prompt: Prompt) -> str | None:
        """The name of the operator who approves now (they answer with their own factor next)."""
        self._say(f"{prompt.summary}: needs approval by one of: {', '.join(candidates)}")
        if not self.interactive:
            return self._line("approver")
        try:
            return input_to(self.out, self.stdin, "Approver: ") or None
        except EOFError:
            return None


def ask_secret(label: str, out: TextIO | None = None) -> str:
    """A secret param's value from the terminal, without echo (getpass); Ctrl-D or Ctrl-C stops the run."""
    from opsgate.console.errors import UsageError

    try:
        return getpass.getpass(f"{label}, not shown: ", stream=out or sys.stderr)
    except EOFError:
        raise UsageError("no value given for a secret param: nothing ran") from None


def input_to(out: TextIO, stdin: TextIO, label: str) -> str:
    """``input()`` with the label on ``out`` (stderr), reading ``stdin``."""
    out.write(label)
    out.flush()
    line = stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\r\n").strip()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def show_enrollment(uri: str, out: TextIO | None = None) -> None:
    """The new OTP secret as a URI and a QR code, for the operator's authenticator app."""
    import segno

    out = out or sys.stdout
    out.write(f"Add this account to your authenticator app (scan the QR code or enter the URI):\n{uri}\n\n")
    segno.make(uri, error="m").terminal(out=out, compact=True)
    out.flush()
