"""The validated-config cache (console/catalog/cache.py): used only when everything the load depends on
is the same, only from a private file, and anything doubtful falls back to the full load and a fresh entry."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from opsgate.console.catalog import cache, loader
from opsgate.console.catalog.loader import load_config
from opsgate.console.errors import ConfigError
from opsgate.console.paths import CONFIG_CACHE
from tests.helpers import ROOT

CONFIG = ROOT / "config.example.toml"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    return d


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "opsgate.toml"
    path.write_bytes(CONFIG.read_bytes())
    return path


@pytest.fixture
def parses(monkeypatch) -> list[str]:
    """The names of the files parse_config was called for (a full load)."""
    calls: list[str] = []
    original = loader.parse_config

    def counting(data, filename="config.toml", **kw):
        calls.append(filename)
        return original(data, filename, **kw)

    monkeypatch.setattr(loader, "parse_config", counting)
    return calls


def same(a, b) -> bool:
    # Action.params and friends are compare=False on the dataclasses: compare the whole structure.
    return repr(a) == repr(b) and repr(a.actions) == repr(b.actions) and repr(a.runbooks) == repr(b.runbooks)


def test_second_load_comes_from_the_cache_and_equals_the_full_load(config_file, state, parses):
    first = load_config(config_file, cache_dir=state)
    assert parses == [str(config_file)]
    mode = (state / CONFIG_CACHE).stat().st_mode & 0o777
    assert mode == 0o600
    second = load_config(config_file, cache_dir=state)
    assert parses == [str(config_file)]  # no second parse
    assert same(second, first)
    assert same(second, loader.parse_config(config_file.read_bytes(), str(config_file), path=config_file))
    assert second.sha256 == first.sha256 and second.path == config_file


def test_an_edited_config_is_loaded_in_full_and_rewritten(config_file, state, parses):
    load_config(config_file, cache_dir=state)
    config_file.write_bytes(config_file.read_bytes() + b"\n# an edit\n")
    edited = load_config(config_file, cache_dir=state)
    assert len(parses) == 2
    load_config(config_file, cache_dir=state)
    assert len(parses) == 2  # the new entry is used
    assert edited.sha256 != load_config(CONFIG).sha256


def test_an_invalid_config_is_never_cached_and_still_fails(config_file, state):
    config_file.write_text("[console]\nnope = 1\n")
    for _ in range(2):
        with pytest.raises(ConfigError):
            load_config(config_file, cache_dir=state)
    assert not (state / CONFIG_CACHE).exists()


@pytest.mark.parametrize("change", ["operator", "env", "code", "filename"])
def test_the_key_covers_what_the_load_depends_on(config_file, state, parses, monkeypatch, tmp_path, change):
    load_config(config_file, cache_dir=state)
    kwargs = {}
    if change == "operator":
        kwargs["default_operator"] = "someone-else"
    elif change == "env":
        monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))  # ~ in known_hosts and key paths
    elif change == "code":
        monkeypatch.setattr(cache, "_code_digest", b"another opsgate")
    else:
        other = tmp_path / "other.toml"
        other.write_bytes(config_file.read_bytes())
        config_file = other
    load_config(config_file, cache_dir=state, **kwargs)
    assert len(parses) == 2


def test_a_newer_loader_source_changes_the_key(monkeypatch):
    key = cache.cache_key(b"x", "f.toml", None)
    monkeypatch.setattr(cache, "_code_digest", None)
    monkeypatch.setattr(cache, "_SOURCES", cache._SOURCES[:-1])
    assert cache.cache_key(b"x", "f.toml", None) != key


def corrupt_truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def corrupt_flipped(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-50] ^= 0xFF
    path.write_bytes(bytes(data))


def corrupt_garbage(path: Path) -> None:
    path.write_bytes(b"not a cache at all")


def corrupt_empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("corrupt", [corrupt_truncated, corrupt_flipped, corrupt_garbage, corrupt_empty])
def test_a_damaged_cache_falls_back_silently_and_is_rewritten(config_file, state, parses, corrupt, capsys):
    expected = load_config(config_file, cache_dir=state)
    corrupt(state / CONFIG_CACHE)
    assert same(load_config(config_file, cache_dir=state), expected)
    assert len(parses) == 2
    assert capsys.readouterr() == ("", "")
    load_config(config_file, cache_dir=state)
    assert len(parses) == 2  # rewritten, and good again


def forge(state: Path, key: str, payload: bytes) -> None:
    import hashlib

    blob = cache.MAGIC + key.encode() + b"\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n\n" + payload
    (state / CONFIG_CACHE).write_bytes(blob)
    os.chmod(state / CONFIG_CACHE, 0o600)


class Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_the_unpickler_makes_only_the_model(config_file, state, parses, capfd):
    key = cache.cache_key(config_file.read_bytes(), str(config_file), None)
    forge(state, key, pickle.dumps(Boom()))
    load_config(config_file, cache_dir=state)
    assert len(parses) == 1 and "pwned" not in capfd.readouterr().out
    forge(state, key, pickle.dumps({"not": "a config"}))
    load_config(config_file, cache_dir=state)
    assert len(parses) == 2


def test_a_cache_others_can_read_or_write_is_ignored(config_file, state, parses):
    load_config(config_file, cache_dir=state)
    for mode in (0o640, 0o604, 0o660):
        os.chmod(state / CONFIG_CACHE, mode)
        load_config(config_file, cache_dir=state)
    assert len(parses) == 4
    assert (state / CONFIG_CACHE).stat().st_mode & 0o777 == 0o600  # the last full load rewrote it


def test_a_cache_of_another_owner_is_ignored(config_file, state, parses, monkeypatch):
    load_config(config_file, cache_dir=state)
    real = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real + 1)  # as if the file (and dir) were someone else's
    assert cache.read_cached(state, cache.cache_key(config_file.read_bytes(), str(config_file), None)) is None


def test_a_symlinked_cache_is_not_followed(config_file, state, parses, tmp_path):
    load_config(config_file, cache_dir=state)
    real = tmp_path / "elsewhere.cache"
    (state / CONFIG_CACHE).rename(real)
    (state / CONFIG_CACHE).symlink_to(real)
    load_config(config_file, cache_dir=state)
    assert len(parses) == 2


def test_a_dir_others_can_write_gets_no_cache(config_file, state, parses):
    os.chmod(state, 0o770)
    load_config(config_file, cache_dir=state)
    load_config(config_file, cache_dir=state)
    assert len(parses) == 2 and not (state / CONFIG_CACHE).exists()


def test_cache_if_keeps_a_config_out_of_a_dir_that_is_not_its_own(config_file, state, parses):
    load_config(config_file, cache_dir=state, cache_if=lambda c: False)
    assert not (state / CONFIG_CACHE).exists()
    load_config(config_file, cache_dir=state)  # written now
    load_config(config_file, cache_dir=state, cache_if=lambda c: False)  # but not read for this caller
    assert len(parses) == 3


def test_opsgate_check_never_reads_the_cache(config_file, state, monkeypatch, capsys):
    from opsgate.cli.main import main

    monkeypatch.setenv("OPSGATE_STATE_DIR", str(state))
    load_config(config_file, cache_dir=state)
    # A cache entry that says something the file does not: check must not believe it.
    key = cache.cache_key(config_file.read_bytes(), str(config_file), None)
    good = cache.read_cached(state, key)
    from dataclasses import replace

    cache.write_cached(state, key, replace(good, actions={}))
    assert main(["check", "--config", str(config_file)]) == 0
    assert f"OK: {len(good.actions)} actions" in capsys.readouterr().out


def test_the_console_command_uses_and_fills_the_cache(config_file, state, monkeypatch):
    """cli/tui.py: the TUI's config goes through the cache in --state-dir; nothing is started here."""
    import argparse

    from opsgate.cli.context import Context
    from opsgate.cli.tui import _load_config_cached

    monkeypatch.delenv("OPSGATE_STATE_DIR", raising=False)
    ctx = Context(argparse.Namespace(config=str(config_file), state_dir=str(state)))
    _load_config_cached(ctx)
    assert (state / CONFIG_CACHE).exists()
    assert same(ctx.config, load_config(config_file))
