"""The gate: the one process that holds the catalog it trusts, the factor secrets, the trail and the CA.

Each connection is one operator, identified by the server from the connection (the peer's uid, or the
SSH login an admin bound to a key), never from what the console says. A ``run`` request goes through
the same ``Pipeline`` as local mode, with the gate's own catalog, step-up state and trail: the console
only answers the gate's questions (codes, CTAP for the operator's key, the typed confirmation, pauses)
and runs each step's command with the certificates the gate signs for it, then reports each target's
outcome and recording sha256, which the gate records.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from opsgate.actions.outcome import TargetResult
from opsgate.actions.ssh import wrap_forced_command
from opsgate.console.catalog.model import Config
from opsgate.console.catalog.policy import FACTOR_WORDS, Requirement, factor_rank
from opsgate.console.errors import OpsgateError, StepUpDenied, UsageError
from opsgate.console.events import (APPROVAL_DENIED, APPROVAL_GRANTED, APPROVAL_PENDING, ENROLL_FIDO2, ENROLL_OTP,
                                    GATE_CERTIFICATE)
from opsgate.console.audit.trail import AuditTrail
from opsgate.console.files import file_lock, write_private
from opsgate.console.paths import AUDIT_FILE
from opsgate.console.gate.ca import UserCA
from opsgate.console.gate.protocol import VERSION, Channel, GateError, error_type
from opsgate.console.run import Executed, Pipeline, Plan, RunRequest, StepPlan, renderings
from opsgate.console.stepup.credentials import read_private
from opsgate.console.stepup.totp import DIGITS, new_secret, provisioning_uri
from opsgate.console.stepup.verifier import Prompt, StepUp, StepUpRequest, enroll_fido2_fields

TOKENS_FILE = "enroll-tokens.json"
TOKEN_LIFETIME = 24 * 3600


# -- the console on the other end: questions and the certificate executor ------------------------------


class Peer:
    """One console connection: calls into the console and waits for its answers."""

    def __init__(self, channel: Channel, operator: str, login: str):
        self.channel = channel
        self.operator = operator
        self.login = login
        self._calls: dict[int, Future] = {}
        self._events: dict[int, Callable[[dict], None]] = {}
        self._next = 0
        self._lock = threading.Lock()
        self.cancelled = threading.Event()
        self.closed = threading.Event()
        self.busy = threading.Event()  # a request of this connection is being answered
        self.on_cancel: Callable[[], None] | None = None

    def call(self, name: str, on_event: Callable[[dict], None] | None = None, **args):
        """Ask the console; the answer's value, or GateError if it went away or refused."""
        with self._lock:
            self._next += 1
            cid = self._next
            future: Future = Future()
            self._calls[cid] = future
            if on_event is not None:
                self._events[cid] = on_event
        try:
            self.channel.send({"call": name, "cid": cid, "args": args})
        except OSError:
            raise GateError("unavailable", "the console went away") from None
        try:
            return future.result()
        finally:
            with self._lock:
                self._calls.pop(cid, None)
                self._events.pop(cid, None)

    def deliver(self, message: dict) -> None:
        """A reply, an event of a running call, or a cancel, from the connection's reader."""
        if message.get("cancel"):
            self.cancelled.set()
            if self.on_cancel is not None:
                self.on_cancel()
            return
        cid = message.get("reply", message.get("event_of"))
        with self._lock:
            future, on_event = self._calls.get(cid), self._events.get(cid)
        if future is None:
            return
        if "event_of" in message:
            if on_event is not None:
                on_event(message.get("event") or {})
        elif "error" in message:
            future.set_exception(GateError("denied", str(message["error"])))
        else:
            future.set_result(message.get("value"))

    def close(self) -> None:
        self.closed.set()
        self.cancelled.set()
        if self.on_cancel is not None:
            self.on_cancel()
        with self._lock:
            pending = list(self._calls.values())
        for future in pending:
            if not future.done():
                future.set_exception(GateError("unavailable", "the console went away"))


def _prompt(prompt: Prompt) -> dict:
    return asdict(prompt)


