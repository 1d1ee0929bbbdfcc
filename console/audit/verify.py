"""Verifying the audit trail: the hash chain, streamed (in parallel for big files), and the recordings.

What holds (``trail.py`` describes the record and line format): each line's ``hash`` is the sha256
of the exact bytes before it, the line is the canonical JSON of its record, ``seq`` counts up by
one and ``prev`` is the previous record's hash (``GENESIS`` for the first). ``verify`` streams the
file in blocks and never holds more than a few of them. A block is checked a sub-block at a time, all its
lines at once: first ``_verify_shaped`` (lines of any shapes whose keys and kinds of value this process has
learned from the trail, ``_Vocabulary``: one pattern over the bytes, hashes in a row, no records built), else
``_verify_batch`` (one parse, one canonical text, hashes in a row); a sub-block that neither passes is checked
line by line (``_verify_lines``, the reference), which finds and words the problem.
From ``PARALLEL_MIN_BYTES`` on, blocks are verified in worker processes that read the file themselves,
and linked in file order (benchmarks/audit.py measures both). ``verify_from`` goes on from an earlier
report's end, for a pane that follows the trail.

Recordings: every ``action.target`` record names a recording (relative to the state dir) and its
sha256, or says it could not be written (``recording_error``: the run stopped that target, outcome
``recording-failed``; what reached the file hashes right, but the recording is incomplete and does not
verify). ``check_recording`` is the one decision on a recording: whether it verifies and, if not,
why, and whether it can be played at all (``opsgate replay``, the TUI's replay and history screens
and ``opsgate audit export`` all ask it). It reads the whole file; ``verify`` and ``verify_from`` take a
``recording_digest`` in its place only from the TUI (``console.audit.checked``: a file unchanged since it was
hashed is not read again); ``opsgate audit verify`` hashes every recording.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from itertools import compress, repeat
from operator import add, and_, itemgetter, methodcaller
from pathlib import Path

from opsgate.actions.display import escape_line
from opsgate.console.audit.trail import ENCODER, GENESIS, REQUIRED, hashed_prefix, preview, record_hash
from opsgate.console.events import ACTION_TARGET, AUDIT_RECOVERED
from opsgate.console.files import FileShrank, read_complete_lines

_DECODER = json.JSONDecoder()


@dataclass
class VerifyReport:
    """What ``verify`` found. ``problems`` are one-line messages; the first names the first bad record."""

    ok: bool
    count: int  # records verified before the first bad one (all of them when ok)
    head: str | None  # hash of the last good record
    problems: list[str] = field(default_factory=list)
    first_bad_seq: int | None = None
    first_bad_line: int | None = None
    first_bad_offset: int | None = None
    recordings_checked: int = 0
    notes: list[str] = field(default_factory=list)  # not problems: e.g. audit.recovered records
    end_offset: int = 0  # byte offset after the last good record: where ``verify_from`` goes on
    last_seq: int = 0  # seq of the last good record (0: none)
    # (seq, line or None, path, sha256, recording_error) of each action.target record verified: what
    # ``check_recordings_of`` checks (``verify(check_recordings=False)`` leaves it to the caller)
    recordings: list = field(default_factory=list, repr=False, compare=False)


Digest = Callable[[Path], str]  # a recording's sha256 hex from its (resolved) path; raises OSError


PARALLEL_MIN_BYTES = 16 * 1024 * 1024  # below this, starting worker processes (~0.1 s) costs more than it saves
_SEQUENTIAL_BLOCK = 1024 * 1024
_PARALLEL_BLOCK = 2 * 1024 * 1024
_SCAN = 4096  # read at a time when looking for the end of a line
_SUB_BLOCK = 128 * 1024  # what _verify_batch takes at once: many records, and its objects stay in the CPU cache


@dataclass
class _Chunk:
    """What ``_verify_chunk`` found in a block of complete lines (picklable, for worker processes).

    Line numbers and byte counts are relative to the block; the caller makes them absolute.
    """

    count: int = 0  # good records before the first problem
    first_seq: object = None  # the first record's seq and prev, for the caller to link
    first_prev: object = None
    last_seq: int = 0  # the last good record
    last_hash: bytes = b""
    lines: int = 0  # lines read, the bad one included
    bytes: int = 0  # bytes of the good records
    problem: tuple[str, object] | None = None  # (what, the seq found on the bad line or None)
    # (seq, line, path, sha256, recording_error) of each action.target record: see _check_recordings
    recordings: list[tuple[object, int, object, object, object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _verify_chunk(data: bytes) -> _Chunk:
    """Verify a block of complete lines; the link into its first record is left to the caller.

    The block goes in sub-blocks of about ``_SUB_BLOCK`` bytes through ``_verify_shaped`` or else
    ``_verify_batch`` (every check at once over the sub-block, see there); a sub-block neither accepts is
    verified line by line (``_verify_lines``), which decides and words the problem. The report is the same
    either way.
    """
    chunk = _Chunk()
    seq: int | None = None
    prev: bytes | None = None
    pos, size = 0, len(data)
    if _VOCABULARY is None:  # the first chunk of this process: learn from its first lines, at most a range's
        head = data[:_PARALLEL_BLOCK]
        _vocabulary(head[:head.rfind(b"\n") + 1])
    try:
        while pos < size:
            end = data.find(b"\n", min(pos + _SUB_BLOCK, size) - 1) + 1 or size
            block = data[pos:end]
            batch = _verify_shaped(block, seq, prev, chunk.lines) or _verify_batch(block, seq, prev, chunk.lines)
            if batch is None:
                seq, prev = _verify_lines(block, chunk, seq, prev)
                if chunk.problem:
                    return chunk
            else:
                n, first_seq, first_prev, seq, prev, recordings, notes = batch
                if not chunk.count:
                    chunk.first_seq, chunk.first_prev = first_seq, first_prev
                chunk.recordings += recordings
                chunk.notes += notes
                chunk.count += n
                chunk.lines += n
                chunk.bytes += len(block)
            pos = end
        return chunk
    finally:
        if seq is not None:
            chunk.last_seq, chunk.last_hash = seq, prev


def _verify_lines(data: bytes, chunk: _Chunk, seq: int | None, prev: bytes | None) -> tuple[int | None, bytes | None]:
    """Verify ``data`` line by line into ``chunk``, going on from record ``seq`` whose hash is ``prev``
    (None: ``data`` starts the chunk); return the last good record's seq and hash. Stops at the first
    problem, which it puts in ``chunk.problem``.

    Per line: one sha256 over the exact bytes, one parse, one re-serialisation for the canonical check,
    and the link checks. This is the reference: ``_verify_batch`` accepts only what this accepts.
    """
    sha256, decode, encode = hashlib.sha256, _DECODER.decode, ENCODER.encode
    for line in data.splitlines(keepends=True):
        chunk.lines += 1
        split = hashed_prefix(line)
        if split is None:
            try:
                decode(line.decode("utf-8"))
                chunk.problem = ("no hash at the end of the line (not written by opsgate)", None)
            except ValueError as e:
                chunk.problem = (f"bad JSON: {e}", None)
            return seq, prev
        prefix, stored = split
        try:
            text = prefix.decode("utf-8")
            record = decode(text)
        except ValueError as e:  # UnicodeDecodeError is a ValueError
            chunk.problem = (f"bad JSON: {e}", None)
            return seq, prev
        if type(record) is not dict:
            chunk.problem = ("bad JSON: not an object", None)
            return seq, prev
        found = record.get("seq")
        if sha256(prefix).hexdigest().encode("ascii") != stored:
            chunk.problem = ("hash mismatch (the record was changed after it was written)", found)
            return seq, prev
        try:
            same = encode(record) == text
        except ValueError:
            same = False
        if not same:
            chunk.problem = ("not canonical JSON (sorted keys, no spaces): not written by opsgate", found)
            return seq, prev
        missing = [k for k in REQUIRED if k not in record]
        if missing:
            chunk.problem = (f"missing field(s): {', '.join(missing)}", found)
            return seq, prev
        if type(found) is not int:  # not a number (text can carry escapes into whoever shows it), bool, float
            chunk.problem = (f"seq is not an integer: {shown_value(found)}", None)
            return seq, prev
        if seq is None:
            chunk.first_seq, chunk.first_prev = found, record["prev"]
        else:
            problem = _link_problem(seq, prev, found, record["prev"])
            if problem:
                chunk.problem = (problem, found)
                return seq, prev
        _note(record, found, chunk.lines, chunk.recordings, chunk.notes)
        seq, prev = found, stored
        chunk.count += 1
        chunk.bytes += len(line)
    return seq, prev


def _note(record: dict, seq: int, line: int, recordings: list, notes: list) -> None:
    """What a good record adds besides the chain: the recording an ``action.target`` names (checked after
    the chain), and a note for an ``audit.recovered``."""
    event = record["event"]
    if event == ACTION_TARGET and "recording" in record:
        recordings.append((seq, line, record["recording"], record.get("recording_sha256"),
                           record.get("recording_error")))
    elif event == AUDIT_RECOVERED:
        notes.append(escape_line(f"seq {seq}: audit.recovered: {record.get('length')} bytes of a "
                                 f"truncated line cut at byte {record.get('offset')}: {record.get('preview')}"))


_HASH_KEY = b',"hash":"'  # every line ends in ,"hash":"<64 hex>"}\n (trail.py, "Line format")
_HASH_KEY_TEXT = _HASH_KEY.decode("ascii")
_LINE_END_TEXT = '"}'
_TAIL = len(_HASH_KEY) + 64 + len(_LINE_END_TEXT)  # what follows the hashed bytes (less their "}") on a line
_TAIL_JOIN = _LINE_END_TEXT + _HASH_KEY_TEXT
# Put between two lines' texts in the array _verify_batch parses. One byte (DEL), so looking for it in a block
# is a memchr; a block that holds one goes line by line. Not JSON syntax, and the encoder never escapes it.
_SENTINEL = "\x7f"
_SEPARATOR_TEXT = ',"' + _SENTINEL + '",'
_SEPARATOR = _SEPARATOR_TEXT.encode("ascii")
_REQUIRED_GETTER = itemgetter(*REQUIRED)
_HEXDIGEST = methodcaller("hexdigest")
# The canonical encoder, without the cycle check (parsed JSON has no cycles); the same text as ENCODER.
_CANONICAL = copy.copy(ENCODER)
_CANONICAL.check_circular = False


def _verify_batch(block: bytes, seq: int | None, prev: bytes | None, base: int = 0) -> tuple | None:
    """Every check ``_verify_lines`` makes, over a block of complete lines at once, going on from record
    ``seq`` (hash ``prev``; None: the block starts the chunk); None unless every line passes them all.

    Returns (records verified, first seq, first prev, last seq, last hash, recordings, notes), the recordings'
    line numbers counted from the block's start plus ``base`` (the lines before the block). How it stays
    exactly as strict as the per-line reference:

    - Every line ends in ``,"hash":"<64 hex>"}``, the hex being what sha256 gives for the line's hashed
      bytes (all lines' ends compared at once, as one string: each is of fixed length).
    - The hashed bytes of all lines are parsed as ONE JSON array, a sentinel string between two lines; the
      parse must give the sentinel at every odd index and an object at every even one. The sentinel does
      not occur in the block (else the reference decides), so in that text it occurs exactly at the n-1
      places put there.
    - The canonical text of that array must be that very text. It gives each sentinel element as
      ``"sentinel"``, and no object can hold the sentinel (the text has only n-1), so these are at the n-1
      places put there: the text between two of them, a line's bytes, is exactly the canonical text of the
      object between them. Each line is one canonical JSON object on its own (a string or an object cannot
      run across lines). The canonical text comes from ``_CANONICAL``, or (a block of like records) from
      ``_canonical_by_template``.
    - Then the fields: every REQUIRED field, seq an int counting up by one from ``seq``, each prev the
      line before's hash.
    """
    lines = block.split(b"\n")
    if lines.pop() or not lines or min(map(len, lines)) <= _TAIL:
        return None
    n = len(lines)
    texts = [line[:-_TAIL] + b"}" for line in lines]
    hexes = list(map(_HEXDIGEST, map(hashlib.sha256, texts)))
    tails = b"".join([line[-_TAIL:] for line in lines])
    if tails != (_HASH_KEY_TEXT + _TAIL_JOIN.join(hexes) + _LINE_END_TEXT).encode("ascii"):
        return None
    if _SENTINEL.encode("ascii") in block:
        return None
    try:
        text = "[" + _SEPARATOR.join(texts).decode("utf-8") + "]"
        items = _DECODER.decode(text)
        if type(items) is not list or len(items) != 2 * n - 1 or items[1::2] != [_SENTINEL] * (n - 1):
            return None
        records = items[0::2]
        fields = _canonical_by_template(records, text) if b"\\" not in block else None
        if fields is None:  # not a block of like records: the canonical encoder
            if _CANONICAL.encode(items) != text:
                return None
            seqs, _, events, _, _, prevs = zip(*map(_REQUIRED_GETTER, records))
            recorded = b'"recording":' in block
        elif fields is False:
            return None
        else:
            seqs, events, prevs, recorded = fields
    except (ValueError, KeyError, TypeError, RecursionError):  # TypeError: a record that is not an object
        return None
    first = seqs[0]
    if set(map(type, seqs)) != {int} or seqs != tuple(range(first, first + n)) or prevs[1:] != tuple(hexes[:-1]):
        return None
    if seq is not None and (first != seq + 1 or prevs[0] != prev.decode("ascii")):
        return None
    recordings: list = []
    notes: list = []
    if recorded or AUDIT_RECOVERED in events:
        for i, record in enumerate(records):
            _note(record, seqs[i], base + i + 1, recordings, notes)
    return n, first, prevs[0], seqs[-1], hexes[-1].encode("ascii"), recordings, notes


# How _canonical_by_template writes a value of each type, as the canonical encoder does: a string that needs
# no escape between quotes, int and float by their repr (an inf or nan comes out as no JSON text spells it,
# so such a line never matches), null (the argument, None, printed with no characters).
_TEMPLATE_FORMATS = {str: '"%s"', int: "%d", float: "%r", type(None): "%.0snull"}
_REQUIRED_SET = frozenset(REQUIRED)


def _canonical_by_template(records: list, text: str):
    """For a block of like records, confirm ``text`` (the array of records and sentinels) is their canonical
    text without running the encoder: (seqs, events, prevs, whether they have a recording field) if it is,
    False if it is not, None if the records are not alike or the template does not give ``text`` (then the
    caller asks the encoder).

    Alike: as many fields each, the first record's keys (sorted, checked once), and in each field values of
    one type among str, int, float and None. Their canonical text is then one format string filled per record
    (``%`` in C): each key in its canonical spelling, each value as ``_TEMPLATE_FORMATS`` writes it, which
    is exactly the encoder's text for it: ints and floats by their repr, and strings between quotes as
    they are, because the caller only asks when the block holds no backslash. Decoded from such a block
    (strict: no raw control characters), a string holds no quote, backslash or control character, i.e.
    nothing the encoder would escape. For the same reason no sentinel can be spelt with escapes, so the
    parse alone already put each line's bytes between two of the sentinels put there. A record with other
    keys is filled in with the first record's keys, so its text can only match if it has those keys.
    The type of every value is checked, not assumed from the first record: a list formatted as ``%r``
    comes out as its Python repr, which can be JSON, but not canonical JSON.
    """
    if len(set(map(len, records))) != 1:
        return None
    values = list(map(tuple, map(dict.values, records)))  # TypeError: a record that is not an object
    columns = list(zip(*values))
    formats = []
    for column in columns:
        types = set(map(type, column))
        form = _TEMPLATE_FORMATS.get(types.pop()) if len(types) == 1 else None
        if form is None:
            return None
        formats.append(form)
    shape = list(records[0])
    if shape != sorted(shape) or not _REQUIRED_SET.issubset(shape):
        return False
    template = "{" + ",".join(_CANONICAL.encode(key).replace("%", "%%") + ":" + form
                              for key, form in zip(shape, formats)) + "}"
    joined = _SEPARATOR_TEXT.join(map(template.__mod__, values))
    if len(joined) + 2 != len(text) or not text.startswith(joined, 1):  # text is "[" + joined + "]"
        return None
    where = {key: i for i, key in enumerate(shape)}
    return columns[where["seq"]], columns[where["event"]], columns[where["prev"]], "recording" in where


# -- a block of lines checked on their bytes against one pattern (_verify_shaped) -------------------------------

# A value as the canonical encoder writes it and as nothing else spells it. A string: characters with nothing to
# escape as they are (ensure_ascii=False: all but the quote, the backslash and control characters), those as the
# encoder escapes them (\" \\ \b \f \n \r \t, any other control character \u00XX in lowercase hex), nothing else
# escaped. An int with no leading zero, no sign on zero and at most 18 digits (far below the int parsing limit),
# not followed by what would make it a float. A float in the encoder's spelling (``float.__repr__``) when it is
# in fixed notation with at most 15 significant digits: at most 16 characters with the point (leading zeros
# included, so fewer digits than that for 0.0x), no trailing zero but in ``X.0``, no more than three zeros after
# ``0.`` (repr writes 1e-05 for 0.00001), fewer than 16 digits before the point (repr writes 1e+16); such a
# decimal d names the double x nearest it, and repr(x) is the shortest decimal that names x: it has at most 15
# digits too, and two decimals of at most 15 significant digits never name one double (DBL_DIG), so it is d,
# spelt as above. Any other float (an exponent, more digits) is not here: its line goes to _verify_batch.
# null, true, false. A flat list of those ([a,b], no trailing comma).
_STRING_SLOT = rb'"[^"\\\x00-\x1f]*+(?:\\(?:["\\bfnrt]|u00(?:0[0-7bef]|1[0-9a-f]))[^"\\\x00-\x1f]*+)*+"'
_INT_SLOT = rb"(?:0|-?[1-9][0-9]{0,17})(?![.eE0-9])"
_FLOAT_SLOT = (rb"(?=-?[0-9.]{3,16}[,}\]])-?(?:0\.(?:0|0{0,3}[1-9](?:[0-9]*[1-9])?)|[1-9][0-9]*\.(?:0|[0-9]*[1-9]))"
               rb"(?![0-9])")
_SCALAR_SLOT = b"(?:" + _STRING_SLOT + b"|" + _INT_SLOT + b"|null|true|false|" + _FLOAT_SLOT + b")"
_FLAT_SLOT = rb"\[(?:" + _SCALAR_SLOT + rb"(?:,(?!\])|(?=\])))*+\]"
# A value of one kind (JSON type), as the slots above spell it: a key's slot takes the kinds seen for it only
_KINDS = {str: _STRING_SLOT, int: _INT_SLOT, type(None): b"null", bool: b"true|false", float: _FLOAT_SLOT,
          list: _FLAT_SLOT}
_SEQ_SLOT = rb"(0|-?[1-9][0-9]{0,17})"
# prev and the stored hash: any 64 characters but a newline (``.``: much faster than a class), as every one of
# them must then equal a sha256 hex digest that _verify_shaped computed (the first prev: be 64 hex digits)
_PREV_SLOT = rb'"(.{64})"'
_LINE_END = rb'),"hash":"(.{64})"\}\n'
_HEX64 = re.compile(rb"[0-9a-f]{64}")
_DIGEST = methodcaller("digest")
# The event slot refuses the one spelling of audit.recovered (a string with nothing to escape), so a block holding
# one goes to _verify_batch, and _note has nothing to say about the others but recordings.
_EVENT_SLOT = b"(?!" + re.escape(ENCODER.encode(AUDIT_RECOVERED).encode("ascii")) + b")("
_ACTION_TARGET_TEXT = ENCODER.encode(ACTION_TARGET).encode("ascii")
_RECORDING_KEYS = ("recording", "recording_error", "recording_sha256")  # what _note reads: captured, in this order
_VOCABULARY_MAX = 96  # keys a line may have; beyond, lines with other keys go to _verify_batch
_NESTED_MAX = 32  # keys an object value may have (per key)
_LEARN_MAX = 24  # how many times a process recompiles its pattern for keys it had not seen


class _Vocabulary:
    """The keys lines may have and the kinds of their values, learned from the lines themselves, and the one
    pattern built from them.

    ``kinds``: for each key of a record, the kinds (JSON types: str, int, float, None, bool, list, dict) its values
    had; for a key whose value was an object or a list of objects, ``nested`` holds the keys those objects had,
    with the kinds of their values (no object: one level deep).
    The pattern matches one whole line whose hashed bytes are ``{"k1":v1,...}`` with keys from ``kinds`` in sorted
    order, each at most once, every REQUIRED one present; each value one of its key's kinds as ``_KINDS`` spells
    it, or (dict) an object of its nested keys, sorted, each at most once, each value one of that nested key's
    kinds, or a list of those objects. Captured: (the hashed bytes less their ``}``, event, prev, recording,
    recording_error, recording_sha256, seq, the stored hash), in that order: the order of the keys, as groups are
    numbered.
    """

    def __init__(self) -> None:
        self.kinds: dict[str, frozenset] = {key: frozenset((str,)) for key in (*REQUIRED, *_RECORDING_KEYS)}
        self.kinds["seq"] = frozenset((int,))
        self.kinds["run"] = frozenset((str, type(None)))
        self.kinds["recording_error"] = frozenset((str, type(None)))
        self.nested: dict[str, dict[str, frozenset]] = {}
        self.learned = 0
        self.pattern = self._compile()

    def _compile(self) -> re.Pattern:
        parts = []
        before_event = True
        for key in sorted(self.kinds):
            spelt = re.escape(_CANONICAL.encode(key).encode("utf-8")) + b":"
            if key == "seq":
                slot = _SEQ_SLOT
            elif key == "prev":
                slot = _PREV_SLOT
            else:
                slot = self._slot(key)
                if key in _RECORDING_KEYS:
                    slot = b"(" + slot + b")"
                elif key == "event":
                    slot = _EVENT_SLOT + slot + b")"
            if key == "event":
                parts.append(spelt + slot)
                before_event = False
            elif key in _REQUIRED_SET:
                parts.append(b"," + spelt + slot)
            elif before_event:  # every key before event is followed by a comma: event follows
                parts.append(b"(?:" + spelt + slot + b",)?+")
            else:
                parts.append(b"(?:," + spelt + slot + b")?+")
        return re.compile(b"(\\{" + b"".join(parts) + _LINE_END)

    def _slot(self, key: str) -> bytes:
        kinds = self.kinds[key]
        slots = [slot for kind, slot in _KINDS.items() if kind in kinds]
        if dict in kinds:
            members = b"".join(b"(?:" + re.escape(_CANONICAL.encode(k).encode("utf-8")) + b":"
                               + b"(?:" + b"|".join(slot for kind, slot in _KINDS.items() if kind in member) + b")"
                               + rb'(?:,(?=")|(?=\})))?+' for k, member in sorted(self.nested[key].items()))
            obj = rb"\{" + members + rb"\}"
            slots += [obj, rb"\[(?:" + obj + rb"(?:,(?!\])|(?=\])))*+\]"]
        return b"(?:" + b"|".join(slots) + b")"

    def learn(self, texts: list[bytes]) -> bool:
        """Add the keys and kinds of the records in ``texts`` (hashed bytes of lines the pattern did not match)
        that it can take (keys spelt without escapes, objects one level deep); True if the pattern changed."""
        if self.learned >= _LEARN_MAX:
            return False
        kinds, nested = dict(self.kinds), {key: dict(members) for key, members in self.nested.items()}
        known = {(key, kind) for key, key_kinds in kinds.items() for kind in key_kinds}  # the common case, at once
        for text in texts:
            try:
                record = _DECODER.decode(text.decode("utf-8"))
            except (ValueError, RecursionError):
                continue
            if type(record) is not dict:
                continue
            for key, value in record.items():
                kind = type(value)
                if (key, kind) in known and kind is not dict and kind is not list:
                    continue
                objects = [value] if kind is dict else [v for v in value if type(v) is dict] if kind is list else []
                if not _plain_key(key) or kind not in _KINDS and kind is not dict or not all(
                        _plain_key(k) and type(v) in _KINDS for obj in objects for k, v in obj.items()):
                    continue
                if objects or kind is dict:
                    kind = dict
                    members = nested.setdefault(key, {})
                    for obj in objects:
                        for k, v in obj.items():
                            members[k] = members.get(k, frozenset()) | {type(v)}
                kinds[key] = kinds.get(key, frozenset()) | {kind}
                known.add((key, kind))
        if kinds == self.kinds and nested == self.nested:
            return False
        if len(kinds) > _VOCABULARY_MAX or any(len(members) > _NESTED_MAX for members in nested.values()):
            return False
        self.kinds, self.nested = kinds, nested
        self.learned += 1
        self.pattern = self._compile()
        return True


def _plain_key(key: str) -> bool:
    """A key the encoder spells as it is, between quotes."""
    return _ESCAPED.search(key) is None


_ESCAPED = re.compile('["\\\\\x00-\x1f]')


_VOCABULARY: _Vocabulary | None = None  # built on first need (a worker process builds its own)


def _vocabulary(data: bytes) -> _Vocabulary:
    """This process's vocabulary; the first time, it learns from every line of ``data`` (complete lines) that
    the pattern does not match yet, so one compile usually serves the whole trail."""
    global _VOCABULARY
    if _VOCABULARY is None:
        _VOCABULARY = _Vocabulary()
        _VOCABULARY.learn(_unmatched(_VOCABULARY.pattern, data))
    return _VOCABULARY


def _unmatched(pattern: re.Pattern, data: bytes) -> list[bytes]:
    """The hashed bytes of the lines of ``data`` (complete lines) that ``pattern`` does not match."""
    return [line[:-_TAIL] + b"}" for line in data.split(b"\n")[:-1]
            if len(line) > _TAIL and not pattern.fullmatch(line + b"\n")]


def _verify_shaped(block: bytes, seq: int | None, prev: bytes | None, base: int = 0) -> tuple | None:
    """``_verify_batch`` for a block whose lines the vocabulary's pattern matches (``_Vocabulary``: lines of any
    shapes whose keys it has seen, values strings, ints, short floats, null, booleans, flat lists, objects one
    level deep): every check ``_verify_lines`` makes, on the block's bytes, without building records; None unless
    every line passes them all (the caller then asks ``_verify_batch``). When some line does not match, its keys
    are learned and the block tried once more. Returns what ``_verify_batch`` does (which declines some blocks this
    accepts: a DEL in a line), with the same ``base``.

    Why it is exactly as strict as the reference:

    - One ``findall`` of the pattern. Nothing it matches holds a newline but the one that ends it, so each
      match lies inside one line and ends at its newline, one match a line at most: matches whose lengths add up
      to the block's cover it, so they are its lines, each matched whole.
    - A matched line ends in ``,"hash":"<64 characters>"}`` and its hashed bytes (the first capture and ``}``)
      are ``{"k1":v1,...,"kn":vn}``: keys in strictly ascending order (code points: UTF-8 bytes sort alike), so
      each once, in the encoder's spelling, every REQUIRED one; every value in the one spelling the encoder gives
      it (the slots above), an object's keys likewise sorted, each once. The block is valid UTF-8 (checked at
      once: no line decodes differently alone), so such text parses (strict JSON) to a dict that the canonical
      encoder writes back as the very same text, with an int seq and a str prev.
    - sha256 of each line's hashed bytes is its stored hash; the prevs are the hashes of the lines before
      (all compared at once, each 64 characters long: so each is 64 hex digits and the text is canonical);
      the first prev is ``prev`` (64 hex digits too), or 64 hex digits when the block starts the chunk; the
      seqs count up by one; the first is ``seq`` + 1.
    - No line is an ``audit.recovered`` (the pattern refuses that event); the recording fields of every
      action.target line are the values its captures parse to, as the reference's ``_note`` reads them.
    """
    vocabulary = _vocabulary(block)
    for attempt in range(2):
        found = vocabulary.pattern.findall(block)
        n = len(found)
        if n:
            bodies, events, prevs, recorded, lost, digests, seqs, stored = zip(*found)
            if sum(map(len, bodies)) + (_TAIL + 1) * n == len(block):
                break
        if attempt or not block.endswith(b"\n") or not vocabulary.learn(_unmatched(vocabulary.pattern, block)):
            return None
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        return None
    hexes = b"".join(map(_DIGEST, map(hashlib.sha256, map(bytes.__add__, bodies, repeat(b"}", n))))).hex()
    hexes = hexes.encode("ascii")
    if b"".join(stored) != hexes or b"".join(prevs[1:]) != hexes[:-64]:
        return None
    numbers = list(map(int, seqs))
    first = numbers[0]
    if numbers != list(range(first, first + n)):
        return None
    if (prevs[0] != prev or first != seq + 1) if seq is not None else _HEX64.fullmatch(prevs[0]) is None:
        return None
    recordings: list = []
    if any(recorded):
        lines = list(compress(range(n), map(and_, map(_ACTION_TARGET_TEXT.__eq__, events), map(bool, recorded))))
        texts = [*map(recorded.__getitem__, lines), *[text or b"null" for text in map(digests.__getitem__, lines)],
                 *[text or b"null" for text in map(lost.__getitem__, lines)]]
        values = _DECODER.decode("[" + b",".join(texts).decode("utf-8") + "]")
        k = len(lines)
        recordings = list(zip(map(numbers.__getitem__, lines), map(add, lines, repeat(base + 1)), values[:k],
                              values[k:2 * k], values[2 * k:]))
    return n, first, prevs[0].decode("ascii"), numbers[-1], hexes[-64:], recordings, []


def shown_value(value: object, limit: int = 40) -> str:
    """A record's value (``seq``, ``prev``: anything, once edited) inside a problem message: escaped, cut."""
    return escape_line(value if isinstance(value, int) and type(value) is not bool else json.dumps(value), limit)


