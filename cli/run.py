"""``opsgate run``: the run pipeline on the command line."""

from __future__ import annotations

import functools
import json
import os
import re
import stat
import sys
import threading
from collections import defaultdict

from opsgate.actions.display import RESET, escape_line, escape_stream, is_plain, plain_stream
from opsgate.actions.outcome import Chunk, TargetResult

from opsgate.cli.context import Context
from opsgate.console.errors import EXIT_CANCELLED, ParamError, UsageError
from opsgate.console.catalog.params import parse_assignments
from opsgate.console.paths import AUDIT_FILE
from opsgate.console.run import Pipeline, Plan, RunbookPlan, RunReport, RunRequest, StepPlan

JSON_OUTPUT_CAP = 1 << 20  # per target and stream in --json; the recording keeps every byte


PARTIAL_MAX = 1 << 20  # a line without end is shown in pieces of this size rather than held


def _write_all(stream, data) -> None:
    """Every byte of ``data`` to a binary stream: a raw one (``python -u``: stdout unbuffered) may write less."""
    view = memoryview(data)
    while view:
        n = stream.write(view)
        if n is None:  # a non-blocking stream that would block: the caller's flush waits for it
            stream.flush()
            continue
        view = view[n:]


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def own_line(text: str, tty: bool) -> str:
    """One of opsgate's own lines for the live stream: on a terminal it starts with an SGR reset, so no
    colour a remote line left behind (there is none: see CliFrontend) can hide or disguise it."""
    return RESET + text if tty else text


# For fitting a remote line to the terminal's width (on a terminal only): SGR sequences take no cell,
# East Asian wide and fullwidth characters and most emoji take two (an estimate that errs on the wide side
# for the common ranges; a character drawn wider than counted could push one row past the edge).
_WIDE = "\u1100-\u115f\u231a\u231b\u23e9-\u23f3\u25fd\u25fe\u2614\u2615\u2648-\u2653\u267f\u2693\u26a1" \
        "\u26aa\u26ab\u26bd\u26be\u26c4\u26c5\u26ce\u26d4\u26ea\u26f2-\u26fd\u2705\u270a\u270b\u2728\u274c" \
        "\u274e\u2753-\u2757\u2795-\u2797\u27b0\u27bf\u2b1b\u2b1c\u2b50\u2b55\u2e80-\u303e\u3041-\u33ff" \
        "\u3400-\u4dbf\u4e00-\u9fff\ua000-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60" \
        "\uffe0-\uffe6\U0001f000-\U0001faff\U00020000-\U0003fffd"


@functools.cache
def _patterns() -> tuple[re.Pattern, re.Pattern, re.Pattern]:
    """The terminal-width patterns (_WIDE_CHAR, _SGR, _ROW_TOKENS), compiled when a terminal first needs them:
    the two with every wide range take about 6 ms to compile, which output to a file or a pipe never uses."""
    return (re.compile(f"[{_WIDE}]"), re.compile("\x1b\\[[0-9;:]*m"),
            re.compile(f"\x1b\\[[0-9;:]*m|[{_WIDE}]|[^\x1b{_WIDE}]+|\x1b"))


