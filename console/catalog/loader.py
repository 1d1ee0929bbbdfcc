"""Load and validate the opsgate config (TOML) into the frozen model of ``model.py``.

Every problem is reported with the file and the key path, all at once:
``config.toml: actions.restart.params.service.pattern: invalid regular expression ...``.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from opsgate.console.catalog.model import (DEFAULT_POLICY, DEFAULT_RP_ID, FACILITIES, FORWARD_SCHEMES, PARAM_NAME,
                                           Action, Config, Forwarding, Gate, Param, Runbook, Settings, Step, Target,
                                           expand_targets, param_ref)
from opsgate.console.catalog.params import check_value, inert_params
from opsgate.console.catalog.policy import FACTORS, RISKS, Requirement
from opsgate.console.catalog.template import template_fields, unsafe_message, unsafe_placeholders
from opsgate.console.durations import parse_duration
from opsgate.console.errors import ConfigError

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HOP = (r"(?:ssh://)?(?:[A-Za-z0-9_][A-Za-z0-9_.+-]*@)?"  # [ssh://][user@]host[:port], host may be [v6]
        r"(?:[A-Za-z0-9_][A-Za-z0-9_.-]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_JUMP = re.compile(rf"^(?:none|{_HOP}(?:,{_HOP})*)$")  # a target's `jump`: ssh -J syntax

class _Checker:
    """Walks the raw TOML, collecting every problem with its key path."""

    def __init__(self, filename: str):
        self.filename = filename
        self.problems: list[str] = []
        self.warnings: list[str] = []  # the config loads; `opsgate check` shows them

    def error(self, path: str, message: str) -> None:
        self.problems.append(f"{self.filename}: {path}: {message}")

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{self.filename}: {path}: {message}")

    def table(self, raw: dict, path: str, allowed: dict[str, tuple[type, ...]], required=()) -> dict:
        """Keep the keys of ``raw`` that exist in ``allowed`` and have the right type."""
        out = {}
        for key in required:
            if key not in raw:
                self.error(f"{path}.{key}" if path else key, "missing required key")
        for key, value in raw.items():
            where = f"{path}.{key}" if path else key
            if key not in allowed:
                self.error(where, f"unknown key (expected one of: {', '.join(sorted(allowed))})")
                continue
            types = allowed[key]
            if not _is_type(value, types):
                self.error(where, f"expected {_type_names(types)}, got {_type_name(value)}")
                continue
            out[key] = value
        return out


def _is_type(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}.get(
        type(value), type(value).__name__
    )


def _type_names(types: tuple[type, ...]) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array", dict: "a table"}
    return " or ".join(names[t] for t in types)


def load_config(path: str | Path, *, default_operator: str | None = None, cache_dir: Path | None = None,
                cache_if: Callable[[Config], bool] | None = None) -> Config:
    """Read and validate ``path``. Raises ConfigError listing every problem found.

    With ``cache_dir`` (a private state dir), a config validated before from the same bytes is read from
    its cache there (cache.py), and a fresh load is written to it; `opsgate check` never passes one.
    ``cache_if`` says whether a config belongs in that dir (neither read from nor written to it if not)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror or e}") from None
    if cache_dir is None:
        return parse_config(data, str(path), path=path, default_operator=default_operator)
    from opsgate.console.catalog import cache

    try:
        key = cache.cache_key(data, str(path), default_operator)
    except OSError:  # the loader's own source cannot be read: no key to trust
        return parse_config(data, str(path), path=path, default_operator=default_operator)
    config = cache.read_cached(cache_dir, key)
    if config is not None and (cache_if is None or cache_if(config)):
        return config
    config = parse_config(data, str(path), path=path, default_operator=default_operator)
    if cache_if is None or cache_if(config):
        cache.write_cached(cache_dir, key, config)
    return config