def _link_problem(seq: int, prev: bytes, found: object, found_prev: object) -> str | None:
    """Why a record with ``found``/``found_prev`` cannot follow record ``seq`` whose hash is ``prev``."""
    wrong = []
    if found != seq + 1:
        wrong.append(f"seq gap: expected {seq + 1}, found {shown_value(found)} (a record was removed or reordered?)")
    if found_prev != prev.decode("ascii"):
        wrong.append(f"broken link: prev {escape_line(str(found_prev)[:16])}... is not the hash of the previous "
                     f"record ({prev.decode('ascii')[:16]}...)")
    return "; ".join(wrong) or None


def _chunks(f, workers: int) -> Iterator[_Chunk | bytes]:
    """``_verify_chunk`` results in file order, then the trailing partial line (bytes, maybe empty)."""
    fd = f.fileno()
    st = os.fstat(fd)
    if workers <= 1:
        for start, end, complete in _line_ranges(fd, st.st_size, _SEQUENTIAL_BLOCK):
            yield _verify_chunk(_pread(fd, start, end)) if complete else _pread(fd, start, end)
        return
    from collections import deque

    task = (os.path.abspath(os.fsdecode(f.name)), (st.st_dev, st.st_ino))
    ranges = _line_ranges(fd, st.st_size, _PARALLEL_BLOCK)
    pool = _Workers(workers)
    # In file order: (start, end, the worker verifying it or None, the chunk when verified here).
    pending: deque[tuple[int, int, int | None, _Chunk | None]] = deque()
    tail: tuple[int, int] | None = None  # what follows the last newline
    answered = False  # no worker has answered yet: they are still starting, this process verifies meanwhile
    submitted = 0

    def next_range() -> tuple[int, int] | None:
        nonlocal tail
        if tail is None:
            for start, end, complete in ranges:
                if complete:
                    return start, end
                tail = (start, end)
        return None

    try:
        while True:
            while sum(1 for p in pending if p[2] is not None) < 2 * workers:  # bounded read-ahead
                span = next_range()
                if span is None:
                    break
                pending.append((*span, pool.submit(submitted % workers, (*task, *span)), None))
                submitted += 1  # round robin: each worker answers in the order it was asked
            if not pending:
                break
            start, end, worker, chunk = pending[0]
            if chunk is None and worker is not None and not answered and not pool.ready(worker):
                span = next_range()
                if span is not None:
                    pending.append((*span, None, _verify_chunk(_pread(fd, *span))))
                    continue
            pending.popleft()
            if chunk is None:
                chunk = pool.result(worker)
                answered = True
            yield chunk if chunk is not None else _verify_chunk(_pread(fd, start, end))
        yield _pread(fd, *tail) if tail is not None else b""
    finally:
        pool.close()


