"""``opsgate`` (the console on the configured catalog) and ``opsgate demo``. Textual is imported lazily."""

from __future__ import annotations

import atexit
import gc
import signal
import sys


def _no_gc_until_painted() -> None:
    """Start-up makes ~90,000 objects that live as long as the console (modules, classes, styles, the catalog's
    rows), and the cyclic garbage collector would walk them again and again before the first frame (about
    80 ms of a 450 ms start). It is off until the console's first paint, which freezes them (they stay out
    of every later collection, which a flood's UI would also pay) and turns it on again (``ConsoleScreen``)."""
    gc.disable()


def cmd_console(ctx) -> int:
    """The TUI on ctx.config with its state in ctx.state_dir."""
    _no_gc_until_painted()
    _load_config_cached(ctx)
    from opsgate.screens.app import make_app

    app = make_app(ctx.config, ctx.state_dir, operator=ctx.operator)
    app.exit_on_signals(signal.SIGHUP, signal.SIGTERM)  # a closed terminal still stops runs cleanly
    app.run()
    return app.return_code or 0


def cmd_demo(ctx) -> int:
    """The TUI on an embedded loopback SSH target and a throwaway state dir (removed at exit)."""
    from opsgate.console.demo.wiring import Demo

    print("opsgate demo: starting a loopback SSH target on 127.0.0.1 and a gate in this process (same uid: "
          "it shows how the gate works, it is no boundary) ...", file=sys.stderr)
    _no_gc_until_painted()
    demo = Demo(gate=True)
    atexit.register(demo.close)  # a last resort: the throwaway directory goes whatever ends the program
    try:
        demo.start()
        from opsgate.screens.app import make_app

        app = make_app(demo.config, demo.state_dir, operator=demo.operator, pipeline=demo.parts.pipeline,
                       audit=demo.parts.audit, demo=demo)
        # A closed terminal (SIGHUP) or a kill (SIGTERM) ends the app through its event loop, so the
        # demo's server stops and its directory goes below.
        app.exit_on_signals(signal.SIGHUP, signal.SIGTERM, last_resort=demo.close)
        app.run()
    finally:
        # A second signal during the cleanup must not cut it short.
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGHUP, signal.SIGTERM)}
        try:
            demo.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    try:
        print("opsgate demo: stopped; the demo's state, keys and audit trail were deleted.", file=sys.stderr)
    except OSError:  # the terminal is gone (SIGHUP)
        pass
    return app.return_code or 0


def _load_config_cached(ctx) -> None:
    """ctx.config through the validated-config cache in the state dir (console/catalog/cache.py).

    The cache can be used only where the state dir is known before the config is read: --state-dir,
    $OPSGATE_STATE_DIR, or the default state dir (if it exists) when the config names no other. A config
    with its own ``console.state_dir`` and neither flag nor variable is loaded in full every time."""
    import os
    from pathlib import Path

    import platformdirs

    from opsgate.console import paths
    from opsgate.console.catalog.loader import load_config

    fixed = bool(ctx.args.state_dir or os.environ.get("OPSGATE_STATE_DIR"))
    if fixed:
        cache_dir = paths.state_dir(ctx.args.state_dir, None)  # what ctx.state_dir will be (created 0700)
    else:
        cache_dir = Path(platformdirs.user_state_dir(paths.APP))
        if not cache_dir.is_dir():
            return
    vars(ctx)["config"] = load_config(  # Context.config is a cached_property: this is its value now
        ctx.config_path, default_operator=getattr(ctx.args, "operator", None), cache_dir=cache_dir,
        cache_if=lambda config: fixed or config.settings.state_dir is None)
