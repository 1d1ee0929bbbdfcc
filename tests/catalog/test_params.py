"""Parameters: validation, and rendering that no accepted value can escape."""

import shlex

import pytest
from hypothesis import given, settings, strategies as st

from opsgate.console.catalog.model import Action, Param
from opsgate.console.errors import ConfigError, ParamError
from opsgate.console.catalog.params import check_value, parse_assignments, render_command, resolve_params
from opsgate.console.catalog.template import render, template_fields

FREE = Param("v", pattern=r"(?s).*")  # the loosest str param a config can declare


def action(command: str, **params: Param) -> Action:
    return Action("a", "A", "low", command, ("t",), params={n: p for n, p in params.items()})


def test_parse_assignments():
    assert parse_assignments(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(ParamError, match="expected NAME=VALUE"):
        parse_assignments(["novalue"])
    with pytest.raises(ParamError, match="given twice"):
        parse_assignments(["a=1", "a=2"])


def test_a_malformed_assignment_is_reported_without_its_value():
    for typo in ["token:hunter2-SECRET", "hunter2SECRET", "=hunter2-SECRET", "token hunter2-SECRET"]:
        with pytest.raises(ParamError, match="expected NAME=VALUE") as e:
            parse_assignments([typo])
        assert "SECRET" not in str(e.value), typo
    with pytest.raises(ParamError, match=r"^bad --param 'token'\.\.\. \(the rest is not shown"):
        parse_assignments(["token:hunter2"])


def test_check_value_rules():
    assert check_value(Param("n", type="int", min=1, max=10), "7") == 7
    for bad in ["0", "11", "7.0", "+7", " 7", "0x7", ""]:
        with pytest.raises(ValueError):
            check_value(Param("n", type="int", min=1, max=10), bad)
    assert check_value(Param("s", choices=("nginx", "haproxy")), "nginx") == "nginx"
    with pytest.raises(ValueError, match="not one of: nginx, haproxy"):
        check_value(Param("s", choices=("nginx", "haproxy")), "nginx; rm -rf /")
    # patterns must match in full, not only a prefix
    with pytest.raises(ValueError, match="does not match"):
        check_value(Param("s", pattern="[a-z]+"), "abc; reboot")
    with pytest.raises(ValueError, match="NUL"):
        check_value(FREE, "a\x00b")


def test_secret_value_is_not_echoed_in_errors():
    with pytest.raises(ValueError) as e:
        check_value(Param("k", pattern="[a-z]{20}", secret=True), "hunter2-TOPSECRET")
    assert "TOPSECRET" not in str(e.value)


def test_resolve_reports_every_problem_and_fills_defaults():
    a = action("x {s} {n} {d}", s=Param("s", choices=("a",)), n=Param("n", type="int", max=3),
               d=Param("d", choices=("z",), default="z"))
    assert resolve_params(a, {"s": "a", "n": "3"}) == {"s": "a", "n": 3, "d": "z"}
    with pytest.raises(ParamError) as e:
        resolve_params(a, {"s": "b", "bogus": "1"})
    msg = str(e.value)
    assert "unknown param 'bogus'" in msg and "param s:" in msg and "param n: required" in msg


def test_render_quotes_values_and_redacts_secrets():
    a = action("echo {msg} | tool --key {key} ${HOME} '{print $1}' {{x}}",
               msg=Param("msg", pattern=".*"), key=Param("key", pattern=".*", secret=True))
    rc = render_command(a, {"msg": "it's $(reboot)", "key": "s3cr3t"})
    # the secret is read from stdin into a shell variable: it is in neither command line
    assert rc.command == ("IFS= read -r __opsgate_secret_key || { echo 'opsgate: secret param key did not arrive "
                          "on stdin' >&2; exit 125; }\n"
                          "echo 'it'\"'\"'s $(reboot)' | tool --key \"$__opsgate_secret_key\" ${HOME} '{print $1}' {x}")
    assert rc.stdin == b"s3cr3t\n" and rc.secret_lines == 1
    assert rc.redacted == "echo 'it'\"'\"'s $(reboot)' | tool --key <secret> ${HOME} '{print $1}' {x}"
    assert "s3cr3t" not in rc.command + rc.redacted + repr(rc)


def test_a_secret_is_one_line():
    a = action("tool --key {key}", key=Param("key", pattern=".*", secret=True))
    with pytest.raises(ParamError, match="a secret value is one line") as e:
        resolve_params(a, {"key": "abc\ntouch /tmp/x"})
    assert "touch" not in str(e.value)


def test_template_fields():
    assert template_fields("a {x} ${Y} {{z}} {1} {print $1} {a_b}") == {"x", "a_b"}


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=60))
def test_any_accepted_value_is_exactly_one_token(value):
    """For any value a param accepts, the rendered command splits back into that value, alone."""
    accepted = check_value(FREE, value)
    rendered = render("cmd --opt {v} tail", {"v": accepted})
    assert shlex.split(rendered) == ["cmd", "--opt", value, "tail"]


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-10**12, max_value=10**12))
def test_int_values_render_as_one_token(n):
    value = check_value(Param("n", type="int"), str(n))
    assert shlex.split(render("x {n}", {"n": value})) == ["x", str(n)]