# A worker's program: the parent's sys.path first (as multiprocessing's spawn passes it), then _serve().
_WORKER = ("import pickle, sys; n = int.from_bytes(sys.stdin.buffer.read(8), 'big'); "
           "sys.path[:] = pickle.loads(sys.stdin.buffer.read(n)); "
           "from opsgate.console.audit.verify import _serve; _serve()")


class _Workers:
    """Worker processes for ``verify``: each a fresh interpreter (``python -I -c _WORKER``) that imports this
    module and nothing else (not the caller's ``__main__``, as multiprocessing's spawn would: the CLI's
    would cost each worker more than it saves), and reads the trail itself: only offsets and the small
    ``_Chunk`` answers go through its pipes. A worker that cannot start or dies answers None, and the
    caller verifies that range itself. Not fork: the caller may be a threaded program (the TUI)."""

    def __init__(self, count: int):
        import subprocess
        import sys

        self._procs: list = []
        for _ in range(count):
            try:
                proc = subprocess.Popen([sys.executable, "-I", "-c", _WORKER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True,
                                        bufsize=0)
                _send(proc.stdin, list(sys.path))
            except (OSError, TypeError, ValueError):  # no sys.executable here (embedded): verify in-process
                proc = None
            self._procs.append(proc)

    def submit(self, worker: int, task: tuple) -> int | None:
        """Ask ``worker`` to verify ``task`` (a ``_verify_range`` call); returns who to ask for the result."""
        proc = self._procs[worker]
        if proc is not None:
            try:
                _send(proc.stdin, task)
                return worker
            except OSError:
                self._drop(worker)
        return None

    def ready(self, worker: int) -> bool:
        """True when ``worker`` has an answer waiting (or is gone): ``result`` would not wait."""
        import select

        proc = self._procs[worker]
        return proc is None or bool(select.select([proc.stdout], [], [], 0)[0])

    def result(self, worker: int | None) -> _Chunk | None:
        """The answer to ``worker``'s oldest task (None: do it yourself)."""
        proc = self._procs[worker] if worker is not None else None
        if proc is None:
            return None
        try:
            answer = _receive(proc.stdout)
        except (OSError, EOFError, ValueError):
            answer = None
        if answer is None:
            self._drop(worker)
        return answer

    def _drop(self, worker: int) -> None:
        proc, self._procs[worker] = self._procs[worker], None
        if proc is not None:
            proc.kill()
            proc.wait()
            proc.stdin.close()
            proc.stdout.close()

    def close(self) -> None:
        """Stop every worker (one still verifying is killed: its answer is no longer wanted)."""
        for worker in range(len(self._procs)):
            self._drop(worker)


def _send(stream, value: object) -> None:
    import pickle

    data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    view = memoryview(len(data).to_bytes(8, "big") + data)
    while view:
        view = view[stream.write(view):]
    stream.flush()


def _receive(stream) -> object:
    """The next value ``_send`` wrote to ``stream``; EOFError when it was closed."""
    import pickle

    size = int.from_bytes(_read_exactly(stream, 8), "big")
    return pickle.loads(_read_exactly(stream, size))


def _read_exactly(stream, size: int) -> bytes:
    parts = []
    while size:
        data = stream.read(size)
        if not data:
            raise EOFError
        parts.append(data)
        size -= len(data)
    return b"".join(parts)


def _serve() -> None:
    """A worker's loop (``_Workers``): answer ``_verify_range`` tasks from stdin on stdout until stdin closes."""
    import gc
    import sys

    gc.disable()  # verifying makes no cycles, but many short-lived tuples; this process does nothing else
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            task = _receive(stdin)
        except EOFError:
            return
        _send(stdout, _verify_range(*task))


def _pread(fd: int, start: int, end: int) -> bytes:
    """Bytes ``start`` to ``end`` of ``fd`` (fewer if the file is shorter now)."""
    parts = []
    while start < end:
        data = os.pread(fd, end - start, start)
        if not data:
            break
        parts.append(data)
        start += len(data)
    return b"".join(parts)


def _line_ranges(fd: int, size: int, block: int) -> Iterator[tuple[int, int, bool]]:
    """(start, end, True) for runs of complete lines of about ``block`` bytes, in order, found by reading
    only around their ends; then (start, size, False): what follows the last newline (maybe nothing)."""
    start = 0
    while start < size:
        end = _line_end(fd, min(start + block, size) - 1, size)
        if end is None:  # no newline from there on: the complete lines (if any) end at the last newline
            last = start + _pread(fd, start, size).rfind(b"\n") + 1
            if last > start:
                yield start, last, True
                start = last
            break
        yield start, end, True
        start = end
    yield start, size, False


def _line_end(fd: int, pos: int, size: int) -> int | None:
    """The offset after the first newline at or after ``pos``, or None."""
    while pos < size:
        window = os.pread(fd, min(_SCAN, size - pos), pos)
        if not window:
            return None
        i = window.find(b"\n")
        if i >= 0:
            return pos + i + 1
        pos += len(window)
    return None


def _verify_range(path: str, ident: tuple[int, int], start: int, end: int) -> _Chunk | None:
    """``_verify_chunk`` over bytes ``start`` to ``end`` of ``path``, read here, in a worker process (so the
    bytes do not go through a pipe); None if ``path`` is no longer the file ``ident`` (device, inode) the
    caller opened, or it is shorter: the caller then reads them from its own descriptor."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != ident:
            return None
        data = _pread(fd, start, end)
    finally:
        os.close(fd)
    return _verify_chunk(data) if len(data) == end - start else None


def verify(path: Path, *, state_dir: Path | None = None, check_recordings: bool = True,
           workers: int | None = None, recording_digest: Digest | None = None) -> VerifyReport:
    """Check the whole chain, streaming, and the recordings that ``action.target`` records name.

    The chain check stops at the first bad record (everything after it is unanchored); recordings
    are checked for the records before it. ``state_dir`` defaults to the trail's directory.
    ``workers`` > 1 verifies blocks in that many processes; by default that happens for files of
    ``PARALLEL_MIN_BYTES`` or more on a multi-core machine. The report is the same either way.
    ``recording_digest`` finds a recording's sha256 instead of reading the file (the TUI's cache).
    """
    path = Path(path)
    state_dir = Path(state_dir) if state_dir is not None else path.parent
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return VerifyReport(ok=False, count=0, head=None, problems=[f"no audit trail at {path}"])
    except OSError as e:
        return VerifyReport(ok=False, count=0, head=None, problems=[f"{path}: cannot read: {e.strerror or e}"])
    report = VerifyReport(ok=True, count=0, head=None)
    recordings: list[tuple[object, int, object, object, object]] = []
    seq, prev, number, offset = 0, GENESIS.encode("ascii"), 0, 0

    def bad(what: str, found: object, line: int, at: int) -> None:
        shown = f"seq {shown_value(found)}" if found is not None else f"expected seq {seq + 1}"
        report.ok = False
        report.problems.append(f"line {line} ({shown}, byte {at}): {what}")
        report.first_bad_seq = found if isinstance(found, int) else seq + 1
        report.first_bad_line, report.first_bad_offset = line, at

    with f:
        if workers is None:
            big = os.fstat(f.fileno()).st_size >= PARALLEL_MIN_BYTES
            workers = min(os.cpu_count() or 1, 4) if big else 1
        chunks = _chunks(f, workers)
        for chunk in chunks:
            if isinstance(chunk, bytes):
                if chunk:
                    bad(f"truncated last line ({len(chunk)} bytes, no newline; a crash?): {preview(chunk)}",
                        None, number + 1, offset)
                break
            if chunk.count:
                link = _link_problem(seq, prev, chunk.first_seq, chunk.first_prev)
                if link:
                    bad(link, chunk.first_seq, number + 1, offset)
                    break
                seq, prev = chunk.last_seq, chunk.last_hash
            report.count += chunk.count
            report.notes += chunk.notes
            if chunk.recordings:  # line numbers made absolute, the tuples built in C (many per chunk)
                seqs, lines, *rest = zip(*chunk.recordings)
                recordings += zip(seqs, map(add, lines, repeat(number)), *rest)
            if chunk.problem:
                bad(chunk.problem[0], chunk.problem[1], number + chunk.lines, offset + chunk.bytes)
                offset += chunk.bytes  # the good records of this block stay verified
                break
            number += chunk.lines
            offset += chunk.bytes
        chunks.close()  # stops the workers early after a problem
    report.head = prev.decode("ascii") if seq else None
    report.end_offset, report.last_seq = offset, seq
    report.recordings = recordings

    if check_recordings:
        check_recordings_of(report, state_dir, digest=recording_digest)
    return report


def check_recordings_of(report: VerifyReport, state_dir: Path, *, digest: Digest | None = None,
                        known: Callable[[str], str | None] | None = None) -> None:
    """Check each recording in ``report.recordings`` (seq, line, path, sha256, recording_error) named by an
    action.target record; add a problem per mismatch, and per recording that could not be written (incomplete
    evidence). ``verify`` calls it; a caller that verified with ``check_recordings=False`` may call it later.

    ``known`` (the TUI's cache, ``console.audit.checked``): the sha256 of the file at a plain path
    (``STATE/a/b.cast``, no symlink resolved), when it is the very file hashed before and unchanged since; else
    None. A recording it knows is judged on that sha256 without resolving its path (it was inside the state dir
    when it was hashed: the cache keeps resolved paths); the others as ``check_recording`` does."""
    root = os.path.realpath(state_dir)
    for rec_seq, rec_line, rel, expected, lost in report.recordings:
        problem = _check(root, rel, expected, lost=lost, digest=digest, known=known).problem
        report.recordings_checked += 1
        if problem:
            report.ok = False
            where = f"line {rec_line} (seq {rec_seq})" if rec_line is not None else f"seq {rec_seq}"
            report.problems.append(f"{where}: recording {escape_line(rel)}: {problem}")


def verify_from(path: Path, offset: int, seq: int, prev_hash: str | None, *, state_dir: Path | None = None,
                check_recordings: bool = True, recording_digest: Digest | None = None) -> VerifyReport:
    """Verify only the records after byte ``offset``, chained to the verified record ``seq``/``prev_hash``.

    Same rules as ``verify`` (hash over the exact line bytes, canonical form, seq and prev links,
    recordings of new ``action.target`` records); ``offset``, ``seq`` and ``prev_hash`` come from the
    ``end_offset``, ``last_seq`` and ``head`` of an earlier report (0, 0, None for an empty trail).
    ``count`` is the number of new records verified. A last line without its newline yet is left for
    the next call (a writer may be appending it); a full ``verify`` reports a truly truncated one.
    Records before ``offset`` are not read again: only a full ``verify`` sees an edit there.
    """
    path = Path(path)
    state_dir = Path(state_dir) if state_dir is not None else path.parent
    report = VerifyReport(ok=True, count=0, head=prev_hash, end_offset=offset, last_seq=seq)
    try:
        data = read_complete_lines(path, offset)
    except FileShrank:
        report.ok = False
        report.problems.append(f"the trail shrank below byte {offset} (replaced or truncated?)")
        report.first_bad_offset = offset
        return report
    except FileNotFoundError:
        if offset == 0:
            return report
        return VerifyReport(ok=False, count=0, head=prev_hash, problems=[f"no audit trail at {path}"],
                            end_offset=offset, last_seq=seq)
    except OSError as e:
        return VerifyReport(ok=False, count=0, head=prev_hash, end_offset=offset, last_seq=seq,
                            problems=[f"{path}: cannot read: {e.strerror or e}"])
    if not data:
        return report
    chunk = _verify_chunk(data)
    prev = (prev_hash or GENESIS).encode("ascii")

    def bad(what: str, found: object, at: int) -> None:
        shown = f"seq {shown_value(found)}" if found is not None else f"expected seq {report.last_seq + 1}"
        report.ok = False
        report.problems.append(f"byte {at} ({shown}): {what}")
        report.first_bad_seq = found if isinstance(found, int) else report.last_seq + 1
        report.first_bad_offset = at

    if chunk.count:
        link = _link_problem(seq, prev, chunk.first_seq, chunk.first_prev)
        if link:
            bad(link, chunk.first_seq, offset)
            return report
        report.count = chunk.count
        report.last_seq, report.head = chunk.last_seq, chunk.last_hash.decode("ascii")
        report.end_offset = offset + chunk.bytes
    report.notes += chunk.notes
    if chunk.problem:
        bad(chunk.problem[0], chunk.problem[1], offset + chunk.bytes)
    report.recordings = [(s, None, rel, sha, lost) for s, _, rel, sha, lost in chunk.recordings]  # lines: relative
    if check_recordings:
        check_recordings_of(report, state_dir, digest=recording_digest)
    return report


class RecordingStatus(Enum):
    """Whether a recording verifies, or the first reason it does not."""

    OK = "ok"  # the file hashes to the sha256 its audit record gives
    NOT_RECORDED = "not-recorded"  # the record names no recording path and sha256
    OUTSIDE = "outside"  # the path leads out of the state dir
    MISSING = "missing"
    UNREADABLE = "unreadable"
    HASH_MISMATCH = "hash-mismatch"  # the file changed since the run
    INCOMPLETE = "incomplete"  # the record says it could not be written (recording-failed): not all is on record
    RECORD_CHANGED = "record-changed"  # the action.target record does not match its own hash


_CANNOT_OPEN = (RecordingStatus.NOT_RECORDED, RecordingStatus.OUTSIDE, RecordingStatus.MISSING,
                RecordingStatus.UNREADABLE)


@dataclass(frozen=True)
class RecordingCheck:
    """What ``check_recording`` decided: does the recording verify, and can it be played at all.

    A recording that does not verify may still be played (a reviewer may look; ``opsgate replay``
    needs ``--force``): a changed file, or a file whose record was changed. One that is not
    recorded, missing, unreadable or outside the state dir never is.
    """

    status: RecordingStatus
    problem: str | None = None  # why it does not verify, for people; None when it does
    cannot_play: str | None = None  # why it cannot be opened at all, for people; None when it can

    @property
    def verified(self) -> bool:
        return self.status is RecordingStatus.OK

    @property
    def playable(self) -> bool:
        return self.cannot_play is None


def recording_target(state_dir: Path, rel: str) -> Path | None:
    """The file ``rel`` names under ``state_dir``, symlinks resolved; None when that leads out of the state dir."""
    return _target(os.path.realpath(state_dir), rel)


def _target(root: str, rel: str) -> Path | None:
    """``recording_target`` under ``root``, a resolved path. A plain ``a/b/c`` whose every step exists and is no
    symlink is ``root/a/b/c`` (an lstat per step); anything else is resolved in full, as ``Path.resolve`` does."""
    if os.path.isabs(rel) or "\0" in rel:  # no file has a NUL in its name: a forged record's path
        return None
    if _plain(rel):
        target = root
        try:
            for part in rel.split("/"):
                target = os.path.join(target, part)
                if stat.S_ISLNK(os.lstat(target).st_mode):
                    break
            else:
                return Path(target)
        except OSError:
            pass  # missing, or not a directory: the full resolution says where it leads
    target = os.path.realpath(os.path.join(root, rel))
    inside = root if root.endswith(os.sep) else root + os.sep
    return Path(target) if target == root or target.startswith(inside) else None


def _plain(rel: str) -> bool:
    """``a/b/c``: relative, no ``.``, ``..`` or empty step, no NUL."""
    parts = rel.split("/")
    return not rel.startswith("/") and "\0" not in rel and "" not in parts and "." not in parts and ".." not in parts


def _check_file(root: str, rel: object, expected: object, digest_of: Digest | None = None,
                known: Callable[[str], str | None] | None = None) -> tuple[RecordingStatus, str | None]:
    """The recording file at ``root/rel`` (``root``: the resolved state dir) against ``expected``: (status, what
    is wrong or None)."""
    if not isinstance(rel, str) or not isinstance(expected, str):
        return RecordingStatus.NOT_RECORDED, "the record does not name a recording path and sha256"
    if "\x00" in rel:  # no file has such a name: a forged record, never a crash of the reviewer's verify
        return RecordingStatus.NOT_RECORDED, "the record's recording path holds a NUL byte"
    digest = known(os.path.join(root, rel)) if known is not None and _plain(rel) else None
    if digest is None:
        target = _target(root, rel)
        if target is None:
            return RecordingStatus.OUTSIDE, "path is outside the state dir"
        try:
            if digest_of is None:
                from opsgate.console.audit.recording import file_sha256 as digest_of  # verify's workers need none

            digest = digest_of(target)
        except FileNotFoundError:
            return RecordingStatus.MISSING, "missing"
        except OSError as e:
            return RecordingStatus.UNREADABLE, f"cannot read: {e.strerror or e}"
    if digest != expected:
        return (RecordingStatus.HASH_MISMATCH,
                f"changed since the run (sha256 {digest[:16]}..., the trail says {expected[:16]}...)")
    return RecordingStatus.OK, None


def check_recording(state_dir: Path, rel: object, expected: object, *, record: dict | None = None,
                    lost: object = None, digest: Digest | None = None) -> RecordingCheck:
    """Check the recording ``rel`` (relative to ``state_dir``) against the sha256 ``expected``.

    ``lost`` (or ``record``'s ``recording_error``) says the recording could not be written: a file that
    matches is then INCOMPLETE, never OK (it may be played: it holds what was recorded before).
    With ``record`` (the ``action.target`` record naming it), that record must also still match
    its own hash; if it does not, that is the problem reported (the file's sha256 then proves
    nothing), though the file may still be played. ``digest`` finds the file's sha256 (default: read it all).
    """
    return _check(os.path.realpath(state_dir), rel, expected, record=record, lost=lost, digest=digest)


def _check(root: str, rel: object, expected: object, *, record: dict | None = None, lost: object = None,
           digest: Digest | None = None, known: Callable[[str], str | None] | None = None) -> RecordingCheck:
    status, problem = _check_file(root, rel, expected, digest, known)
    lost = lost or (record or {}).get("recording_error")
    if lost and status is RecordingStatus.OK:
        status = RecordingStatus.INCOMPLETE
        problem = (f"incomplete: it could not be written during the run ({str(lost)[:200]}); the target's "
                   f"outcome is recording-failed")
    cannot_play = None
    if status in _CANNOT_OPEN:
        cannot_play = ("the audit record names no recording" if not isinstance(rel, str)
                       else f"cannot play it: {problem}")
    if record and record.get("hash") != record_hash(record):
        status = RecordingStatus.RECORD_CHANGED
        problem = f"its audit record (seq {shown_value(record.get('seq'))}) does not match its own hash"
    return RecordingCheck(status, problem, cannot_play)
