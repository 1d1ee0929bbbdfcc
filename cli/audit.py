"""``opsgate audit verify|head|tail|show|export`` and ``opsgate replay``: reading the trail and the recordings.

Each needs only the state dir, so ``--state-dir DIR`` (or ``OPSGATE_STATE_DIR``) works without a
config: a reviewer can check a copied state dir on their own machine.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

from opsgate.console.audit.format import format_record
from opsgate.console.audit.replay import Cast, ReplayError, play
from opsgate.console.audit.trail import AuditTrail
from opsgate.console.audit.verify import check_recording, verify
from opsgate.console.errors import EXIT_FAILED, EXIT_OK, UsageError
from opsgate.console.events import ACTION_TARGET

FOLLOW_POLL = 0.25


def _one_line_errors(handler):
    """Reading errors (permissions, I/O) become one line and exit 1, like every other error."""

    @functools.wraps(handler)
    def wrapper(ctx) -> int:
        try:
            return handler(ctx)
        except OSError as e:
            print(f"opsgate: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
            return EXIT_FAILED

    return wrapper


def _trail(ctx) -> AuditTrail:
    return AuditTrail(ctx.trail_path)


@_one_line_errors
def cmd_verify(ctx) -> int:
    """Check the chain and the recordings: "OK: N records, head H" (exit 0) or the first problem (exit 1).

    With ``--against FILE``, also check a syslog collector's copy against the local chain.
    """
    path = ctx.trail_path
    report = verify(path, state_dir=ctx.state_dir)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if report.ok:
        print(f"OK: {report.count} records, head {report.head or 'none'}")
        status = EXIT_OK
    else:
        print(f"FAIL: {report.problems[0]}")
        for problem in report.problems[1:]:
            print(f"FAIL: {problem}")
        print(f"{report.count} records verified before the first problem; head of those {report.head or 'none'}")
        status = EXIT_FAILED
    if getattr(ctx.args, "against", None):
        # Compared even when the local chain is broken: the collector's copy is the evidence then.
        status = max(status, _verify_against(path, Path(ctx.args.against)))
    return status


def _verify_against(path: Path, collector: Path) -> int:
    from opsgate.console.audit.forward.collector import compare_with_collector

    r = compare_with_collector(path, collector)
    resent = f" ({r.duplicates} re-sent copies counted once)" if r.duplicates else ""
    if r.ignored_lines:
        print(f"note: {collector}: {r.ignored_lines} lines are not opsgate messages (ignored)", file=sys.stderr)
    for problem in r.problems:
        print(f"FAIL: collector {collector}: {problem}")
    if r.ok:
        print(f"OK: collector copy matches the local chain: {r.records} records up to seq {r.newest}{resent}")
    else:
        print(f"collector copy: {r.records} records up to seq {r.newest}{resent}")
    if r.last_anchor:
        print(f"last anchored head: seq {r.last_anchor[0]} {r.last_anchor[1]}")
    if r.not_yet_forwarded:
        print(f"not yet forwarded: {r.not_yet_forwarded}")
    return EXIT_OK if r.ok else EXIT_FAILED


@_one_line_errors
def cmd_forward(ctx) -> int:
    """Send what is behind the forward cursor to the collector and anchor the head; --follow keeps going."""
    from opsgate.console.audit.forward.forwarder import Forwarder, forward_trail_once

    forwarding = ctx.config.forwarding
    if forwarding is None:
        raise UsageError(f"{ctx.config_path}: no [audit.forward] section: nowhere to forward to")
    state, path = ctx.state_dir, ctx.trail_path
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not ctx.args.follow:
        result = forward_trail_once(path, state, forwarding)
        if not result.ok:
            print(f"opsgate: audit forward to {forwarding.url} did not finish: {result.error}; "
                  f"forwarded up to seq {result.after.seq}", file=sys.stderr)
            return EXIT_FAILED
        if result.after.seq == result.before.seq:
            print(f"nothing new to forward: the collector has up to seq {result.after.seq}; "
                  f"head anchored at seq {result.anchored_seq}")
        else:
            print(f"forwarded seq {result.before.seq + 1}-{result.after.seq} to {forwarding.url}; "
                  f"head anchored at seq {result.anchored_seq}")
        return EXIT_OK

    def warn(message: str) -> None:
        print(f"opsgate: warning: {message}", file=sys.stderr, flush=True)

    fwd = Forwarder(path, state, forwarding, warn=warn).start()
    print(f"forwarding {path} to {forwarding.url} (Ctrl-C stops)", flush=True)
    shown = None
    try:
        while fwd.error is None:
            time.sleep(FOLLOW_POLL * 4)
            seq = fwd.status().cursor.seq
            if seq != shown:
                print(f"forwarded up to seq {seq}", flush=True)
                shown = seq
    except KeyboardInterrupt:
        pass  # Ctrl-C is how one stops following
    done = fwd.stop(timeout=2.0)
    print(f"stopped at seq {fwd.status().cursor.seq}" + ("" if done else " (a backlog remains)"), flush=True)
    return EXIT_OK if fwd.error is None else EXIT_FAILED


@_one_line_errors
def cmd_head(ctx) -> int:
    """Print the head hash (to anchor it elsewhere)."""
    head = _trail(ctx).head()
    if head is None:
        print(f"opsgate: the audit trail {ctx.trail_path} is empty", file=sys.stderr)
        return EXIT_FAILED
    print(head)
    return EXIT_OK


def _print(records: list[dict]) -> None:
    for record in records:
        print(format_record(record))
    sys.stdout.flush()


@_one_line_errors
def cmd_tail(ctx) -> int:
    """Print the newest records; with -f keep printing records other processes append."""
    trail = _trail(ctx)
    records, offset = trail.tail(ctx.args.n)
    _print(records)
    if not ctx.args.follow:
        return EXIT_OK
    size = offset
    try:
        while True:
            time.sleep(FOLLOW_POLL)
            try:
                now = os.stat(trail.path).st_size
            except FileNotFoundError:
                continue
            if now != size:
                records, offset = trail.read_new(offset)
                size = now
                _print(records)
    except KeyboardInterrupt:
        return EXIT_OK  # Ctrl-C is how one stops following


@_one_line_errors
def cmd_show(ctx) -> int:
    """Print one run's records; a unique run id prefix of 6+ characters is enough."""
    trail = _trail(ctx)
    _print(trail.run_records(trail.find_run(ctx.args.run)))
    return EXIT_OK


