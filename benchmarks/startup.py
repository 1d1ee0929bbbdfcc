"""Start-up: `opsgate` to first paint with a 1,000-action catalog vs a bare Textual app with the same widgets.

    .venv/bin/python benchmarks/startup.py [--actions 1000] [--rounds 5]

Each round starts a fresh interpreter for each side (alternating) and measures from just before the
process is spawned to the first screen refresh after the main screen mounted (``call_after_refresh``),
in Textual's headless mode at 120x40. opsgate's side goes through the real CLI (`console.cli.main`:
config load and validation, state dir, make_app, the ConsoleScreen); the only patches are headless
running and the paint hook. The bare app composes the same widget types (top bar, filter Input,
DataTable with the same 1,000 two-line rows, detail Static, output Log, audit Static, Footer).
Goal: ratio opsgate/bare <= 1.3; the absolute time is reported too.

opsgate's rounds start with its validated-config cache in the state dir (console/catalog/cache.py),
written by the warm-up run, as any start after the first with an unchanged config. Each round also
times a start with the cache deleted (the config just edited: a full parse and validation) and, on the
cached start, when the detail pane (filled after the first paint) is complete; both are in the note, with
each side's CPU time at its first paint (less moved by other jobs on the machine than the wall time).
The children run with bytecode caching on (PYTHONDONTWRITEBYTECODE removed): the warm-up writes
opsgate's .pyc files, as installing it does (Textual's are in the venv already), so neither side
compiles its source in the measured rounds.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def catalog(n: int) -> str:
    risks = ["low", "medium", "high", "critical"]
    text = """
[console]
operator = "bench"
[policy.low]
factor = "none"
[policy.medium]
factor = "otp"
max_age = "15m"
[policy.high]
factor = "otp"
max_age = "5m"
[policy.critical]
factor = "fido2"
max_age = 0
confirm = true
"""
    for i in range(20):
        text += f'\n[targets.web-{i}]\nhost = "10.0.0.{i + 1}"\ntags = ["web", "prod"]\n'
    for i in range(n):
        text += f"""
[actions.action-{i:04d}]
title = "Runbook action number {i}"
description = "Restarts service {i} and shows its status."
risk = "{risks[i % 4]}"
targets = ["tag:web"]
command = "sudo systemctl restart {{service}} && systemctl status --no-pager {{service}}"
[actions.action-{i:04d}.params.service]
choices = ["nginx", "haproxy"]
"""
    return text


def child_opsgate(config: str, state: str) -> None:
    import opsgate.screens.app as app_mod
    import opsgate.screens.console_screen as cs

    original_mount = cs.ConsoleScreen.on_mount
    original_show = cs.ConsoleScreen._show_selected

    def on_mount(self) -> None:
        original_mount(self)

        def painted() -> None:
            print(f"PAINT {time.time():.6f} {time.process_time():.6f}", flush=True)
            self.set_timer(30, self.app.exit)  # a fallback: without a DETAIL mark the note says nan

        self.call_after_refresh(painted)

    async def show_selected(self) -> None:
        await original_show(self)
        if self.detail_current():  # the detail pane, filled after the first paint, is complete
            print(f"DETAIL {time.time():.6f}", flush=True)
            self.app.exit()

    cs.ConsoleScreen.on_mount = on_mount
    cs.ConsoleScreen._show_selected = show_selected
    run = app_mod.OpsgateApp.run
    app_mod.OpsgateApp.run = lambda self, **kw: run(self, headless=True, size=(120, 40), **kw)
    from opsgate.cli.main import main

    main(["--config", config, "--state-dir", state])


def child_bare(n: int) -> None:
    from rich.text import Text
    from textual.app import App
    from textual.containers import Horizontal, Vertical
    from textual.widgets import DataTable, Footer, Input, Log, Static

    class Bare(App):
        def compose(self):
            yield Static("opsgate  operator bench", id="topbar")
            with Horizontal():
                with Vertical():
                    yield Input(placeholder="/ filter")
                    yield Static("showing all")
                    yield DataTable(cursor_type="row")
                yield Static("detail")
            with Horizontal():
                yield Log()
                yield Static("audit")
            yield Footer()

        def on_mount(self) -> None:
            table = self.query_one(DataTable)
            table.add_column("Action", width=26)
            table.add_column("Risk", width=10)
            table.add_column("Step-up")
            for i in range(n):
                name = Text(f"action-{i:04d}", style="bold")
                name.append(f"\nRunbook action number {i}", style="not bold dim")
                table.add_row(name, Text(" LOW "), Text("none"), key=str(i), height=2)
            table.focus()

            def painted() -> None:
                print(f"PAINT {time.time():.6f} {time.process_time():.6f}", flush=True)
                self.exit()

            self.call_after_refresh(painted)

    Bare().run(headless=True, size=(120, 40))


def measure(args: list[str], marks: dict[str, list[float]] | None = None) -> float:
    """Seconds from spawning the child to its first paint; other marks it prints (DETAIL) go to ``marks``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.time()
    out = subprocess.run([sys.executable, str(HERE / "startup.py"), *args], capture_output=True, text=True,
                         timeout=120, env={**env, "TERM": "xterm-256color"})
    seen = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines() if line.startswith(("PAINT ", "DETAIL "))}
    if out.returncode != 0 or "PAINT" not in seen:
        raise SystemExit(f"start-up child {args[0]} failed ({out.returncode}): {out.stderr[-1500:]}")
    if marks is not None:
        marks.setdefault("CPU", []).append(float(seen["PAINT"][1]))  # the child's CPU time at its first paint
        if "DETAIL" in seen:
            marks.setdefault("DETAIL", []).append(float(seen["DETAIL"][0]) - start)
    return float(seen["PAINT"][0]) - start


