"""The console's side of the gate: the same ``Pipeline`` interface, with step-up, approvals and the trail
at the gate and the run on this machine with the gate's certificates.

``GatePipeline.plan`` renders from the console's copy of the catalog (for display, and sent along so the
gate can refuse a console whose catalog differs). ``execute`` makes an ephemeral ed25519 key in memory,
asks the gate to run the plan, answers the gate's questions with the front end (codes, the touch of the
operator's own key, the typed confirmation, pauses) and runs each step the gate signs certificates for.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import shlex
import socket
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import Callable

from opsgate.actions.outcome import Endpoint, TargetResult
from opsgate.console.catalog.model import Gate, Target
from opsgate.console.catalog.params import RenderedCommand
from opsgate.console.errors import UsageError
from opsgate.console.gate.ca import ephemeral_key
from opsgate.console.paths import GATE_TRAIL_COPY
from opsgate.console.gate.protocol import VERSION, Channel, GateError
from opsgate.console.run import (Executed, Executor, Pipeline, Plan, RunbookPlan, RunReport, RunRequest,
                                 renderings)
from opsgate.console.stepup.verifier import Prompt


class GateClient:
    """One connection to the gate: a Unix socket, or ``ssh user@host`` whose forced command is the gate."""

    def __init__(self, gate: Gate, *, timeout: float = 10.0):
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        if gate.socket is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(str(gate.socket))
            except OSError as e:
                sock.close()
                raise GateError("unavailable", f"cannot reach the gate at {gate.socket}: {e.strerror or e} "
                                               "(is `opsgated serve` running?)") from None
            sock.settimeout(None)
            self._sock = sock
            self.channel = Channel(sock.makefile("rb"), sock.makefile("wb"))
        elif gate.ssh:
            # The gate host's authorized_keys forces `opsgated session` for this key: no command is sent.
            self._proc = subprocess.Popen(["ssh", "-T", "-o", "BatchMode=yes", *shlex.split(gate.ssh)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self.channel = Channel(self._proc.stdout, self._proc.stdin)
        else:
            raise UsageError("[gate] needs socket = PATH or ssh = \"user@host\"")
        self._next = 0
        self.hello = self.request("hello", {})

    def request(self, op: str, args: dict, answer: Callable[[str, dict, int], object] | None = None):
        """Send one request and serve the gate's calls until its answer; the result, or GateError."""
        self._next += 1
        rid = self._next
        try:
            self.channel.send({"v": VERSION, "id": rid, "op": op, "args": args})
        except OSError as e:
            raise GateError("unavailable", f"the gate went away: {e}") from None
        while True:
            message = self.channel.receive()
            if message is None:
                raise GateError("unavailable", "the gate closed the connection")
            if "call" in message:
                cid = message.get("cid")
                try:
                    if answer is None:
                        raise GateError("bad-request", f"unexpected question {message['call']!r}")
                    value = answer(str(message["call"]), message.get("args") or {}, cid)
                    self.channel.send({"reply": cid, "value": value})
                except GateError as e:
                    self.channel.send({"reply": cid, "error": str(e)})
                continue
            if message.get("id") not in (rid, None):
                continue
            if message.get("ok"):
                return message.get("result")
            error = message.get("error") or {}
            raise GateError(str(error.get("type", "internal")), str(error.get("message", "the gate refused")))

    def send_event(self, cid: int, event: dict) -> None:
        self.channel.send({"event_of": cid, "event": event})

    def cancel(self) -> None:
        try:
            self.channel.send({"cancel": True})
        except OSError:
            pass

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        if self._proc is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()


def certificate_endpoint(private_key, target: dict, known_hosts: tuple[str, ...], connect_timeout: float) -> Endpoint:
    """Reach a target with the run's ephemeral key and the certificate the gate signed for it, nothing else."""
    from cryptography.hazmat.primitives import serialization

    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption()).decode()
    return Endpoint(str(target["name"]), str(target["host"]), target.get("port"), target.get("user"), None,
                    known_hosts, connect_timeout, allow_agent=False, look_for_keys=False,
                    certificate=(pem, str(target["certificate"])))


