"""Helpers for the TUI tests: a demo environment in tmp_path, polling with a deadline, a few shortcuts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from opsgate.console.audit.trail import AuditTrail

from opsgate.console.paths import AUDIT_FILE
from opsgate.console.demo.wiring import Demo
from opsgate.console.stepup.totp import code_at_step, time_step

SIZE = (120, 40)
FIXED_TIME = 1_767_225_600.0  # 2026-01-01T00:00:00Z
FIXED_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def start_demo(root: Path, **kwargs) -> Demo:
    """A demo environment whose files live under ``root`` (pytest's tmp_path): never the developer's."""
    return Demo(root=root / "demo", **kwargs).start()


def app_for(demo: Demo, **kwargs):
    from opsgate.screens.app import make_app

    kwargs.setdefault("theme", "opsgate-dark")
    return make_app(kwargs.pop("config", demo.config), demo.state_dir, operator=kwargs.pop("operator", demo.operator),
                    stepup=kwargs.pop("stepup", demo.stepup), demo=demo, **kwargs)


async def wait_for(pilot, condition: Callable[[], object], timeout: float = 60.0, what: str = "condition"):
    """Let the app run until ``condition()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.05)


def current_code(demo: Demo, now: float | None = None) -> str:
    return code_at_step(demo.totp_secret, time_step(demo.clock() if now is None else now))


def wrong_code(demo: Demo) -> str:
    """A 6-digit code that is none of the codes accepted now (previous, current, next step)."""
    step = time_step(demo.clock())
    valid = {code_at_step(demo.totp_secret, s) for s in (step - 1, step, step + 1)}
    for candidate in ("000000", "111111", "123456", "654321"):
        if candidate not in valid:
            return candidate
    raise AssertionError("unlucky codes")


def trail_events(demo: Demo) -> list[str]:
    return [r["event"] for r in AuditTrail(demo.state_dir / AUDIT_FILE).records()]


def trail_records(demo: Demo) -> list[dict]:
    return list(AuditTrail(demo.state_dir / AUDIT_FILE).records())


async def confirm_run(pilot, key: str = "y"):
    """Answer the one-key "Run ...?" question a medium-or-higher run asks first (``y`` runs, ``escape`` not)."""
    from opsgate.screens.confirm import RunConfirmModal

    modal = await wait_for(pilot, lambda: isinstance(pilot.app.screen, RunConfirmModal) and pilot.app.screen,
                           what="the run confirmation")
    await pilot.press(key)
    await wait_for(pilot, lambda: pilot.app.screen is not modal, what="the run confirmation to close")
    return modal


async def choose(pilot, screen, name: str, value: str) -> None:
    """Pick ``value`` in the parameter ``name``'s list (a param with choices), as typing it in the open list does."""
    from textual.widgets import Select

    field = screen.query_one(f"#param-{name}", Select)
    field.focus()
    field.value = value
    await wait_for(pilot, lambda: screen.query_one("#detail").draft.params.get(name) == value,
                   what=f"{name}={value} in the form")