def parse_config(data: bytes, filename: str = "config.toml", *, path: Path | None = None,
                 default_operator: str | None = None) -> Config:
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{filename}: not UTF-8 text: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{filename}: TOML syntax error: {e}") from None  # keeps line and column
    c = _Checker(filename)
    top = c.table(raw, "", {"console": (dict,), "policy": (dict,), "targets": (dict,), "actions": (dict,),
                            "runbooks": (dict,), "audit": (dict,), "gate": (dict,)})
    settings = _settings(c, top.get("console", {}), default_operator)
    policy = _policy(c, top.get("policy", {}))
    targets = _targets(c, top.get("targets", {}))
    actions = _actions(c, top.get("actions", {}), targets)
    runbooks = _runbooks(c, top.get("runbooks", {}), targets, actions)
    actions, runbooks = share_secrets(c, actions, runbooks)
    _check_placements(c, actions, runbooks)
    forwarding = _audit(c, top.get("audit", {}))
    gate = _gate(c, top["gate"]) if "gate" in top else None
    if gate is None:
        for risk, req in policy.items():
            if req.approvals:  # local mode: operator names are self-asserted, so a second one proves nothing
                c.error(f"policy.{risk}.approvals", "approvals need a [gate]: without one, operator names are "
                                                    "whatever the config says (remove approvals or configure a gate)")
    if c.problems:
        raise ConfigError("\n".join(c.problems), c.problems)
    return Config(path, hashlib.sha256(data).hexdigest(), settings, policy, targets, actions, runbooks, forwarding,
                  gate, tuple(c.warnings))


def share_secrets(c: _Checker, actions: dict[str, Action],
                  runbooks: dict[str, Runbook]) -> tuple[dict[str, Action], dict[str, Runbook]]:
    """The one rule for ``secret`` across a runbook and its actions: a runbook param and the action param a
    step binds it to (``params = { key = "{token}" }``) carry one value, so it is secret if either says so,
    and so is every param bound to it in turn (one action param fed by two runbooks). The model keeps the
    union, so everything that redacts (the trail, the terminal, step commands, errors) reads one flag.

    A param made secret this way is a warning, not an error: with the union nothing leaks, but a param its
    author left unmarked is now redacted (an action's own runs included), which they should see and
    write down."""
    parent: dict[tuple, tuple] = {}

    def root(node: tuple) -> tuple:
        while parent.setdefault(node, node) != node:
            node = parent[node]
        return node

    declared: dict[tuple, bool] = {}
    for rb in runbooks.values():
        for step in rb.steps:
            action = actions.get(step.action) if step.kind == "action" else None
            for name, value in (step.params.items() if action is not None else ()):
                ref = param_ref(value)
                if ref in rb.params and name in action.params:
                    rb_node, action_node = ("runbooks", rb.id, ref), ("actions", action.id, name)
                    declared[rb_node], declared[action_node] = rb.params[ref].secret, action.params[name].secret
                    parent[root(rb_node)] = root(action_node)
    marked: dict[tuple, list[tuple]] = {}  # component -> its params declared secret
    for node, flag in declared.items():
        if flag:
            marked.setdefault(root(node), []).append(node)
    promoted = {node for node, flag in declared.items() if not flag and root(node) in marked}
    for kind, owner, name in sorted(promoted):
        why = ", ".join(f"{'runbook' if k == 'runbooks' else 'action'} {o} param {n!r}"
                        for k, o, n in marked[root((kind, owner, name))])
        own_runs = ", the action's own runs included" if kind == "actions" else ""
        c.warn(f"{kind}.{owner}.params.{name}",
               f"not marked secret, but a runbook step binds it to a secret param ({why}): treated as secret "
               f"(redacted in the trail, on the terminal and in every step command{own_runs}); mark it secret = true")

    def shared(kind: str, owner: str, params: dict[str, Param]) -> dict[str, Param] | None:
        if not any((kind, owner, n) in promoted for n in params):
            return None
        return {n: replace(p, secret=True) if (kind, owner, n) in promoted else p for n, p in params.items()}

    actions = {aid: replace(a, params=new) if (new := shared("actions", aid, a.params)) else a
               for aid, a in actions.items()}
    runbooks = {rid: replace(r, params=new) if (new := shared("runbooks", rid, r.params)) else r
                for rid, r in runbooks.items()}
    return actions, runbooks