class _Answers:
    """Answers the gate's calls during one run with the console's front end and executor."""

    def __init__(self, client: GateClient, frontend, *, pipeline: "GatePipeline | None" = None,
                 plan: Plan | RunbookPlan | None = None, private_key=None, device_factory: Callable | None = None):
        self.client = client
        self.pipeline = pipeline
        self.plan = plan
        self.frontend = frontend
        self.private_key = private_key
        if device_factory is None and pipeline is not None:
            device_factory = pipeline.stepup.key.device_factory
        self.device_factory = device_factory
        self.results: list[TargetResult] = []
        self.recordings: dict = {}
        self.certificates: list[dict] = []
        self._touch_cancel = threading.Event()
        self._device = None
        self.executor: Executor | None = None

    def __call__(self, name: str, args: dict, cid: int):
        handler = getattr(self, "call_" + name, None)
        if handler is None:
            raise GateError("bad-request", f"unknown question {name!r}")
        return handler(args, cid)

    def call_ask_code(self, args, cid):
        return self.frontend.ask_code(Prompt(**args["prompt"]))

    def call_ask_pin(self, args, cid):
        ask = getattr(self.frontend, "ask_pin", None)
        return ask(Prompt(**args["prompt"])) if ask is not None else None

    def call_ask_confirmation(self, args, cid):
        return self.frontend.ask_confirmation(str(args["expected"]), Prompt(**args["prompt"]))

    def call_touch_started(self, args, cid):
        self._touch_cancel = threading.Event()
        self.frontend.touch_started(Prompt(**args["prompt"]), self._touch_cancel)

    def call_touch_finished(self, args, cid):
        self.frontend.touch_finished()

    def call_notice(self, args, cid):
        notice = getattr(self.frontend, "notice", None)
        if notice is not None:
            notice(str(args.get("text", "")))
        else:
            print(f"opsgate: {args.get('text', '')}", file=sys.stderr)

    def call_show_enrollment(self, args, cid):
        show = getattr(self.frontend, "show_enrollment", None)
        if show is None:
            raise GateError("bad-request", "this console cannot show an enrollment URI")
        show(str(args["uri"]))

    def _step(self, index: int):
        if isinstance(self.plan, RunbookPlan):
            return next(sp for sp in self.plan.steps if sp.step.index == index)
        raise GateError("bad-request", "not a runbook")

    def call_on_step(self, args, cid):
        self.frontend.on_step(self._step(int(args["index"])), str(args["status"]), str(args.get("detail", "")))

    def call_ask_pause(self, args, cid):
        return bool(self.frontend.ask_pause(self._step(int(args["index"])).step))

    def call_ctap_open(self, args, cid):
        from opsgate.console.stepup.securitykey import discover_hid

        self._device = (self.device_factory or discover_hid)()
        return int(self._device.capabilities)

    def call_ctap(self, args, cid):
        from fido2.ctap import CtapError

        if self._device is None:
            raise GateError("bad-request", "no security key open")
        try:
            out = self._device.call(int(args["cmd"]), base64.b64decode(args.get("data") or ""), self._touch_cancel)
        except CtapError as e:
            return {"ctap_error": int(e.code)}
        return base64.b64encode(bytes(out)).decode()

    def call_execute(self, args, cid):
        """Run one step with the gate's certificates; report each target as it ends; keep the recordings."""
        run_id = str(args["run"])
        local = self.plan
        if isinstance(local, RunbookPlan):
            index = int(run_id.rsplit(".", 1)[1])
            local = self._step(index).plan
        by_name = {t["name"]: t for t in args["targets"]}
        targets = tuple(Target(str(t["name"]), str(t["host"]), t.get("port"), t.get("user")) for t in args["targets"])
        # The gate's certificates force the command; this console sends only the secret lines its own
        # rendering of the same catalog reads first (the gate checked the renderings match).
        plan = dataclasses.replace(local, run_id=run_id, targets=targets,
                                   command=RenderedCommand(str(args["command"]), str(args["command"]),
                                                           stdin=local.command.stdin))
        self.certificates += [{"target": t["name"], "key_id": t.get("key_id"), "valid_before": t.get("valid_before")}
                              for t in args["targets"]]
        settings = self.pipeline.config.settings
        known = tuple(str(p) for p in settings.known_hosts)
        executor = self.pipeline.executors(self.pipeline.state_dir, settings, endpoint=lambda target: certificate_endpoint(
            self.private_key, by_name[target.name], known, settings.connect_timeout))
        self.executor = executor
        capture: dict | None = defaultdict(bytearray) if args.get("capture") else None

        def done(result: TargetResult, executed: Executed) -> None:
            self.results.append(result)
            if executed.recording:
                self.recordings[result.target] = self.pipeline.state_dir / executed.recording
            event = {"result": dataclasses.asdict(result), "recording": executed.recording,
                     "recording_sha256": executed.recording_sha256, "recording_error": executed.recording_error}
            if capture is not None:
                event["capture"] = base64.b64encode(bytes(capture[result.target])).decode()
            self.client.send_event(cid, event)
            self.frontend.on_target_done(result)

        self.frontend.on_start(plan)
        try:
            executor.run(plan, self.frontend, args.get("marker"), done, cancel=self.pipeline._cancel, capture=capture)
        finally:
            self.executor = None
        return {"done": True}