@_one_line_errors
def cmd_export(ctx) -> int:
    """One JSON document with a run's records, the chain's state and each recording's sha256 and state.

    Printed even when something does not verify (that is evidence too); the exit code is then 1.
    """
    import json

    from opsgate.console.audit.history import export_run

    doc, ok = export_run(ctx.trail_path, ctx.state_dir, ctx.args.run)
    print(json.dumps(doc, indent=2, ensure_ascii=False))
    if not ok:
        print(f"opsgate: run {doc['run']}: the evidence does not verify (see chain and recordings)", file=sys.stderr)
    return EXIT_OK if ok else EXIT_FAILED


@_one_line_errors
def cmd_replay(ctx) -> int:
    """Play a run's recordings after checking each against the sha256 in the audit trail."""
    args = ctx.args
    if args.speed <= 0:
        raise UsageError(f"--speed must be positive, not {args.speed}")
    state = ctx.state_dir
    trail = _trail(ctx)
    run = trail.find_run(args.run)
    records = trail.run_records(run)
    action = next((r.get("action") for r in records if r.get("action")), "?")
    targets = [r for r in records if r.get("event") == ACTION_TARGET and "recording" in r]
    if args.target:
        targets = [r for r in targets if r.get("target") == args.target]
    if not targets:
        wanted = f" for target {args.target}" if args.target else ""
        raise ReplayError(f"the audit trail has no recording for run {run}{wanted}")

    checks = [(r, check_recording(state, r.get("recording"), r.get("recording_sha256"), record=r)) for r in targets]
    unverified = [(r, check) for r, check in checks if not check.verified]
    for r, check in unverified:
        print(f"opsgate: WARNING: recording {r.get('recording')} does not verify: {check.problem}", file=sys.stderr)
    if unverified and not args.force:
        print("opsgate: refusing to replay an unverified recording (--force plays it anyway; "
              "`opsgate audit verify` checks the whole trail)", file=sys.stderr)
        return EXIT_FAILED
    # --force plays what can be opened (a changed file), never one that is missing or outside the state dir.
    playable = [r for r, check in checks if check.playable]
    if not playable:
        print("opsgate: nothing to play: no recording can be opened", file=sys.stderr)
        return EXIT_FAILED
    out = sys.stdout.buffer
    for r in playable:
        cast = Cast(state / r["recording"])
        if len(targets) > 1:
            exit_code = r.get("exit_code", r.get("exit", "?"))
            out.write(f"\x1b[0m\r\n=== {run} {action}@{r.get('target', '?')} (exit {exit_code}) ===\r\n".encode())
        play(cast.events(), out, speed=args.speed)
        out.write(b"\x1b[0m")  # the recording may end inside a colour
        out.flush()
    if unverified:
        print("opsgate: WARNING: what was played did not verify against the audit trail", file=sys.stderr)
    return EXIT_OK