class RemoteFrontend:
    """The pipeline's ``Frontend`` at the gate: every question goes to the operator's console."""

    def __init__(self, peer: Peer, reason: str = ""):
        self.peer = peer
        self.reason = reason

    def ask_code(self, prompt: Prompt) -> str | None:
        value = self.peer.call("ask_code", prompt=_prompt(prompt))
        return value if isinstance(value, str) else None

    def ask_pin(self, prompt: Prompt) -> str | None:
        # The operator's key PIN, for the CTAP exchange this gate runs with their key; used once, never kept.
        value = self.peer.call("ask_pin", prompt=_prompt(prompt))
        return value if isinstance(value, str) else None

    def touch_started(self, prompt: Prompt, cancel: threading.Event) -> None:
        self.peer.call("touch_started", prompt=_prompt(prompt))

    def touch_finished(self) -> None:
        self.peer.call("touch_finished")

    def ask_confirmation(self, expected: str, prompt: Prompt) -> str | None:
        value = self.peer.call("ask_confirmation", expected=expected, prompt=_prompt(prompt))
        return value if isinstance(value, str) else None

    def ask_approver(self, candidates: list[str], prompt: Prompt) -> str | None:
        return None  # at the gate, approvers come from their own consoles (ApprovalBoard)

    def notice(self, text: str) -> None:
        self.peer.call("notice", text=text)

    def on_start(self, plan: Plan) -> None:
        pass  # the console shows its own start when it runs the step

    def on_output(self, chunk) -> None:
        pass  # output stays on the console

    def on_target_done(self, result: TargetResult) -> None:
        pass

    def on_step(self, step: StepPlan, status: str, detail: str = "") -> None:
        self.peer.call("on_step", index=step.step.index, status=status, detail=detail)

    def ask_pause(self, step) -> bool:
        return bool(self.peer.call("ask_pause", index=step.index, text=step.pause or ""))


def remote_security_key(peer: Peer):
    """A CTAP device whose bytes travel to the operator's own key through the console: the gate is the
    relying party and the FIDO2 client, the console only relays, so it cannot make an assertion itself."""
    from fido2.ctap import CtapDevice, CtapError

    class RemoteCtapDevice(CtapDevice):
        def __init__(self) -> None:
            self._capabilities = int(peer.call("ctap_open") or 0)

        @property
        def capabilities(self) -> int:
            return self._capabilities

        def call(self, cmd: int, data: bytes = b"", event=None, on_keepalive=None) -> bytes:
            reply = peer.call("ctap", cmd=cmd, data=base64.b64encode(bytes(data)).decode())
            if isinstance(reply, dict) and "ctap_error" in reply:
                raise CtapError(int(reply["ctap_error"]))
            return base64.b64decode(reply or "")

        def close(self) -> None:
            pass

        @classmethod
        def list_devices(cls):
            return iter(())

    return RemoteCtapDevice()


class CertificateExecutor:
    """Runs a plan by signing one certificate per target and asking the console to run with them."""

    def __init__(self, service: "GateService", peer: Peer, public_key: str, pipeline: Pipeline):
        self.service = service
        self.peer = peer
        self.public_key = public_key
        self.pipeline = pipeline

    def run(self, plan: Plan, frontend, marker: str | None, on_result: Callable[[TargetResult, Executed], None], *,
            cancel: threading.Event, pool=None, capture: dict | None = None) -> list[TargetResult]:
        service, pipeline = self.service, self.pipeline
        gate = service.config.gate
        targets = []
        for target in plan.targets:
            key_id = f"{plan.run_id} {plan.operator}" + (f" reason={plan.reason}" if plan.reason else "")
            # Reports the remote process group and stops it when the console closes stdin (its cancel). Secret
            # values are not in it: the console sends them on the command's stdin, as in local mode.
            cert = service.ca.sign(self.public_key, key_id=key_id, principal=target.user or plan.operator,
                                   command=wrap_forced_command(plan.command.command, plan.command.secret_lines), window=gate.certificate_window,
                                   source_address=gate.source_address)
            pipeline._record(GATE_CERTIFICATE, plan, action=plan.action.id, target=target.name,
                                     principal=cert.principal, key_id=cert.key_id, serial=str(cert.serial),
                                     valid_after=cert.valid_after, valid_before=cert.valid_before)
            targets.append({"name": target.name, "host": target.host, "port": target.port, "user": target.user,
                            "certificate": cert.line, "key_id": cert.key_id, "valid_before": cert.valid_before})
        done: dict[str, TargetResult] = {}

        def event(ev: dict) -> None:
            result, executed = _result_from_wire(ev)
            if result.target in done or result.target not in plan.target_names:
                return  # a console cannot report a target twice or one the plan does not name
            done[result.target] = result
            if capture is not None:
                capture[result.target] += executed.output[:1 << 20]
            on_result(result, executed)

        self.peer.call("execute", on_event=event, run=plan.run_id, action=plan.action.id,
                       command=plan.command.redacted, targets=targets, timeout=plan.action.timeout,
                       marker=marker, capture=capture is not None)
        missing = [t for t in plan.target_names if t not in done]
        for name in missing:  # never silently dropped: a target the console did not report
            result = TargetResult(name, "error", None, 0.0, 0, 0, "the console did not report this target")
            done[name] = result
            on_result(result, Executed(None, None, "not reported"))
        return [done[n] for n in plan.target_names]

    def cancel(self) -> None:
        pass  # the console stops its own fan-out; the pipeline's cancel flag ends the run here


