"""opsgate.actions.sshconfig: the route to a target from ~/.ssh/config, and what is refused (no network)."""

from __future__ import annotations

import os

import pytest

from opsgate.actions.outcome import Endpoint
from opsgate.actions.sshconfig import JumpSpec, parse_jump, resolve_route
from opsgate.actions.ssh import SSHConfigError, SSHError


def route(tmp_path, text: str, host: str = "target", **fields):
    config = tmp_path / "ssh_config"
    config.write_text(text)
    return resolve_route(Endpoint(name="web1", host=host, ssh_config=str(config), **fields))


def hops(r) -> list[tuple[str, str, int, str]]:
    return [(h.alias, h.host, h.port, h.user) for h in r.hops]


@pytest.mark.parametrize("value, expected", [
    ("bastion", (JumpSpec("bastion"),)),
    ("ops@bastion:2222", (JumpSpec("bastion", "ops", 2222),)),
    ("a, b:22,c", (JumpSpec("a"), JumpSpec("b", None, 22), JumpSpec("c"))),
    ("ssh://u@10.0.0.1:23", (JumpSpec("10.0.0.1", "u", 23),)),
    ("root@[2001:db8::1]:2022", (JumpSpec("2001:db8::1", "root", 2022),)),
    ("none", ()),
    ("NONE", ()),
])
def test_proxyjump_forms(value, expected):
    assert parse_jump(value, "t") == expected


@pytest.mark.parametrize("value", ["a,,b", "@host", "host:99999", "host:x", "-oProxyCommand=x", "a b", "h;id"])
def test_bad_proxyjump_is_refused(value):
    with pytest.raises(SSHConfigError, match="bad"):
        parse_jump(value, "t")


def test_jump_hosts_are_resolved_through_ssh_config_in_order(tmp_path):
    r = route(tmp_path, """
Host target
  HostName 10.0.0.9
  User app
  ProxyJump ops@outer:2200,inner
Host outer
  HostName 192.0.2.1
  Port 22
  User nobody
  IdentityFile ~/.ssh/outer_key
Host inner
  HostName 10.0.0.2
  Port 2022
  User jump
  ProxyJump ignored-because-listed-after-outer
""")
    # outer's user and port come from the ProxyJump entry, over its own config; inner's own ProxyJump
    # is replaced by the list (ssh -J outer -W target inner)
    assert hops(r) == [("outer", "192.0.2.1", 2200, "ops"), ("inner", "10.0.0.2", 2022, "jump"),
                       ("target", "10.0.0.9", 22, "app")]
    assert r.hops[0].identity_files == (os.path.expanduser("~/.ssh/outer_key"),)
    assert r.proxy_command is None


def test_first_jump_host_uses_its_own_proxyjump(tmp_path):
    r = route(tmp_path, """
Host target
  ProxyJump inner
Host inner
  ProxyJump outer
""")
    assert [h.alias for h in r.hops] == ["outer", "inner", "target"]


def test_proxyjump_none_in_a_specific_block_wins_over_host_star(tmp_path):
    text = "Host target\n  ProxyJump none\nHost * !bastion\n  ProxyJump bastion\n"
    assert [h.alias for h in route(tmp_path, text).hops] == ["target"]
    assert [h.alias for h in route(tmp_path, text, host="other").hops] == ["bastion", "other"]


def test_whichever_of_proxyjump_and_proxycommand_comes_first_wins(tmp_path):
    r = route(tmp_path, "Host target\n  ProxyCommand nc %h %p\nHost *\n  ProxyJump bastion\n")
    assert [h.alias for h in r.hops] == ["target"] and r.proxy_command == "nc target 22"
    r = route(tmp_path, "Host target\n  ProxyJump bastion\nHost *\n  ProxyCommand nc %h %p\n")
    assert [h.alias for h in r.hops] == ["bastion", "target"]
    assert r.proxy_command == "nc bastion 22"  # the bastion itself matches Host *


