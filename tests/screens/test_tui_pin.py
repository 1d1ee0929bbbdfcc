"""Pilot: a security key with a PIN under a policy that asks for user verification, in the touch modal."""

from __future__ import annotations

from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin
from textual.widgets import Input

from opsgate.console.catalog.loader import parse_config
from opsgate.screens.stepup_modals import ConfirmModal, TouchModal
from tests.helpers.tui_fixtures import SIZE, app_for, confirm_run, trail_records, wait_for

PIN = "Quokka-42"


def uv_app(demo):
    """The demo with a PIN on its software key (set through real CTAP2) and critical actions asking for UV."""
    demo.security_key.client_pin = True  # a key that supports a PIN (the demo key does not by default)
    ClientPin(Ctap2(demo.security_key)).set_pin(PIN)
    text = demo.config_text().replace("[policy.critical]\n", "[policy.critical]\nuser_verification = true\n", 1)
    assert "user_verification = true" in text
    return app_for(demo, config=parse_config(text.encode(), "demo.toml"))


def pin_asked(app):
    screen = app.screen
    if isinstance(screen, TouchModal) and screen.query_one("#pin", Input).display:
        return screen
    return None


async def run_failover(pilot) -> TouchModal:
    screen = pilot.app.main_screen
    screen.select_action("db-failover")
    await pilot.pause(0.1)
    await pilot.press("r")
    await confirm_run(pilot)
    # the typed confirmation comes first (nothing is asked of the key for a run not confirmed)
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmModal), what="the confirmation")
    await pilot.press(*"db-primary", "enter")
    return await wait_for(pilot, lambda: pin_asked(pilot.app), what="the PIN field in the touch modal")


async def test_pin_field_in_the_touch_modal(demo):
    app = uv_app(demo)
    async with app.run_test(size=SIZE) as pilot:
        touch = await run_failover(pilot)
        field = touch.query_one("#pin", Input)
        assert field.password and app.focused is field  # masked, and ready to type in
        assert "8 attempts left" in str(touch.query_one("#pin-status").render())
        await pilot.press(*"Wombat-17", "enter")  # wrong: asked again, with the attempts left
        await wait_for(pilot, lambda: pin_asked(app) and "7 attempts left"
                       in str(touch.query_one("#pin-status").render()), what="the PIN asked again")
        assert "wrong PIN" in str(touch.query_one("#pin-status").render())
        await pilot.press(*PIN, "enter")
        await wait_for(pilot, lambda: not touch.query_one("#pin", Input).display, what="the PIN taken")
        assert touch.query_one("#pin", Input).value == ""  # not kept in the widget
        await pilot.press("t")  # the demo key's touch
        await wait_for(pilot, lambda: not app.main_screen.running and app.main_screen.last_report is not None,
                       what="the run")
        assert app.main_screen.last_report.exit_code == 0
    records = trail_records(demo)
    success = [r for r in records if r["event"] == "stepup.success"]
    assert success and success[-1]["user_verified"] is True
    failures = [r for r in records if r["event"] == "stepup.failure"]
    assert failures and "7 attempts left" in failures[0]["reason"]
    assert PIN not in str(records) and "Wombat-17" not in str(records)


async def test_escape_at_the_pin_denies(demo):
    app = uv_app(demo)
    async with app.run_test(size=SIZE) as pilot:
        await run_failover(pilot)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.main_screen.running, what="the denial")
        assert app.screen is app.main_screen
    events = [r["event"] for r in trail_records(demo)]
    assert "action.denied" in events and "action.start" not in events
    assert demo.security_key.pin_retries == 8  # nothing was tried
