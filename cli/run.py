"""``opsgate run``: the run pipeline on the command line."""

from __future__ import annotations

import json
import sys
import threading
from collections import defaultdict

from opsgate.actions.outcome import Chunk, TargetResult

from opsgate.cli.context import Context
from opsgate.console.errors import EXIT_CANCELLED, UsageError
from opsgate.console.catalog.params import parse_assignments
from opsgate.console.run import Pipeline, Plan, RunbookPlan, RunReport, RunRequest, StepPlan

JSON_OUTPUT_CAP = 1 << 20  # per target and stream in --json; the recording keeps every byte


class CliFrontend:
    """Prints output live as ``target | line`` (stderr: ``target ! line``); asks through the terminal."""

    def __init__(self, prompter, *, stream_output: bool = True, out=None, yes: bool = False):
        self.prompter = prompter
        self.yes = yes
        self.stream_output = stream_output
        self.out = out or sys.stdout
        self._lock = threading.Lock()
        self._partial: dict[tuple[str, str], bytes] = defaultdict(bytes)
        self.captured: dict[tuple[str, str], bytearray] = defaultdict(bytearray)
        self.width = 0

    # Prompter: the terminal prompter of console.cli_prompt does the asking.
    def ask_code(self, prompt):
        return self.prompter.ask_code(prompt)

    def ask_pin(self, prompt):
        return self.prompter.ask_pin(prompt)

    def touch_started(self, prompt, cancel):
        return self.prompter.touch_started(prompt, cancel)

    def touch_finished(self):
        return self.prompter.touch_finished()

    def ask_confirmation(self, expected, prompt):
        return self.prompter.ask_confirmation(expected, prompt)

    def ask_approver(self, candidates, prompt):
        return self.prompter.ask_approver(candidates, prompt)

    def notice(self, text: str) -> None:
        self.prompter.notice(text)

    # Runbooks
    def on_step(self, sp: StepPlan, status: str, detail: str = "") -> None:
        if self.stream_output and status != "running":
            self._print(f"== step {sp.step.index} {sp.step.title}: {status}" + (f" ({detail})" if detail else ""))
        elif self.stream_output:
            self._print(f"== step {sp.step.index} {sp.step.title}")

    def ask_pause(self, step) -> bool:
        """--yes passes only pauses marked skippable; otherwise the operator answers on the terminal."""
        if self.yes and step.skippable:
            self._print(f"== pause passed (--yes, skippable): {step.pause}")
            return True
        if not sys.stdin.isatty():
            self._print(f"== pause needs the operator: {step.pause} (not a terminal: stopping)")
            return False
        answer = input(f"PAUSE: {step.pause}. Continue? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    # Output
    def on_start(self, plan: Plan) -> None:
        self.width = max([self.width, *(len(n) for n in plan.target_names)])
        if self.stream_output:
            self._print(f"run {plan.run_id}: {plan.summary()}")

    def on_output(self, chunk: Chunk) -> None:
        if not self.stream_output:
            buf = self.captured[(chunk.target, chunk.stream)]
            if len(buf) < JSON_OUTPUT_CAP:
                buf += chunk.data[: JSON_OUTPUT_CAP - len(buf)]
            return
        key = (chunk.target, chunk.stream)
        with self._lock:
            data = self._partial.pop(key, b"") + chunk.data
            *lines, rest = data.split(b"\n")
            if rest:
                self._partial[key] = rest
            for line in lines:
                self._write_line(chunk.target, chunk.stream, line)

    def on_target_done(self, result: TargetResult) -> None:
        if not self.stream_output:
            return
        with self._lock:
            for stream in ("stdout", "stderr"):
                rest = self._partial.pop((result.target, stream), b"")
                if rest:
                    self._write_line(result.target, stream, rest)

    def _write_line(self, target: str, stream: str, line: bytes) -> None:
        mark = "|" if stream == "stdout" else "!"
        text = line.decode("utf-8", errors="replace").rstrip("\r")
        self.out.write(f"{target:<{self.width}} {mark} {text}\n")
        self.out.flush()

    def _print(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()


def describe_result(r: TargetResult) -> str:
    if r.outcome == "ok":
        status = "ok"
    elif r.outcome == "failed":
        status = f"exit {r.exit_code}"
    else:
        status = r.outcome + (f": {r.error}" if r.error else "")
    return f"{status} ({r.duration:.2f}s, {r.bytes_out + r.bytes_err} bytes)"


def print_plan(plan: Plan | RunbookPlan, out=sys.stdout) -> None:
    if isinstance(plan, RunbookPlan):
        out.write(f"runbook:     {plan.runbook.id} ({plan.runbook.risk.upper()}) {plan.runbook.title}\n")
        out.write(f"requirement: {plan.requirement.describe()}\n")
        out.write("steps:\n" + "".join(f"  {line}\n" for line in plan.describe_steps().splitlines()))
        return
    out.write(f"action:      {plan.action.id} ({plan.action.risk.upper()}) {plan.action.title}\n")
    out.write(f"targets:     {', '.join(plan.target_names)}\n")
    out.write(f"command:     {plan.command.redacted}\n")
    out.write(f"requirement: {plan.requirement.describe()}\n")


def cmd_run(ctx: Context) -> int:
    args = ctx.args
    from opsgate.cli.prompt import TerminalPrompter

    pipeline = ctx.parts.pipeline
    request = RunRequest(args.action, tuple(args.target), parse_assignments(args.param), ctx.operator, args.reason)
    plan = pipeline.plan(request)
    if args.dry_run:
        pipeline.dry_run(plan)
        if args.json:
            print(json.dumps(plan_document(plan), indent=2))
        else:
            print_plan(plan)
            print("dry run: nothing ran")
        return 0
    name, risk = (plan.runbook.id, plan.runbook.risk) if isinstance(plan, RunbookPlan) else (plan.action.id, plan.action.risk)
    if risk != "low" and not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"{name} is {risk} risk: pass --yes to run it without a terminal")
        print_plan(plan)
        if input("Run? [y/N] ").strip().lower() not in ("y", "yes"):
            print("not run")
            return EXIT_CANCELLED
    frontend = CliFrontend(TerminalPrompter(), stream_output=not args.json, yes=args.yes)
    forwarder = ctx.parts.start_forwarder()
    try:
        report = run_in_thread(pipeline, plan, frontend)
    finally:
        finish_forwarder(forwarder)
    if args.json:
        print(json.dumps(result_document(plan, report, frontend), indent=2))
    elif isinstance(plan, RunbookPlan):
        print(f"--- runbook run {report.run_id}: exit {report.exit_code}")
    else:
        width = max(len(n) for n in plan.target_names)
        print(f"--- run {report.run_id}")
        for r in report.results:
            print(f"{r.target:<{width}}  {describe_result(r)}")
        if report.cancelled:
            print("cancelled: remote processes stopped", file=sys.stderr)
    return report.exit_code


def finish_forwarder(forwarder) -> None:
    """Best effort: a down collector leaves the backlog for next time, with one warning line."""
    if forwarder is not None and not forwarder.stop(timeout=5) and not forwarder.status().waiting_for_lock:
        st = forwarder.status()
        print(f"opsgate: warning: audit records after seq {st.cursor.seq} not yet at the collector "
              f"({st.last_error or 'timed out'}); `opsgate audit forward` sends them", file=sys.stderr)


def run_in_thread(pipeline: Pipeline, plan: Plan, frontend: CliFrontend) -> RunReport:
    """Run the pipeline in a worker so Ctrl-C in the main thread can cancel it (remote processes too)."""
    box: dict = {}
    done = threading.Event()  # not Thread.join: an interrupted join can leave is_alive() wrong (CPython 3.11)

    def work():
        try:
            box["report"] = pipeline.execute(plan, frontend)
        except BaseException as e:  # re-raised in the main thread, where the CLI maps it to an exit code
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=work, name="opsgate-run", daemon=True).start()
    cancelled = False
    while not done.is_set():
        try:
            done.wait(0.2)
        except KeyboardInterrupt:
            if not cancelled:
                print("\ncancelling: stopping remote processes...", file=sys.stderr)
                cancelled = True
                pipeline.cancel()
    if "error" in box:
        raise box["error"]
    report = box["report"]
    if cancelled:
        report.exit_code = EXIT_CANCELLED
        report.cancelled = True
    return report


