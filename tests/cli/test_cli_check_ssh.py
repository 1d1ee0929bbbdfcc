"""`opsgate check --ssh` against real OpenSSH servers on loopback, and `check`'s identity_file warning."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cli import clean_env, run_opsgate
from tests.helpers.sshd import free_port


def write_config(tmp_path: Path, known_hosts: list[str], targets: str) -> Path:
    config = tmp_path / "opsgate.toml"
    config.write_text(f'[console]\noperator = "alice"\nknown_hosts = {known_hosts!r}\nconnect_timeout = "5s"\n'
                      .replace("'", '"') + targets)
    return config


def target(name: str, server, host: str | None = None, **extra: str) -> str:
    lines = [f"[targets.{name}]", f'host = "{host or server.host}"', f"port = {extra.pop('port', server.port)}",
             f'user = "{server.user}"', f'identity_file = "{extra.pop("identity_file", server.identity_file)}"']
    lines += [f'{k} = "{v}"' for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def check(config: Path, home: Path, *args: str):
    return run_opsgate("check", *args, config=config, env=clean_env(HOME=str(home), SSH_AUTH_SOCK=""))


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "home"
    (path / ".ssh").mkdir(parents=True)
    return path


def test_check_warns_about_a_missing_identity_file(tmp_path, home):
    missing = tmp_path / "no-such-key"
    config = write_config(tmp_path, [], f'[targets.web-1]\nhost = "10.0.0.1"\nidentity_file = "{missing}"\n')
    r = check(config, home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "OK: 0 actions, 1 targets"
    assert f"warning: {config}: targets.web-1.identity_file: {missing} does not exist" in r.stderr


def test_check_ssh_reaches_every_target_and_says_what_it_used(sshd, start_sshd, tmp_path, home):
    bastion = start_sshd(addresses=("127.0.0.1",))
    (home / ".ssh" / "config").write_text(f"Host bastion\n  HostName 127.0.0.1\n  Port {bastion.port}\n"
                                          f"  User {bastion.user}\n  IdentityFile {bastion.identity_file}\n")
    config = write_config(tmp_path, [sshd.known_hosts, bastion.known_hosts],
                          target("direct", sshd) + target("behind", sshd, "127.0.0.3", jump="bastion"))
    r = check(config, home, "--ssh")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "OK: 0 actions, 2 targets"
    direct = f"{sshd.user}@127.0.0.1:{sshd.port} [{sshd.identity_file}; host key ssh-ed25519 {sshd.host_fingerprint}]"
    jump = (f"{bastion.user}@127.0.0.1:{bastion.port} [{bastion.identity_file}; host key ssh-ed25519 "
            f"{bastion.host_fingerprint}]")
    behind = f"{sshd.user}@127.0.0.3:{sshd.port} [{sshd.identity_file}; host key ssh-ed25519 {sshd.host_fingerprint}]"
    assert lines[1:] == [f"direct: ok: {direct}", f"behind: ok: {jump} -> {behind}"]


def test_check_ssh_exits_1_naming_each_target_that_cannot_be_reached(sshd, tmp_path, home):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    config = write_config(tmp_path, [sshd.known_hosts], target("good", sshd)
                          + target("closed", sshd, port=str(free_port()))
                          + target("wrong-key", sshd, identity_file=str(empty)))
    r = check(config, home, "--ssh")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[1].startswith("good: ok: ")
    assert lines[2].startswith("closed: FAILED (unreachable): connection refused"), lines[2]
    assert lines[3].startswith("wrong-key: FAILED (auth): authentication as"), lines[3]


def test_check_ssh_refuses_an_unknown_host_key(sshd, tmp_path, home):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    r = check(write_config(tmp_path, [str(empty)], target("new", sshd)), home, "--ssh")
    assert r.returncode == 1
    assert f"new: FAILED (hostkey): host key for [127.0.0.1]:{sshd.port} is not known" in r.stdout
    assert sshd.host_fingerprint in r.stdout


def test_check_ssh_with_a_config_error_is_exit_2(tmp_path, home):
    bad = write_config(tmp_path, [], '[targets.t]\nhost = "h"\nport = "x"\n')
    assert check(bad, home, "--ssh").returncode == 2
