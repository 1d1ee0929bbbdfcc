"""Trails and recordings for the history and replay tests, written the way the pipeline writes them.

Records go through ``AuditTrail.append`` with the fields of ``console/run.py`` (``_action_fields``,
``_stepup_fields``, ``_runbook_fields``, the step-up hook's events); recordings through real
``Recording`` objects with chosen event times. ``fixed_times`` makes the record times deterministic.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import opsgate.console.audit.trail as audit_trail
from opsgate.console.audit.trail import AuditTrail
from opsgate.console.paths import AUDIT_FILE
from opsgate.console.audit.recording import Recording, recording_path

NOW = datetime(2026, 11, 28, 9, 30, tzinfo=timezone.utc)  # "today" in these tests
NOW_TS = NOW.timestamp()
DIGEST = "9f2c4e" + "0" * 52 + "abcdef"
COLOUR_OUTPUT = [
    (0.2, "o", "\x1b[31mred\x1b[0m and \x1b[1;32mbold green\x1b[0m\r\n"),
    (0.5, "o", "\r\x1b[2K[##        ] 20%"),
    (0.8, "o", "\r\x1b[2K[#####     ] 50%"),
    (1.1, "o", "\r\x1b[2K[##########] 100%\r\n"),
    (1.3, "o", "\x1b[1A\x1b[18C\x1b[32m✓\x1b[0m\x1b[1B\r"),  # up a line, right 18, a green tick, back down
    (1.5, "o", "done\r\n"),
]


def fixed_times(monkeypatch, start: datetime):
    """Record times start at ``start`` and step one second per record. Returns a function that moves the clock."""
    state = {"t": start}

    def now() -> str:
        t = state["t"]
        state["t"] = t + timedelta(seconds=1)
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def move_to(when: datetime) -> None:
        state["t"] = when

    monkeypatch.setattr(audit_trail, "utc_now", now)
    return move_to


def write_recording(state: Path, run: str, action: str, target: str, command: str,
                    events: list[tuple[float, str, str]], *, width: int = 80, height: int = 12) -> tuple[str, str]:
    """A real recording with events at the given offsets; returns (path relative to state, sha256)."""
    rec = Recording(recording_path(state, run, target), run=run, action=action, target=target, command=command,
                    width=width, height=height)
    t0 = rec._t0
    for t, kind, text in events:
        if kind == "m":
            rec.marker(text, t0 + t)
        else:
            rec.output("stderr" if kind == "e" else "stdout", text.encode(), t0 + t)
    return str(rec.path.relative_to(state)), rec.close()


def default_events(target: str, *, exit_code: int = 0, length: float = 2.0) -> list[tuple[float, str, str]]:
    return [(0.0, "m", "step-up"), (0.05, "m", "start"), (0.3, "o", f"promoting replica on {target}\n"),
            (length * 0.6, "o", f"\x1b[32mOK\x1b[0m {target} is primary\n"),
            (length, "m", f"end {'ok' if exit_code == 0 else 'failed'} exit {exit_code}")]


def record_action_run(state: Path, run: str, *, operator: str = "alice", action: str = "restart-service",
                      risk: str = "medium", targets: tuple[str, ...] = ("web-1",), command: str = "./bin/service restart nginx",
                      factor: str | None = "otp", fresh: bool = True, approvals: tuple[tuple[str, str], ...] = (),
                      digest: str | None = None, exit_codes: dict[str, int] | None = None,
                      events: dict[str, list] | None = None, link: dict | None = None,
                      outcome_override: str | None = None) -> list[dict]:
    """action.start, action.target per target (with a recording), action.end, as the pipeline writes them."""
    trail = AuditTrail(state / AUDIT_FILE)
    out = []
    if factor not in (None, "none") and fresh:
        fields = {"factor": factor, "purpose": "step-up"}
        if factor == "fido2":
            fields.update(credential="key-1", sign_count=7, user_verified=False, digest=digest)
        out.append(trail.append("stepup.success", operator=operator, run=run, action=action, **fields))
    for approver, a_factor in approvals:
        fields = {"factor": a_factor, "purpose": "approval"}
        out.append(trail.append("stepup.success", operator=approver, run=run, action=action, **fields))
        extra = {"digest": digest} if a_factor == "fido2" and digest else {}
        out.append(trail.append("approval.granted", operator=approver, run=run, action=action, requester=operator,
                                factor=a_factor, **extra))
    grant = None if factor in (None, "none") else {"factor": factor, "auth_time": "2026-11-27T22:00:00+00:00",
                                                   "fresh": fresh}
    out.append(trail.append("action.start", operator=operator, run=run, action=action, risk=risk,
                            targets=list(targets), command=command, params={},
                            requirement="security key every run" if factor == "fido2" else "OTP within 15m",
                            grant=grant, approvals=[a for a, _ in approvals],
                            fido2_digest=digest if factor == "fido2" else None, **(link or {})))
    codes = exit_codes or {}
    counts: dict[str, int] = {}
    for target in targets:
        code = codes.get(target, 0)
        evs = (events or {}).get(target) or default_events(target, exit_code=code)
        rel, sha = write_recording(state, run, action, target, command, evs)
        outcome = "ok" if code == 0 else "failed"
        counts[outcome] = counts.get(outcome, 0) + 1
        out.append(trail.append("action.target", operator=operator, run=run, action=action, target=target,
                                outcome=outcome, exit_code=code, duration=1.5, bytes_out=64, bytes_err=0, error=None,
                                recording=rel, recording_sha256=sha, recording_error=None))
    exit_code = 0 if all(c == 0 for c in codes.values()) else 1
    out.append(trail.append("action.end", operator=operator, run=run, action=action, outcomes=counts,
                            exit_code=exit_code))
    return out


def record_failover_runbook(state: Path, run: str, *, operator: str = "alice", approver: str = "bob") -> list[dict]:
    """A critical database failover runbook run: one FIDO2 step-up, bob's approval, two command steps."""
    trail = AuditTrail(state / AUDIT_FILE)
    steps = [
        {"step": 1, "title": "Check replication lag", "kind": "command", "run": f"{run}.1", "targets": ["db-replica"],
         "command": "./bin/lag --max 5", "pause": None},
        {"step": 2, "title": "Promote the replica", "kind": "action", "run": f"{run}.2", "targets": ["db-primary"],
         "command": "./bin/failover --promote db-replica", "pause": None},
    ]
    fields = {"runbook": "db-failover-plan", "risk": "critical", "targets": ["db-replica", "db-primary"],
              "steps": steps, "params": {"replica": "db-replica"}}
    out = [trail.append("stepup.success", operator=operator, run=run, action="db-failover-plan", factor="fido2",
                        purpose="step-up", credential="key-1", sign_count=8, user_verified=False, digest=DIGEST)]
    out.append(trail.append("stepup.success", operator=approver, run=run, action="db-failover-plan", factor="fido2",
                            purpose="approval", credential="bob-key", sign_count=3, user_verified=False, digest=DIGEST))
    out.append(trail.append("approval.granted", operator=approver, run=run, action="db-failover-plan",
                            requester=operator, factor="fido2", digest=DIGEST))
    grant = {"factor": "fido2", "auth_time": "2026-11-27T22:00:00+00:00", "fresh": True}
    out.append(trail.append("runbook.start", operator=operator, run=run, **fields, requirement="security key every run",
                            grant=grant, approvals=[approver], fido2_digest=DIGEST))
    for st, action in ((steps[0], "db-failover-plan#1"), (steps[1], "db-failover")):
        link = {"runbook": "db-failover-plan", "runbook_run": run, "step": st["step"]}
        out += record_action_run(state, st["run"], operator=operator, action=action, risk="critical",
                                 targets=tuple(st["targets"]), command=st["command"], factor="fido2", fresh=False,
                                 digest=DIGEST, link=link)
        out.append(trail.append("runbook.step", operator=operator, run=run, runbook="db-failover-plan",
                                step=st["step"], title=st["title"], step_run=st["run"], status="ok", detail="ok"))
    out.append(trail.append("runbook.end", operator=operator, run=run, runbook="db-failover-plan",
                            steps={"1": "ok", "2": "ok"}, exit_code=0))
    return out


