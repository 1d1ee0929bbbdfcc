"""Parameters: parse ``K=V``, validate against the action's schema, render the command safely."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from opsgate.console.catalog.model import Action, Param, Runbook
from opsgate.console.errors import ConfigError, ParamError
from opsgate.console.catalog.template import render, template_fields

_INT = re.compile(r"^-?[0-9]{1,18}$")


def parse_assignments(items: Iterable[str], source: str = "--param") -> dict[str, str]:
    """``["service=nginx", "n=3"]`` -> ``{"service": "nginx", "n": "3"}``; a repeated key is an error."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParamError(f"bad {source} {_name_only(item)}: expected NAME=VALUE")
        if key in out:
            raise ParamError(f"{source} {key} given twice")
        out[key] = value
    return out


def _name_only(item: str) -> str:
    """A malformed ``--param`` for an error message: the name it starts with, never the rest (``key:VALUE``
    is a typo of ``key=VALUE``, and the value may be a secret)."""
    name = re.match(r"[A-Za-z_][A-Za-z0-9_]*", item)
    if name is None or name.end() == len(item):  # a lone word may be a value given without its name
        return "(its text is not shown: it may be a secret)"
    return f"{name.group(0)!r}... (the rest is not shown: it may be a secret)"


def check_value(param: Param, raw: str) -> str | int:
    """Validate one raw value; return it typed. Raises ValueError saying what is accepted."""
    if "\x00" in raw:
        raise ValueError("contains a NUL byte")
    if param.secret and ("\n" in raw or "\r" in raw):
        raise ValueError("a secret value is one line (it travels to the target as one line of stdin)")
    if param.type == "int":
        if not _INT.match(raw):
            raise ValueError(f"expected an integer, got {raw!r}")
        value: str | int = int(raw)
        if param.min is not None and value < param.min:
            raise ValueError(f"{value} is below the minimum {param.min}")
        if param.max is not None and value > param.max:
            raise ValueError(f"{value} is above the maximum {param.max}")
    else:
        value = raw
    if param.choices is not None and value not in param.choices:
        raise ValueError(f"{_show(param, raw)} is not one of: {', '.join(str(c) for c in param.choices)}")
    if param.pattern is not None:
        try:
            matched = re.fullmatch(param.pattern, raw)
        except re.error as e:
            raise ValueError(f"invalid pattern: {e}") from None
        if not matched:
            raise ValueError(f"{_show(param, raw)} does not match {param.pattern}")
    return value


def _show(param: Param, raw: str) -> str:
    return "the value" if param.secret else repr(raw)


def resolve_params(action: Action | Runbook, given: Mapping[str, str]) -> dict[str, str | int]:
    """Validate every given value, fill defaults, and report all problems in one ParamError."""
    problems = []
    values: dict[str, str | int] = {}
    for name in given:
        if name not in action.params:
            known = ", ".join(action.params) or "none"
            problems.append(f"unknown param {name!r} for {action.id} (params: {known})")
    for name, param in action.params.items():
        if name in given:
            try:
                values[name] = check_value(param, given[name])
            except ValueError as e:
                problems.append(f"param {name}: {e}")
        elif param.default is not None:
            values[name] = param.default
        else:
            problems.append(f"param {name}: required ({param.describe()})")
    if problems:
        raise ParamError("; ".join(problems))
    return values


SECRET = "<secret>"  # what the trail, the dry run and every screen show for a secret value
SECRET_VARIABLE = "__opsgate_secret_"  # + the param's name: the remote shell variable that holds its value
NO_SECRET_EXIT = 125  # the command's exit status when its secret lines did not arrive on stdin


@dataclass(frozen=True)
class RenderedCommand:
    """The command that runs, the same for screens and the trail, and what the command reads first.

    A secret value is never in ``command``: the command starts by reading one line of standard input per
    secret param (``IFS= read -r __opsgate_secret_NAME``) and uses ``"$__opsgate_secret_NAME"`` where the
    template says ``{NAME}``; ``stdin`` holds those lines, and the executor sends them on the channel.
    So neither opsgate's argv, the remote shell's argv nor the certificate's force-command carries it.
    ``redacted`` is the template with ``<secret>`` in its place.
    """

    command: str
    redacted: str
    stdin: bytes = field(default=b"", repr=False)

    @property
    def secret_lines(self) -> int:
        return self.stdin.count(b"\n")


def inert_params(params: Mapping[str, Param]) -> frozenset[str]:
    """Params whose values are only digits (int params): safe anywhere in a command, even in quotes. Not a
    secret one: it is read from stdin into a shell variable, whose expansion is a word only where words are."""
    return frozenset(n for n, p in params.items() if p.type == "int" and not p.secret)


def render_command(action: Action, values: Mapping[str, str | int]) -> RenderedCommand:
    """The command with every value quoted and every secret read from stdin, and the redacted copy.

    Raises ConfigError if a placeholder stands where a quoted value would not stay one word (the
    loader refuses such a template; this holds for one built any other way too)."""
    inert = inert_params(action.params)
    used = sorted(n for n in template_fields(action.command) if action.params.get(n) and action.params[n].secret)
    shown = {n: SECRET for n in used}
    read = {n: f'"${SECRET_VARIABLE}{n}"' for n in used}  # a double-quoted expansion: one literal word
    try:
        command = render(action.command, values, inert=inert, verbatim=read)
        redacted = render(action.command, values, inert=inert, verbatim=shown)
    except ValueError as e:
        raise ConfigError(f"{action.id}: command: {e}") from None
    if not used:
        return RenderedCommand(command, redacted)
    lines = []
    for name in used:
        value = str(values[name])
        if "\n" in value:  # check_value refuses it; this holds for values given any other way too
            raise ParamError(f"param {name}: a secret value is one line")
        lines.append(value.encode() + b"\n")
    prologue = "".join(f"IFS= read -r {SECRET_VARIABLE}{n} || {{ echo 'opsgate: secret param {n} did not "
                       f"arrive on stdin' >&2; exit {NO_SECRET_EXIT}; }}\n" for n in used)
    return RenderedCommand(prologue + command, redacted, b"".join(lines))
