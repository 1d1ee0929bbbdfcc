"""``opsgate audit verify|head|tail|show|export`` and ``opsgate replay``: reading the trail and the recordings.

Each needs only the state dir, so ``--state-dir DIR`` (or ``OPSGATE_STATE_DIR``) works without a
config: a reviewer can check a copied state dir on their own machine.

Whoever can edit the trail controls every field of a record, and a collector's file or a recording
holds remote text: everything printed here from them goes through the sanitiser
(``opsgate.actions.display``), so none of it can drive the reviewer's terminal (``OK:`` lines faked
over a ``FAIL:``, a hidden line, the clipboard written).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

from opsgate.actions.display import TERMINAL_RESET, escape_json, escape_line
from opsgate.console.audit.format import format_record
from opsgate.console.audit.replay import Cast, ReplayError, play, text_lines
from opsgate.console.audit.trail import AuditTrail
from opsgate.console.audit.verify import check_recording, verify
from opsgate.console.errors import EXIT_FAILED, EXIT_OK, ConfigError, UsageError
from opsgate.console.events import ACTION_TARGET

FOLLOW_POLL = 0.25


def _one_line_errors(handler):
    """Reading errors (permissions, I/O) become one line and exit 1, like every other error."""

    @functools.wraps(handler)
    def wrapper(ctx) -> int:
        try:
            return handler(ctx)
        except OSError as e:
            print(f"opsgate: {escape_line(e.filename or '')}: {escape_line(e.strerror or e)}", file=sys.stderr)
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
        print(f"note: {escape_line(note)}", file=sys.stderr)
    if report.ok:
        print(f"OK: {report.count} records, head {escape_line(report.head or 'none')}")
        status = EXIT_OK
    else:
        for problem in report.problems:
            print(f"FAIL: {escape_line(problem)}")
        head = escape_line(report.head or "none")
        if report.first_bad_seq is not None:  # the chain itself breaks at that record
            print(f"chain BROKEN at record {escape_line(report.first_bad_seq, 24)}: {report.count} records "
                  f"verified before it; head of those {head}")
        elif report.count or report.head:  # every record verifies: the problems are recordings
            n = len(report.problems)
            print(f"chain OK: {report.count} records, head {head}; {n} recording"
                  f"{'s do' if n != 1 else ' does'} not verify (above)")
        status = EXIT_FAILED
    if getattr(ctx.args, "against", None):
        # Compared even when the local chain is broken: the collector's copy is the evidence then.
        status = max(status, _verify_against(path, Path(ctx.args.against)))
    return max(status, _verify_evidence(ctx, path, report))


def _config_pin(ctx) -> str | None:
    """``--pinned-policy``, else the reviewer's ``[console] pinned_policy`` (None without either, or without a config)."""
    from opsgate.console.audit.anchor import AnchorError, parse_head

    flag = getattr(ctx.args, "pinned_policy", None)
    if flag:
        try:
            return parse_head(flag, "--pinned-policy")
        except AnchorError as e:
            raise UsageError(str(e)) from None
    try:
        return ctx.config.settings.pinned_policy
    except ConfigError:
        return None