class CliFrontend:
    """Prints output live as ``target | line`` (stderr: ``target ! line``); asks through the terminal.

    Remote bytes go through the sanitiser's stream policy (``opsgate.actions.display``): colours pass,
    every other control is shown as text (``^[``, ``^M``, ``\x9b``), so a remote line can neither move
    the cursor, erase or hide opsgate's lines, nor start a line of its own: each newline it sends
    becomes a new line with the real ``target | `` prefix. A line that used colours ends with a reset;
    on a terminal every line (opsgate's own too) also starts with one, and a line too long for the
    terminal is cut into rows marked ``target + `` so that no remote text starts a row by wrapping.

    ``raw_out`` (``opsgate run --raw``, one target): that target's stdout bytes go there unchanged;
    ``out`` (then stderr) gets everything else, remote stderr as sanitised lines.
    """

    def __init__(self, prompter, *, stream_output: bool = True, out=None, yes: bool = False, raw_out=None):
        self.prompter = prompter
        self.yes = yes
        self.stream_output = stream_output
        self.out = out or sys.stdout
        self.raw_out = raw_out
        self.tty = _isatty(self.out)
        # The bytes under a text stream: every write of ours is flushed, so the two never interleave badly.
        self.out_bytes = getattr(self.out, "buffer", None)
        self._lock = threading.Lock()
        self._partial: dict[tuple[str, str], bytes] = defaultdict(bytes)
        # Lines go out as bytes, with no decoding, when not on a terminal (which needs _fit) and the stream has
        # bytes under it. A stream whose carried partial line came through the text path is in _unplain.
        self._bytes_out = not self.tty and self.out_bytes is not None
        self._unplain: set[tuple[str, str]] = set()
        self._prefixes: dict[tuple[str, str, int], bytes] = {}
        self.captured: dict[tuple[str, str], bytearray] = defaultdict(bytearray)
        self.width = 0
        self.columns: int | None = None  # the terminal's width; None: asked of the terminal at each write

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
        title = escape_line(sp.step.title)
        if self.stream_output and status != "running":
            self._print(f"== step {sp.step.index} {title}: {status}" + (f" ({escape_line(detail)})" if detail else ""))
        elif self.stream_output:
            self._print(f"== step {sp.step.index} {title}")

    def ask_pause(self, step) -> bool:
        """--yes passes only pauses marked skippable; otherwise the operator answers on the terminal."""
        pause = escape_line(step.pause)
        if self.yes and step.skippable:
            self._print(f"== pause passed (--yes, skippable): {pause}")
            return True
        if not sys.stdin.isatty():
            self._print(f"== pause needs the operator: {pause} (not a terminal: stopping)")
            return False
        try:
            answer = ask(own_line(f"PAUSE: {pause}. Continue? [y/N] ", self.tty), self.out)
        except EOFError:  # Ctrl-D: no (the runbook stops here)
            self._print("")
            return False
        return answer.strip().lower() in ("y", "yes")

    # Output
    def on_start(self, plan: Plan) -> None:
        self.width = max([self.width, *(len(n) for n in plan.target_names)])
        if self.stream_output:
            self._print(f"run {plan.run_id}: {escape_line(plan.summary())}")

    def on_output(self, chunk: Chunk) -> None:
        if not self.stream_output:
            buf = self.captured[(chunk.target, chunk.stream)]
            if len(buf) < JSON_OUTPUT_CAP:
                buf += chunk.data[: JSON_OUTPUT_CAP - len(buf)]
            return
        if self.raw_out is not None and chunk.stream == "stdout":
            with self._lock:
                _write_all(self.raw_out, chunk.data)  # --raw: the bytes as they came, to a file or a pipe
                self.raw_out.flush()
            return
        key = (chunk.target, chunk.stream)
        data = chunk.data
        with self._lock:
            carry = self._partial.pop(key, b"")
            if self._bytes_out and key not in self._unplain and is_plain(data):
                self._write_plain(chunk.target, chunk.stream, carry, data)
                return
            self._unplain.discard(key)
            data = carry + data
            cut = data.rfind(b"\n") + 1
            if cut == 0 and len(data) > PARTIAL_MAX:
                cut, data = len(data) + 1, data + b"\n"
            if cut < len(data):
                rest = self._partial[key] = data[cut:]
                if not is_plain(rest):  # the line it begins is not for the byte path
                    self._unplain.add(key)
            if cut:
                self._write_lines(chunk.target, chunk.stream, data[:cut])

    def _write_plain(self, target: str, stream: str, carry: bytes, data: bytes) -> None:
        """The usual case, to a file or a pipe: ``data`` (and the line ``carry`` began) is printable ASCII, tabs
        and newlines, which the sanitiser leaves as they are. Each complete line gets the target's prefix: one
        ``replace`` over the chunk, then written from a view of it (no other copy of the chunk is made)."""
        key = (target, stream)
        prefix = self._prefix(target, stream)
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            carry += data
            if len(carry) <= PARTIAL_MAX:
                self._partial[key] = carry
            else:  # a line without end is shown in pieces
                self._write_lines(target, stream, carry + b"\n")
            return
        body = data.replace(b"\n", b"\n" + prefix)  # after the chunk's last newline: its rest, unchanged
        end = len(body) - (len(data) - cut) - len(prefix)  # up to and with the last newline
        _write_all(self.out_bytes, prefix + carry)
        _write_all(self.out_bytes, memoryview(body)[:end])
        self.out_bytes.flush()
        if cut < len(data):
            self._partial[key] = data[cut:]

    def _prefix(self, target: str, stream: str) -> bytes:
        prefix = self._prefixes.get((target, stream, self.width))
        if prefix is None:
            prefix = f"{target:<{self.width}} {'|' if stream == 'stdout' else '!'} ".encode()
            self._prefixes[(target, stream, self.width)] = prefix
        return prefix

    def on_target_done(self, result: TargetResult) -> None:
        if not self.stream_output:
            return
        with self._lock:
            for stream in ("stdout", "stderr"):
                self._unplain.discard((result.target, stream))
                rest = self._partial.pop((result.target, stream), b"").rstrip(b"\r")
                if rest:
                    self._write_lines(result.target, stream, rest + b"\n")

    def _write_lines(self, target: str, stream: str, block: bytes) -> None:
        """Complete remote lines (``block`` ends with a newline), each with the target's prefix."""
        mark = "|" if stream == "stdout" else "!"
        plain = plain_stream(block) if self._bytes_out else None
        if plain is not None:  # printable ASCII once CRLF is read as LF: kept as bytes
            prefix_bytes = self._prefix(target, stream)
            _write_all(self.out_bytes, prefix_bytes + plain[:-1].replace(b"\n", b"\n" + prefix_bytes) + b"\n")
            self.out_bytes.flush()
            return
        text = escape_stream(block, sgr=True)[:-1]  # the block's last newline
        end = RESET if "\x1b" in text else ""  # only allowed SGR sequences are left: end each line plainly
        if self.tty:
            text = self._fit(text)
        prefix = own_line(f"{target:<{self.width}} {mark} ", self.tty)
        text = text.replace("\n", f"{end}\n{prefix}")
        if _ROW in text:
            text = text.replace(_ROW, f"{end}\n{own_line(f'{target:<{self.width}} + ', self.tty)}")
        self.out.write(prefix + text + end + "\n")
        self.out.flush()

    def _fit(self, text: str) -> str:
        """On a terminal: each line wider than it is cut into rows joined by ``_ROW`` (the caller makes
        those continuation rows), so no remote text reaches the start of a row by wrapping."""
        columns = self.columns
        if columns is None:
            try:
                columns = os.get_terminal_size(self.out.fileno()).columns
            except (AttributeError, ValueError, OSError):
                return text
        room = columns - self.width - 3
        if room < 8:
            return text
        lines = text.split("\n")
        if "\t" not in text:
            if max(map(len, lines)) <= room // 2:
                return text  # nothing can reach the edge, even if every character were wide
            wide_char, sgr, _ = _patterns()
            plain = sgr.sub("", text) if "\x1b" in text else text  # colours take no cell
            narrow = plain.isascii() or max(plain) < _WIDE[0] or wide_char.search(plain) is None
            if narrow and max(map(len, plain.split("\n"))) <= room:
                return text  # the usual case, decided without a loop over the lines
        fitted = []
        for line in lines:
            if "\t" in line:  # tab stops where the terminal has them: counted from the row's start
                line = (" " * (self.width + 3) + line).expandtabs()[self.width + 3:]
            if len(line) > room // 2 and _cells(line) > room:
                line = _ROW.join(_rows(line, room))
            fitted.append(line)
        return "\n".join(fitted)

    def _print(self, text: str) -> None:
        with self._lock:
            self.out.write(own_line(text, self.tty) + "\n")
            self.out.flush()