def answers_for(client: GateClient, prompter, device_factory: Callable | None = None) -> _Answers:
    """Answers for a request that runs nothing (approve, deny): codes and touches of this operator."""
    return _Answers(client, prompter, device_factory=device_factory)


class GatePipeline(Pipeline):
    """A console's pipeline in gate mode (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._requests: dict[str, RunRequest] = {}
        self._client: GateClient | None = None
        self._answers: _Answers | None = None

    def connect(self) -> GateClient:
        return GateClient(self.config.gate, timeout=self.config.settings.connect_timeout)

    def plan(self, request: RunRequest) -> Plan | RunbookPlan:
        plan = super().plan(request)
        self._requests[plan.run_id] = request
        return plan

    def _request_args(self, plan) -> dict:
        request = self._requests.get(plan.run_id)
        if request is None:
            raise UsageError("plan the run with this pipeline first")
        return {"action": request.action_id, "targets": list(request.targets), "params": dict(request.params),
                "reason": request.reason, "expect": renderings(plan)}

    def dry_run(self, plan) -> None:
        client = self.connect()
        try:
            client.request("plan", self._request_args(plan))
        finally:
            client.close()

    def execute(self, plan, frontend) -> RunReport:
        self._cancel.clear()
        private_key, public_line = ephemeral_key()
        client = self.connect()
        answers = _Answers(client, frontend, pipeline=self, plan=plan, private_key=private_key)
        self._client, self._answers = client, answers
        try:
            result = client.request("run", {**self._request_args(plan), "public_key": public_line}, answers)
        finally:
            self._client = self._answers = None
            client.close()
        return RunReport(str(result["run"]), answers.results, int(result["exit_code"]), bool(result["cancelled"]),
                         answers.recordings, answers.certificates)

    def step_up_now(self, operator: str, factor: str | None, prompter):
        from opsgate.console.catalog.policy import Grant

        client = self.connect()
        try:
            result = client.request("auth", {"factor": factor}, _Answers(client, prompter, pipeline=self))
        finally:
            client.close()
        return Grant(client.hello["operator"], str(result["factor"]), float(result["auth_time"]))

    def enroll(self, factor: str, prompter, *, token: str | None = None, name: str | None = None) -> dict:
        client = self.connect()
        try:
            return client.request("enroll", {"factor": factor, "token": token, "name": name},
                                  _Answers(client, prompter, pipeline=self))
        finally:
            client.close()

    def cancel(self) -> None:
        self._cancel.set()
        client, answers = self._client, self._answers
        if client is not None:
            client.cancel()
        if answers is not None and answers.executor is not None:
            answers.executor.cancel()


def sync_trail(config, state_dir: Path) -> Path:
    """Bring ``STATE/gate-audit.jsonl`` up to date with the gate's trail and return its path.

    verify, tail, show, export and the history then read it as any trail, with the recordings in the
    console's own state dir. Only complete lines are copied; a copy the gate no longer continues (the
    gate's trail was replaced) is started over, and verify then says what it finds.
    """
    path = Path(state_dir) / GATE_TRAIL_COPY
    offset = path.stat().st_size if path.exists() else 0
    client = GateClient(config.gate, timeout=config.settings.connect_timeout)
    try:
        with open(path, "ab") as out:
            while True:
                try:
                    answer = client.request("trail", {"offset": offset})
                except GateError as e:
                    if e.kind == "audit" and offset:  # shorter than our copy: start over
                        out.truncate(0)
                        offset = 0
                        continue
                    raise
                data = base64.b64decode(answer["data"])
                if not data:
                    break
                out.write(data)
                offset = int(answer["end"])
            out.flush()
            os.fsync(out.fileno())
    finally:
        client.close()
    return path
