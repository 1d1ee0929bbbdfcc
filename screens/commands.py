"""Command palette: the console's main actions, the risk and tag filters, and jumping to an action."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable

from textual.command import DiscoveryHit, Hit, Hits, Provider

from opsgate.console.catalog.policy import RISKS

if TYPE_CHECKING:
    from opsgate.screens.console_screen import ConsoleScreen


class ConsoleCommands(Provider):
    """Run, filter by risk or tag, step up now, verify the audit trail, cancel, theme, help."""

    def _console(self) -> "ConsoleScreen | None":
        from opsgate.screens.console_screen import ConsoleScreen

        for screen in reversed(self.app.screen_stack):
            if isinstance(screen, ConsoleScreen):
                return screen
        return None

    def _commands(self) -> list[tuple[str, Callable[[], object], str]]:
        console = self._console()
        if console is None:
            return []
        out = [
            ("Run the selected action", console.action_run, "run it through step-up, SSH and the audit trail (r)"),
            ("Step up now", console.action_step_up, "authenticate now and keep the grant, like sudo -v (s)"),
            ("Verify the audit trail", console.action_verify_audit, "check the hash chain and recordings (v)"),
            ("Run history and replay", console.action_history, "past runs, approvals, verified recordings (h)"),
            ("Cancel the running action", console.action_cancel_run, "stop the remote processes (x)"),
            ("Show or hide the audit trail", console.action_toggle_audit,
             "the live audit pane: over the output on a narrow terminal (o)"),
            ("Dry run (audited)", console.action_dry_run, "record the exact command in the trail; run nothing (d)"),
            ("Filter by risk: all", partial(console.set_risk, None), "show every risk level"),
        ]
        out += [(f"Filter by risk: {risk}", partial(console.set_risk, risk), f"only {risk.upper()} actions")
                for risk in RISKS]
        out.append(("Filter by tag: all", partial(console.set_tag, None), "show actions on every target"))
        out += [(f"Filter by tag: {tag}", partial(console.set_tag, tag), f"actions that may run on tag {tag}")
                for tag in console.all_tags()]
        out += [(f"Go to action: {a.id}", partial(console.select_action, a.id), f"{a.risk.upper()} · {a.title}")
                for a in console.config.actions.values()]
        out += [
            ("Toggle light/dark theme", self.app.action_toggle_theme, "opsgate-dark / opsgate-light (t)"),
            ("Help", console.action_help, "keys and what the panes show (?)"),
        ]
        return out

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands():
            if name.startswith("Go to action") or name.startswith("Filter by tag"):
                continue  # shown when searched for; the first screen keeps the main actions
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, text=name, help=help_text)
