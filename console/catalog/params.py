"""Parameters: parse ``K=V``, validate against the action's schema, render the command safely."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from opsgate.console.catalog.model import Action, Param, Runbook
from opsgate.console.errors import ConfigError, ParamError
from opsgate.console.catalog.template import render

_INT = re.compile(r"^-?[0-9]{1,18}$")


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``["service=nginx", "n=3"]`` -> ``{"service": "nginx", "n": "3"}``; a repeated key is an error."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParamError(f"bad --param {_name_only(item)}: expected NAME=VALUE")
        if key in out:
            raise ParamError(f"--param {key} given twice")
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


@dataclass(frozen=True)
class RenderedCommand:
    """The command that runs, and the same with secret values redacted (for audit and screens)."""

    command: str
    redacted: str


def inert_params(params: Mapping[str, Param]) -> frozenset[str]:
    """Params whose values are only digits (int params): safe anywhere in a command, even in quotes."""
    return frozenset(n for n, p in params.items() if p.type == "int")


def render_command(action: Action, values: Mapping[str, str | int]) -> RenderedCommand:
    """The command with every value quoted, and the same with secret values redacted.

    Raises ConfigError if a placeholder stands where a quoted value would not stay one word (the
    loader refuses such a template; this holds for one built any other way too)."""
    secrets = frozenset(n for n, p in action.params.items() if p.secret)
    inert = inert_params(action.params)
    try:
        return RenderedCommand(render(action.command, values, inert=inert),
                               render(action.command, values, redact=secrets, inert=inert))
    except ValueError as e:
        raise ConfigError(f"{action.id}: command: {e}") from None