def _gate(c: _Checker, raw: dict) -> Gate:
    """``[gate]``: a console's way to its gate (socket or ssh), and the gate's own settings."""
    t = c.table(raw, "gate", {"socket": (str,), "ssh": (str,), "operators": (dict,), "certificate_window": (int, str),
                              "source_address": (str,), "approval_timeout": (int, str)})
    if "socket" in t and "ssh" in t:
        c.error("gate", "give socket or ssh, not both")
    operators = {}
    for login, name in t.get("operators", {}).items():
        if not isinstance(name, str) or not _ID.match(name):
            c.error(f"gate.operators.{login}", "expected an operator name")
        else:
            operators[login] = name
    durations = {}
    for key, default in (("certificate_window", 120.0), ("approval_timeout", 300.0)):
        try:
            durations[key] = parse_duration(t[key]) if key in t else default
        except ValueError as e:
            c.error(f"gate.{key}", str(e))
            durations[key] = default
    if not 10 <= durations["certificate_window"] <= 3600:
        c.error("gate.certificate_window", "must be between 10s and 1h (it only needs to outlast the connect)")
    socket = Path(t["socket"]).expanduser() if "socket" in t else None
    return Gate(socket, t.get("ssh"), operators, durations["certificate_window"], t.get("source_address"),
                durations["approval_timeout"])


def _settings(c: _Checker, raw: dict, default_operator: str | None) -> Settings:
    t = c.table(raw, "console", {
        "operator": (str,), "state_dir": (str,), "known_hosts": (list,), "max_parallel": (int,),
        "connect_timeout": (int, str), "rp_id": (str,), "authenticators": (list,), "attestation_roots": (list,),
        "pinned_policy": (str,),
    })
    known_hosts = []
    for i, item in enumerate(t.get("known_hosts", ["~/.ssh/known_hosts"])):
        if not isinstance(item, str):
            c.error(f"console.known_hosts[{i}]", f"expected a string, got {_type_name(item)}")
        else:
            known_hosts.append(Path(item).expanduser())
    max_parallel = t.get("max_parallel", 16)
    if max_parallel < 1:
        c.error("console.max_parallel", "must be at least 1")
        max_parallel = 1
    connect_timeout = 10.0
    if "connect_timeout" in t:
        try:
            connect_timeout = parse_duration(t["connect_timeout"]) or 10.0
        except ValueError as e:
            c.error("console.connect_timeout", str(e))
    operator = t.get("operator") or default_operator or _login_name()
    if not _ID.match(operator):
        c.error("console.operator", f"invalid operator name {operator!r}")
    state_dir = Path(t["state_dir"]).expanduser() if "state_dir" in t else None
    pinned = t.get("pinned_policy")
    if pinned is not None:
        pinned = pinned.strip().lower()
        if not re.match(r"^[0-9a-f]{64}$", pinned):
            c.error("console.pinned_policy", f"expected a config sha256 (64 hex digits), got {t['pinned_policy']!r}")
            pinned = None
    return Settings(operator, state_dir, tuple(known_hosts), max_parallel, connect_timeout,
                    t.get("rp_id", DEFAULT_RP_ID), *_authenticators(c, t), pinned_policy=pinned)


_AAGUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def _authenticators(c: _Checker, t: dict) -> tuple[tuple[str, ...] | None, tuple[Path, ...]]:
    """``console.authenticators`` (AAGUIDs, as lowercase UUIDs) and ``console.attestation_roots`` (PEM paths)."""
    allowed = None
    if "authenticators" in t:
        allowed = []
        for i, item in enumerate(t["authenticators"]):
            if not isinstance(item, str) or not _AAGUID.match(item):
                c.error(f"console.authenticators[{i}]", f"expected an AAGUID (32 hex digits, as "
                        f"\"cb69481e-8ff7-4039-93ec-0a2729a154a8\"), got {item!r}")
                continue
            h = item.replace("-", "").lower()
            allowed.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
        allowed = tuple(allowed)
    roots = []
    for i, item in enumerate(t.get("attestation_roots", [])):
        if not isinstance(item, str):
            c.error(f"console.attestation_roots[{i}]", f"expected a path, got {_type_name(item)}")
        else:
            roots.append(Path(item).expanduser())
    return allowed, tuple(roots)