def test_proxycommand_tokens_use_the_endpoint_fields(tmp_path):
    r = route(tmp_path, "Host target\n  HostName 10.1.1.1\n  ProxyCommand ssh -l %r -W %h:%p gw # 100%%\n",
              user="deploy", port=2022)
    assert r.proxy_command == "ssh -l deploy -W 10.1.1.1:2022 gw # 100%"


def test_proxycommand_refuses_shell_syntax_from_a_host_name(tmp_path):
    with pytest.raises(SSHConfigError, match="shell"):
        route(tmp_path, "Host *\n  ProxyCommand nc %h %p\n", host="x;touch${IFS}pwned")


def test_endpoint_jump_wins_over_ssh_config(tmp_path):
    text = "Host target\n  ProxyCommand /bin/false\nHost bastion\n  HostName 192.0.2.7\n"
    r = route(tmp_path, text, jump="bastion")
    assert hops(r)[0][:2] == ("bastion", "192.0.2.7") and r.proxy_command is None
    assert [h.alias for h in route(tmp_path, text, jump="none").hops] == ["target"]


@pytest.mark.parametrize("text", [
    "Host target\n  ProxyJump a\nHost a\n  ProxyJump b\nHost b\n  ProxyJump a\n",
    "Host *\n  ProxyJump bastion\n",  # the bastion jumps through itself: OpenSSH says "jumphost loop" too
])
def test_a_proxyjump_loop_is_refused(tmp_path, text):
    with pytest.raises(SSHConfigError, match="loop"):
        route(tmp_path, text)


@pytest.mark.parametrize("line, named", [
    ("LocalForward 8080 localhost:80", "LocalForward"),
    ("RemoteForward 9000 localhost:9000", "RemoteForward"),
    ("DynamicForward 1080", "DynamicForward"),
    ("UserKnownHostsFile /dev/null", "UserKnownHostsFile"),
    ("RemoteCommand sudo -i", "RemoteCommand"),
    ("BindAddress 10.0.0.1", "BindAddress"),
    ("HostKeyAlgorithms ssh-ed25519", "HostKeyAlgorithms"),
    ("KexAlgorithms curve25519-sha256", "KexAlgorithms"),
    ("PKCS11Provider /usr/lib/opensc-pkcs11.so", "PKCS11Provider"),
    ("CanonicalizeHostname yes", "CanonicalizeHostname"),
    ("ProxyUseFdpass yes", "ProxyUseFdpass"),
    ("SetEnv FOO=bar", "SetEnv"),
    ("RevokedHostKeys ~/.ssh/revoked", "RevokedHostKeys"),
    ("Tunnel yes", "Tunnel"),
    ("ProxyJmp bastion", "proxyjmp"),  # a typo: OpenSSH refuses it too
])
def test_directives_opsgate_does_not_implement_are_refused(tmp_path, line, named):
    config = tmp_path / "ssh_config"
    with pytest.raises(SSHConfigError) as info:
        route(tmp_path, f"Host target\n  HostName 10.0.0.1\n  {line}\n")
    message = str(info.value)
    assert named in message and "target" in message and str(config) in message
    assert isinstance(info.value, SSHError) and info.value.outcome == "unreachable"


def test_refusal_applies_to_a_jump_host_too(tmp_path):
    with pytest.raises(SSHConfigError, match=r"jump host bastion.*SetEnv"):
        route(tmp_path, "Host target\n  ProxyJump bastion\nHost bastion\n  SetEnv A=b\n")


def test_directives_of_other_hosts_do_not_matter(tmp_path):
    r = route(tmp_path, "Host other\n  LocalForward 1 x:1\n  SetEnv A=b\nHost target\n  HostName 10.0.0.1\n")
    assert hops(r)[0][1] == "10.0.0.1"