def _result_from_wire(ev: dict) -> tuple[TargetResult, Executed]:
    r = ev.get("result") or {}
    result = TargetResult(str(r.get("target", "")), str(r.get("outcome", "error")),
                          r.get("exit_code") if isinstance(r.get("exit_code"), int) else None,
                          float(r.get("duration") or 0.0), int(r.get("bytes_out") or 0), int(r.get("bytes_err") or 0),
                          r.get("error") if isinstance(r.get("error"), str) else None)
    return result, Executed(ev.get("recording"), ev.get("recording_sha256"), ev.get("recording_error"),
                            output=base64.b64decode(ev.get("capture") or ""))


# -- approvals across terminals -------------------------------------------------------------------------


@dataclass
class PendingApproval:
    id: str
    requester: str
    summary: str
    reason: str
    requirement: Requirement
    request: StepUpRequest
    needed: int
    expires: float
    approved: list[str] = field(default_factory=list)
    denied: str | None = None
    closed: bool = False
    changed: threading.Condition = field(default_factory=threading.Condition)

    def public(self) -> dict:
        return {"id": self.id, "requester": self.requester, "summary": self.summary, "reason": self.reason,
                "factor": self.requirement.factor, "needed": self.needed, "approved": list(self.approved),
                "expires": self.expires}


class GateStepUp(StepUp):
    """StepUp whose approvals come from other operators' own connections (the two-person rule for real)."""

    service: "GateService"

    def _approvals(self, operator, requirement, request, prompter, audit):
        service = self.service
        summary = request.summary()
        pending = PendingApproval(secrets.token_hex(3), operator, summary, getattr(prompter, "reason", ""),
                                  requirement, request, requirement.approvals,
                                  self.clock() + service.config.gate.approval_timeout)
        with service.lock:
            service.pending[pending.id] = pending
        audit(APPROVAL_PENDING, {"operator": operator, "request": pending.id, "needed": pending.needed})
        prompter.notice(f"waiting for {pending.needed} approval{'s' if pending.needed > 1 else ''} by another "
                        f"operator: they run `opsgate approve {pending.id}` (request {pending.id})")
        try:
            with pending.changed:
                while len(pending.approved) < pending.needed and pending.denied is None:
                    left = pending.expires - self.clock()
                    if left <= 0 or prompter.peer.cancelled.is_set():
                        break
                    pending.changed.wait(min(left, 0.5))
                pending.closed = True
            if pending.denied is not None:
                raise StepUpDenied(f"request {pending.id} denied by {pending.denied}")
            if len(pending.approved) < pending.needed:
                why = "cancelled" if prompter.peer.cancelled.is_set() else "no approval in time"
                audit(APPROVAL_DENIED, {"operator": None, "requester": operator, "request": pending.id,
                                        "reason": why})
                raise StepUpDenied(f"request {pending.id}: {why} ({len(pending.approved)} of {pending.needed} approvals)")
            return tuple(pending.approved)
        finally:
            with service.lock:
                service.pending.pop(pending.id, None)


# -- enrollment tokens ----------------------------------------------------------------------------------


