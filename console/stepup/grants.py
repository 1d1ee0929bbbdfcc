"""Grants: the results of successful step-ups, kept in memory (TUI) and in the state dir (CLI).

A grant is bound to its operator (the file is keyed by operator and each entry names it again), and
remembers whether it was already used for a run (``max_age = 0``) and which request it was obtained
for, so an every-run requirement is only met by a step-up made for that very request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from opsgate.console.files import file_lock, write_private
from opsgate.console.stepup.credentials import read_private
from opsgate.console.errors import CredentialsError
from opsgate.console.catalog.policy import FACTORS, Grant
from opsgate.console.paths import GRANTS_FILE, GRANTS_LOCK



@dataclass(frozen=True)
class GrantRecord:
    grant: Grant
    used: bool = False  # already used for a run (matters when max_age is 0)
    request_digest: str | None = None  # hex digest of the request the step-up was made for


class GrantBook:
    """Current grant per operator; persisted 0600 in ``state_dir`` when given.

    ``write=False`` (the TUI): the state dir's grants (``opsgate auth``) are read, never written; the
    session's own grants, and a stored grant it has spent, are kept in memory only.
    """

    def __init__(self, state_dir: Path | None, *, write: bool = True):
        self._memory: dict[str, GrantRecord] = {}
        self.path = Path(state_dir) / GRANTS_FILE if state_dir else None
        self._lock_path = Path(state_dir) / GRANTS_LOCK if state_dir else None
        self.write = write

    def get(self, operator: str) -> GrantRecord | None:
        """The operator's grant record: the newer of memory and the state dir (read-only: memory when as new,
        since it is the stored grant as this session spent it)."""
        record = self._memory.get(operator)
        if self.path:
            with file_lock(self._lock_path, exclusive=False):
                stored = self._read().get(operator)
            if stored and (record is None or stored.grant.auth_time > record.grant.auth_time
                           or (self.write and stored.grant.auth_time == record.grant.auth_time)):
                record = stored
        return record

    def put(self, record: GrantRecord) -> None:
        """Keep ``record`` as its operator's current grant."""
        self._memory[record.grant.operator] = record
        if self.path and self.write:
            with file_lock(self._lock_path, exclusive=True):
                data = self._read()
                data[record.grant.operator] = record
                self._write(data)

    def mark_used(self, operator: str) -> None:
        """The grant was spent on a run: an every-run requirement needs a new step-up."""
        record = self.get(operator)
        if record is not None:
            self.put(replace(record, used=True))

    def _read(self) -> dict[str, GrantRecord]:
        raw = read_private(self.path, "grants file")
        if raw is None:
            return {}
        try:
            doc = json.loads(raw)
            out = {}
            for operator, entry in doc.items():
                grant = Grant(str(entry["operator"]), str(entry["factor"]), float(entry["auth_time"]),
                              entry.get("user_verified") is True)
                if grant.operator != operator or grant.factor not in FACTORS:
                    continue  # not bound to this operator: ignore rather than trust it
                out[operator] = GrantRecord(grant, bool(entry.get("used", False)), entry.get("request_digest"))
            return out
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CredentialsError(f"{self.path}: corrupted grants file ({e}); remove it and run `opsgate auth`") from None

    def _write(self, data: dict[str, GrantRecord]) -> None:
        doc = {op: {"operator": r.grant.operator, "factor": r.grant.factor, "auth_time": r.grant.auth_time,
                    "user_verified": r.grant.user_verified, "used": r.used, "request_digest": r.request_digest}
               for op, r in data.items()}
        try:
            write_private(self.path, json.dumps(doc, indent=1, sort_keys=True).encode())
        except OSError as e:
            raise CredentialsError(f"{self.path}: cannot write grants file: {e.strerror or e}") from None
