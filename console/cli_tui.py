"""``opsgate`` (the console on the configured catalog) and ``opsgate demo``. Textual is imported lazily."""

from __future__ import annotations

import signal
import sys


def cmd_console(ctx) -> int:
    """The TUI on ctx.config with its state in ctx.state_dir."""
    from screens.app import make_app

    app = make_app(ctx.config, ctx.state_dir, operator=ctx.operator)
    app.run()
    return app.return_code or 0


def cmd_demo(ctx) -> int:
    """The TUI on an embedded loopback SSH target and a throwaway state dir (removed at exit)."""
    from .demo import Demo

    print("opsgate demo: starting a loopback SSH target on 127.0.0.1 ...", file=sys.stderr)
    with Demo() as demo:
        from screens.app import make_app

        app = make_app(demo.config, demo.state_dir, operator=demo.operator, stepup=demo.stepup, demo=demo)
        # A closed terminal (SIGHUP) or a kill (SIGTERM) still ends the app cleanly, so the demo's
        # server stops and its throwaway directory goes.
        for sig in (signal.SIGHUP, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: app.exit(return_code=128 + signum))
        app.run()
    print("opsgate demo: stopped; the demo's state, keys and audit trail were deleted.", file=sys.stderr)
    return app.return_code or 0
