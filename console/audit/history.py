"""Run history for reviewers: one ``RunSummary`` per run in the audit trail, filters, and the export.

Headless (the TUI's history screen and ``opsgate audit export`` both use it). A run is every record
sharing a ``run`` id. A runbook run (``runbook.start`` / ``runbook.step`` / ``runbook.end``) is ONE
summary: its steps run as ``RUNID.N`` (their ``action.start`` carries ``runbook_run``; ``runbook.step``
names them as ``step_run``) and their records, approvals and recordings are folded into it.

Nothing here trusts the trail: ``build_history`` only reads; ``verify`` (``console.audit.verify``) says
how far the chain holds and ``check_recordings`` whether each recording still has the sha256 its record
gives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from opsgate.console.audit.recording import RECORDING_FAILED
from opsgate.console.audit.trail import AuditTrail, pick_run, record_hash
from opsgate.console.audit.verify import VerifyReport, check_recording, verify
from opsgate.console.errors import EXIT_CANCELLED, EXIT_OK
from opsgate.console.events import (
    ACTION_CANCELLED,
    ACTION_DENIED,
    ACTION_DRY_RUN,
    ACTION_END,
    ACTION_START,
    ACTION_TARGET,
    APPROVAL_GRANTED,
    CONFIG_LOADED,
    GATE_CERTIFICATE,
    RUNBOOK_END,
    RUNBOOK_START,
    RUNBOOK_STEP,
    STEPUP_SUCCESS,
)

OUTCOMES = ("ok", "failed", "cancelled", "denied", "dry-run", "running", RECORDING_FAILED)
_RISKS = ("low", "medium", "high", "critical")
_STEP_RUN = re.compile(r"^(?P<base>.+)\.(?P<step>\d+)$")
_OWN_EVENTS = (RUNBOOK_START, ACTION_START, ACTION_DRY_RUN, ACTION_DENIED, ACTION_END, RUNBOOK_END)


@dataclass
class Approval:
    """Another operator's approval (two-person rule) with the factor they used."""

    approver: str
    factor: str | None
    digest: str | None = None  # FIDO2 request digest the approver's touch signed
    time: str = ""
    step: int | None = None  # runbook step whose own step-up asked for it


@dataclass
class RecordingRef:
    """One (run, target) recording named by an ``action.target`` record."""

    run: str
    target: str
    path: str | None  # relative to the state dir, as recorded
    sha256: str | None
    seq: int | None  # the action.target record
    outcome: str | None = None
    exit_code: int | None = None
    step: int | None = None
    record: dict = field(default_factory=dict, repr=False)


@dataclass
class StepSummary:
    index: int
    title: str
    kind: str
    run: str | None
    status: str = "pending"
    detail: str = ""
    targets: list[str] = field(default_factory=list)
    command: str | None = None


@dataclass
class RunSummary:
    """What a reviewer sees in one history row, and everything the detail needs."""

    run: str
    kind: str = "action"  # "action" | "runbook"
    name: str = "?"  # the action id or the runbook id
    operator: str = "?"
    started: str = ""  # RFC 3339 time of the first record
    ended: str = ""
    risk: str | None = None
    targets: list[str] = field(default_factory=list)
    command: str | None = None  # redacted as recorded
    params: dict = field(default_factory=dict)
    requirement: str | None = None
    outcome: str = "running"  # one of OUTCOMES; recording-failed when a target's recording was lost
    exit_code: int | None = None
    factor: str | None = None  # the step-up factor the run's grant had ("none" without step-up)
    fresh: bool | None = None  # whether the operator stepped up for this very run
    fido2_digest: str | None = None
    approvals: list[Approval] = field(default_factory=list)
    reason: str | None = None  # why it was denied or cancelled
    steps: list[StepSummary] = field(default_factory=list)
    recordings: list[RecordingRef] = field(default_factory=list)
    certificates: list[dict] = field(default_factory=list)  # gate mode: what the gate signed, per target
    config_sha256: str | None = None  # the config the run was made under (its start record's config_sha256)
    other_policy: bool = False  # made under another config digest than the pinned one (console/audit/anchor.py)
    records: list[dict] = field(default_factory=list, repr=False)

    @property
    def time(self) -> datetime | None:
        return parse_time(self.started)

    @property
    def first_seq(self) -> int:
        return min((r.get("seq", 0) for r in self.records), default=0)

    @property
    def last_seq(self) -> int:
        return max((r.get("seq", 0) for r in self.records), default=0)

    def text(self) -> str:
        """Everything free words in a filter are matched against (lower case)."""
        parts = [self.run, self.name, self.operator, self.outcome, self.command or "", *self.targets,
                 *(a.approver for a in self.approvals), *(s.command or "" for s in self.steps),
                 "other-policy" if self.other_policy else ""]
        return " ".join(parts).lower()