def _verify_evidence(ctx, path: Path, report) -> int:
    """After the chain: the anchored heads (``--head``, ``--anchor``), the recordings no record names (warnings,
    exit code unchanged) and the runs made under another config than the pinned one (console/audit/anchor.py)."""
    from opsgate.console.audit.anchor import AnchorError, check_policy, orphaned_recordings, parse_head, read_anchor, scan

    args = ctx.args
    wanted: list[tuple[str, str]] = []
    try:
        if getattr(args, "head", None):
            wanted.append(("--head", parse_head(args.head)))
        if getattr(args, "anchor", None):
            wanted.append((f"--anchor {args.anchor}", read_anchor(Path(args.anchor))))
    except AnchorError as e:
        raise UsageError(str(e)) from None
    pinned = _config_pin(ctx)
    facts = scan(path, tuple(h for _, h in wanted))
    status = EXIT_OK
    for label, head in wanted:
        seq = facts.heads.get(head)
        if seq is not None and seq <= report.last_seq:
            print(f"OK: anchored head ({escape_line(label)}) is record {seq}; {report.last_seq - seq} records after it")
            continue
        status = EXIT_FAILED
        why = (f"record {seq} holds it, but the chain does not verify up to there" if seq is not None else
               "the trail does not hold it: records were cut off its end, or it was rewritten")
        print(f"FAIL: anchored head {head} ({escape_line(label)}) is missing: {why}; the trail's verified "
              f"head is {escape_line(report.head or 'none')} (seq {report.last_seq})")
    orphans = orphaned_recordings(ctx.state_dir, facts.named)
    for rel in orphans:
        print(f"warning: recording {escape_line(rel)} is named by no audit record (records cut off the end, "
              f"or a crash before its action.target record)", file=sys.stderr)
    if orphans:
        print(f"warning: {len(orphans)} recording{'s' if len(orphans) != 1 else ''} named by no audit record",
              file=sys.stderr)
    policy = check_policy(facts, pinned)
    if policy.pinned is not None:
        source = "[console] pinned_policy" if policy.explicit else "the trail's first config.loaded"
        for run in policy.mismatched:
            text = (f"seq {run.seq}: run {escape_line(run.run)} ({run.event}) ran under config sha256 "
                    f"{escape_line(run.config_sha256, 80)}, not the pinned policy {policy.pinned} ({source})")
            if policy.explicit:
                print(f"FAIL: {text}")
            else:
                print(f"warning: {text}", file=sys.stderr)
        if policy.mismatched:
            status = max(status, EXIT_FAILED if policy.explicit else EXIT_OK)
        print(f"note: policy: {policy.checked} runs checked against config sha256 {policy.pinned[:16]}... "
              f"({source}): {len(policy.mismatched)} under another"
              + (f"; {policy.undigested} runs carry no config digest (older records)" if policy.undigested else "")
              + ("" if policy.explicit or not policy.mismatched else
                 "; set [console] pinned_policy (or --pinned-policy) to make this fail"), file=sys.stderr)
    return max(status, _verify_assertions(path))


def _verify_assertions(path: Path) -> int:
    """Every recorded FIDO2 assertion re-verified offline against its enrolled key (console/audit/assertions.py)."""
    from opsgate.console.audit.assertions import check_assertions

    fido = check_assertions(path)
    for problem in fido.problems:
        print(f"FAIL: {escape_line(problem)}")
    if fido.verified or fido.problems or fido.unverifiable:
        print(f"note: re-verified {fido.verified} FIDO2 approval{'s' if fido.verified != 1 else ''} against the "
              f"enrolled keys; {len(fido.problems)} do not verify"
              + (f"; {fido.unverifiable} cannot be re-verified (recorded before assertions or public keys were)"
                 if fido.unverifiable else ""), file=sys.stderr)
    return EXIT_FAILED if fido.problems else EXIT_OK