def _audit(c: _Checker, raw: dict) -> Forwarding | None:
    """``[audit]``: only ``[audit.forward]`` so far; absent means no forwarding."""
    t = c.table(raw, "audit", {"forward": (dict,)})
    if "forward" not in t:
        return None
    where = "audit.forward"
    f = c.table(t["forward"], where, {
        "url": (str,), "ca_file": (str,), "cert_file": (str,), "key_file": (str,), "app_name": (str,),
        "facility": (str,), "head_interval": (int, str),
    }, required=("url",))
    if "url" not in f:
        return None
    from urllib.parse import urlsplit

    url = f["url"]
    scheme, _, rest = url.partition("://")
    transport = FORWARD_SCHEMES.get(scheme)
    if not rest or transport is None:
        c.error(f"{where}.url", f"expected syslog+tcp://HOST:PORT or syslog+tls://HOST:PORT, got {url!r}")
        return None
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as e:  # a port that is not a number or out of range
        c.error(f"{where}.url", f"bad port in {url!r}: {e}")
        return None
    ok = True
    if not host:
        c.error(f"{where}.url", f"no host in {url!r} (syslog+{transport}://HOST:PORT)")
        ok = False
    if port is None or port == 0:
        c.error(f"{where}.url", f"no port in {url!r} (syslog+{transport}://HOST:PORT; 6514 is usual)")
        ok = False
    if parts.username or parts.password or parts.path not in ("", "/") or parts.query or parts.fragment:
        c.error(f"{where}.url", f"only syslog+{transport}://HOST:PORT is allowed, got {url!r}")
        ok = False
    files = {k: Path(f[k]).expanduser() for k in ("ca_file", "cert_file", "key_file") if k in f}
    if transport == "tls" and "ca_file" not in files:
        c.error(f"{where}.ca_file", "syslog+tls needs ca_file: the CA that signed the collector's certificate")
        ok = False
    if transport == "tcp":
        for key in files:
            c.error(f"{where}.{key}", "only for syslog+tls:// URLs")
            ok = False
    if "key_file" in files and "cert_file" not in files:
        c.error(f"{where}.key_file", "needs cert_file (the client certificate it belongs to)")
        ok = False
    app_name = f.get("app_name", "opsgate")
    # RFC 5424 APP-NAME: 1 to 48 printable US-ASCII characters, no spaces.
    if not 1 <= len(app_name) <= 48 or not all(33 <= ord(ch) <= 126 for ch in app_name):
        c.error(f"{where}.app_name", f"expected 1 to 48 printable ASCII characters without spaces, got {app_name!r}")
        ok = False
    facility = f.get("facility", "authpriv")
    if facility not in FACILITIES:
        c.error(f"{where}.facility", f"unknown facility {facility!r} (expected one of: {', '.join(FACILITIES)})")
        ok = False
    head_interval = 60.0
    if "head_interval" in f:
        try:
            head_interval = parse_duration(f["head_interval"])
            if head_interval <= 0:
                raise ValueError("must be positive")
        except ValueError as e:
            c.error(f"{where}.head_interval", str(e))
            ok = False
    if not ok:
        return None
    return Forwarding(url, transport, host, port, files.get("ca_file"), files.get("cert_file"), files.get("key_file"),
                      app_name, facility, head_interval)


def _login_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no login name in a bare container
        return "operator"


def _policy(c: _Checker, raw: dict) -> dict[str, Requirement]:
    policy = dict(DEFAULT_POLICY)
    for risk, body in raw.items():
        where = f"policy.{risk}"
        if risk not in RISKS:
            c.error(where, f"unknown risk level (expected one of: {', '.join(RISKS)})")
            continue
        if not isinstance(body, dict):
            c.error(where, f"expected a table, got {_type_name(body)}")
            continue
        t = c.table(body, where, {
            "factor": (str,), "max_age": (int, str), "confirm": (bool,), "approvals": (int,),
            "user_verification": (bool,), "reason": (bool,),
        }, required=("factor",))
        factor = t.get("factor", "none")
        if factor not in FACTORS:
            c.error(f"{where}.factor", f"unknown factor {factor!r} (expected one of: {', '.join(FACTORS)})")
            factor = "none"
        max_age = 0.0
        if "max_age" in t:
            try:
                max_age = parse_duration(t["max_age"])
            except ValueError as e:
                c.error(f"{where}.max_age", str(e))
        approvals = t.get("approvals", 0)
        if approvals < 0:
            c.error(f"{where}.approvals", "must not be negative")
        if approvals and factor == "none":
            c.error(f"{where}.approvals", "approvals need a factor (otp or fido2) to approve with")
        policy[risk] = Requirement(factor, max_age, t.get("confirm", False), max(approvals, 0),
                                   t.get("user_verification", False), t.get("reason", False))
    return policy


