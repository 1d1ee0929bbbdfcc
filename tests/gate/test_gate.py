"""The gate for real: ``opsgated`` as its own OS user, two operators as two other users, a real OpenSSH
sshd that trusts only the gate's CA for the privileged account. Root creates the users (``useradd``);
no process whose boundary is tested runs as root.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from opsgate.console.stepup.totp import STEP, code_at_step
from tests.helpers.sshd import keygen, start_sshd

pytestmark = pytest.mark.system

GATE, ALICE, BOB, SRE = "ogt-gate", "ogt-alice", "ogt-bob", "ogt-sre"
WINDOW = 10  # seconds a certificate is valid (the gate's minimum), so the expiry test is short


def _user_python() -> str | None:
    """An interpreter other users may execute (this venv's lives under root's home)."""
    for exe in (sys.executable, "/usr/bin/python3.11", "/usr/bin/python3"):
        real = Path(os.path.realpath(exe))
        if not real.exists() or not all(os.stat(p).st_mode & 0o001 for p in [real, *real.parents]):
            continue
        version = subprocess.run([str(real), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                                 text=True).stdout.strip()
        if version == str(tuple(sys.version_info[:2])):
            return str(real)
    return None


if os.geteuid() != 0:
    pytest.skip("the gate tests create OS users (useradd): run them as root", allow_module_level=True)
PYTHON = _user_python()
if PYTHON is None:
    pytest.skip(f"no Python {sys.version_info[0]}.{sys.version_info[1]} executable by other users", allow_module_level=True)
SITE = sysconfig.get_paths()["purelib"]  # this venv: opsgate (editable) and its dependencies
# -S: not the system's site-packages (Debian's older cryptography would shadow this venv's); only SITE
BOOT = "import site, sys; site.addsitedir({site!r}); from opsgate.cli.{mod} import main; sys.exit(main(sys.argv[1:]))"


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
    # no password, but not locked: sshd (without PAM) refuses a locked account even a certificate
    subprocess.run(["usermod", "-p", "*", name], check=True)
    return pwd.getpwnam(name)


def _as(name: str) -> dict:
    pw = pwd.getpwnam(name)
    env = {"HOME": pw.pw_dir, "USER": name, "LOGNAME": name, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"}
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "env": env}


class Lab:
    """Users, a gate serving on a socket, a target sshd, and each operator's console config."""

    def __init__(self, base: Path):
        self.base = base
        self.out = base / "out"
        self.trail = base / "gate-state" / "audit.jsonl"
        self.last_step: dict[str, int] = {}
        self.secrets: dict[str, str] = {}

    def opsgate(self, user: str, *args: str, stdin: str = "", timeout: float = 60,
                config: str = "config.toml") -> subprocess.CompletedProcess:
        home = self.base / user
        return subprocess.run([PYTHON, "-S", "-c", BOOT.format(site=SITE, mod="main"), "--config", str(home / config),
                               "--state-dir", str(home / "state"), *args], input=stdin, capture_output=True, text=True,
                              timeout=timeout, cwd=home, **_as(user))

    def popen_opsgate(self, user: str, *args: str, config: str = "config.toml") -> subprocess.Popen:
        home = self.base / user
        # SIGINT as a terminal would deliver it, even when the tests run from a background job
        return subprocess.Popen([PYTHON, "-S", "-c", BOOT.format(site=SITE, mod="main"), "--config", str(home / config),
                                 "--state-dir", str(home / "state"), *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=home,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **_as(user))

    def opsgated(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "-S", "-c", BOOT.format(site=SITE, mod="gated"), "--config",
                               str(self.base / "gate.toml"), "--state-dir", str(self.base / "gate-state"), *args],
                              capture_output=True, text=True, timeout=60, cwd=self.base, **_as(GATE), **kwargs)

    def code(self, operator: str) -> str:
        """A code the gate will accept now: after the last one used (no replay), within one step of now."""
        while True:
            step = max(int(time.time()) // STEP, self.last_step.get(operator, -10) + 1)
            if step <= int(time.time()) // STEP + 1:
                self.last_step[operator] = step
                return code_at_step(self.secrets[operator], step)
            time.sleep(0.5)  # both codes of this window are spent: the next one is seconds away

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.trail.read_text().splitlines()]

    def enroll(self, user: str, operator: str) -> None:
        token = re.search(r"^(\S{20,})$", self.opsgated("enroll-token", operator).stdout, re.M).group(1)
        proc = self.popen_opsgate(user, "enroll", "otp", "--token", token)
        uri = ""
        while "otpauth://" not in uri:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            uri = line.strip()
        secret = parse_qs(urlsplit(uri).query)["secret"][0]
        self.secrets[operator] = secret
        step = int(time.time()) // STEP - 1  # the previous code: the current one stays usable for a step-up
        self.last_step[operator] = step
        out, err = proc.communicate(code_at_step(secret, step) + "\n", timeout=60)
        assert proc.returncode == 0, err