_ROW = "\x00"  # joins the rows of a cut line (no NUL is left in sanitised text)


def _cells(line: str) -> int:
    """Terminal cells ``line`` takes (sanitised: no controls but SGR; tabs expanded)."""
    wide_char, sgr, _ = _patterns()
    width = len(line) + len(wide_char.findall(line))
    if "\x1b" in line:
        width -= sum(map(len, sgr.findall(line)))
    return width


def _rows(line: str, room: int) -> list[str]:
    """``line`` cut into rows of at most ``room`` cells; an SGR sequence is never cut (it takes no cell)."""
    rows: list[str] = []
    row: list[str] = []
    used = 0
    wide_char, _, row_tokens = _patterns()
    for token in row_tokens.findall(line):
        if token.startswith("\x1b"):
            row.append(token)
            continue
        cells = 2 if len(token) == 1 and wide_char.match(token) else 1
        if cells == 2:
            if used + 2 > room:
                rows.append("".join(row))
                row, used = [], 0
            row.append(token)
            used += 2
            continue
        while token:
            take = room - used
            if take <= 0:
                rows.append("".join(row))
                row, used = [], 0
                continue
            row.append(token[:take])
            used += len(token[:take])
            token = token[take:]
    rows.append("".join(row))
    return rows


def ask(prompt: str, out) -> str:
    """``input()`` with its prompt on ``out`` (stderr for ``--raw``: stdout is the target's bytes)."""
    if out is sys.stdout:
        return input(prompt)
    out.write(prompt)
    out.flush()
    return input()


