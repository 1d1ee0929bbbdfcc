"""``opsgate demo``: the console on an embedded loopback SSH target and a throwaway state dir.

Everything the demo needs is made here, in a temporary directory removed at exit: an SSH server on
127.0.0.1 (server.py) whose host key is pinned in the demo's own known_hosts, a client key, one
scratch directory per demo target with the fake host tools of fake-host/bin/, the catalog (catalog.toml),
and a demo operator enrolled with TOTP and a software security key.

Nothing here weakens the real code paths: the console, the pipeline, step-up, SSH (strict host keys)
and the audit trail are the same as for real hosts. Only the authenticators are demo ones, and every
place that shows their secrets says DEMO.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from opsgate.console.catalog.model import Config

from opsgate.console.catalog.loader import parse_config
from opsgate.console.demo.server import DemoServer, generate_key_file
from opsgate.console.demo.softkey import SoftKey
from opsgate.console.stepup.verifier import StepUp
from opsgate.console.wiring import ConsoleParts, assemble
from opsgate.console.stepup.totp import STEP, code_at_step, new_secret, time_step

OPERATOR = "demo"
TARGETS = {
    "web-1": ["web", "prod"],
    "web-2": ["web", "prod"],
    "db-primary": ["db", "prod"],
    "db-replica": ["db", "prod"],
}



def _seed_target(root: Path, name: str) -> None:
    """A scratch directory that looks a little like a server: a log, data, fake service scripts."""
    (root / "log").mkdir(parents=True)
    (root / "data" / "pg").mkdir(parents=True)
    (root / "data" / "uploads").mkdir(parents=True)
    (root / "data" / "pg" / "base.dat").write_bytes(b"\0" * (256 * 1024 if name.startswith("db") else 4096))
    (root / "data" / "uploads" / "avatar.png").write_bytes(b"\0" * 32 * 1024)
    lines = []
    levels = ["INFO", "INFO", "INFO", "WARN", "INFO", "ERROR", "INFO"]
    for i in range(200):
        lines.append(f"2026-01-0{1 + i % 9}T12:{i % 60:02d}:{(i * 7) % 60:02d}Z {name} {levels[i % len(levels)]} "
                     f"request {1000 + i} handled in {(i * 13) % 90 + 5}ms")
    (root / "log" / "app.log").write_text("\n".join(lines) + "\n")
    scripts = importlib.resources.files("opsgate.console.demo").joinpath("fake-host", "bin")
    (root / "bin").mkdir()
    for script in scripts.iterdir():  # the fake host's tools (console/demo/fake-host/bin)
        if script.name.startswith(".") or script.name == "__pycache__":
            continue
        path = root / "bin" / script.name
        path.write_bytes(script.read_bytes())
        path.chmod(0o755)


class DemoSecurityKey(SoftKey):
    """The demo's software FIDO2 key: a "touch" is a key press in the console (DEMO ONLY).

    Everything else is the real CTAP2 exchange through the fido2 library and SoftKey.
    """

    def __init__(self) -> None:
        super().__init__(wait_for_touch=self._wait_for_key_press)
        self.touched = threading.Event()
        self.auto_touch = False

    def _wait_for_key_press(self, cancel: threading.Event | None) -> None:
        if not self.auto_touch:
            while not self.touched.wait(0.05):
                if cancel is not None and cancel.is_set():
                    break
        self.touched.clear()

    def touch(self) -> None:
        self.touched.set()


class _SilentPrompter:
    """For enrolling the demo key at start-up: nobody is asked."""

    def ask_code(self, prompt):
        return None

    def touch_started(self, prompt, cancel):
        pass

    def touch_finished(self):
        pass

    def ask_confirmation(self, expected, prompt):
        return None

    def ask_approver(self, candidates, prompt):
        return None


class Demo:
    """The demo environment. ``start()`` builds it; ``close()`` stops the server and removes it all."""

    def __init__(self, *, root: Path | None = None, clock: Callable[[], float] = time.time,
                 totp_secret: str | None = None, gate: bool = False):
        self.clock = clock
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="opsgate-demo-"))
        self.state_dir = self.root / "state"
        self.hosts_dir = self.root / "hosts"
        self.key_path = self.root / "keys" / "id_ed25519"
        self.known_hosts = self.root / "keys" / "known_hosts"
        self.totp_secret = totp_secret or new_secret()
        self.security_key = DemoSecurityKey()
        self.server: DemoServer | None = None
        self.config: Config | None = None
        self.stepup: StepUp | None = None
        self.parts: ConsoleParts | None = None
        self.gate = gate
        self.gate_dir = self.root / "gate"
        self._gate_stop = threading.Event()
        self._gate_socket = None

    @property
    def operator(self) -> str:
        return OPERATOR

    def start(self) -> "Demo":
        for d in (self.root, self.state_dir, self.hosts_dir, self.key_path.parent):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        for name in TARGETS:
            _seed_target(self.hosts_dir / name, name)
        client_key = generate_key_file(self.key_path)
        if self.gate:
            return self._start_with_gate()
        self.server = DemoServer(self.hosts_dir, client_key).start()
        self.known_hosts.write_text(self.server.known_hosts_line())
        self.config = parse_config(self.config_text().encode(), "demo.toml")
        self.parts = assemble(self.config, self.state_dir, persist_grants=False,
                              authenticator=lambda: self.security_key, clock=self.clock, touch_timeout=60.0)
        self.stepup = self.parts.stepup
        self.stepup.allow_software_key = True  # the demo's key is the software key
        self._enroll()
        return self

    def _start_with_gate(self) -> "Demo":
        """A gate in this process with a throwaway CA, serving the console on a socket; the targets accept
        only that CA's certificates and run only their force-command. Same uid: it shows, it is no boundary."""
        import getpass

        from opsgate.console.audit.trail import AuditTrail
        from opsgate.console.gate.ca import UserCA
        from opsgate.console.gate.server import listen, serve_socket
        from opsgate.console.gate.service import GateService
        from opsgate.console.paths import AUDIT_FILE

        self.gate_dir.mkdir(mode=0o700)
        ca = UserCA.create(self.gate_dir)
        self.server = DemoServer(self.hosts_dir, None, user_ca=ca.public_line()).start()
        self.known_hosts.write_text(self.server.known_hosts_line())
        socket_path = self.root / "gate.sock"
        gate = f'\n[gate]\nsocket = {_toml_str(socket_path)}\n[gate.operators]\n"{getpass.getuser()}" = "{OPERATOR}"\n'
        self.config = parse_config((self.config_text() + gate).encode(), "demo.toml")
        service = GateService(self.config, self.gate_dir, clock=self.clock)
        self._gate_socket = listen(socket_path)
        threading.Thread(target=serve_socket, args=(service, self._gate_socket, self._gate_stop), daemon=True,
                         name="demo-gate").start()
        self.parts = assemble(self.config, self.state_dir, persist_grants=False, audit=AuditTrail(
            self.gate_dir / AUDIT_FILE), authenticator=lambda: self.security_key, clock=self.clock, touch_timeout=60.0)
        # The operator's factors live at the gate: enroll them there, with the demo's key at hand.
        self.stepup = StepUp(self.gate_dir, self.config.settings, persist_grants=False,
                             authenticator=lambda: self.security_key, clock=self.clock)
        self.stepup.allow_software_key = True  # the demo's key is the software key
        self._enroll()
        return self

    def config_text(self) -> str:
        """The catalog plus the generated [console] and [targets] tables."""
        catalog = importlib.resources.files("opsgate.console.demo").joinpath("catalog.toml").read_text()
        lines = [
            "[console]",
            f'operator = "{OPERATOR}"',
            f"known_hosts = [{_toml_str(self.known_hosts)}]",
            'connect_timeout = "5s"',
            "",
        ]
        for name, tags in TARGETS.items():
            lines += [
                f"[targets.{name}]",
                f'host = "{self.server.host}"',
                f"port = {self.server.port}",
                f'user = "{name}"',  # the demo server runs commands as you, in hosts/<user>
                f"identity_file = {_toml_str(self.key_path)}",
                "tags = [" + ", ".join(f'"{t}"' for t in tags) + "]",
                "",
            ]
        return "\n".join(lines) + "\n" + catalog

    def _enroll(self) -> None:
        # Enroll with the previous step's code so the code shown now is not a replay of the enrollment.
        step = time_step(self.clock())
        if not self.stepup.enroll_otp(OPERATOR, self.totp_secret, code_at_step(self.totp_secret, step - 1)):
            raise RuntimeError("demo: TOTP enrollment failed")
        self.security_key.auto_touch = True
        try:
            self.stepup.enroll_fido2(OPERATOR, "demo software key", _SilentPrompter())
        finally:
            self.security_key.auto_touch = False

    # What the screens show (screens.app.DemoHooks) ----------------------------------------------

    def codes(self, now: float) -> tuple[str, str, int]:
        """The current TOTP code, the next one, and the seconds until the current one rolls over."""
        step = time_step(now)
        left = STEP - int(now) % STEP
        return code_at_step(self.totp_secret, step), code_at_step(self.totp_secret, step + 1), left

    def otp_hint(self, operator: str) -> str | None:
        if operator != OPERATOR:
            return None
        code, nxt, left = self.codes(self.clock())
        return f" DEMO  the code now is {code} ({left}s left; next {nxt}) "

    def touch(self) -> None:
        self.security_key.touch()

    def close(self) -> None:
        self._gate_stop.set()
        if self._gate_socket is not None:
            self._gate_socket.close()
            self._gate_socket = None
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Demo":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _toml_str(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'