def reviewer_state(tmp_path: Path, monkeypatch) -> Path:
    """A state dir with four runs: yesterday's failover runbook (approved by bob), a failed and a denied
    action today, and carol's low-risk tail."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    move = fixed_times(monkeypatch, NOW - timedelta(days=1, hours=6))  # 2026-11-27 03:30
    trail = AuditTrail(state / AUDIT_FILE)
    trail.append("config.loaded", operator="alice", run=None, path="/etc/opsgate.toml", sha256="0" * 64)
    record_failover_runbook(state, "20261127T033000Z-f41010")
    move(NOW - timedelta(hours=3))  # 2026-11-28 06:30
    record_action_run(state, "20261128T063000Z-aa0001", operator="alice", targets=("web-1", "web-2"),
                      exit_codes={"web-2": 1})
    move(NOW - timedelta(hours=2))
    trail.append("stepup.failure", operator="dave", run="20261128T073000Z-dd0002", action="rotate-cert", factor="otp",
                 purpose="step-up", reason="wrong code", attempts_left=4)
    trail.append("action.denied", operator="dave", run="20261128T073000Z-dd0002", action="rotate-cert", risk="high",
                 targets=["web-1"], command="./bin/rotate-cert api.example.internal", params={},
                 reason="OTP cancelled by dave")
    move(NOW - timedelta(hours=1))
    record_action_run(state, "20261128T083000Z-cc0003", operator="carol", action="tail-log", risk="low",
                      targets=("web-1",), command="tail -n 20 log/app.log", factor=None,
                      events={"web-1": [(0.0, "m", "start"), *COLOUR_OUTPUT, (1.6, "m", "end ok exit 0")]})
    return state