def describe_result(r: TargetResult) -> str:
    if r.outcome == "ok":
        status = "ok"
    elif r.outcome == "failed":
        status = f"exit {r.exit_code}"
    else:
        status = escape_line(r.outcome) + (f": {escape_line(r.error)}" if r.error else "")
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


def trail_problem(trail: "os.PathLike[str]", state_dir: "os.PathLike[str]") -> str | None:
    """Why the local audit trail does not verify, or None: checked incrementally, so each run costs only the
    records written since the last check (the first check reads the whole chain, without the recordings).

    Where the check got to (byte offset, seq, head hash) is kept in the state dir (``TRAIL_CHECKPOINT``);
    it moves only over records that verify, so a broken trail warns at every run until it is repaired.
    An edit before the checkpoint is for ``opsgate audit verify`` to find: this is a tripwire, not a proof.
    """
    from pathlib import Path

    from opsgate.console.audit.verify import verify, verify_from
    from opsgate.console.files import write_private
    from opsgate.console.paths import TRAIL_CHECKPOINT

    trail, checkpoint = Path(trail), Path(state_dir) / TRAIL_CHECKPOINT
    try:
        mark = json.loads(checkpoint.read_text())
        offset, seq, head = int(mark["offset"]), int(mark["seq"]), mark["head"]
        if head is not None and not isinstance(head, str):
            raise ValueError("head")
    except FileNotFoundError:
        mark = None
    except (OSError, ValueError, KeyError, TypeError):
        mark = None  # unreadable: start again from the top
    if mark is None:
        if not trail.exists():
            return None  # nothing written yet: nothing to break
        report = verify(trail, state_dir=state_dir, check_recordings=False)
        if not report.ok and report.first_bad_offset == report.end_offset:
            # From the first record that does not verify on, as the incremental check reads: a last line
            # still being written by another opsgate is left for later there, a bad record is bad again.
            report = verify_from(trail, report.end_offset, report.last_seq, report.head, state_dir=state_dir,
                                 check_recordings=False)
    else:
        report = verify_from(trail, offset, seq, head, state_dir=state_dir)
    if not report.ok:
        return report.problems[0] if report.problems else "it does not verify"
    try:
        write_private(checkpoint, json.dumps({"offset": report.end_offset, "seq": report.last_seq,
                                              "head": report.head}).encode())
    except OSError:
        pass  # the next run checks from the older mark
    return None


