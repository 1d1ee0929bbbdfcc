"""The detail pane of the selected action: what it does, who may run it where, its parameters, and
a dry-run preview of the exact command (secrets redacted). For a runbook: its steps (each with its
targets, rendered command, checks, pauses) and the params its steps share."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.validation import ValidationResult, Validator
from textual.widgets import Input, Label, Select, SelectionList, Static
from textual.widgets._select import SelectCurrent
from textual.widgets.selection_list import Selection

from opsgate.console.catalog.model import Action, Config, Param, Runbook
from opsgate.console.errors import ParamError
from opsgate.console.catalog.params import check_value, render_command, resolve_params

from opsgate.screens.badges import risk_badge

TAG_PREFIX = "tag:"


class ParamValidator(Validator):
    """The CLI's own validator (console.params.check_value), as you type."""

    def __init__(self, param: Param):
        super().__init__()
        self.param = param

    def validate(self, value: str) -> ValidationResult:
        if value == "" and self.param.default is not None:
            return self.success()  # empty means the default
        if value == "":
            return self.failure(f"required: {self.param.describe()}")
        try:
            check_value(self.param, value)
        except ValueError as e:
            return self.failure(str(e))
        return self.success()


class ConsoleInput(Input):
    """A field of the console screen (the filter, a parameter, the reason).

    Textual gives a focused Input every printable key, so the screen's single-letter bindings never see
    them: typing "x" in a field is an "x". While a run is live, the console's global keys (x cancel,
    q quit, ? help, h history, v verify, o audit) are keys here too: the screen's ``key_is_global`` says
    which, and this field then lets the screen's priority binding have it.
    """

    def check_consume_key(self, key: str, character: str | None) -> bool:
        is_global = getattr(self.screen, "key_is_global", None)
        if is_global is not None and is_global(key):
            return False
        return super().check_consume_key(key, character)


@dataclass
class Draft:
    """What the operator has chosen so far for one action: raw values and targets, not yet trusted."""

    action: Action | Runbook
    params: dict[str, str]
    targets: tuple[str, ...]
    reason: str = ""  # why, when the policy asks (the CLI's --reason)
    needs_reason: bool = False

    @property
    def is_runbook(self) -> bool:
        return isinstance(self.action, Runbook)

    def problems(self) -> list[str]:
        out = []
        if not self.targets and not self.is_runbook:  # a runbook's steps name their own targets
            out.append("select at least one target")
        if self.needs_reason and not self.reason.strip():
            out.append("say why in the reason field (the policy asks)")
        try:
            resolve_params(self.action, self._given())
        except ParamError as e:
            out += str(e).split("; ")
        return out

    def _given(self) -> dict[str, str]:
        # An empty field is a param left out, as on the CLI: the default if there is one, else "required".
        return {k: v for k, v in self.params.items() if v != ""}

    def request_params(self) -> dict[str, str]:
        return self._given()

    def preview(self) -> str | None:
        """The exact command with secrets redacted, or None while a value is invalid."""
        try:
            values = resolve_params(self.action, self._given())
        except ParamError:
            return None
        if self.is_runbook:
            return None
        return render_command(self.action, values).redacted


def runbook_steps(config: Config, runbook: Runbook, plan=None) -> Text:
    """Each step: index, title, risk, kind, targets, the command (rendered when ``plan`` is given), checks."""
    out = Text()
    rendered = {sp.step.index: sp.plan for sp in plan.steps} if plan is not None else {}
    for step in runbook.steps:
        if out:
            out.append("\n")
        out.append(f"{step.index:>2} ", style="bold")
        if step.kind == "pause":
            out.append("⏸ pause", style="bold")
            out.append(" (skippable)" if step.skippable else " (the operator must answer)", style="dim")
            out.append(f"\n   waits for you: {step.pause}")
            continue
        out.append(step.title, style="bold")
        out.append("  ")
        out.append_text(risk_badge(step.risk, pad=False))
        out.append(f"  {'action ' + step.action if step.kind == 'action' else 'command'}", style="dim")
        targets = [t.name for t in config.targets_for(step)]
        step_plan = rendered.get(step.index)
        command = step_plan.command.redacted if step_plan is not None else (
            step.command if step.command is not None else config.actions[step.action].command)
        out.append(f"\n   on {', '.join(targets)}  ", style="dim")
        out.append("$ " + command, style="" if step_plan is not None else "italic")
        checks = []
        if step.expect_output is not None:
            checks.append(f"output matches /{step.expect_output}/")
        if step.expect_exit is not None:
            checks.append(f"exit {step.expect_exit}")
        if step.on_failure == "continue":
            checks.append("goes on if it fails")
        if checks:
            out.append("\n   check: " + "; ".join(checks), style="dim")
    return out


