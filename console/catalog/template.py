"""Command templates: ``{name}`` is a param, ``{{``/``}}`` a literal brace, anything else is the shell's.

``${VAR}`` and ``awk '{print $1}'`` are left alone: only braces that enclose a bare identifier,
not preceded by ``$``, are fields.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

_FIELD = re.compile(r"\{\{|\}\}|(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")


def template_fields(command: str) -> set[str]:
    """The param names a command template uses."""
    return {m.group(1) for m in _FIELD.finditer(command) if m.group(1)}


def render(command: str, values: Mapping[str, object], *, redact: frozenset[str] = frozenset()) -> str:
    """Substitute every field with the shell-quoted value; names in ``redact`` become ``<redacted>``."""

    def substitute(m: re.Match) -> str:
        name = m.group(1)
        if name is None:
            return m.group(0)[0]  # "{{" -> "{", "}}" -> "}"
        if name in redact:
            return "<redacted>"
        return shlex.quote(str(values[name]))

    return _FIELD.sub(substitute, command)