def _catalog(lab: Lab, server) -> str:
    known = server.known_hosts
    return f"""
[console]
known_hosts = ["{known}"]
connect_timeout = "10s"

[policy.low]
factor = "none"
[policy.high]
factor = "otp"
max_age = "15m"
approvals = 1
reason = true
[policy.critical]
factor = "otp"
max_age = 0

[targets.t1]
host = "127.0.0.1"
port = {server.port}
user = "{SRE}"
[targets.t2]
host = "127.0.0.2"
port = {server.port}
user = "{SRE}"

[actions.stamp]
title = "Stamp both targets"
risk = "critical"
targets = ["t1", "t2"]
command = "id -un > {lab.out}/stamp-$(echo $SSH_CONNECTION | cut -d ' ' -f 3)"

[actions.touch-a]
title = "Touch A"
risk = "low"
targets = ["t1"]
command = "touch {lab.out}/A"

[actions.wait-long]
title = "Wait a long time"
risk = "low"
targets = ["t1"]
command = "echo waiting; sleep 347"

[actions.put-secret]
title = "Store a secret, and list every argv while it runs"
risk = "low"
targets = ["t1"]
command = "printf '%s' {{key}} > {lab.out}/secret; for f in /proc/[0-9]*/cmdline; do tr '\\\\000' ' ' < \\"$f\\"; echo; done > {lab.out}/argv"
[actions.put-secret.params.key]
pattern = "[A-Za-z0-9]{{8,64}}"
secret = true

[actions.promote]
title = "Promote (needs a second operator)"
risk = "high"
targets = ["t1"]
command = "touch {lab.out}/promoted"
"""