class EnrollTokens:
    """One-use, expiring tokens an admin makes with ``opsgated enroll-token USER`` (stored hashed, 0600)."""

    def __init__(self, state_dir: Path, clock: Callable[[], float] = time.time):
        self.path = Path(state_dir) / TOKENS_FILE
        self.lock_path = Path(state_dir) / f".{TOKENS_FILE}.lock"
        self.clock = clock

    def _load(self) -> dict:
        raw = read_private(self.path, "enrollment tokens")
        return json.loads(raw) if raw else {}

    def create(self, operator: str) -> str:
        token = secrets.token_hex(16)  # 128 bits; never starts with "-", so `--token TOKEN` always parses
        with file_lock(self.lock_path, exclusive=True):
            data = {k: v for k, v in self._load().items() if v["expires"] > self.clock()}
            data[hashlib.sha256(token.encode()).hexdigest()] = {"operator": operator,
                                                               "expires": self.clock() + TOKEN_LIFETIME}
            write_private(self.path, json.dumps(data, indent=1, sort_keys=True).encode())
        return token

    def use(self, operator: str, token: str) -> bool:
        """True once for a valid token of ``operator``; the token is then spent."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        with file_lock(self.lock_path, exclusive=True):
            data = self._load()
            for key, entry in list(data.items()):
                if hmac.compare_digest(key, digest):
                    if entry["operator"] != operator or entry["expires"] <= self.clock():
                        return False
                    del data[key]
                    write_private(self.path, json.dumps(data, indent=1, sort_keys=True).encode())
                    return True
        return False


# -- the service ----------------------------------------------------------------------------------------


class GateService:
    """What ``opsgated serve`` and ``opsgated session`` run: one per gate process, shared by connections."""

    def __init__(self, config: Config, state_dir: Path, *, clock: Callable[[], float] = time.time):
        if config.gate is None:
            raise UsageError("the gate's config needs a [gate] table")
        self.config = config
        self.state_dir = Path(state_dir)
        self.ca = UserCA.load(self.state_dir)
        self._local = threading.local()
        stepup = GateStepUp(self.state_dir, config.settings, persist_grants=True,
                            authenticator=self._current_key, clock=clock)
        stepup.service = self
        self.audit = AuditTrail(self.state_dir / AUDIT_FILE)  # the authoritative trail: the operator cannot write it
        self.pipeline = Pipeline(config, self.state_dir, stepup=stepup, audit=self.audit)  # for requests that run nothing
        self.stepup = stepup
        self.tokens = EnrollTokens(self.state_dir, clock)
        self.lock = threading.RLock()
        self.pending: dict[str, PendingApproval] = {}
        self.pipeline.record_config("opsgated")  # the catalog the gate trusts, in its trail at start

    def run_pipeline(self, executor) -> "Pipeline":
        """A pipeline for one run: its own cancel state and executor, the gate's step-up and trail."""
        pipeline = Pipeline(self.config, self.state_dir, stepup=self.stepup, audit=self.audit, executor=executor)
        pipeline.config_recorded = True  # recorded once, when the gate started
        return pipeline

    def operator_for(self, login: str) -> str | None:
        """The operator an OS login (uid's name, or SSH login) is, by the gate's config; None: not allowed."""
        operators = self.config.gate.operators
        if operators:
            return operators.get(login)
        return login

    def _current_key(self):
        peer = getattr(self._local, "peer", None)
        if peer is None:
            raise StepUpDenied("no console to reach a security key through")
        return remote_security_key(peer)

    # -- one connection ------------------------------------------------------------------------------

    def serve(self, channel: Channel, login: str, *, bound_operator: str | None = None) -> None:
        """Answer one console until it hangs up. Requests run in a worker; the reader keeps reading.

        ``login`` is who the connection is (the peer uid's name); ``bound_operator`` is the operator an
        admin bound to an SSH key (``opsgated session --operator``), which must be one of the gate's.
        """
        if bound_operator is not None:
            known = set(self.config.gate.operators.values())
            operator = bound_operator if (not known or bound_operator in known) else None
        else:
            operator = self.operator_for(login)
        peer = Peer(channel, operator or "", login)
        worker: threading.Thread | None = None
        try:
            while True:
                try:
                    message = channel.receive()
                except GateError as e:
                    channel.send({"id": None, "ok": False, "error": {"type": e.kind, "message": str(e)}})
                    return
                if message is None:
                    return
                if "op" not in message:
                    peer.deliver(message)
                    continue
                if operator is None:
                    channel.send({"id": message.get("id"), "ok": False, "error": {
                        "type": "denied", "message": f"{login} is not an operator of this gate"}})
                    return
                if peer.busy.is_set():
                    channel.send({"id": message.get("id"), "ok": False, "error": {
                        "type": "bad-request", "message": "one request at a time per connection"}})
                    continue
                peer.busy.set()
                worker = threading.Thread(target=self._answer, args=(peer, message), daemon=True,
                                          name=f"gate-{login}")
                worker.start()
        finally:
            peer.close()
            if worker is not None:
                worker.join(10)

    def _answer(self, peer: Peer, message: dict) -> None:
        rid = message.get("id")
        self._local.peer = peer
        try:
            if message.get("v") != VERSION:
                raise GateError("unavailable", f"protocol version {message.get('v')!r} not supported (gate speaks {VERSION})")
            handler = getattr(self, "op_" + str(message.get("op", "")).replace("-", "_"), None)
            if handler is None:
                raise GateError("bad-request", f"unknown request {message.get('op')!r}")
            answer = {"id": rid, "ok": True, "result": handler(peer, message.get("args") or {})}
        except BaseException as e:  # every failure is an answer the console can map to an exit code
            kind = error_type(e)
            text = str(e) if isinstance(e, OpsgateError) else f"internal error: {type(e).__name__}: {e}"
            answer = {"id": rid, "ok": False, "error": {"type": kind, "message": text}}
        peer.busy.clear()  # before the answer: the console may send its next request as soon as it has it
        try:
            peer.channel.send(answer)
        except OSError:
            pass
        finally:
            self._local.peer = None

    # -- requests ------------------------------------------------------------------------------------

    def op_hello(self, peer: Peer, args: dict) -> dict:
        return {"operator": peer.operator, "login": peer.login, "version": VERSION,
                "ca": self.ca.public_line(), "config_sha256": self.config.sha256}

    def _request(self, peer: Peer, args: dict) -> RunRequest:
        # The operator is the connection's, whatever the request says.
        return RunRequest(str(args.get("action", "")), tuple(str(t) for t in args.get("targets") or ()),
                          {str(k): str(v) for k, v in (args.get("params") or {}).items()}, peer.operator,
                          str(args.get("reason") or ""))

    def op_run(self, peer: Peer, args: dict) -> dict:
        """Plan from the gate's catalog, step up, sign per step, record what the console reports."""
        public_key = str(args.get("public_key", ""))
        if not public_key.startswith("ssh-ed25519 "):
            raise GateError("bad-request", "a run needs the console's ephemeral ed25519 public key")
        pipeline = self.run_pipeline(None)
        pipeline.executor = CertificateExecutor(self, peer, public_key, pipeline)
        plan = pipeline.plan(self._request(peer, args))
        if args.get("expect") is not None and args["expect"] != renderings(plan):
            raise GateError("bad-request", "your catalog renders this differently from the gate's: update your "
                                           "config from the gate's (the gate's rendering is what would run)")
        frontend = RemoteFrontend(peer, plan.reason)
        peer.on_cancel = pipeline.cancel
        try:
            report = pipeline.execute(plan, frontend)
        finally:
            peer.on_cancel = None
        return {"run": report.run_id, "exit_code": report.exit_code, "cancelled": report.cancelled}

    def op_plan(self, peer: Peer, args: dict) -> dict:
        """What a run would do, from the gate's catalog, and what it would ask (a dry run is audited)."""
        plan = self.pipeline.plan(self._request(peer, args))
        self.pipeline.dry_run(plan)
        return {"run": plan.run_id, "requirement": plan.requirement.describe(), "rendered": renderings(plan)}

    def op_auth(self, peer: Peer, args: dict) -> dict:
        factor = args.get("factor")
        grant = self.pipeline.step_up_now(peer.operator, factor if factor in ("otp", "fido2") else None,
                                          RemoteFrontend(peer))
        return {"factor": grant.factor, "auth_time": grant.auth_time}

    def op_approvals(self, peer: Peer, args: dict) -> list[dict]:
        with self.lock:
            return [p.public() for p in self.pending.values() if not p.closed]

    def op_approve(self, peer: Peer, args: dict) -> dict:
        return self._answer_approval(peer, str(args.get("request", "")), approve=True)

    def op_deny(self, peer: Peer, args: dict) -> dict:
        return self._answer_approval(peer, str(args.get("request", "")), approve=False)

    def _answer_approval(self, peer: Peer, request_id: str, *, approve: bool) -> dict:
        with self.lock:
            pending = self.pending.get(request_id)
        if pending is None or pending.closed:
            raise GateError("bad-request", f"no pending request {request_id!r}: `opsgate approvals` lists them")
        audit = self.pipeline.stepup_audit(peer.operator, request=request_id)
        approver = peer.operator
        if approver == pending.requester:
            audit(APPROVAL_DENIED, {"operator": approver, "requester": pending.requester,
                                    "reason": "an operator cannot approve their own request"})
            raise GateError("denied", "an operator cannot approve their own request")
        if approver in pending.approved:
            raise GateError("denied", f"{approver} already approved request {request_id}")
        enrolled = self.stepup.store.operator(approver).factors()
        if not any(factor_rank(f) >= factor_rank(pending.requirement.factor) for f in enrolled):
            raise GateError("denied", f"{approver} has no factor enrolled that meets "
                                      f"{FACTOR_WORDS[pending.requirement.factor]}")
        summary = f"{'approve' if approve else 'deny'} {pending.summary} requested by {pending.requester}"
        _, digest = self.stepup._authenticate(approver, pending.requirement.factor, pending.requirement,
                                              pending.request, RemoteFrontend(peer), audit,
                                              purpose="approval", summary=summary)
        fields = {"operator": approver, "requester": pending.requester, "factor": pending.requirement.factor}
        if digest:
            fields["digest"] = digest.hex()
        with pending.changed:
            if pending.closed:
                raise GateError("denied", f"request {request_id} is no longer pending")
            if approve:
                audit(APPROVAL_GRANTED, fields)
                pending.approved.append(approver)
            else:
                audit(APPROVAL_DENIED, {**fields, "reason": "denied by approver"})
                pending.denied = approver
            pending.changed.notify_all()
        return pending.public()

    def op_enroll(self, peer: Peer, args: dict) -> dict:
        """The first factor needs an enrollment token from an admin; a further one, an existing factor."""
        operator, factor = peer.operator, args.get("factor")
        if factor not in ("otp", "fido2"):
            raise GateError("bad-request", "enroll otp or fido2")
        frontend = RemoteFrontend(peer)
        audit = self.pipeline.stepup_audit(operator, os_user=peer.login)
        if self.stepup.store.operator(operator).factors():
            frontend.notice(f"{operator} already has a factor enrolled: step up with it first")
            self.pipeline.step_up_now(operator, None, frontend)
        elif not self.tokens.use(operator, str(args.get("token") or "")):
            raise GateError("denied", f"the first factor of {operator} needs a valid enrollment token: an admin "
                                      f"runs `opsgated enroll-token {operator}` and gives it to you (--token)")
        if factor == "otp":
            secret = new_secret()
            peer.call("show_enrollment", uri=provisioning_uri(secret, operator))
            prompt = Prompt(operator, "otp", "enroll", f"confirm the new OTP secret for {operator}")
            while True:
                code = frontend.ask_code(prompt)
                if code is None:
                    raise StepUpDenied(f"OTP enrollment for {operator} not saved: {prompt.error or 'cancelled'}")
                # audited first: a factor the trail does not know must not exist
                if self.stepup.enroll_otp(operator, secret, code, before_save=lambda: audit(ENROLL_OTP, {
                        "operator": operator})):
                    return {"factor": "otp"}
                prompt.error = f"that code does not match the new secret (enter the current {DIGITS}-digit code)"
        name = str(args.get("name") or "security key")
        self.stepup.enroll_fido2(operator, name, frontend,
                                 before_save=lambda cred: audit(ENROLL_FIDO2, enroll_fido2_fields(operator, cred)))
        return {"factor": "fido2", "name": name}

    def op_trail(self, peer: Peer, args: dict) -> dict:
        """Bytes of the gate's trail from ``offset`` (complete lines), for verify, tail and history."""
        from opsgate.console.files import FileShrank, read_complete_lines

        offset = int(args.get("offset") or 0)
        try:
            data = read_complete_lines(self.pipeline.audit.path, offset, 4 << 20)
        except FileNotFoundError:
            data = b""
        except FileShrank as e:
            raise GateError("audit", str(e)) from None
        return {"offset": offset, "data": base64.b64encode(data).decode(), "end": offset + len(data)}
