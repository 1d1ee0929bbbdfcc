"""Every audit event name, once: the ``event`` field of the records in ``STATE/audit.jsonl``.

Dotted names, ``family.what``. The trail does not validate them; they are an external contract
(collectors, ``jq`` queries and reviewers match on them), so a name never changes once written.
Here, at the bottom of the core, so that both ``stepup`` and ``audit`` (independent siblings) and
the pipeline can name what they write. Who writes what:

- step-up (``console/stepup/verifier.py``): ``stepup.success``, ``stepup.failure``,
  ``stepup.replay``, ``stepup.lockout``, ``stepup.clone_suspected``, and for the two-person rule
  ``approval.granted``, ``approval.denied``;
- enrollment (``opsgate enroll``): ``enroll.otp``, ``enroll.fido2`` (with the key's ``aaguid`` and whether
  its ``attestation_verified``); ``opsgate keys remove``: ``keys.removed``;
- the run pipeline (``console/run.py``): ``config.loaded``, ``action.denied``, ``action.dry_run``,
  ``action.start``, ``action.target`` (carries ``recording``, a path relative to the state dir,
  and ``recording_sha256``, both checked by verify), ``action.end``, ``action.cancelled``, and for
  runbooks ``runbook.start``, ``runbook.step``, ``runbook.end``;
- the trail itself (``console/audit/trail.py``): ``audit.recovered`` (a truncated last line cut off).
"""

from __future__ import annotations

STEPUP_SUCCESS = "stepup.success"
STEPUP_FAILURE = "stepup.failure"
STEPUP_REPLAY = "stepup.replay"
STEPUP_LOCKOUT = "stepup.lockout"
STEPUP_CLONE_SUSPECTED = "stepup.clone_suspected"

APPROVAL_GRANTED = "approval.granted"
APPROVAL_DENIED = "approval.denied"
APPROVAL_PENDING = "approval.pending"  # the gate: a request waits for other operators

GATE_CERTIFICATE = "gate.certificate"  # the gate signed a certificate for one target of a run

ENROLL_OTP = "enroll.otp"
ENROLL_FIDO2 = "enroll.fido2"
KEYS_REMOVED = "keys.removed"  # a security key removed (after a step-up with another factor)

CONFIG_LOADED = "config.loaded"

ACTION_DENIED = "action.denied"
ACTION_DRY_RUN = "action.dry_run"
ACTION_START = "action.start"
ACTION_TARGET = "action.target"
ACTION_END = "action.end"
ACTION_CANCELLED = "action.cancelled"

RUNBOOK_START = "runbook.start"
RUNBOOK_STEP = "runbook.step"
RUNBOOK_END = "runbook.end"

AUDIT_RECOVERED = "audit.recovered"

EVENTS = (
    STEPUP_SUCCESS, STEPUP_FAILURE, STEPUP_REPLAY, STEPUP_LOCKOUT, STEPUP_CLONE_SUSPECTED,
    APPROVAL_GRANTED, APPROVAL_DENIED, APPROVAL_PENDING, GATE_CERTIFICATE, ENROLL_OTP, ENROLL_FIDO2, KEYS_REMOVED, CONFIG_LOADED,
    ACTION_DENIED, ACTION_DRY_RUN, ACTION_START, ACTION_TARGET, ACTION_END, ACTION_CANCELLED,
    RUNBOOK_START, RUNBOOK_STEP, RUNBOOK_END, AUDIT_RECOVERED,
)
