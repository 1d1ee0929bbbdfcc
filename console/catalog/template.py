"""Command templates: ``{name}`` is a param, ``{{``/``}}`` a literal brace, anything else is the shell's.

``${VAR}`` and ``awk '{print $1}'`` are left alone: only braces that enclose a bare identifier,
not preceded by ``$``, are fields.

A value is rendered as one shell word (``quote``): bare when it is made only of characters no shell
treats specially (and is not a reserved word such as ``if``), else in single quotes. That word is
literal only where the shell reads plain words: a ``{param}`` inside quotes, a substitution, a
comment or a here-document, after a backslash, in a ``~user`` prefix or right after ``$NAME`` would
let the value's own quotes end the template's (``echo "note: {reason}"`` with ``reason=$(reboot)``
runs ``reboot``), and inside ``[[ ]]``, ``(( ))``, ``$(( ))`` or ``[...]`` bash evaluates it as
arithmetic, which runs ``x[$(reboot)]``. ``unsafe_placeholders`` finds those places (int params,
digits only, may stand anywhere); the loader refuses them (``opsgate check``), and ``render`` refuses
them too, whoever built the template. ``tests/reliability/test_fuzz.py`` runs accepted templates with
hostile values on a real sshd.

What a command does with its one word is the template's: ``sh -c {x}``, ``eval {x}``, ``let {x}``,
``declare -i n={x}``, SQL or a regular expression interpret it.
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping

_FIELD = re.compile(r"\{\{|\}\}|(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")

# A value made only of these characters is one literal word wherever a plain word is (no quote,
# glob, expansion, brace-expansion comma, assignment "=", tilde, blank or operator among them).
_BARE = re.compile(r"[A-Za-z0-9_@%+:./-]+")
RESERVED_WORDS = frozenset(
    "case coproc do done elif else esac fi for function if in select then time until while".split())

# Why a placeholder at that place is refused: what the operator reads after "{name} is ...".
IN_SINGLE_QUOTES = "inside single quotes"
IN_DOUBLE_QUOTES = "inside double quotes"
IN_ANSI_QUOTES = "inside $'...' quotes"
IN_SUBSTITUTION = "inside a $(...) command substitution"
IN_BACKTICKS = "inside `...` backticks"
IN_PARAMETER = "inside a ${...} parameter expansion"
IN_ARITHMETIC = "inside arithmetic ($((...)), ((...)) or $[...], which can run commands a value names)"
IN_BRACES = "inside a {...} brace expansion"
IN_BRACKETS = "inside [...] (a glob bracket, or an array subscript that bash evaluates as arithmetic)"
IN_TEST = "inside [[ ... ]] (its -eq, -lt and the like evaluate a value as arithmetic, which can run commands)"
IN_COMMENT = "inside a # comment (a newline in the value would end it)"
AFTER_HEREDOC = "after a << here-document (its body is not shell words; a line of the value could end it)"
AFTER_BACKSLASH = "right after a backslash (it would escape the value's opening quote)"
AFTER_VARIABLE = "right after $NAME (the value would extend the variable's name; write ${NAME})"
IN_TILDE = "in a ~user prefix (the value would name the user)"
AFTER_CASE = "after a case statement inside $(...) (opsgate cannot tell where the substitution ends)"

_QUOTES_FIX = "put it outside the quotes: the value is quoted for you"
_FIX = {
    IN_SINGLE_QUOTES: _QUOTES_FIX + " (grep 'ERROR '{name} app.log, not grep 'ERROR {name}' app.log)",
    IN_DOUBLE_QUOTES: _QUOTES_FIX + ' (echo "note: "{name}, not echo "note: {name}")',
    IN_ANSI_QUOTES: _QUOTES_FIX,
    IN_SUBSTITUTION: "put it outside the substitution: the value is quoted for you as one word",
    IN_BACKTICKS: "put it outside the backticks: the value is quoted for you as one word",
    IN_PARAMETER: "put it outside the ${...}: the value is quoted for you as one word",
    IN_ARITHMETIC: "use an int param (digits only) or put it outside the expansion",
    IN_BRACES: "put it outside the braces",
    IN_BRACKETS: "put it outside the brackets",
    IN_TEST: "use an int param, or the test command [ ... ], which compares the value as text",
    IN_COMMENT: "remove it from the comment",
    AFTER_HEREDOC: "pass the value as an argument instead (printf '%s\\n' {name} | command)",
    AFTER_BACKSLASH: "remove the backslash: the value is quoted for you",
    AFTER_VARIABLE: "write ${NAME}{name}",
    IN_TILDE: "write the home directory out, or put the value after a /",
    AFTER_CASE: "move the case statement out of the substitution, or the placeholder before it",
}


def unsafe_message(name: str, why: str) -> str:
    """What ``opsgate check`` says of one refused placeholder: where it is, and the fix."""
    fix = _FIX.get(why, "put it where the shell reads plain words").replace("{name}", f"{{{name}}}")
    return f"{{{name}}} is {why}: {fix}"


_WORD_END = frozenset(" \t\n;&|()<>")  # what ends a shell word (blanks, newline, operator characters)
_SPECIAL_PARAMS = frozenset("#?$!@*-0123456789")


def template_fields(command: str) -> set[str]:
    """The param names a command template uses."""
    return {m.group(1) for m in _FIELD.finditer(command) if m.group(1)}


def quote(value: object) -> str:
    """``value`` as one literal shell word: bare if that is safe everywhere a word is, else single-quoted."""
    text = str(value)
    if _BARE.fullmatch(text) and text not in RESERVED_WORDS:
        return text
    return "'" + text.replace("'", "'\"'\"'") + "'"


def render(command: str, values: Mapping[str, object], *, verbatim: Mapping[str, str] | None = None,
           inert: Container[str] = ()) -> str:
    """Substitute every field with the shell-quoted value; a name in ``verbatim`` with its text there
    unquoted (``<secret>`` for display, or the shell expansion that reads a secret: see params).

    Raises ValueError if a field that is not ``inert`` (a value that is only digits: an int param)
    stands where a quoted value would not stay one literal word (``unsafe_placeholders``).
    """
    unsafe = unsafe_placeholders(command, inert)
    if unsafe:
        raise ValueError("; ".join(unsafe_message(name, why) for name, why in unsafe))

    def substitute(m: re.Match) -> str:
        name = m.group(1)
        if name is None:
            return m.group(0)[0]  # "{{" -> "{", "}}" -> "}"
        if verbatim and name in verbatim:
            return verbatim[name]
        return quote(values[name])

    return _FIELD.sub(substitute, command)


def unsafe_placeholders(command: str, inert: Container[str] = ()) -> list[tuple[str, str]]:
    """(name, why) for each field of ``command`` that is not where the shell reads plain words.

    ``inert`` names params whose values can only be digits (int params): those are safe anywhere.
    The scan errs on the side of refusing: where it cannot tell where a construct ends, every later
    field is refused.
    """
    names: list[str] = []
    pieces: list[str] = []
    pos = 0
    for m in _FIELD.finditer(command):
        pieces.append(command[pos:m.start()])
        if m.group(1) is None:
            pieces.append(m.group(0)[0])
        else:
            pieces.append(_MARK)
            names.append(m.group(1))
        pos = m.end()
    pieces.append(command[pos:])
    text = "".join(pieces)
    if _MARK in command:  # a template holding the scan's own marker: refuse every field rather than guess
        return [(name, "in a command that contains U+E000") for name in names]
    whys = _Scanner(text).scan()
    return [(name, why) for name, why in zip(names, whys) if why is not None and name not in inert]


_MARK = "\ue000"  # stands for a field while scanning (a private-use character)


class _Scanner:
    """A conservative shell lexer: for each field, None (plain words) or why not.

    It tracks quotes and substitutions with a stack of the constructs it is inside. When unsure it
    stays inside longer (more fields refused), never shorter.
    """

    def __init__(self, text: str):
        self.text = text
        self.i = 0
        self.whys: list[str | None] = []
        self.lost: str | None = None  # set once the scan cannot follow the shell: every later field refused

    def scan(self) -> list[str | None]:
        self._words(None)
        return self.whys

    def _field(self, why: str | None) -> None:
        self.whys.append(self.lost or why)
        self.i += 1

    # -- plain words: the top level, and inside $(...) / <(...) / ((...)) (closer ")"), [[ ... ]] ---------

    def _words(self, closer: str | None, why: str | None = None) -> None:
        """Shell words until ``closer`` (")" unquoted at depth 0, or "]]" as a word) or the end; fields
        get ``why``."""
        t = self.text
        depth = 0
        word = ""  # the current word so far (unquoted top-level characters), for ~user and $NAME
        while self.i < len(t):
            c = t[self.i]
            if c == _MARK:
                here = why
                if here is None and "~" in word and "/" not in word[word.index("~"):]:
                    here = IN_TILDE
                if here is None and re.search(r"\$[A-Za-z_][A-Za-z0-9_]*$", word):
                    here = AFTER_VARIABLE
                self._field(here)
                word += "x"
                continue
            if word == "" and t.startswith("((", self.i):  # (( ... )): an arithmetic command
                self.i += 2
                self._words(")", why or IN_ARITHMETIC)
                if t.startswith(")", self.i):
                    self.i += 1  # the second ")" of "))"
                continue
            if c in _WORD_END:
                if closer == ")" and c == "(":
                    depth += 1
                elif closer == ")" and c == ")":
                    if depth == 0:
                        self.i += 1
                        return
                    depth -= 1
                if t.startswith("<<<", self.i):  # a here-string: its word is a plain word
                    self.i += 3
                    word = ""
                    continue
                if t.startswith("<<", self.i):
                    self.lost = self.lost or AFTER_HEREDOC
                    self.i += 2
                    word = ""
                    continue
                if c in "<>" and t.startswith("(", self.i + 1):  # <(...) >(...) process substitution
                    self.i += 2
                    self._words(")", why or IN_SUBSTITUTION)
                    word += "x"
                    continue
                self.i += 1
                word = ""
                continue
            if c == "#" and word == "" and (self.i == 0 or t[self.i - 1] in _WORD_END):
                self._comment()
                continue
            if c == "c" and word == "" and closer == ")" and self.lost is None \
                    and re.match(r"case(?![A-Za-z0-9_])", t[self.i:self.i + 5]):
                self.lost = AFTER_CASE  # "case x in a) ..." has a ")" that does not close the substitution
            if c == "\\":
                if t.startswith(_MARK, self.i + 1):
                    self.i += 1
                    self._field(why or AFTER_BACKSLASH)
                else:
                    self.i += 2
                word += "x"
                continue
            if c == "{" and self.i + 1 < len(t) and t[self.i + 1] not in " \t\n":
                self.i += 1
                self._braces(why or IN_BRACES)
                word += "x"
                continue
            if word == "" and t.startswith("[[", self.i):  # [[ ... ]]: -eq and friends evaluate arithmetic
                self.i += 2
                self._words("]]", why or IN_TEST)
                word += "x"
                continue
            if c == "[" and self.i + 1 < len(t) and t[self.i + 1] not in " \t\n":
                self.i += 1
                self._brackets(why or IN_BRACKETS)
                word += "x"
                continue
            if closer == "]]" and word == "" and t.startswith("]]", self.i) and \
                    (self.i + 2 == len(t) or t[self.i + 2] in _WORD_END):
                self.i += 2
                return
            opened = self._opening(why)
            if opened:
                word += "x"
                continue
            word += c
            self.i += 1

    def _opening(self, why: str | None) -> bool:
        """If a quote or an expansion starts at ``i``, scan through it and return True."""
        t, i = self.text, self.i
        c = t[i]
        if c == "'":
            self.i += 1
            self._single(why or IN_SINGLE_QUOTES)
        elif c == '"':
            self.i += 1
            self._double(why or IN_DOUBLE_QUOTES)
        elif c == "`":
            self.i += 1
            self._backticks(why or IN_BACKTICKS)
        elif c == "$":
            return self._dollar(why, quoted=False)
        else:
            return False
        return True

    def _dollar(self, why: str | None, *, quoted: bool) -> bool:
        """``$`` at ``i``: scan an expansion that starts there; False if it is only a ``$``."""
        t, i = self.text, self.i
        nxt = t[i + 1] if i + 1 < len(t) else ""
        if nxt == "(":
            arithmetic = t.startswith("((", i + 1)
            self.i += 2
            self._words(")", why or (IN_ARITHMETIC if arithmetic else IN_SUBSTITUTION))  # $((...)): parens balance
        elif nxt == "{":
            self.i += 2
            self._braces(why or IN_PARAMETER)
        elif nxt == "[":
            self.i += 2
            self._brackets(why or IN_ARITHMETIC)
        elif nxt == "'" and not quoted:
            self.i += 2
            self._ansi(why or IN_ANSI_QUOTES)
        elif nxt == '"' and not quoted:
            self.i += 2
            self._double(why or IN_DOUBLE_QUOTES)
        elif nxt in _SPECIAL_PARAMS and nxt:
            self.i += 2  # $# is not a comment, $$ not two dollars
        else:
            return False
        return True

    # -- quoted and nested constructs: every field inside gets ``why`` --------------------------------

    def _single(self, why: str, *, escapes: bool = False) -> None:
        """To the closing ``'``; ``escapes`` for ``$'...'``, where a backslash escapes the next character."""
        t = self.text
        while self.i < len(t):
            c = t[self.i]
            if c == "'":
                self.i += 1
                return
            if c == _MARK:
                self._field(why)
            elif escapes and c == "\\":
                self._escaped(why)
            else:
                self.i += 1

    def _escaped(self, why: str) -> None:
        """At a backslash: the next character is taken literally, but a field right there still gets ``why``."""
        self.i += 1
        if self.text.startswith(_MARK, self.i):
            self._field(why)
        else:
            self.i += 1

    def _ansi(self, why: str) -> None:
        self._single(why, escapes=True)

    def _double(self, why: str) -> None:
        t = self.text
        while self.i < len(t):
            c = t[self.i]
            if c == '"':
                self.i += 1
                return
            if c == _MARK:
                self._field(why)
            elif c == "\\":
                self._escaped(why)
            elif c == "`":
                self.i += 1
                self._backticks(why)
            elif c == "$":
                if not self._dollar(why, quoted=True):
                    self.i += 1
            else:
                self.i += 1  # a ' is literal here

    def _backticks(self, why: str) -> None:
        # The shell ends `...` at the first unescaped backquote; quotes inside are followed too, which
        # can only keep the scan inside longer.
        self._nested("`", why)

    def _braces(self, why: str) -> None:
        self._nested("}", why, opener="{")

    def _brackets(self, why: str) -> None:
        self._nested("]", why, opener="[")

    def _nested(self, closer: str, why: str, opener: str | None = None) -> None:
        """Until ``closer`` at depth 0: quotes and expansions inside are followed (single quotes
        always start a quote here, even where a shell might read them literally: that only refuses more)."""
        t = self.text
        depth = 0
        while self.i < len(t):
            c = t[self.i]
            if c == closer and depth == 0:
                self.i += 1
                return
            if c == _MARK:
                self._field(why)
            elif c == "\\":
                self._escaped(why)
            elif opener is not None and c == opener:
                depth += 1
                self.i += 1
            elif opener is not None and c == closer:
                depth -= 1
                self.i += 1
            elif t.startswith("<<<", self.i):
                self.i += 3
            elif t.startswith("<<", self.i):
                self.lost = self.lost or AFTER_HEREDOC
                self.i += 2
            elif c == "'":
                self.i += 1
                self._single(why)
            elif c == '"':
                self.i += 1
                self._double(why)
            elif c == "`" and closer != "`":
                self.i += 1
                self._backticks(why)
            elif c == "$":
                if not self._dollar(why, quoted=False):
                    self.i += 1
            else:
                self.i += 1

    def _comment(self) -> None:
        t = self.text
        while self.i < len(t) and t[self.i] != "\n":
            if t[self.i] == _MARK:
                self._field(IN_COMMENT)
            else:
                self.i += 1