def warn_if_trail_broken(ctx: Context, *, import_transport: bool = False) -> None:
    """On stderr, before anything runs: the local trail does not verify (not in gate mode: the trail is the gate's).

    ``import_transport``: meanwhile, import what the run imports next (paramiko and the fan-out, about 150 ms of
    CPU). The check is mostly hashing the recordings of the runs since the last check (the previous run's 100 MB
    output is 140 MB of recording: about 110 ms of sha256 and reads, which hold no GIL), so the two share the
    time on two cores. The check, its warning and where the warning is printed are the same."""
    if ctx.config.gate is not None:
        return
    trail = ctx.state_dir / AUDIT_FILE
    problem = _check_while_importing(trail, ctx.state_dir) if import_transport else trail_problem(trail, ctx.state_dir)
    if problem is not None:
        print(f"opsgate: WARNING: the audit trail {escape_line(trail)} does not verify: {escape_line(problem)}; "
              "`opsgate audit verify` has the details", file=sys.stderr)


def _check_while_importing(trail, state_dir) -> str | None:
    """``trail_problem`` in a thread while this one imports the transport; its result, or its exception."""
    box: dict = {}

    def check() -> None:
        try:
            box["problem"] = trail_problem(trail, state_dir)
        except BaseException as e:  # re-raised here, as the check raised it before
            box["error"] = e

    thread = threading.Thread(target=check, name="opsgate-trail-check", daemon=True)
    thread.start()
    try:
        import opsgate.actions.fanout  # noqa: F401  (the run imports it before connecting)
    except ImportError:
        pass  # raised again where the run imports it, as before
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["problem"]


def gather_params(ctx: Context) -> dict[str, str]:
    """The run's param values: ``--param`` for the others, secrets from ``--param-file`` or the terminal.

    A secret never comes from argv, which every local user can read (``ps``): ``--param`` naming a secret
    param is refused. Secrets come from ``--param-file FILE`` (a file only you can read, a pipe such as
    ``<(vault read ...)``, or ``-`` for stdin up to an empty line), or are asked without echo on a terminal.
    """
    args = ctx.args
    given = parse_assignments(args.param)
    item = ctx.config.actions.get(args.action) or ctx.config.runbooks.get(args.action)
    params = item.params if item is not None else {}
    named = sorted(n for n in given if n in params and params[n].secret)
    if named:
        raise ParamError(f"param {', '.join(named)} is secret: not accepted with --param, because every local user "
                         "can read a command line (ps); give it in --param-file FILE (a file only you can read, "
                         "or - for stdin), or leave it out to be asked without echo on a terminal")
    for name, value in read_param_files(args.param_file).items():
        if name in given:
            raise ParamError(f"param {name} given twice (--param and --param-file)")
        given[name] = value
    for name, param in params.items():
        if name in given or not param.secret or param.default is not None:
            continue
        if not sys.stdin.isatty():
            raise ParamError(f"param {name} of {item.id} is secret and required: give it in --param-file FILE "
                             "(a file only you can read, or - for stdin), or run from a terminal to be asked")
        from opsgate.cli.prompt import ask_secret

        given[name] = ask_secret(f"{item.id}: secret param {name} ({param.describe()})")
    return given