@pytest.fixture(scope="module")
def lab():
    for name in (GATE, ALICE, BOB, SRE):
        _ensure_user(name)
    base = Path(tempfile.mkdtemp(prefix="opsgate-gate-", dir="/tmp"))
    base.chmod(0o755)
    lab = Lab(base)
    server = None
    gate = None
    try:
        lab.out.mkdir(mode=0o777)
        lab.out.chmod(0o777)
        principals = base / "principals"
        principals.mkdir()
        (principals / SRE).write_text(f"{SRE}\n")
        # alice's own key lets her log in as herself on the target, never as the privileged account
        alice_home = Path(pwd.getpwnam(ALICE).pw_dir)
        (alice_home / ".ssh").mkdir(exist_ok=True)
        shutil.rmtree(Path(pwd.getpwnam(SRE).pw_dir) / ".ssh", ignore_errors=True)
        server = start_sshd(base / "sshd", addresses=("127.0.0.1", "127.0.0.2"), options={
            "TrustedUserCAKeys": str(base / "ca.pub"), "AuthorizedPrincipalsFile": str(principals / "%u"),
            "AuthorizedKeysFile": ".ssh/authorized_keys", "PermitRootLogin": "no", "LogLevel": "VERBOSE"})
        for d in ("gate-state", "run"):
            (base / d).mkdir(mode=0o700 if d == "gate-state" else 0o755)
            os.chown(base / d, pwd.getpwnam(GATE).pw_uid, pwd.getpwnam(GATE).pw_gid)
        catalog = _catalog(lab, server)
        (base / "gate.toml").write_text(catalog + f"""
[gate]
socket = "{base}/run/gate.sock"
certificate_window = "{WINDOW}s"
approval_timeout = "60s"
[gate.operators]
{ALICE} = "alice"
{BOB} = "bob"
""")
        for user in (ALICE, BOB):
            home = base / user
            home.mkdir(mode=0o700)
            (home / "config.toml").write_text(catalog + f'\n[gate]\nsocket = "{base}/run/gate.sock"\n')
            subprocess.run(["chown", "-R", f"{user}:{user}", str(home)], check=True)
        keygen(base / ALICE / "id_ed25519", "alice-own-key")
        (alice_home / ".ssh" / "authorized_keys").write_text(Path(f"{base / ALICE / 'id_ed25519'}.pub").read_text())
        subprocess.run(["chown", "-R", f"{ALICE}:{ALICE}", str(base / ALICE), str(alice_home / ".ssh")], check=True)
        init = lab.opsgated("init")
        assert init.returncode == 0, init.stderr
        assert "TrustedUserCAKeys" in init.stdout and "AuthorizedPrincipalsFile" in init.stdout
        shutil.copy(base / "gate-state" / "user_ca.pub", base / "ca.pub")
        gate = subprocess.Popen([PYTHON, "-S", "-c", BOOT.format(site=SITE, mod="gated"), "--config", str(base / "gate.toml"),
                                 "--state-dir", str(base / "gate-state"), "serve"], stderr=subprocess.PIPE, text=True,
                                cwd=base, **_as(GATE))
        assert "serving on" in gate.stderr.readline()
        lab.server = server
        # the gate over SSH: alice's own key is bound to `opsgated session --operator alice` for the gate user
        wrapper = base / "opsgated"
        wrapper.write_text(f"#!/bin/sh\nexec {PYTHON} -S -c {shlex.quote(BOOT.format(site=SITE, mod='gated'))} "
                           f"--config {base / 'gate.toml'} --state-dir {base / 'gate-state'} \"$@\"\n")
        wrapper.chmod(0o755)
        gate_home = Path(pwd.getpwnam(GATE).pw_dir)
        (gate_home / ".ssh").mkdir(exist_ok=True)
        (gate_home / ".ssh" / "authorized_keys").write_text(
            f'restrict,command="{wrapper} session --operator alice" '
            + Path(f"{base / ALICE / 'id_ed25519'}.pub").read_text())
        subprocess.run(["chown", "-R", f"{GATE}:{GATE}", str(gate_home / ".ssh")], check=True)
        ssh_gate = (f"-p {server.port} -i {base / ALICE / 'id_ed25519'} -o IdentitiesOnly=yes "
                    f"-o UserKnownHostsFile={server.known_hosts} {GATE}@127.0.0.1")
        (base / ALICE / "config-ssh.toml").write_text(catalog + f'\n[gate]\nssh = "{ssh_gate}"\n')
        subprocess.run(["chown", f"{ALICE}:{ALICE}", str(base / ALICE / "config-ssh.toml")], check=True)
        lab.enroll(ALICE, "alice")
        lab.enroll(BOB, "bob")
        yield lab
    finally:
        if gate is not None:
            gate.terminate()
            gate.wait(10)
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
        for name in (GATE, ALICE, BOB, SRE):
            subprocess.run(["userdel", "-r", name], capture_output=True)


def test_critical_action_asks_once_runs_both_targets_and_the_gate_records_it(lab):
    done = lab.opsgate(ALICE, "run", "stamp", "--yes", "--reason", "quarterly check", stdin=lab.code("alice") + "\n")
    assert done.returncode == 0, done.stderr + done.stdout + lab.server.log()[-2000:]
    # both targets ran, as the privileged account, with the command the gate rendered
    stamps = sorted(lab.out.glob("stamp-*"))
    assert [p.name for p in stamps] == ["stamp-127.0.0.1", "stamp-127.0.0.2"]
    assert {p.read_text().strip() for p in stamps} == {SRE}
    records = [r for r in lab.records() if r.get("action") == "stamp"]
    events = [r["event"] for r in records]
    assert events.count("stepup.success") == 1
    assert events.count("gate.certificate") == 2 and events.count("action.target") == 2
    assert events[-1] == "action.end" and "action.start" in events
    assert {r["operator"] for r in records} == {"alice"}
    start = next(r for r in records if r["event"] == "action.start")
    assert start["reason"] == "quarterly check"
    # each target's recording is on the console; its sha256 is in the gate's trail
    import hashlib
    for r in (r for r in records if r["event"] == "action.target"):
        assert r["outcome"] == "ok"
        cast = lab.base / ALICE / "state" / r["recording"]
        assert hashlib.sha256(cast.read_bytes()).hexdigest() == r["recording_sha256"]
    # the console reads the gate's trail through the gate, and verifies it with its own recordings
    verified = lab.opsgate(ALICE, "audit", "verify")
    assert verified.returncode == 0 and "OK" in verified.stdout, verified.stdout + verified.stderr
    shown = lab.opsgate(ALICE, "audit", "show", start["run"])
    assert shown.returncode == 0 and "gate.certificate" in shown.stdout, shown.stderr
    # the trail is the gate's: the operator can neither write nor read it
    st = lab.trail.stat()
    assert st.st_uid == pwd.getpwnam(GATE).pw_uid and st.st_mode & 0o077 == 0
    poke = subprocess.run([PYTHON, "-S", "-c", f"open({str(lab.trail)!r}, 'a').write('x')"], capture_output=True, text=True,
                          **_as(ALICE))
    assert poke.returncode != 0 and "PermissionError" in poke.stderr