def _targets(c: _Checker, raw: dict) -> dict[str, Target]:
    targets = {}
    for name, body in raw.items():
        where = f"targets.{name}"
        if not _ID.match(name):
            c.error(where, "invalid target name (letters, digits, '.', '_', '-')")
            continue
        if not isinstance(body, dict):
            c.error(where, f"expected a table, got {_type_name(body)}")
            continue
        t = c.table(body, where, {"host": (str,), "port": (int,), "user": (str,), "identity_file": (str,),
                                  "tags": (list,), "jump": (str,)})
        port = t.get("port")
        if port is not None and not 1 <= port <= 65535:
            c.error(f"{where}.port", "must be between 1 and 65535")
        tags = []
        for i, tag in enumerate(t.get("tags", [])):
            if not isinstance(tag, str) or not _ID.match(tag):
                c.error(f"{where}.tags[{i}]", "expected a tag name (letters, digits, '.', '_', '-')")
            else:
                tags.append(tag)
        host = t.get("host", name)
        if not host or host.startswith("-") or any(ch.isspace() for ch in host):
            c.error(f"{where}.host", f"invalid host {host!r}")
        jump = t.get("jump")
        if jump is not None and not _JUMP.match(jump):
            c.error(f"{where}.jump", f"invalid jump {jump!r} (\"none\", or \"[user@]host[:port]\" hops "
                                     f"separated by commas)")
        identity = Path(t["identity_file"]).expanduser() if "identity_file" in t else None
        targets[name] = Target(name, host, port, t.get("user"), identity, tuple(tags), jump)
    return targets


def _target_refs(c: _Checker, raw: list, where: str, targets: dict[str, Target]) -> tuple[str, ...]:
    """Target names and ``tag:NAME`` references, each checked against the declared targets."""
    all_tags = {tag for t in targets.values() for tag in t.tags}
    refs = []
    for i, ref in enumerate(raw):
        if not isinstance(ref, str):
            c.error(f"{where}[{i}]", f"expected a string, got {_type_name(ref)}")
        elif ref.startswith("tag:"):
            if ref[4:] not in all_tags:
                c.error(f"{where}[{i}]", f"no target has tag {ref[4:]!r}")
            refs.append(ref)
        elif ref not in targets:
            c.error(f"{where}[{i}]", f"unknown target {ref!r}")
        else:
            refs.append(ref)
    return tuple(refs)


def _actions(c: _Checker, raw: dict, targets: dict[str, Target]) -> dict[str, Action]:
    actions = {}
    for action_id, body in raw.items():
        where = f"actions.{action_id}"
        if not _ID.match(action_id):
            c.error(where, "invalid action id (letters, digits, '.', '_', '-')")
            continue
        if not isinstance(body, dict):
            c.error(where, f"expected a table, got {_type_name(body)}")
            continue
        t = c.table(body, where, {
            "title": (str,), "description": (str,), "risk": (str,), "targets": (list,), "command": (str,),
            "timeout": (int, str), "params": (dict,),
        }, required=("title", "risk", "targets", "command"))
        risk = t.get("risk", "low")
        if "risk" in t and risk not in RISKS:
            c.error(f"{where}.risk", f"unknown risk level {risk!r} (expected one of: {', '.join(RISKS)})")
        refs = _target_refs(c, t.get("targets", []), f"{where}.targets", targets)
        if "targets" in t and not t["targets"]:
            c.error(f"{where}.targets", "an action needs at least one target")
        timeout = None
        if "timeout" in t:
            try:
                timeout = parse_duration(t["timeout"]) or None
            except ValueError as e:
                c.error(f"{where}.timeout", str(e))
        params = _params(c, t.get("params", {}), f"{where}.params")
        command = t.get("command", "")
        if "command" in t:
            _check_command(c, command, f"{where}.command", params)
            for name in sorted(set(params) - template_fields(command)):
                c.error(f"{where}.params.{name}", "declared but not used in the command")
        actions[action_id] = Action(action_id, t.get("title", action_id), risk, command, refs,
                                    t.get("description", ""), timeout, params)
    return actions


def _check_command(c: _Checker, command: str, where: str, params: dict[str, Param]) -> None:
    """A command template must be non-empty and use only declared params (where they stand is checked once
    secret-ness is final: ``_check_placements``)."""
    if not command.strip():
        c.error(where, "must not be empty")
    for name in sorted(template_fields(command) - set(params)):
        c.error(where, f"uses {{{name}}} but no param {name!r} is declared")


