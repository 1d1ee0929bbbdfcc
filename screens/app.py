"""The opsgate Textual app and its one factory, ``make_app``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from textual.app import App
from textual.binding import Binding

from opsgate.console.audit.trail import AuditTrail

from opsgate.console.catalog.model import Config
from opsgate.screens.commands import ConsoleCommands
from opsgate.screens.console_screen import ConsoleScreen
from opsgate.screens.theme import THEMES, default_theme

if TYPE_CHECKING:
    from opsgate.console.run import Pipeline
    from opsgate.console.stepup.verifier import StepUp


class DemoHooks(Protocol):
    """What ``opsgate demo`` adds to the screens: its operator's TOTP codes, the code hint, the key's touch."""

    operator: str

    def codes(self, now: float) -> tuple[str, str, int]: ...
    def otp_hint(self, operator: str) -> str | None: ...
    def touch(self) -> None: ...


FORCED_EXIT_AFTER = 5.0  # seconds a signalled app may take to exit through its event loop


class OpsgateApp(App):
    """Holds the config, the pipeline, step-up and the audit trail; the ConsoleScreen does the rest."""

    TITLE = "opsgate"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {ConsoleCommands}
    BINDINGS = [Binding("t", "toggle_theme", "Theme", show=False)]
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]

    def __init__(self, config: Config, state_dir: Path, *, operator: str, stepup: "StepUp | None",
                 pipeline: "Pipeline", audit: AuditTrail, demo: DemoHooks | None = None,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 touch_timeout: float | None = None, theme: str | None = None):
        super().__init__()
        self.config = config
        self.state_dir = state_dir
        self.operator = operator
        self.stepup = stepup
        self.pipeline = pipeline
        self.audit = audit
        self.demo = demo
        self.clock = clock
        self.monotonic = monotonic
        self.touch_timeout = touch_timeout
        for t in THEMES:
            self.register_theme(t)
        self._start_with_theme(theme or default_theme())
        self.forwarder = None  # console.forward.Forwarder while the console runs, with [audit.forward]

    def _start_with_theme(self, name: str) -> None:
        """The theme in place before any CSS is read, as if it had been Textual's default.

        ``self.theme = name`` here would have Textual parse every stylesheet again once the app runs and
        restyle the app (its watcher's refresh_css; about 20 ms before the first paint, for nothing: no CSS
        has been read yet). The watcher's other effects are done here: the stylesheet's variables, the app's
        theme classes and the ANSI colour filter. Later changes (t) go through the watcher as usual."""
        self.set_reactive(OpsgateApp.theme, self._validate_theme(name))
        self.stylesheet.set_variables(self.get_css_variables())
        dark = self.current_theme.dark
        classes = {c: False for c in self.classes if c.startswith("-theme-")}
        classes.update({f"-theme-{name}": True, "-dark-mode": dark, "-light-mode": not dark})
        self.update_classes(classes, update=False)
        self._refresh_truecolor_filter(self.ansi_theme)

    def exit_on_signals(self, *signals: int, last_resort: Callable[[], None] | None = None) -> None:
        """End the app cleanly on these signals (a closed terminal, a kill), so the caller's cleanup runs.

        If the event loop cannot act within ``FORCED_EXIT_AFTER`` seconds (after a SIGHUP the writer
        thread may die on the closed terminal and leave the loop blocked on its queue), run
        ``last_resort`` and leave with ``os._exit``. Call before ``run()``, from the main thread.
        """
        self._exit_signals = signals
        self._last_resort = last_resort

    def _install_signal_handlers(self) -> None:
        import asyncio
        import signal

        loop = asyncio.get_running_loop()
        for sig in getattr(self, "_exit_signals", ()):
            signal.signal(sig, lambda signum, frame, loop=loop: self._on_exit_signal(signum, loop))
        if signal.SIGHUP in getattr(self, "_exit_signals", ()):
            self._watch_terminal(loop)

    def _watch_terminal(self, loop) -> None:
        """A terminal that goes away ends the console as SIGHUP does, also when no SIGHUP comes: on a hangup the
        kernel signals only the session's leader, and one that does not pass it on (``make run``, a wrapper
        script) would leave the console spinning on a dead terminal. A thread waits for the hangup itself."""
        import os
        import select
        import signal
        import sys
        import threading

        stdin = sys.__stdin__
        try:
            fd = stdin.fileno()
            if not os.isatty(fd):
                return
        except (AttributeError, ValueError, OSError):  # no terminal (headless, tests)
            return

        def wait_for_hangup() -> None:
            poller = select.poll()
            poller.register(fd, 0)  # no events asked: poll still reports a hangup or an error, nothing else
            while True:
                try:
                    events = [e for _, e in poller.poll()]
                except InterruptedError:
                    continue
                if any(e & select.POLLNVAL for e in events):
                    return  # the descriptor was closed here (the app is ending): not a hangup
                if events:
                    break
            self._on_exit_signal(signal.SIGHUP, loop)

        threading.Thread(target=wait_for_hangup, name="terminal-hangup", daemon=True).start()

    def _on_exit_signal(self, signum: int, loop) -> None:
        """Runs in the main thread between bytecodes, even while the loop is blocked."""
        import os
        import threading

        def force() -> None:
            try:
                if self._last_resort is not None:
                    self._last_resort()
            finally:
                os._exit(128 + signum)

        watchdog = threading.Timer(FORCED_EXIT_AFTER, force)
        watchdog.daemon = True  # a clean exit in time ends the process and this timer with it
        watchdog.start()
        loop.call_soon_threadsafe(lambda: self.exit(return_code=128 + signum))

    def on_mount(self) -> None:
        self._install_signal_handlers()
        from opsgate.console.wiring import ConsoleParts

        # Ships the trail to the collector in the background; runs never wait for it.
        self.forwarder = ConsoleParts(self.config, self.state_dir, self.stepup, self.audit, self.pipeline).start_forwarder()
        self.push_screen(ConsoleScreen(self))

    def on_unmount(self) -> None:
        forwarder, self.forwarder = self.forwarder, None
        if forwarder is not None:
            forwarder.stop(timeout=3)  # a short drain; what is left is sent by the next console or run

    @property
    def main_screen(self) -> ConsoleScreen:
        return next(s for s in self.screen_stack if isinstance(s, ConsoleScreen))

    async def action_quit(self) -> None:
        """ctrl+q: as q on the console, it asks first while a run is live."""
        screen = next((s for s in self.screen_stack if isinstance(s, ConsoleScreen)), None)
        if screen is not None and screen.running:
            screen.action_quit()
            return
        self.exit()

    def action_toggle_theme(self) -> None:
        self.theme = "opsgate-light" if self.theme == "opsgate-dark" else "opsgate-dark"


def make_app(config: Config, state_dir: Path, *, operator: str | None = None, stepup: "StepUp | None" = None,
             pipeline: "Pipeline | None" = None, audit: AuditTrail | None = None, demo: DemoHooks | None = None,
             authenticator=None, clock: Callable[[], float] = time.time,
             monotonic: Callable[[], float] = time.monotonic, theme: str | None = None) -> OpsgateApp:
    """The console for ``config`` with its state in ``state_dir``; tests pass their own parts.

    ``authenticator`` is a FIDO2 device factory (a SoftKey in tests and the demo; else USB HID).
    A grant made with ``opsgate auth`` is used (read from the state dir, never written there); a TUI
    session's own step-up is kept in memory and ends with the session.
    """
    from opsgate.console.wiring import assemble

    operator = operator or config.settings.operator
    parts = assemble(config, state_dir, persist_grants="read", authenticator=authenticator, clock=clock,
                     stepup=stepup, audit=audit, pipeline=pipeline, isolated=True)
    state_dir, stepup, audit, pipeline = parts.state_dir, parts.stepup, parts.audit, parts.pipeline
    touch_timeout = getattr(getattr(stepup, "key", None), "timeout", None)
    return OpsgateApp(config, state_dir, operator=operator, stepup=stepup, pipeline=pipeline, audit=audit,
                      demo=demo, clock=clock, monotonic=monotonic, touch_timeout=touch_timeout, theme=theme)