def test_a_secret_param_reaches_the_forced_command_on_stdin_never_an_argv_or_the_certificate(lab):
    value = "GateSecretValue42"
    done = lab.opsgate(ALICE, "run", "put-secret", "--param-file", "-", stdin=f"key={value}\n")
    assert done.returncode == 0, done.stderr + done.stdout
    assert (lab.out / "secret").read_text() == value  # the forced command got it, through the wrapper's pipe
    argv = (lab.out / "argv").read_text()
    assert "__opsgate_secret_key" in argv and "gated" in argv  # the listing saw the gate and the wrapper
    assert value not in argv  # not the console's, the gate's, sshd's, the wrapper's or the command's argv
    assert value not in lab.trail.read_text() and value not in done.stdout + done.stderr
    start = next(r for r in reversed(lab.records()) if r["event"] == "action.start")
    assert start["action"] == "put-secret" and start["params"] == {"key": "<secret>"}


def test_plain_ssh_with_the_operators_own_key_cannot_reach_the_privileged_account(lab):
    key, known, port = lab.base / ALICE / "id_ed25519", lab.server.known_hosts, str(lab.server.port)
    ssh = ["ssh", "-i", str(key), "-p", port, "-o", f"UserKnownHostsFile={known}", "-o", "BatchMode=yes",
           "-o", "IdentitiesOnly=yes"]
    own = subprocess.run([*ssh, f"{ALICE}@127.0.0.1", "true"], capture_output=True, text=True, **_as(ALICE))
    assert own.returncode == 0, own.stderr  # the key works...
    bypass = subprocess.run([*ssh, f"{SRE}@127.0.0.1", f"touch {lab.out}/bypass"], capture_output=True, text=True,
                            **_as(ALICE))
    assert bypass.returncode == 255 and "Permission denied" in bypass.stderr  # ...but not for the account
    assert not (lab.out / "bypass").exists()


HOSTILE = r'''
import json, os, socket, subprocess, sys, time
import site; site.addsitedir(sys.argv[1])
from cryptography.hazmat.primitives import serialization
from opsgate.console.gate.ca import ephemeral_key
from opsgate.console.gate.protocol import Channel
sock = socket.socket(socket.AF_UNIX); sock.connect(sys.argv[2])
ch = Channel(sock.makefile("rb"), sock.makefile("wb"))
key, pub = ephemeral_key()
ch.send({"v": 1, "id": 1, "op": "hello", "args": {"operator": "bob"}})
hello = ch.receive()
# a console that lies: it names another operator and keeps the certificate for itself
ch.send({"v": 1, "id": 2, "op": "run", "args": {"action": "touch-a", "operator": "bob", "public_key": pub}})
out = {"hello": hello["result"]}
while True:
    m = ch.receive()
    if "call" not in m:
        out["final"] = m
        break
    if m["call"] == "execute":
        cert = m["args"]["targets"][0]["certificate"]
        home = os.getcwd()
        open("k", "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                serialization.NoEncryption()))
        os.chmod("k", 0o600)
        open("k-cert.pub", "w").write(cert + "\n")
        target = m["args"]["targets"][0]
        ssh = ["ssh", "-i", "k", "-o", "CertificateFile=k-cert.pub", "-p", str(target["port"]), "-o",
               "UserKnownHostsFile=" + sys.argv[3], "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
               target["user"] + "@" + target["host"]]
        def run(args):  # stdin stays open while it runs, as the console keeps it (closing it stops the command)
            p = subprocess.Popen(ssh + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
            p.stdout.read()
            p.stdin.close()
            err = p.stderr.read()
            return [p.wait(), err[-300:]]
        out["other_command"] = run(["touch " + sys.argv[4] + "/B"])[0]
        time.sleep(float(sys.argv[5]))  # past the certificate's window: the target must refuse it
        out["late"] = run(["true"])
        ch.send({"event_of": m["cid"], "event": {"result": {"target": target["name"], "outcome": "ok", "exit_code": 0}}})
        ch.send({"reply": m["cid"], "value": {"done": True}})
    else:
        ch.send({"reply": m["cid"], "value": None})
print(json.dumps(out))
'''