def _check_placements(c: _Checker, actions: dict[str, Action], runbooks: dict[str, Runbook]) -> None:
    """Every placeholder only where the shell reads plain words: a quoted value inside the template's own
    quotes (or a substitution, a comment...) would not stay one literal word (template.py). Int params may
    stand anywhere, unless secret (read from stdin into a variable): so this runs after ``share_secrets``."""
    commands = [(a.command, f"actions.{a.id}.command", a.params) for a in actions.values()]
    commands += [(step.command, f"runbooks.{rb.id}.steps[{step.index - 1}].command", rb.params)
                 for rb in runbooks.values() for step in rb.steps if step.command is not None]
    for command, where, params in commands:
        for name, why in unsafe_placeholders(command, inert_params(params)):
            c.error(where, unsafe_message(name, why))


def _runbooks(c: _Checker, raw: dict, targets: dict[str, Target], actions: dict[str, Action]) -> dict[str, Runbook]:
    runbooks = {}
    for rb_id, body in raw.items():
        where = f"runbooks.{rb_id}"
        if not _ID.match(rb_id):
            c.error(where, "invalid runbook id (letters, digits, '.', '_', '-')")
            continue
        if rb_id in actions:
            c.error(where, f"an action is also called {rb_id!r}: `opsgate run {rb_id}` would be ambiguous")
        if not isinstance(body, dict):
            c.error(where, f"expected a table, got {_type_name(body)}")
            continue
        t = c.table(body, where, {"title": (str,), "description": (str,), "params": (dict,), "steps": (list,)},
                    required=("title", "steps"))
        params = _params(c, t.get("params", {}), f"{where}.params")
        steps = []
        for i, raw_step in enumerate(t.get("steps", [])):
            step = _step(c, raw_step, f"{where}.steps[{i}]", i + 1, params, targets, actions)
            if step is not None:
                steps.append(step)
        if "steps" in t and not t["steps"]:
            c.error(f"{where}.steps", "a runbook needs at least one step")
        used = set()
        for step in steps:
            used |= template_fields(step.command or "")
            used |= {ref for v in step.params.values() if (ref := param_ref(v))}
        for name in sorted(set(params) - used):
            c.error(f"{where}.params.{name}", "declared but not used by any step")
        risk = max((s.risk for s in steps if s.kind != "pause"), key=RISKS.index, default="low")
        runbooks[rb_id] = Runbook(rb_id, t.get("title", rb_id), risk, tuple(steps), t.get("description", ""), params)
    return runbooks