def parse_time(text: str) -> datetime | None:
    """An audit record's time (RFC 3339 UTC) as an aware datetime, or None."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _outcome_of(exit_code: object) -> str:
    if exit_code == EXIT_OK:
        return "ok"
    if exit_code == EXIT_CANCELLED:
        return "cancelled"
    return "failed"


def _grant(summary: RunSummary, record: dict) -> None:
    grant = record.get("grant")
    if isinstance(grant, dict):
        summary.factor = grant.get("factor") or summary.factor
        summary.fresh = grant.get("fresh")
    elif "grant" in record and summary.factor is None:
        summary.factor = "none"
    if record.get("fido2_digest"):
        summary.fido2_digest = record["fido2_digest"]
    if record.get("requirement"):
        summary.requirement = record["requirement"]
    if isinstance(record.get("config_sha256"), str) and summary.config_sha256 is None:
        summary.config_sha256 = record["config_sha256"]


def _step_of(run: str, parents: dict[str, str]) -> int | None:
    m = _STEP_RUN.match(run)
    return int(m.group("step")) if m and run in parents else None


def build_history(records: Iterable[dict], *, pinned_policy: str | None = None) -> list[RunSummary]:
    """Summaries of every run in ``records`` (trail order), newest first. Records without a run are skipped.

    A run whose config digest is not ``pinned_policy`` (else the first ``config.loaded`` digest) is flagged
    ``other_policy`` (and matches the filter word ``other-policy``)."""
    groups: dict[str, list[dict]] = {}
    parents: dict[str, str] = {}  # step run -> runbook run
    first_config: str | None = None
    for record in records:
        if first_config is None and record.get("event") == CONFIG_LOADED and isinstance(record.get("sha256"), str):
            first_config = record["sha256"]
        run = record.get("run")
        if not isinstance(run, str) or not run:
            continue
        groups.setdefault(run, []).append(record)
        if isinstance(record.get("runbook_run"), str):
            parents[run] = record["runbook_run"]
        if record.get("event") == RUNBOOK_STEP and isinstance(record.get("step_run"), str):
            parents[record["step_run"]] = run
    for run in list(groups):  # a step run whose records have no link (cut short) still has the RUNID.N form
        m = _STEP_RUN.match(run)
        if run not in parents and m and m.group("base") in groups and any(
                r.get("event") == RUNBOOK_START for r in groups[m.group("base")]):
            parents[run] = m.group("base")

    summaries: dict[str, RunSummary] = {}
    for run, recs in groups.items():
        owner = parents.get(run, run)
        if owner not in summaries:
            summaries[owner] = RunSummary(run=owner)
        summaries[owner].records.extend(recs)
    pin = pinned_policy or first_config
    for summary in summaries.values():
        summary.records.sort(key=lambda r: r.get("seq", 0))
        _summarise(summary, parents)
        summary.other_policy = pin is not None and summary.config_sha256 not in (None, pin)
    return sorted(summaries.values(), key=lambda s: (s.started, s.first_seq), reverse=True)


def _planned_steps(steps: dict[int, "StepSummary"], r: dict) -> None:
    """The steps a record's ``steps`` list plans (``runbook.start``, a runbook's ``action.dry_run``)."""
    for st in r.get("steps") or []:
        if isinstance(st, dict) and isinstance(st.get("step"), int):
            steps[st["step"]] = StepSummary(st["step"], str(st.get("title") or ""), str(st.get("kind") or ""),
                                            st.get("run"), targets=list(st.get("targets") or []),
                                            command=st.get("command"))


def _summarise(s: RunSummary, parents: dict[str, str]) -> None:
    s.started = str(s.records[0].get("time", ""))
    s.ended = str(s.records[-1].get("time", ""))
    steps: dict[int, StepSummary] = {}
    for r in s.records:
        event, run = r.get("event"), r.get("run")
        step = _step_of(run, parents) if run != s.run else None
        if run == s.run and s.operator == "?" and r.get("operator") and (
                event in _OWN_EVENTS or (str(event).startswith("stepup.") and r.get("purpose") == "step-up")):
            s.operator = str(r["operator"])  # the requester, never an approver
        if event == RUNBOOK_START:
            s.kind, s.name = "runbook", str(r.get("runbook", s.name))
            s.risk, s.targets, s.params = r.get("risk"), list(r.get("targets") or []), dict(r.get("params") or {})
            _grant(s, r)
            _planned_steps(steps, r)
        elif event in (ACTION_START, ACTION_DRY_RUN, ACTION_DENIED) and step is None and s.kind == "action":
            if r.get("runbook"):  # a denied or dry-run runbook (no runbook.start)
                s.kind, s.name = "runbook", str(r["runbook"])
                _planned_steps(steps, r)  # a dry run's record lists the plan's steps
            else:
                s.name = str(r.get("action", s.name))
            s.risk = r.get("risk", s.risk)
            s.targets = list(r.get("targets") or s.targets)
            s.command = r.get("command", s.command)
            s.params = dict(r.get("params") or s.params)
            _grant(s, r)
            if event == ACTION_DRY_RUN:
                s.outcome = "dry-run"
            elif event == ACTION_DENIED:
                s.outcome, s.reason = "denied", r.get("reason")
        elif event == ACTION_DENIED and step is not None:
            s.reason = r.get("reason")
        elif event == APPROVAL_GRANTED:
            s.approvals.append(Approval(str(r.get("operator")), r.get("factor"), r.get("digest"),
                                        str(r.get("time", "")), step))
        elif event == GATE_CERTIFICATE:
            s.certificates.append({k: r.get(k) for k in ("target", "principal", "key_id", "serial", "valid_after",
                                                         "valid_before")} | {"step": step})
        elif event == STEPUP_SUCCESS and step is None and s.factor is None and r.get("purpose") == "step-up":
            s.factor = r.get("factor")
        elif event == ACTION_TARGET:
            s.recordings.append(RecordingRef(str(run), str(r.get("target", "?")), r.get("recording"),
                                             r.get("recording_sha256"), r.get("seq"), r.get("outcome"),
                                             r.get("exit_code"), step, r))
        elif event == ACTION_END and step is None and s.kind == "action":
            s.exit_code = r.get("exit_code")
            s.outcome = _outcome_of(s.exit_code)
        elif event == ACTION_CANCELLED and step is None:
            s.reason = f"cancelled {r.get('stage', '')}".strip()
        elif event == RUNBOOK_STEP and isinstance(r.get("step"), int):
            st = steps.setdefault(r["step"], StepSummary(r["step"], str(r.get("title") or ""), "", r.get("step_run")))
            st.status, st.detail = str(r.get("status", st.status)), str(r.get("detail", ""))
        elif event == RUNBOOK_END:
            s.exit_code = r.get("exit_code")
            s.outcome = _outcome_of(s.exit_code)
    if s.operator == "?":
        s.operator = str(s.records[0].get("operator") or "?")
    if any(ref.outcome == RECORDING_FAILED or ref.record.get("recording_error") for ref in s.recordings):
        s.outcome = RECORDING_FAILED  # whatever else happened, part of what ran is not on record
    if s.kind == "runbook":
        s.steps = [steps[k] for k in sorted(steps)]
        if s.outcome == "running" and any(r.get("event") == ACTION_DENIED for r in s.records) \
                and not any(r.get("event") == RUNBOOK_START for r in s.records):
            s.outcome = "denied"


# -- filtering --------------------------------------------------------------------------------------

_KEYS = {"op": "operators", "operator": "operators", "action": "actions", "runbook": "actions",
         "risk": "risks", "outcome": "outcomes", "status": "outcomes", "target": "targets",
         "since": "since", "until": "until", "run": "runs"}
_RELATIVE = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: datetime, *, end: bool = False) -> datetime:
    """``2026-11-27``, ``2026-11-27T14:00``, ``today``, ``yesterday`` or ``24h``/``7d`` ago (UTC).

    A bare date as an ``until`` bound means the end of that day.
    """
    text = text.strip().lower()
    m = _RELATIVE.match(text)
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    day = {"today": midnight, "yesterday": midnight - timedelta(days=1)}.get(text)
    if day is None:
        try:
            day = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{text!r} is not a time: use 2026-11-27, 2026-11-27T14:00, today, yesterday, 24h or 7d")
        if day.tzinfo is None:
            day = day.replace(tzinfo=timezone.utc)
        if end and len(text) == 10:
            return day + timedelta(days=1)
        return day
    return day + timedelta(days=1) if end else day


@dataclass
class HistoryFilter:
    """``op:alice risk:critical outcome:failed since:2026-11-27`` and free words (all must match).

    A key may list values with commas (``outcome:failed,denied``); ``risk:high+`` means high or above.
    """

    operators: set[str] = field(default_factory=set)
    actions: set[str] = field(default_factory=set)
    risks: set[str] = field(default_factory=set)
    outcomes: set[str] = field(default_factory=set)
    targets: set[str] = field(default_factory=set)
    runs: set[str] = field(default_factory=set)
    since: datetime | None = None
    until: datetime | None = None
    words: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str, *, now: datetime | None = None) -> "HistoryFilter":
        """Parse a filter line; terms it cannot read go to ``errors`` (and are ignored)."""
        now = now or datetime.now(timezone.utc)
        flt = cls()
        for term in text.split():
            key, sep, value = term.partition(":")
            attr = _KEYS.get(key.lower()) if sep else None
            if attr is None:
                flt.words.append(term.lower())
                continue
            if not value:
                flt.errors.append(f"{key}: needs a value")
                continue
            if attr in ("since", "until"):
                try:
                    setattr(flt, attr, parse_when(value, now, end=attr == "until"))
                except ValueError as e:
                    flt.errors.append(f"{key}: {e}")
                continue
            values = {v for v in value.lower().split(",") if v}
            if attr == "risks":
                for v in list(values):
                    if v.endswith("+") and v[:-1] in _RISKS:
                        values.discard(v)
                        values.update(_RISKS[_RISKS.index(v[:-1]):])
                    elif v not in _RISKS:
                        values.discard(v)
                        flt.errors.append(f"risk: {v!r} is not one of {', '.join(_RISKS)}")
            elif attr == "outcomes":
                for v in list(values):
                    if v not in OUTCOMES:
                        values.discard(v)
                        flt.errors.append(f"outcome: {v!r} is not one of {', '.join(OUTCOMES)}")
            getattr(flt, attr).update(values)
        return flt

    def matches(self, s: RunSummary) -> bool:
        if self.operators and s.operator.lower() not in self.operators:
            return False
        if self.actions and not any(a in s.name.lower() for a in self.actions):
            return False
        if self.risks and (s.risk or "") not in self.risks:
            return False
        if self.outcomes and s.outcome not in self.outcomes:
            return False
        if self.targets and not any(t.lower() in self.targets for t in s.targets):
            return False
        if self.runs and not any(s.run.startswith(r) for r in self.runs):
            return False
        when = s.time
        if self.since and (when is None or when < self.since):
            return False
        if self.until and (when is None or when >= self.until):
            return False
        text = s.text()
        return all(w in text for w in self.words)

    def describe(self) -> str:
        parts = []
        for label, values in (("op", self.operators), ("action", self.actions), ("risk", self.risks),
                              ("outcome", self.outcomes), ("target", self.targets), ("run", self.runs)):
            if values:
                parts.append(f"{label} {','.join(sorted(values))}")
        if self.since:
            parts.append(f"since {self.since:%Y-%m-%d %H:%M}")
        if self.until:
            parts.append(f"until {self.until:%Y-%m-%d %H:%M}")
        parts += [f'"{w}"' for w in self.words]
        return " · ".join(parts) or "all runs"


def filter_history(summaries: Iterable[RunSummary], flt: HistoryFilter) -> list[RunSummary]:
    return [s for s in summaries if flt.matches(s)]


# -- verification -----------------------------------------------------------------------------------


def chain_ok(report: VerifyReport) -> bool:
    """The hash chain itself holds (recordings aside)."""
    return report.first_bad_seq is None and not (report.count == 0 and report.problems)


def chain_state(report: VerifyReport) -> str:
    """One line: how far the chain verifies, or where it breaks and why."""
    if report.first_bad_seq is not None:
        reason = report.problems[0] if report.problems else "?"
        return (f"chain BROKEN at record {report.first_bad_seq}: {reason} "
                f"({report.count} records verified before it)")
    if not chain_ok(report):
        return report.problems[0]
    text = f"chain verified up to record {report.count}"
    if report.problems:
        n = len(report.problems)
        text += f"; {n} recording{'s do' if n != 1 else ' does'} not verify"
    return text


def record_verified(record: dict, report: VerifyReport | None) -> bool | None:
    """Whether ``record`` lies in the verified part of the chain and still matches its hash (None: unknown)."""
    if report is None:
        return None
    seq = record.get("seq")
    if record.get("hash") != record_hash(record):
        return False
    if report.first_bad_seq is not None:
        return isinstance(seq, int) and seq < report.first_bad_seq
    return isinstance(seq, int) and seq <= report.count


def check_recordings(summary: RunSummary, state_dir: Path) -> list[tuple[RecordingRef, str | None]]:
    """Each recording of the run and None if it matches its audit record, else what is wrong (reads files)."""
    return [(ref, check_recording(state_dir, ref.path, ref.sha256, record=ref.record).problem)
            for ref in summary.recordings]


def find_summary(summaries: list[RunSummary], prefix: str) -> RunSummary:
    """The run ``prefix`` names: an exact id (a runbook step's ``RUNID.N`` names its runbook) or a unique prefix."""
    by_id = {s.run: s for s in summaries}
    if prefix in by_id:
        return by_id[prefix]
    m = _STEP_RUN.match(prefix)
    if m and m.group("base") in by_id and by_id[m.group("base")].kind == "runbook":
        return by_id[m.group("base")]
    return by_id[pick_run(prefix, [s.run for s in summaries if s.run.startswith(prefix)])]


def export_run(audit_path: Path, state_dir: Path, prefix: str, *,
               pinned_policy: str | None = None) -> tuple[dict, bool]:
    """The evidence for one run as a JSON-ready document, and whether all of it verifies.

    The document holds the run's records in trail order (runbook steps included), the chain's
    verification state and, per recording, its path, sha256 and verification state.
    """
    audit_path, state_dir = Path(audit_path), Path(state_dir)
    trail = AuditTrail(audit_path)
    summary = find_summary(build_history(trail.records(), pinned_policy=pinned_policy), prefix)
    report = verify(audit_path, state_dir=state_dir, check_recordings=False)
    recordings = []
    for ref, problem in check_recordings(summary, state_dir):
        recordings.append({
            "run": ref.run, "step": ref.step, "target": ref.target, "path": ref.path,
            "absolute_path": str((state_dir / ref.path).resolve())
            if isinstance(ref.path, str) and "\0" not in ref.path else None,
            "sha256": ref.sha256, "record_seq": ref.seq, "verified": problem is None, "problem": problem,
        })
    records_ok = all(record_verified(r, report) for r in summary.records)
    chain = {
        "ok": chain_ok(report),
        "state": chain_state(report),
        "records_verified": report.count,
        "head": report.head,
        "first_bad_seq": report.first_bad_seq,
        "problem": report.problems[0] if report.problems else None,
        "run_records_verified": records_ok,
    }
    doc = {
        "format": "opsgate-run-evidence/1",
        "run": summary.run,
        "kind": summary.kind,
        "name": summary.name,
        "operator": summary.operator,
        "started": summary.started,
        "ended": summary.ended,
        "risk": summary.risk,
        "targets": summary.targets,
        "outcome": summary.outcome,
        "exit_code": summary.exit_code,
        "factor": summary.factor,
        "fido2_digest": summary.fido2_digest,
        "config_sha256": summary.config_sha256,
        "other_policy": summary.other_policy,
        "approvals": [{"approver": a.approver, "factor": a.factor, "digest": a.digest, "time": a.time,
                       "step": a.step} for a in summary.approvals],
        "chain": chain,
        "records": summary.records,
        "recordings": recordings,
    }
    ok = chain["ok"] and records_ok and all(r["verified"] for r in recordings)
    return doc, ok