class ActionDetail(VerticalScroll, can_focus=False):
    """Description, command template, requirement and grant, target picker, parameter form, preview."""

    @dataclass
    class Changed(Message):
        """The targets or a parameter changed."""

        draft: Draft

    @dataclass
    class Submitted(Message):
        """Enter in a parameter field: run."""

        draft: Draft

    def __init__(self, config: Config, *, plan_runbook: Callable[[str, dict], object] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.plan_runbook = plan_runbook  # (runbook id, params) -> RunbookPlan: the steps as they would run
        self._action: Action | Runbook | None = None  # the action being shown (its draft is the form's)
        self._shown: Action | Runbook | None = None  # the action whose pane is complete
        self._drafts: dict[str, Draft] = {}
        self._last_selected: set[str] = set()
        self._tags: list[str] = []
        self._showing = asyncio.Lock()
        self._built = False
        self.grant_text = ""

    def compose(self) -> ComposeResult:
        # Empty until the first action is shown (after the console's first paint): see _build.
        yield from ()

    async def _build(self) -> bool:
        """The pane's parts, mounted once, when the first action is shown; False if the app is closing."""
        parts = [
            Static(id="detail-title"),
            Static(id="detail-description"),
            Static(id="detail-command", classes="field"),
            Static(id="detail-stepup", classes="field"),
            Label("Steps", classes="section runbook-only"),
            Static(id="detail-steps", classes="runbook-only"),
            Horizontal(
                Vertical(Label("Targets", classes="section"), SelectionList[str](id="targets"), id="targets-box"),
                Vertical(Label("Parameters", classes="section"), Vertical(id="params"), id="params-box"),
                id="detail-form"),
            Label("Dry run · exactly what will run", classes="section"),
            Static(id="preview"),
        ]
        await self.mount_all(parts)
        self._built = all(w.is_attached for w in parts)
        return self._built

    @property
    def action(self) -> Action | Runbook | None:
        """The action the pane shows, once its form is complete (None before the first, or for an empty list)."""
        return self._shown

    @property
    def draft(self) -> Draft | None:
        return self._drafts.get(self._action.id) if self._action else None

    async def show_action(self, action: Action | Runbook | None) -> None:
        """Fill the pane for ``action`` (None: nothing matches the filter). One at a time."""
        async with self._showing:
            if not self._built and not await self._build():
                return  # the app is closing
            if action is not None and action is self._action and self.query("#params Input, #params Select, #params Static"):
                return
            await self._show_action(action)
            self._shown = action

    async def _show_action(self, action: Action | Runbook | None) -> None:
        self._action = action
        self.set_class(isinstance(action, Runbook), "runbook")
        title = self.query_one("#detail-title", Static)
        params_box = self.query_one("#params", Vertical)
        targets = self.query_one("#targets", SelectionList)
        await params_box.remove_children()
        self._tags = []
        targets.clear_options()
        if action is None:
            title.update(Text("No action matches the filter", style="italic"))
            for wid in ("#detail-description", "#detail-command", "#detail-stepup", "#detail-steps", "#preview"):
                self.query_one(wid, Static).update("")
            return
        is_runbook = isinstance(action, Runbook)
        allowed = [] if is_runbook else self.config.targets_for(action)
        draft = self._drafts.setdefault(action.id, Draft(
            action, {n: "" if p.default is None else str(p.default) for n, p in action.params.items()},
            tuple(t.name for t in allowed), needs_reason=self.config.requirement_for(action).reason))
        head = Text.assemble((action.id, "bold"), "  ", risk_badge(action.risk, pad=False), "  ")
        if is_runbook:
            head.append(" RUNBOOK ", style="bold reverse")
            head.append("  ")
        head.append(action.title)
        title.update(head)
        self.query_one("#detail-description", Static).update(Text(action.description or "(no description)"))
        if is_runbook:
            names = ", ".join(t.name for t in self.config.targets_for(action))
            self.query_one("#detail-command", Static).update(Text.assemble(
                ("Runbook  ", "bold"), f"{len(action.steps)} steps in order on {names}; "
                "a failed step stops it (unless marked to go on)"))
        else:
            self.query_one("#detail-command", Static).update(
                Text.assemble(("Command  ", "bold"), (action.command, "italic")))
        self._update_stepup()
        # Tags first: choosing a tag picks every target that carries it.
        # Tags that pick a proper subset, one per distinct subset.
        tags, seen = [], set()
        for tag in sorted({tag for t in allowed for tag in t.tags}):
            members = frozenset(t.name for t in allowed if tag in t.tags)
            if len(members) < len(allowed) and members not in seen:
                seen.add(members)
                tags.append(tag)
        self._tags = tags
        options: list[Selection[str]] = []
        for tag in tags:
            members = [t.name for t in allowed if tag in t.tags]
            on = all(m in draft.targets for m in members)
            options.append(Selection(Text.assemble((f"{TAG_PREFIX}{tag}", "italic"), f" ({len(members)})"),
                                     TAG_PREFIX + tag, on))
        for t in allowed:
            label = Text(t.name)
            if t.tags:
                label.append(f"  {' '.join(t.tags)}", style="dim")
            options.append(Selection(label, t.name, t.name in draft.targets))
        targets.add_options(options)
        self._last_selected = set(targets.selected)
        widgets = []
        for name, param in action.params.items():
            value = draft.params.get(name, "")
            if param.choices is not None and not param.secret:
                # A list to pick from (type to jump to a choice), the default already picked.
                choices = [str(c) for c in param.choices]
                field = Select([(c, c) for c in choices], prompt="choose (enter)", allow_blank=param.default is None,
                               value=value if value in choices else Select.NULL, id=f"param-{name}",
                               classes="param-input param-select")
            else:
                field = ConsoleInput(value=value, placeholder=param.describe(), password=param.secret,
                                     validators=[ParamValidator(param)], validate_on=["changed", "submitted"],
                                     id=f"param-{name}", classes="param-input")
            field.border_title = name + ("" if param.required else " (optional)")
            widgets.append(field)
            widgets.append(Static(Text(param.description or "", style="dim"), id=f"param-note-{name}",
                                  classes="param-note"))
        if draft.needs_reason:
            field = ConsoleInput(value=draft.reason, placeholder="why: shown to approvers, kept in the trail",
                                 id="reason", classes="param-input")
            field.border_title = "reason"
            widgets.append(field)
        if not widgets:
            widgets.append(Static(Text("none", style="dim")))
        await params_box.mount_all(widgets)
        if not all(w.is_attached for w in widgets):
            return  # the app is closing
        for field in params_box.query(Select):
            # The name on the box, as on a typed field (a Select draws its border on its current value).
            field.query_one(SelectCurrent).border_title = field.border_title
        for name, param in action.params.items():
            value = draft.params.get(name, "")
            self._show_validation(name, ParamValidator(param).validate(value), typed=value != "")
        self._update_preview()

    def focus_first_problem(self) -> bool:
        """Put the cursor in the first param field that stops the run (missing or invalid); False if none."""
        draft = self.draft
        if draft is None:
            return False
        given = draft.request_params()
        for name, param in draft.action.params.items():
            value = given.get(name)
            try:
                if value is None:
                    if param.required:
                        raise ValueError("required")
                    continue
                check_value(param, value)
            except ValueError:
                fields = self.query(f"#param-{name}")
                if fields:
                    fields.first().focus()
                    return True
        if draft.needs_reason and not draft.reason.strip() and self.query("#reason"):
            self.query_one("#reason", Input).focus()
            return True
        return False

    def set_grant_text(self, text: str) -> None:
        """ "grant: OTP, 12:30 left" or "you will be asked for ..." (the app recomputes it every second)."""
        if text != self.grant_text:
            self.grant_text = text
            self._update_stepup()

    def _update_stepup(self) -> None:
        if self._action is None:
            return
        req = self.config.requirement_for(self._action)
        line = Text.assemble(("Step-up  ", "bold"), req.describe())
        if isinstance(self._action, Runbook):
            line.append(" · one step-up approves every step")
        if self.grant_text:
            line.append("  ·  ")
            line.append(self.grant_text, style="italic")
        self.query_one("#detail-stepup", Static).update(line)

    def _show_validation(self, name: str, result: ValidationResult | None, *, typed: bool = True) -> None:
        """✓ with the description when valid; ✗ and why when not (a plain hint before anything is typed)."""
        note = self.query_one(f"#param-note-{name}", Static)
        param = self._action.params[name]
        if result is None or result.is_valid:
            note.update(Text("✓ " + (param.description or "ok"), style="dim"))
            note.remove_class("invalid")
        elif not typed:
            note.update(Text("• " + (param.description + ": " if param.description else "") + param.describe()))
            note.remove_class("invalid")
        else:
            note.update(Text("✗ " + "; ".join(result.failure_descriptions)))
            note.add_class("invalid")

    def _update_preview(self) -> None:
        draft = self.draft
        preview = self.query_one("#preview", Static)
        if draft is None:
            preview.update("")
            return
        if draft.is_runbook:
            self._update_runbook_preview(draft)
            return
        command = draft.preview()
        if command is None or not draft.targets:
            problems = draft.problems()
            preview.update(Text("✗ not ready: " + "; ".join(problems), style="bold"))
            preview.add_class("invalid")
        else:
            preview.remove_class("invalid")
            preview.update(Text.assemble(("$ ", "bold"), command, "\n", ("on ", "dim"), ", ".join(draft.targets)))
        self.post_message(self.Changed(draft))

    def _update_runbook_preview(self, draft: Draft) -> None:
        preview = self.query_one("#preview", Static)
        problems = draft.problems()
        plan = None
        if not problems and self.plan_runbook is not None:
            try:
                plan = self.plan_runbook(draft.action.id, draft.request_params())
            except Exception as e:  # the planner's own checks (same as opsgate run)
                problems = [str(e)]
        self.query_one("#detail-steps", Static).update(runbook_steps(self.config, draft.action, plan))
        if problems:
            preview.update(Text("✗ not ready: " + "; ".join(problems), style="bold"))
            preview.add_class("invalid")
        else:
            preview.remove_class("invalid")
            preview.update(Text.assemble(("✓ ", "bold"), f"{len(draft.action.steps)} steps as listed above, "
                                         "commands rendered with these parameters"))
        self.post_message(self.Changed(draft))

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "reason" and self.draft is not None and event.input.is_attached:
            event.stop()
            self.draft.reason = event.value
            return
        if not (event.input.id or "").startswith("param-") or self.draft is None:
            return
        event.stop()
        name = event.input.id.removeprefix("param-")
        if not event.input.is_attached or name not in self.draft.action.params:
            return  # a late event from the previous action's form
        self.draft.params[name] = event.value
        self._show_validation(name, event.validation_result)
        self._update_preview()

    def on_select_changed(self, event: Select.Changed) -> None:
        if not (event.select.id or "").startswith("param-") or self.draft is None:
            return
        event.stop()
        name = event.select.id.removeprefix("param-")
        if not event.select.is_attached or name not in self.draft.action.params:
            return  # a late event from the previous action's form
        value = "" if event.value is Select.NULL else str(event.value)
        if self.draft.params.get(name) == value:
            return
        self.draft.params[name] = value
        self._show_validation(name, ParamValidator(self.draft.action.params[name]).validate(value))
        self._update_preview()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if ((event.input.id or "").startswith("param-") or event.input.id == "reason") and self.draft is not None:
            event.stop()
            self.post_message(self.Submitted(self.draft))

    def on_selection_list_selected_changed(self, event: SelectionList.SelectedChanged) -> None:
        event.stop()
        self._sync_targets()

    def _sync_targets(self) -> None:
        """Apply what the operator ticked: a tag entry picks or drops all its targets; tags follow."""
        draft = self.draft
        if draft is None or draft.is_runbook:
            return
        targets = self.query_one("#targets", SelectionList)
        now = set(targets.selected)
        before = self._last_selected
        if now == before:  # the echo of this method's own select()/deselect(), or of add_options
            return
        allowed = self.config.targets_for(draft.action)
        chosen = {v for v in now if not v.startswith(TAG_PREFIX)}
        for tag in self._tags:
            value = TAG_PREFIX + tag
            members = {t.name for t in allowed if tag in t.tags}
            if value in now and value not in before:
                chosen |= members
            elif value not in now and value in before:
                chosen -= members
        for t in allowed:
            targets.select(t.name) if t.name in chosen else targets.deselect(t.name)
        for tag in self._tags:
            members = {t.name for t in allowed if tag in t.tags}
            targets.select(TAG_PREFIX + tag) if members <= chosen else targets.deselect(TAG_PREFIX + tag)
        self._last_selected = set(targets.selected)
        draft.targets = tuple(t.name for t in allowed if t.name in chosen)
        self._update_preview()