def test_a_certificate_runs_only_its_command_expires_and_names_the_connected_operator(lab):
    proc = subprocess.run([PYTHON, "-S", "-c", HOSTILE, SITE, str(lab.base / "run" / "gate.sock"), lab.server.known_hosts,
                           str(lab.out), str(WINDOW + 2)], capture_output=True, text=True, timeout=120,
                          cwd=lab.base / ALICE, **_as(ALICE))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["hello"]["operator"] == "alice"  # the uid wins over the name in the request
    assert out["other_command"] == 0
    assert (lab.out / "A").exists() and not (lab.out / "B").exists()  # sshd ran the certificate's command only
    assert out["late"][0] == 255  # after its window the certificate is refused
    start = [r for r in lab.records() if r["event"] == "action.start" and r["action"] == "touch-a"][-1]
    assert start["operator"] == "alice"


def test_a_second_operator_approves_from_their_own_console_and_self_approval_is_impossible(lab):
    alice = lab.popen_opsgate(ALICE, "run", "promote", "--yes", "--reason", "failover drill")
    alice.stdin.write(lab.code("alice") + "\n")
    alice.stdin.flush()
    deadline = time.monotonic() + 60
    pending = ""
    while "promote" not in pending:  # until the gate lists alice's request
        assert time.monotonic() < deadline, "alice's request never became pending"
        listed = lab.opsgate(BOB, "approvals")
        assert listed.returncode == 0, listed.stderr
        pending = listed.stdout
    request = pending.split()[0]
    assert "alice asks" in pending and "failover drill" in pending
    self_approval = lab.opsgate(ALICE, "approve", request)
    assert self_approval.returncode == 3 and "cannot approve their own request" in self_approval.stderr
    approved = lab.opsgate(BOB, "approve", request, stdin=lab.code("bob") + "\n")
    assert approved.returncode == 0, approved.stderr
    out, err = alice.communicate(timeout=60)
    assert alice.returncode == 0, err
    assert (lab.out / "promoted").exists()
    granted = [r for r in lab.records() if r["event"] == "approval.granted"]
    assert granted and granted[-1]["operator"] == "bob" and granted[-1]["requester"] == "alice"
    refused = [r for r in lab.records() if r["event"] == "approval.denied"]
    assert refused and refused[-1]["operator"] == "alice"


def test_the_gate_over_ssh_knows_the_operator_by_the_key_the_admin_bound(lab):
    listed = lab.opsgate(ALICE, "approvals", config="config-ssh.toml")
    assert listed.returncode == 0, listed.stderr
    ran = lab.opsgate(ALICE, "run", "touch-a", "--yes", config="config-ssh.toml")
    assert ran.returncode == 0, ran.stderr
    start = [r for r in lab.records() if r["event"] == "action.start" and r["action"] == "touch-a"][-1]
    assert start["operator"] == "alice"


def remote_sleeps() -> list[str]:
    return subprocess.run(["pgrep", "-u", SRE, "-f", "sleep 347"], capture_output=True, text=True).stdout.split()


def test_ctrl_c_stops_the_forced_command_on_the_target_and_the_gate_records_it(lab):
    proc = lab.popen_opsgate(ALICE, "run", "wait-long", "--yes")
    try:
        deadline = time.monotonic() + 30
        while not remote_sleeps():  # until the forced command runs on the target
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    deadline = time.monotonic() + 10
    while remote_sleeps():  # stopped by closing its stdin: no second session (it would run the command again)
        assert time.monotonic() < deadline, "the remote command is still running"
        time.sleep(0.05)
    events = [r["event"] for r in lab.records() if r.get("action") == "wait-long"]
    assert "action.cancelled" in events and events[-1] == "action.end"
