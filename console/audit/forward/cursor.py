"""How far the collector has the trail: ``STATE/forward.cursor``, the last record known delivered.

The cursor names that record's seq, the byte offset after its line in the local trail and its
hash; it is written atomically and durably. ``cursor_matches`` checks it against the trail before
forwarding goes on from it: a trail that was replaced or truncated is sent again from the start.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from opsgate.console.audit.forward import ForwardError
from opsgate.console.files import write_private

_LOOK_BACK = 256 * 1024  # bytes read back from the cursor's offset to find its line (a longer line: no match)


@dataclass(frozen=True)
class Cursor:
    """The last record the collector is known to have: its seq, the byte offset after its line, its hash."""

    seq: int = 0
    offset: int = 0
    hash: str | None = None

    @classmethod
    def load(cls, path: Path) -> Cursor:
        """The cursor in ``path``; a missing file is the start of the trail."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as e:
            raise ForwardError(f"{path}: cannot read the forward cursor: {e}") from None
        try:
            cursor = cls(int(data["seq"]), int(data["offset"]), data["hash"])
        except (KeyError, TypeError, ValueError):
            raise ForwardError(f"{path}: not a forward cursor (expected seq, offset, hash)") from None
        if cursor.seq < 0 or cursor.offset < 0:
            raise ForwardError(f"{path}: not a forward cursor (negative seq or offset)")
        return cursor

    def save(self, path: Path) -> None:
        """Write atomically and durably (temp file, fsync, rename, fsync the directory)."""
        write_private(path, (json.dumps({"seq": self.seq, "offset": self.offset, "hash": self.hash}) + "\n").encode("ascii"))


def cursor_matches(trail_path: Path, cursor: Cursor) -> bool:
    """Whether the line that ends at ``cursor.offset`` is the record the cursor names."""
    if cursor.offset == 0:
        return cursor.seq == 0
    try:
        with open(trail_path, "rb") as f:
            if os.fstat(f.fileno()).st_size < cursor.offset:
                return False
            start = max(0, cursor.offset - _LOOK_BACK)
            f.seek(start)
            data = f.read(cursor.offset - start)
    except FileNotFoundError:
        return False
    if not data.endswith(b"\n"):
        return False
    line = data[data.rfind(b"\n", 0, len(data) - 1) + 1:]
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("seq") == cursor.seq and record.get("hash") == cursor.hash