def _step(c: _Checker, raw: Any, where: str, index: int, rb_params: dict[str, Param],
          targets: dict[str, Target], actions: dict[str, Action]) -> Step | None:
    if not isinstance(raw, dict):
        c.error(where, f"expected a table, got {_type_name(raw)}")
        return None
    t = c.table(raw, where, {
        "action": (str,), "title": (str,), "command": (str,), "risk": (str,), "targets": (list,), "params": (dict,),
        "expect_exit": (int,), "expect_output": (str,), "pause": (str,), "skippable": (bool,), "on_failure": (str,),
    })
    kinds = [k for k in ("action", "command", "pause") if k in t]
    if len(kinds) != 1:
        c.error(where, "a step needs exactly one of: action, command, pause")
        return None
    kind = kinds[0]
    on_failure = t.get("on_failure", "stop")
    if on_failure not in ("stop", "continue"):
        c.error(f"{where}.on_failure", f"expected \"stop\" or \"continue\", got {on_failure!r}")
    if "expect_output" in t:
        try:
            re.compile(t["expect_output"])
        except re.error as e:
            c.error(f"{where}.expect_output", f"invalid regular expression: {e}")
    refs = _target_refs(c, t.get("targets", []), f"{where}.targets", targets)
    common = dict(expect_exit=t.get("expect_exit"), expect_output=t.get("expect_output"),
                  skippable=t.get("skippable", False), on_failure=on_failure)
    if kind == "pause":
        for key in ("targets", "params", "risk", "expect_exit", "expect_output"):
            if key in t:
                c.error(f"{where}.{key}", "a pause step takes only pause, title and skippable")
        return Step(index, t.get("title", t["pause"]), "pause", pause=t["pause"], skippable=t.get("skippable", False))
    if kind == "command":
        risk = t.get("risk")
        if risk not in RISKS:
            c.error(f"{where}.risk", f"an inline step needs a risk (one of: {', '.join(RISKS)})")
            risk = "low"
        if not refs:
            c.error(f"{where}.targets", "an inline step needs targets")
        if "params" in t:
            c.error(f"{where}.params", "inline steps use the runbook's params directly in command")
        _check_command(c, t["command"], f"{where}.command", rb_params)
        return Step(index, t.get("title", t["command"]), "command", risk, command=t["command"], targets=refs, **common)
    action = actions.get(t["action"])
    if action is None:
        c.error(f"{where}.action", f"unknown action {t['action']!r}")
        return None
    if "risk" in t:
        c.error(f"{where}.risk", f"the risk of an action step is the action's ({action.risk})")
    allowed = {t.name for t in expand_targets(targets, action.targets)}
    for i, ref in enumerate(refs):
        for target in expand_targets(targets, (ref,)):
            if target.name not in allowed:
                c.error(f"{where}.targets[{i}]", f"target {target.name!r} is not allowed for action {action.id}")
    values = {}
    for name, value in t.get("params", {}).items():
        pwhere = f"{where}.params.{name}"
        if name not in action.params:
            c.error(pwhere, f"action {action.id} has no param {name!r}")
        elif ref := param_ref(value):
            if ref not in rb_params:
                c.error(pwhere, f"refers to {value} but the runbook declares no param {ref!r}")
            values[name] = value
        elif not isinstance(value, (str, int)) or isinstance(value, bool):
            c.error(pwhere, f"expected a string or an integer, got {_type_name(value)}")
        else:

            try:
                check_value(action.params[name], str(value))
                values[name] = value
            except ValueError as e:
                c.error(pwhere, str(e))
    for name, param in action.params.items():
        if param.required and name not in t.get("params", {}):
            c.error(f"{where}.params", f"param {name!r} of action {action.id} is not provided")
    return Step(index, t.get("title", action.title), "action", action.risk, action=action.id, targets=refs,
                params=values, **common)


def _params(c: _Checker, raw: dict, path: str) -> dict[str, Param]:
    params = {}
    for name, body in raw.items():
        where = f"{path}.{name}"
        if not PARAM_NAME.match(name):
            c.error(where, "invalid param name (a letter or '_', then letters, digits or '_')")
            continue
        if not isinstance(body, dict):
            c.error(where, f"expected a table, got {_type_name(body)}")
            continue
        t = c.table(body, where, {
            "description": (str,), "type": (str,), "choices": (list,), "pattern": (str,), "min": (int,),
            "max": (int,), "default": (str, int), "secret": (bool,),
        })
        ptype = t.get("type", "str")
        if ptype not in ("str", "int"):
            c.error(f"{where}.type", f"unknown type {ptype!r} (expected str or int)")
            ptype = "str"
        item_type = int if ptype == "int" else str
        choices = None
        if "choices" in t:
            choices = tuple(t["choices"])
            if not choices:
                c.error(f"{where}.choices", "must not be empty")
            for i, choice in enumerate(choices):
                if not _is_type(choice, (item_type,)):
                    c.error(f"{where}.choices[{i}]", f"expected {_type_names((item_type,))}, got {_type_name(choice)}")
        pattern = t.get("pattern")
        if pattern is not None:
            if ptype == "int":
                c.error(f"{where}.pattern", "only for str params (int params use min and max)")
            try:
                re.compile(pattern)
            except re.error as e:
                c.error(f"{where}.pattern", f"invalid regular expression: {e}")
        for bound in ("min", "max"):
            if bound in t and ptype != "int":
                c.error(f"{where}.{bound}", "only for int params (set type = \"int\")")
        if "min" in t and "max" in t and t["min"] > t["max"]:
            c.error(f"{where}.min", "greater than max")
        if ptype == "str" and choices is None and pattern is None:
            # Quoting keeps a value from escaping the command, but only a rule says what is sane.
            c.error(where, "a str param needs choices or a pattern")
        param = Param(name, t.get("description", ""), ptype, choices, pattern, t.get("min"), t.get("max"),
                      t.get("default"), t.get("secret", False))
        if param.default is not None:

            try:
                check_value(param, str(param.default))
            except ValueError as e:
                c.error(f"{where}.default", str(e))
        params[name] = param
    return params