def _verify_against(path: Path, collector: Path) -> int:
    from opsgate.console.audit.forward.collector import compare_with_collector

    r = compare_with_collector(path, collector)
    shown = escape_line(collector)  # the collector's text is the network's: every value below is escaped
    resent = f" ({escape_line(r.duplicates)} re-sent copies counted once)" if r.duplicates else ""
    newest = escape_line(r.newest)
    if r.ignored_lines:
        print(f"note: {shown}: {escape_line(r.ignored_lines)} lines are not opsgate messages (ignored)",
              file=sys.stderr)
    for problem in r.problems:
        print(f"FAIL: collector {shown}: {escape_line(problem)}")
    if r.ok:
        print(f"OK: collector copy matches the local chain: {escape_line(r.records)} records up to seq {newest}{resent}")
    else:
        print(f"collector copy: {escape_line(r.records)} records up to seq {newest}{resent}")
    if r.last_anchor:
        print(f"last anchored head: seq {escape_line(r.last_anchor[0])} {escape_line(r.last_anchor[1])}")
    if r.not_yet_forwarded:
        print(f"not yet forwarded: {escape_line(r.not_yet_forwarded)}")
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
            print(f"opsgate: audit forward to {forwarding.url} did not finish: {escape_line(result.error)}; "
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
        print(f"opsgate: warning: {escape_line(message)}", file=sys.stderr, flush=True)

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
    print(escape_line(head))
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

    doc, ok = export_run(ctx.trail_path, ctx.state_dir, ctx.args.run, pinned_policy=_config_pin(ctx))
    print(escape_json(json.dumps(doc, indent=2, ensure_ascii=False)))  # json escapes C0; C1 and the like too
    if not ok:
        print(f"opsgate: run {escape_line(doc['run'])}: the evidence does not verify (see chain and recordings)",
              file=sys.stderr)
    return EXIT_OK if ok else EXIT_FAILED


def _ended(record: dict) -> str:
    """How the trail says a target's run ended: "exit 0", "timeout", "cancelled, exit 130" (never "exit None")."""
    code = record.get("exit_code", record.get("exit"))
    outcome = escape_line(record.get("outcome") or "?", 40)
    ended = f"exit {escape_line(code, 20)}" if code is not None else outcome
    if outcome not in ("?", "ok", "failed") and code is not None:
        ended = f"{outcome}, {ended}"
    return ended


def _trail_says(run: str, action: object, record: dict, check) -> str:
    """What the audit trail records of one target's run, and whether its recording verifies: opsgate's
    own words, from the trail, never from the recording."""
    ended = _ended(record)
    verdict = ("the recording verifies against it" if check.verified
               else f"the recording DOES NOT VERIFY ({escape_line(check.problem, 160)}): not evidence")
    return (f"{escape_line(run)} {escape_line(action, 80)}@{escape_line(record.get('target', '?'), 80)}: "
            f"the audit trail records {ended} (seq {escape_line(record.get('seq', '?'), 24)}); {verdict}")


@_one_line_errors
def cmd_replay(ctx) -> int:
    """Play a run's recordings after checking each against the sha256 in the audit trail.

    What reaches the terminal from a recording goes through the sanitiser's replay filter (cursor
    movement and colours play; titles, the clipboard, hyperlinks, queries and input modes do not).
    opsgate's own header and verdict come from the trail, not from the recording, and are printed after
    a terminal reset: before each recording when there are several, and all of them again at the end,
    where nothing played can overwrite them. ``--text`` prints the recordings as escaped plain text.
    """
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
        print(f"opsgate: WARNING: recording {escape_line(r.get('recording'))} does not verify: "
              f"{escape_line(check.problem)}", file=sys.stderr)
    if unverified and not args.force:
        print("opsgate: refusing to replay an unverified recording (--force plays it anyway; "
              "`opsgate audit verify` checks the whole trail)", file=sys.stderr)
        return EXIT_FAILED
    # --force plays what can be opened (a changed file), never one that is missing or outside the state dir.
    playable = [(r, check) for r, check in checks if check.playable]
    if not playable:
        print("opsgate: nothing to play: no recording can be opened", file=sys.stderr)
        return EXIT_FAILED
    if getattr(args, "text", False):
        _replay_text(state, run, action, playable)
    else:
        _replay_terminal(state, run, action, playable, speed=args.speed, several=len(targets) > 1)
    if unverified:
        print("opsgate: WARNING: what was played did not verify against the audit trail", file=sys.stderr)
    return EXIT_OK


def _replay_terminal(state: Path, run: str, action: object, playable: list, *, speed: float, several: bool) -> None:
    out = sys.stdout.buffer
    for r, check in playable:
        out.write(TERMINAL_RESET.encode())
        if several:
            out.write(f"=== {escape_line(run)} {escape_line(action, 80)}@{escape_line(r.get('target', '?'), 80)} "
                      f"({_ended(r)}) ===\r\n".encode())
        else:
            out.write(f"--- {_trail_says(run, action, r, check)}\r\n".encode())
        play(Cast(state / r["recording"]).events(), out, speed=speed)
    # Whatever the recordings did to the terminal is undone; then the trail's word, last on the screen.
    out.write(TERMINAL_RESET.encode())
    for r, check in playable:
        out.write(f"--- {_trail_says(run, action, r, check)}\r\n".encode())
    out.write(f"--- every byte of it as text: opsgate replay {escape_line(run)} --text\r\n".encode())
    out.flush()


def _replay_text(state: Path, run: str, action: object, playable: list) -> None:
    """The recordings as escaped text (``target | line``), each between the trail's header and verdict."""
    out = sys.stdout
    for r, check in playable:
        says = _trail_says(run, action, r, check)
        out.write(f"=== {says}\n")
        out.writelines(text_lines(Cast(state / r["recording"]).events(), escape_line(r.get("target", "?"), 80)))
        out.write(f"=== end of the recording. {says}\n")
    out.flush()