def test_harmless_directives_are_tolerated(tmp_path):
    r = route(tmp_path, """
Host target
  HostName 10.0.0.1
  ServerAliveInterval 30
  Compression yes
  ForwardAgent no
  StrictHostKeyChecking accept-new
  IdentitiesOnly yes
  IdentityFile ~/.ssh/prod
  AddressFamily inet
  ControlMaster auto
  IgnoreUnknown UseKeychain,AddKeysToAgent
  UseKeychain yes
  AddKeysToAgent yes
  RequestTTY no
  CheckHostIP no
""")
    assert r.target.identities_only and r.target.identity_files == (os.path.expanduser("~/.ssh/prod"),)


def test_identityagent_none_means_no_agent(tmp_path):
    assert route(tmp_path, "Host target\n  IdentityAgent none\n").target.use_agent is False


@pytest.mark.parametrize("criterion", ["localnetwork 10.0.0.0/8", "tagged prod", "!localnetwork 10.0.0.0/8"])
def test_match_criteria_paramiko_cannot_evaluate_are_refused(tmp_path, criterion):
    with pytest.raises(SSHConfigError, match="Match"):
        route(tmp_path, f"Match {criterion}\n  ProxyJump bastion\n")


def test_match_host_is_evaluated(tmp_path):
    text = "Host target\n  HostName 10.9.9.9\nMatch host 10.9.*\n  ProxyJump bastion\n"
    assert [h.alias for h in route(tmp_path, text).hops] == ["bastion", "target"]


# --- Include --------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A home directory of the test's own: ~/.ssh is where relative Include paths are looked up."""
    path = tmp_path / "home"
    (path / ".ssh" / "config.d").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(path))
    return path


def test_relative_include_is_taken_from_dot_ssh_whatever_the_config_path(tmp_path, home):
    (home / ".ssh" / "config.d" / "20-db").write_text("Host target\n  HostName 10.0.0.20\n  User second\n")
    (home / ".ssh" / "config.d" / "10-web").write_text("Host target\n  HostName 10.0.0.10\n")
    (tmp_path / "config.d").mkdir()  # beside the config file: not where OpenSSH looks
    (tmp_path / "config.d" / "00-wrong").write_text("Host target\n  HostName 192.0.2.66\n")
    r = route(tmp_path, "Include config.d/*\nHost *\n  User last\n")
    # the glob's files in sorted order, first value wins: 10-web's HostName, 20-db's User
    assert hops(r) == [("target", "10.0.0.10", 22, "second")]


def test_include_with_home_and_absolute_paths(tmp_path, home):
    (home / ".ssh" / "hosts").write_text("Host target\n  Port 2201\n")
    absolute = tmp_path / "abs.conf"
    absolute.write_text("Host target\n  User abs\n")
    r = route(tmp_path, f"Include ~/.ssh/hosts {absolute}\n")
    assert hops(r) == [("target", "target", 2201, "abs")]


def test_lines_after_a_top_level_include_apply_to_every_host_again(tmp_path, home):
    (home / ".ssh" / "other").write_text("Host other\n  User nobody\n")
    r = route(tmp_path, "Include other\nUser everyone\n")  # OpenSSH: back in the including file's context
    assert r.target.user == "everyone"


def test_include_inside_a_host_block_applies_to_that_host_only(tmp_path, home):
    (home / ".ssh" / "prod").write_text("User deploy\nPort 2222\n")
    text = "Host target\n  Include prod\nHost *\n  User fallback\n"
    assert hops(route(tmp_path, text)) == [("target", "target", 2222, "deploy")]
    assert hops(route(tmp_path, text, host="other")) == [("other", "other", 22, "fallback")]


def test_include_of_host_blocks_inside_a_host_block_is_refused(tmp_path, home):
    (home / ".ssh" / "nested").write_text("Host db\n  User x\n")
    with pytest.raises(SSHConfigError, match="Include of .*nested, which has Host or Match lines, inside a Host"):
        route(tmp_path, "Host target\n  Include nested\n")


def test_refused_directive_in_an_included_file_is_still_refused(tmp_path, home):
    (home / ".ssh" / "fwd").write_text("Host target\n  LocalForward 8080 localhost:80\n")
    with pytest.raises(SSHConfigError, match="LocalForward"):
        route(tmp_path, "Include fwd\n")


