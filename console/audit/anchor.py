"""What the hash chain alone cannot show: a trail cut short or rewritten, recordings no record names, and
runs made under another config than the pinned one. ``opsgate audit verify`` runs these after the chain
check (``verify.py``); the history marks the same runs (``history.py``).

Head anchors
    A chain that verifies proves nothing about records cut off its end, nor about a trail rewritten from
    the start with a fresh chain. ``opsgate audit head`` prints the head hash; kept elsewhere (a ticket,
    another machine, a file), it is an anchor: ``verify --head HASH`` / ``--anchor FILE`` fail unless the
    trail still holds a record with that hash, in its verified part. An anchor file holds what
    ``opsgate audit head`` printed: one line, 64 lowercase hex digits (``opsgate audit head > FILE``);
    blank lines and lines starting with ``#`` are ignored, anything else is refused.

Orphaned recordings
    Every file under ``STATE/recordings/`` should be named by an ``action.target`` record. One that is not
    is what is left when records were cut off the end (or a console crashed between writing the recording
    and its record): each is reported as a warning, and counted. Warnings do not change the exit code (a
    crash leaves one legitimately); an anchor is what makes a cut trail fail.

Pinned policy
    Each ``action.start`` / ``runbook.start`` carries ``config_sha256``, the digest of the config it ran
    under (``config.loaded`` records it too). The pin is ``[console] pinned_policy`` when the reviewer's
    config sets it, else the first ``config.loaded`` digest in the trail. A run under another digest is a
    problem (exit 1) against an explicit pin, and a warning against the implicit one (a config is edited
    legitimately; pinning it is the reviewer's decision). Records without the field (written before it
    existed) are counted, not judged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from opsgate.console.audit.trail import hashed_prefix, record_if
from opsgate.console.events import ACTION_START, ACTION_TARGET, CONFIG_LOADED, RUNBOOK_START
from opsgate.console.paths import RECORDINGS_DIR

HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NEEDLES = (b'"recording":', b'"config_sha256":', b'"event":"' + CONFIG_LOADED.encode() + b'"')


class AnchorError(ValueError):
    """An anchor that is not a head hash (a bad ``--head`` or ``--anchor`` file)."""


def parse_head(text: str, where: str = "--head") -> str:
    """A head hash as ``opsgate audit head`` prints it (64 hex digits); AnchorError otherwise."""
    value = text.strip().lower()
    if not HEX64.match(value):
        raise AnchorError(f"{where}: expected a head hash (64 hex digits, as `opsgate audit head` prints), "
                          f"got {text.strip()[:80]!r}")
    return value


def read_anchor(path: Path) -> str:
    """The head hash in an anchor file (see the module docstring for the format)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise AnchorError(f"--anchor {path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if len(lines) != 1:
        raise AnchorError(f"--anchor {path}: expected one line holding a head hash, found {len(lines)}")
    return parse_head(lines[0], f"--anchor {path}")


@dataclass
class Run:
    """A run's start record and the config digest it carries (None: written before the field existed)."""

    seq: int
    run: str
    event: str
    config_sha256: str | None


@dataclass
class TrailFacts:
    """What one pass over the trail's lines gathers (hashes are not checked here: ``verify`` does that)."""

    heads: dict[str, int] = field(default_factory=dict)  # wanted head hash -> seq of the record holding it
    named: set[str] = field(default_factory=set)  # recording paths action.target records name
    first_config: str | None = None  # the first config.loaded digest
    runs: list[Run] = field(default_factory=list)


def scan(path: Path, heads: tuple[str, ...] = ()) -> TrailFacts:
    """One streaming pass over ``path``: where each of ``heads`` is, the recordings named, the config digests.

    Only lines that may matter are parsed (the rest is a byte search); a line that is not JSON is skipped
    (``verify`` reports it).
    """
    facts = TrailFacts()
    wanted = {h.encode("ascii"): h for h in heads}
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return facts
    with f:
        seq = 0
        for line in f:
            seq += 1
            if wanted:
                split = hashed_prefix(line)
                if split is not None and split[1] in wanted:
                    facts.heads[wanted[split[1]]] = _seq(line, seq)
            record = record_if(line, _NEEDLES)
            if record is None:
                continue
            event = record.get("event")
            if event == ACTION_TARGET and isinstance(record.get("recording"), str):
                facts.named.add(str(Path(record["recording"])))
            elif event == CONFIG_LOADED and facts.first_config is None and isinstance(record.get("sha256"), str):
                facts.first_config = record["sha256"]
            elif event in (ACTION_START, RUNBOOK_START) and isinstance(record.get("run"), str):
                digest = record.get("config_sha256")
                facts.runs.append(Run(record.get("seq") if isinstance(record.get("seq"), int) else seq,
                                      record["run"], event, digest if isinstance(digest, str) else None))
    return facts


def _seq(line: bytes, default: int) -> int:
    try:
        value = json.loads(line).get("seq")
    except (ValueError, AttributeError):
        return default
    return value if type(value) is int else default


def orphaned_recordings(state_dir: Path, named: set[str]) -> list[str]:
    """Files under ``STATE/recordings/`` (relative to the state dir, sorted) that no record names."""
    root = Path(state_dir)
    base = root / RECORDINGS_DIR
    if not base.is_dir():
        return []
    out = []
    for p in sorted(base.rglob("*")):
        if p.is_file() or p.is_symlink():
            rel = str(p.relative_to(root))
            if rel not in named:
                out.append(rel)
    return out


@dataclass
class PolicyCheck:
    """Runs under another config digest than the pinned one."""

    pinned: str | None
    explicit: bool  # the pin came from [console] pinned_policy (else: the trail's first config.loaded)
    mismatched: list[Run] = field(default_factory=list)
    checked: int = 0
    undigested: int = 0  # start records without config_sha256 (older records)


def check_policy(facts: TrailFacts, pinned_policy: str | None) -> PolicyCheck:
    pin = pinned_policy or facts.first_config
    check = PolicyCheck(pin, pinned_policy is not None)
    if pin is None:
        return check
    for run in facts.runs:
        if run.config_sha256 is None:
            check.undigested += 1
            continue
        check.checked += 1
        if run.config_sha256 != pin:
            check.mismatched.append(run)
    return check
