"""The help screen (?): keys and what each pane shows."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# opsgate console

**Actions** (left): every runbook action with its risk (LOW, MEDIUM, HIGH, CRITICAL) and the
step-up it needs (`OTP 15m`: a one-time code, good for 15 minutes; `KEY every run`: a security-key
touch for each run). Type `/` to filter by words, `risk:high` or `tag:db`; `f` cycles the risk
filter, `g` the tag filter.

**Detail** (right): what the selected action does, the command template, the step-up in words
and whether your current grant covers it (and for how long). Pick **targets** (a `tag:` entry picks
every target with that tag) and fill the **parameters**: they are checked as you type, with the
same rules as `opsgate run`. The **dry run** line is exactly what will run (secrets redacted).

**Running**: `enter` or `r`. A MEDIUM, HIGH or CRITICAL action first shows the whole plan and asks
once (`enter` or `y` runs it, `escape` does not), as `opsgate run` asks `Run? [y/N]`. If a step-up is
needed, a dialog shows what will run and asks for a code, a key touch, the target's name, or another
operator's approval. `escape` says no: nothing runs, and the denial is written to the audit trail.
When the run starts the output has the focus; `x` cancels it (the remote processes are stopped).

**Keys and fields**: `?`, `q`, `h`, `v`, `o` (and `x` during a run) work wherever the focus is. In a
field (the filter, a parameter, the reason) a letter is a letter while nothing runs; while a run is
live, those keys are the console's there too. `escape` in a field (or anywhere) goes back to the
action list. `q` during a run asks first: quitting cancels it. A parameter with a fixed list of
values is a list: `enter` opens it, typing jumps to a value.

**Runbooks** (▤ in the list): ordered steps approved by one step-up; the step-up dialog lists every
step. While it runs, the output pane shows the step list (pending, running, ok, failed, skipped,
waiting for you, cancelled) and the selected step's output per target. At a pause, **Continue** goes
on and **Stop** ends the runbook; `x` stops the running step and no further step starts.

**Output** (bottom left): one tab per target, live, with its status (running, ok, exit N,
timeout, unreachable). The panes keep the last lines; the recording keeps every byte
(`opsgate replay RUN`).

**Audit trail** (bottom right): the newest records, including those written by other consoles
or `opsgate run`, one compact line each (`enter` or a click shows the whole record), and whether the
hash chain verifies (checked in full at start and on `v`, then record by record as they arrive). The
top line always shows the chain's state first: `✗ CHAIN BROKEN` is never cut off, and a toast says
when it breaks.

| key | does |
|---|---|
| `/` | filter |
| `enter`, `r` | run the selected action |
| `x` | cancel the running action (only while one runs) |
| `escape` | back to the action list |
| `f` / `g` | cycle the risk / tag filter |
| `s` | step up now (keep the grant) |
| `d` | dry run, recorded in the trail |
| `v` | verify the audit trail |
| `h` | run history: filter, open a run, replay its verified recordings |
| `a` | gate mode: requests waiting for a second operator; approve (enter) or deny (d) with your own factor |
| `o` | the audit trail: on a narrow terminal shown over the output (o again hides it); wide, focus it |
| `t` | light / dark theme |
| `ctrl+p` | command palette |
| `?` | this help |
| `q` | quit (asks first while a run is live) |
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close"),
        Binding("q", "close", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Markdown(HELP)

    def action_close(self) -> None:
        self.dismiss(None)