def main() -> None:
    sys.path.insert(0, str(HERE))
    from common import Row, alternate, cli, emit, log

    parser = cli(__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    with tempfile.TemporaryDirectory(prefix="opsgate-bench-start-") as tmp:
        config = Path(tmp, "opsgate.toml")
        config.write_text(catalog(args.actions))
        state = Path(tmp, "state")
        state.mkdir(mode=0o700)
        measure(["--child-bare", str(args.actions)])  # warm the page cache (and write .pyc files) for both
        measure(["--child-opsgate", str(config), str(state)])  # ... and the config cache
        cache = state / "config.cache"
        if not cache.exists():
            raise SystemExit("the warm-up start wrote no config cache")
        marks: dict[str, list[float]] = {}
        bare_marks: dict[str, list[float]] = {}

        def cold() -> float:
            cache.unlink()
            return measure(["--child-opsgate", str(config), str(state)])

        log(f"start-up to first paint, {args.actions} actions")
        med = alternate(rounds, {
            "opsgate": lambda: measure(["--child-opsgate", str(config), str(state)], marks),
            "bare": lambda: measure(["--child-bare", str(args.actions)], bare_marks),
            "opsgate-cold": cold,
        }, log=log)
    ratio = med["opsgate"] / med["bare"]
    detail = statistics.median(marks["DETAIL"]) if marks.get("DETAIL") else float("nan")
    cpu, bare_cpu = statistics.median(marks["CPU"]), statistics.median(bare_marks["CPU"])
    log(f"CPU time to first paint (medians): opsgate {cpu * 1e3:.0f} ms, bare {bare_cpu * 1e3:.0f} ms, "
        f"{cpu / bare_cpu:.2f}x")
    emit([Row(f"start-up to first paint, {args.actions}-action catalog", f"{med['opsgate'] * 1e3:.0f} ms",
              f"bare Textual app {med['bare'] * 1e3:.0f} ms", ratio, "<= 1.3x bare app", ratio <= 1.3,
              f"median of {rounds}, fresh interpreter each, config cache warm; detail pane complete at "
              f"{detail * 1e3:.0f} ms; config just edited (no cache): {med['opsgate-cold'] * 1e3:.0f} ms, "
              f"{med['opsgate-cold'] / med['bare']:.2f}x; CPU time to first paint {cpu * 1e3:.0f} ms vs "
              f"{bare_cpu * 1e3:.0f} ms, {cpu / bare_cpu:.2f}x")], args.json)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-opsgate":
        sys.path.insert(0, str(HERE.parent))
        child_opsgate(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-bare":
        child_bare(int(sys.argv[2]))
    else:
        main()