def plan_document(plan: Plan | RunbookPlan) -> dict:
    if isinstance(plan, RunbookPlan):
        return {"run": plan.run_id, "runbook": plan.runbook.id, "risk": plan.runbook.risk,
                "targets": list(plan.target_names), "requirement": plan.requirement.describe(),
                "steps": [{"step": sp.step.index, "title": sp.step.title, "kind": sp.step.kind,
                           "targets": list(sp.plan.target_names) if sp.plan else [],
                           "command": sp.plan.command.redacted if sp.plan else None, "pause": sp.step.pause}
                          for sp in plan.steps]}
    return {
        "run": plan.run_id,
        "action": plan.action.id,
        "risk": plan.action.risk,
        "targets": list(plan.target_names),
        "command": plan.command.redacted,
        "requirement": plan.requirement.describe(),
    }


def result_document(plan: Plan, report: RunReport, frontend: CliFrontend) -> dict:
    doc = plan_document(plan)
    doc.update(exit_code=report.exit_code, cancelled=report.cancelled, results=[])
    for r in report.results:
        doc["results"].append({
            "target": r.target, "outcome": r.outcome, "exit_code": r.exit_code,
            "duration": round(r.duration, 6), "bytes_out": r.bytes_out, "bytes_err": r.bytes_err,
            "error": r.error,
            "stdout": bytes(frontend.captured[(r.target, "stdout")]).decode("utf-8", "replace"),
            "stderr": bytes(frontend.captured[(r.target, "stderr")]).decode("utf-8", "replace"),
            "recording": str(report.recordings.get(r.target, "")),
        })
    return doc
