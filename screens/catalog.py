"""The action list: id, title, risk badge and step-up requirement, filtered by text, risk and tag.

Runbooks are listed after the actions, with a ▤ marker and "runbook, N steps" under their id.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from opsgate.console.catalog.model import Action, Config, Runbook
from opsgate.console.catalog.policy import RISKS

from opsgate.screens.badges import RISK_WIDTH, risk_badge


@dataclass(frozen=True)
class ActionFilter:
    """What the list shows: words to find, an exact risk, a target tag. Empty means everything."""

    text: str = ""
    risk: str | None = None
    tag: str | None = None

    @classmethod
    def parse(cls, query: str, *, risk: str | None = None, tag: str | None = None) -> "ActionFilter":
        """``"restart risk:medium tag:web"``: the ``risk:`` and ``tag:`` words win over the given ones."""
        words = []
        for word in query.split():
            key, sep, value = word.partition(":")
            if sep and key.lower() == "risk" and value.lower() in RISKS:
                risk = value.lower()
            elif sep and key.lower() == "tag" and value:
                tag = value
            else:
                words.append(word.lower())
        return cls(" ".join(words), risk, tag)

    def matches(self, action: Action | Runbook, config: Config) -> bool:
        if self.risk is not None and action.risk != self.risk:
            return False
        if self.tag is not None:
            tags = {t for target in config.targets_for(action) for t in target.tags}
            if self.tag not in tags and f"tag:{self.tag}" not in getattr(action, "targets", ()):
                return False
        haystack = f"{action.id} {action.title} {action.description}".lower()
        if isinstance(action, Runbook):
            haystack += " runbook"
        return all(word in haystack for word in self.text.split())

    def describe(self) -> str:
        parts = []
        if self.risk:
            parts.append(f"risk {self.risk}")
        if self.tag:
            parts.append(f"tag {self.tag}")
        if self.text:
            parts.append(f'"{self.text}"')
        return ", ".join(parts) or "all actions"


def catalog_entries(config: Config) -> list[Action | Runbook]:
    """Everything the operator can run: the actions, then the runbooks."""
    return [*config.actions.values(), *config.runbooks.values()]


def filter_actions(config: Config, flt: ActionFilter) -> list[Action | Runbook]:
    return [a for a in catalog_entries(config) if flt.matches(a, config)]


class ActionTable(DataTable):
    """One row per action; the row key is the action id. ``enter`` asks to run the highlighted action."""

    BINDINGS = [
        Binding("enter", "select_cursor", "Run", show=False),
        # Home and End go to the first and last action (a DataTable's own scroll the list sideways).
        Binding("home", "first_row", "First action", show=False),
        Binding("end", "last_row", "Last action", show=False),
    ]

    @dataclass
    class Chosen(Message):
        """The operator pressed enter (or clicked twice) on an action."""

        action_id: str

    def __init__(self, config: Config, **kwargs):
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self.config = config
        self.show_titles = True
        self.actions: list[Action | Runbook] = []

    def on_mount(self) -> None:
        self._columns()

    def _columns(self) -> None:
        """Columns that fit the pane (no sideways scrolling): wide, the id with its title under it; narrow,
        the id alone and no cell padding (the risk badge carries its own spaces)."""
        self.clear(columns=True)
        entries = catalog_entries(self.config)
        width = max((len(a.id) + (2 if isinstance(a, Runbook) else 0) for a in entries), default=6)
        if self.show_titles:
            width = max([width] + [len(self._subtitle(a)) for a in entries])
            self.cell_padding = 1
            self.add_column("Action", key="id", width=min(width, 25))
        else:
            self.cell_padding = 0
            self.add_column(" Action", key="id", width=min(width, 22) + 1)
        self.add_column("Risk", key="risk", width=RISK_WIDTH)
        self.add_column("Step-up", key="stepup")

    def set_narrow(self, narrow: bool) -> None:
        """Drop the title column on a narrow terminal (the detail pane shows it)."""
        if self.show_titles == (not narrow):
            return
        self.show_titles = not narrow
        selected = self.selected_id
        self._columns()
        self.show_actions(self.actions, keep=selected)

    @property
    def selected_id(self) -> str | None:
        if not self.actions or self.row_count == 0:
            return None
        row = min(max(self.cursor_row, 0), self.row_count - 1)
        return self.actions[row].id

    @staticmethod
    def _subtitle(entry: Action | Runbook) -> str:
        if isinstance(entry, Runbook):
            return f"runbook · {len(entry.steps)} steps"
        return entry.title

    def show_actions(self, actions: list[Action | Runbook], *, keep: str | None = None) -> None:
        """Replace the rows; keep the cursor on ``keep`` when it is still listed."""
        keep = keep or self.selected_id
        self.clear()
        self.actions = list(actions)
        for action in self.actions:
            req = self.config.requirement_for(action)
            # Wide: the title under the id (two-line rows); narrow: the id alone.
            name = Text(overflow="ellipsis", no_wrap=True)
            if not self.show_titles:
                name.append(" ")  # no cell padding when narrow
            if isinstance(action, Runbook):
                name.append("▤ ")  # the runbook marker, also when narrow (no title line)
            name.append(action.id, style="bold")
            if self.show_titles:
                name.append("\n" + self._subtitle(action), style="not bold dim")
            self.add_row(name, risk_badge(action.risk), Text(req.short()), key=action.id,
                         height=2 if self.show_titles else 1)
        ids = [a.id for a in self.actions]
        if keep in ids:
            self.move_cursor(row=ids.index(keep), animate=False)
        elif ids:
            self.move_cursor(row=0, animate=False)

    def action_first_row(self) -> None:
        if self.row_count:
            self.move_cursor(row=0, animate=False)
            self.scroll_x = 0

    def action_last_row(self) -> None:
        if self.row_count:
            self.move_cursor(row=self.row_count - 1, animate=False)
            self.scroll_x = 0

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.Chosen(str(event.row_key.value)))