def test_match_criteria_are_checked_in_included_files(tmp_path, home):
    (home / ".ssh" / "m").write_text("Match tagged prod\n  User x\n")
    with pytest.raises(SSHConfigError, match=r"\.ssh/m:1: Match tagged"):
        route(tmp_path, "Include m\n")


def test_an_include_loop_is_refused(tmp_path, home):
    (home / ".ssh" / "a").write_text("Include b\n")
    (home / ".ssh" / "b").write_text("Include a\n")
    with pytest.raises(SSHConfigError, match="nested more than 16"):
        route(tmp_path, "Include a\n")


def test_include_that_matches_nothing_is_no_error(tmp_path, home):
    assert hops(route(tmp_path, "Include config.d/*.conf missing\n")) == [("target", "target", 22, os.environ.get(
        "USER") or __import__("getpass").getuser())]


def test_included_file_writable_by_others_is_refused(tmp_path, home):
    included = home / ".ssh" / "shared"
    included.write_text("Host target\n  ProxyCommand nc evil 22\n")
    included.chmod(0o666)
    with pytest.raises(SSHConfigError, match="bad owner or permissions"):
        route(tmp_path, "Include shared\n")


# --- HostKeyAlias, CertificateFile, IdentityAgent ----------------------------------------------


def test_hostkeyalias_is_kept_for_the_host_key_lookup(tmp_path):
    r = route(tmp_path, "Host target\n  ProxyJump gw\n  HostKeyAlias web1.prod\nHost gw\n  HostKeyAlias gw.prod\n")
    assert [h.host_key_alias for h in r.hops] == ["gw.prod", "web1.prod"]
    assert route(tmp_path, "Host target\n  HostName 10.0.0.1\n").target.host_key_alias is None


def test_certificate_files_accumulate_over_blocks_like_identity_files(tmp_path, home, monkeypatch):
    monkeypatch.setenv("CERTS", "/srv/certs")
    r = route(tmp_path, "Host target\n  CertificateFile ~/.ssh/a-cert.pub\n  IdentityFile ~/.ssh/a\n"
                        'Host *\n  CertificateFile "${CERTS}/b-cert.pub"\n  CertificateFile /c-%r-cert.pub\n',
              user="deploy")
    assert r.target.certificate_files == (f"{home}/.ssh/a-cert.pub", "/srv/certs/b-cert.pub", "/c-deploy-cert.pub")
    assert r.target.identity_files == (f"{home}/.ssh/a",)


@pytest.mark.parametrize("value, use_agent, socket", [
    ("none", False, None),
    ("SSH_AUTH_SOCK", True, None),
    ("$SSH_AUTH_SOCK", True, None),
    ("$OTHER_AGENT", True, "$OTHER_AGENT"),
    ("/run/agent.sock", True, "/run/agent.sock"),
    ("~/.1password/agent.sock", True, "{home}/.1password/agent.sock"),
    ("%d/agent-%u.sock", True, "{home}/agent-{user}.sock"),
    ("${RUNTIME}/ssh-agent.socket", True, "/run/user/1000/ssh-agent.socket"),
])
def test_identityagent_forms(tmp_path, home, monkeypatch, value, use_agent, socket):
    monkeypatch.setenv("RUNTIME", "/run/user/1000")
    hop = route(tmp_path, f"Host target\n  IdentityAgent {value}\n").target
    user = __import__("getpass").getuser()
    assert (hop.use_agent, hop.agent_socket) == (use_agent, socket and socket.format(home=home, user=user))


@pytest.mark.parametrize("value, problem", [("${NOT_SET_ANYWHERE}/a.sock", "not set"), ("/run/%C.sock", "%C")])
def test_identityagent_that_cannot_be_expanded_is_refused(tmp_path, monkeypatch, value, problem):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(SSHConfigError, match=problem):
        route(tmp_path, f"Host target\n  IdentityAgent {value}\n")