def read_param_files(names: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` lines from each ``--param-file`` (blank lines and ``#`` comments skipped).

    ``-`` reads standard input up to an empty line or its end (a script's step-up code may follow). A
    regular file must be yours and closed to group and others (as ssh wants of a key); a pipe (process
    substitution) is taken as it is. A line that is not NAME=VALUE is refused without showing its text.
    """
    from opsgate.console.stepup.credentials import check_private_file

    out: dict[str, str] = {}
    for name in names:
        if name == "-":
            lines = []
            for line in iter(sys.stdin.readline, ""):
                if not line.strip("\r\n"):
                    break
                lines.append(line)
        else:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise ParamError(f"--param-file {escape_line(name)}: {e.strerror or e}") from None
            try:
                if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                    check_private_file(name, fd, "a param file")
                with os.fdopen(fd, encoding="utf-8", errors="strict", closefd=False) as f:
                    lines = f.readlines()
            except UnicodeDecodeError:
                raise ParamError(f"--param-file {escape_line(name)}: not UTF-8 text") from None
            finally:
                os.close(fd)
        items = [line.rstrip("\r\n") for line in lines]
        for key, value in parse_assignments((i for i in items if i.strip() and not i.lstrip().startswith("#")),
                                       f"line in --param-file {escape_line(name)}:").items():
            if key in out:
                raise ParamError(f"param {key} given twice (in --param-file)")
            out[key] = value
    return out


def cmd_run(ctx: Context) -> int:
    args = ctx.args
    from opsgate.cli.prompt import TerminalPrompter

    raw = getattr(args, "raw", False)
    if raw and args.json:
        raise UsageError("--raw writes the target's output as it came and --json a document: pick one")
    pipeline = ctx.parts.pipeline
    warn_if_trail_broken(ctx, import_transport=not args.dry_run)
    request = RunRequest(args.action, tuple(args.target), gather_params(ctx), ctx.operator, args.reason)
    plan = pipeline.plan(request)
    if raw:
        if len(plan.target_names) != 1:
            raise UsageError(f"--raw writes one target's output unchanged; this run has {len(plan.target_names)} "
                             "targets: pick one with --target")
        if _isatty(sys.stdout):
            raise UsageError("--raw writes the target's bytes unchanged, escape sequences included: send stdout "
                             "to a file or a pipe, not to a terminal")
    info = sys.stderr if raw else sys.stdout  # with --raw, stdout is the target's bytes and nothing else
    if args.dry_run:
        pipeline.dry_run(plan)
        if args.json:
            print(json.dumps(plan_document(plan), indent=2))
        else:
            print_plan(plan, out=info)
            print("dry run: nothing ran", file=info)
        return 0
    name, risk = (plan.runbook.id, plan.runbook.risk) if isinstance(plan, RunbookPlan) else (plan.action.id, plan.action.risk)
    if isinstance(plan, RunbookPlan) and not sys.stdin.isatty():
        # Unattended, a pause that --yes may not pass would stop the runbook half done: refuse before step 1.
        blocking = [sp.step for sp in plan.steps if sp.plan is None and not (args.yes and sp.step.skippable)]
        if blocking:
            step = blocking[0]
            raise UsageError(f"{name} cannot finish without a terminal: step {step.index} pauses for "
                             f"{escape_line(step.pause)!r}{'' if step.skippable else ' (not skippable)'}; "
                             "run it from a terminal" + ("" if args.yes or not step.skippable else
                                                         ", or pass --yes for skippable pauses"))
    if risk != "low" and not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(f"{name} is {risk} risk: pass --yes to run it without a terminal")
        print_plan(plan, out=info)
        try:
            answer = ask("Run? [y/N] ", info)
        except EOFError:  # Ctrl-D: no
            answer = ""
            print(file=info)
        if answer.strip().lower() not in ("y", "yes"):
            print("not run", file=info)
            return EXIT_CANCELLED
    frontend = CliFrontend(TerminalPrompter(), stream_output=not args.json, yes=args.yes, out=info,
                           raw_out=sys.stdout.buffer if raw else None)
    forwarder = ctx.parts.start_forwarder()
    try:
        report = run_in_thread(pipeline, plan, frontend)
    finally:
        finish_forwarder(forwarder)
    tty = _isatty(info)

    def summary(line: str) -> None:  # opsgate's own lines: after the remote output, never styled by it
        print(own_line(line, tty), file=info)

    if args.json:
        print(json.dumps(result_document(plan, report, frontend), indent=2))
    elif isinstance(plan, RunbookPlan):
        summary(f"--- runbook run {report.run_id}: exit {report.exit_code}")
    else:
        width = max(len(n) for n in plan.target_names)
        summary(f"--- run {report.run_id}")
        for r in report.results:
            summary(f"{r.target:<{width}}  {describe_result(r)}")
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