# -- where a placeholder may stand: only where the shell reads plain words (template.unsafe_placeholders) ----

REFUSED = {
    'echo "change note: {v}"': "inside double quotes",
    "psql -c 'select * from t where name = {v}'": "inside single quotes",
    "echo $'a{v}'": "inside $'...' quotes",
    'echo $"a{v}"': "inside double quotes",
    "echo $(echo {v})": "inside a $(...) command substitution",
    "diff <(echo {v}) x": "inside a $(...) command substitution",
    "echo `echo {v}`": "inside `...` backticks",
    "echo ${x:-{v}}": "inside a ${...} parameter expansion",
    "echo $(( {v} + 1 ))": "inside arithmetic",
    "(( {v} > 1 ))": "inside arithmetic",
    "[[ 1 -eq {v} ]]": "inside [[ ... ]]",
    "a[{v}]=1": "inside [...]",
    "echo {{a,{v}}}": "inside a {...} brace expansion",
    "echo hi # {v}": "inside a # comment",
    "cat <<EOF\n{v}\nEOF": "after a << here-document",
    "echo \\{v}": "right after a backslash",
    "echo $HOME{v}": "right after $NAME",
    "ls ~{v}": "in a ~user prefix",
    'echo "$(case x in a) echo ";; esac)" {v}': "after a case statement",
    'echo "$(echo ")")" "{v}"': "inside double quotes",
}
ACCEPTED = ["echo {v}", "echo a{v}b --x={v}", "echo ${HOME}{v}", "ls ~/{v}", "cat <<< {v}", "{{ echo {v}; }}",
            "echo \"it's\" {v}", 'echo "$(echo ")")" {v}', "echo $# {v}", "echo a#{v}", "echo $'x' {v}",
            "echo \"note: \"{v}", "psql -c 'select '{v}", "echo $(date) {v} # done", "awk '{print $1}' {v}",
            "[ {v} = x ]", "for (( i=0; i<3; i++ )); do echo {v}; done", "[[ -n x ]] && echo {v}"]


@pytest.mark.parametrize("command", sorted(REFUSED))
def test_a_placeholder_inside_quotes_or_a_substitution_is_refused(command):
    from opsgate.console.catalog.template import unsafe_placeholders

    (name, why), = unsafe_placeholders(command)
    assert name == "v" and why.startswith(REFUSED[command]), why
    with pytest.raises(ValueError, match=r"\{v\} is "):  # render refuses it too, whoever built the template
        render(command, {"v": "x"})


@pytest.mark.parametrize("command", ACCEPTED)
def test_a_placeholder_where_the_shell_reads_words_is_accepted(command):
    from opsgate.console.catalog.template import unsafe_placeholders

    assert unsafe_placeholders(command) == []


def test_an_int_param_may_stand_anywhere():
    """Digits cannot end a quote: the demo's head -c $(( {megabytes} * 1048576 )) stays allowed."""
    a = action('echo "n={n}" $(( {n} * 2 ))', n=Param("n", type="int"))
    assert render_command(a, {"n": 3}).command == 'echo "n=3" $(( 3 * 2 ))'
    s = action('echo "n={n}"', n=Param("n", pattern="[0-9]+"))
    with pytest.raises(ConfigError, match=r"a: command: \{n\} is inside double quotes: put it outside the quotes"):
        render_command(s, {"n": "3"})


def test_values_that_a_bare_word_would_not_keep_literal_are_quoted():
    """shlex.quote leaves "a=b" and "if" bare: a value in command position would be an assignment or a keyword."""
    from opsgate.console.catalog.template import quote

    assert [quote(v) for v in ("nginx", "web-1.example:80", "a=b", "if", "a,b", "", "it's", "-5")] == \
        ["nginx", "web-1.example:80", "'a=b'", "'if'", "'a,b'", "''", "'it'\"'\"'s'", "-5"]
