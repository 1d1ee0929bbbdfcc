"""KnownHosts' index (plain names in a dict, hashed names by salt, the rest scanned) answers exactly what
matching every line's patterns one by one answers, and a run reads its known_hosts files once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from opsgate.actions import hostkeys
from opsgate.actions.hostkeys import KnownHosts, KnownHostsCache, KnownKey

KEY = ("ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
NAMES = ["web1", "WEB1", "web2", "db.example.com", "[web1]:2222", "[10.0.0.1]:22", "10.0.0.1", "alias-x", "w?b1"]


def reference(patterns: tuple[str, ...], name: str) -> bool:
    """OpenSSH's rule, pattern by pattern: a positive match and no negated one."""
    matched = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        if body.startswith("|"):
            try:
                _, magic, salt, want = body.split("|")
                hit = magic == "1" and hmac.compare_digest(
                    hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest(), base64.b64decode(want))
            except ValueError:
                hit = False
        else:
            regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in body.lower())
            hit = re.fullmatch(regex, name.lower()) is not None
        if hit and negate:
            return False
        matched = matched or hit
    return matched


def hashed(name: str, salt: bytes) -> str:
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


SALTS = [b"s" * 20, b"t" * 20]
pattern = st.one_of(
    st.sampled_from(NAMES + ["*", "web*", "*.example.com", "[web1]:*", "w?b?", "Web1", "|1|bad|base64!", "|2|a|b"]),
    st.builds(hashed, st.sampled_from(NAMES), st.sampled_from(SALTS)),
).flatmap(lambda p: st.sampled_from([p, "!" + p]))
line = st.tuples(st.sampled_from([None, None, "@cert-authority", "@revoked"]), st.lists(pattern, min_size=1, max_size=4))


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(line, max_size=8))
def test_the_index_answers_what_the_line_by_line_rule_does(lines):
    import paramiko

    key = paramiko.PKey.from_type_string(KEY[0], base64.b64decode(KEY[1]))
    entries = [KnownKey(tuple(patterns), key, marker, f"f:{i}") for i, (marker, patterns) in enumerate(lines)]
    known = KnownHosts(entries, ("f",))
    for name in NAMES:
        for _ in range(2):  # the second answer comes from the kept one
            want = [e for e in entries if e.marker != "@revoked" and reference(e.patterns, name)]
            assert [e for e in known._matching(name)] == want, name
        trusted, revoked = known.lookup(name, 22)
        assert len(trusted) == sum(1 for e in want if e.marker is None)
        assert len(revoked) == sum(1 for e in entries if e.marker == "@revoked")
        assert known.authorities(name, 22) == [e for e in want if e.marker == "@cert-authority"]


def test_a_hashed_line_is_found_among_thousands_by_its_salt(tmp_path):
    path = tmp_path / "known_hosts"
    lines = [f"{hashed(f'host{i}', bytes([i % 251]) * 20)} {KEY[0]} {KEY[1]}" for i in range(3000)]
    lines.append(f"{hashed('[target]:2222', b'x' * 20)} {KEY[0]} {KEY[1]}")
    path.write_text("\n".join(lines) + "\n")
    known = KnownHosts.load([str(path)])
    assert len(known._salted) == 251  # 3001 lines, 251 distinct salts
    trusted, _ = known.lookup("target", 2222)
    assert len(trusted) == 1
    assert [e.source for e in known._matching("host7")] == [f"{path}:8"]


def test_a_run_reads_the_files_once(tmp_path, monkeypatch):
    path = tmp_path / "known_hosts"
    path.write_text(f"web1 {KEY[0]} {KEY[1]}\n")
    reads = []
    real = hostkeys.KnownHosts.load.__func__
    monkeypatch.setattr(hostkeys.KnownHosts, "load", classmethod(lambda cls, p: reads.append(p) or real(cls, p)))
    cache = KnownHostsCache()
    first = cache.load((str(path),))
    assert cache.load((str(path),)) is first and cache.load([str(path)]) is first
    assert len(reads) == 1
    assert cache.load(()) is not first and len(reads) == 2
