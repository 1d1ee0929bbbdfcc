"""The credentials store: 0600, atomic, refused when others can read it, corrupted files fail closed."""

import os
import stat
import threading

import pytest

from opsgate.console.stepup.credentials import CredentialStore, FidoCredential, OperatorCredentials
from opsgate.console.errors import CredentialsError


def test_round_trip_and_mode_0600(tmp_path):
    store = CredentialStore(tmp_path)
    assert store.load() == {}
    with store.transaction() as data:
        op = data.setdefault("alice", OperatorCredentials())
        op.totp_secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
        op.totp_last_step = 42
        op.totp_failures = 3
        op.totp_locked_until = 12.5
        op.fido2.append(FidoCredential(b"\x01\x02", b"\xaa" * 40, 7, "yubikey", 1.0))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    alice = store.operator("alice")
    assert alice.totp_last_step == 42 and alice.totp_failures == 3 and alice.totp_locked_until == 12.5
    assert alice.fido2 == [FidoCredential(b"\x01\x02", b"\xaa" * 40, 7, "yubikey", 1.0)]
    assert alice.factors() == ["otp", "fido2"]
    assert store.operator("bob") == OperatorCredentials()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # temp file renamed away


def test_mode_is_0600_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        with CredentialStore(tmp_path).transaction() as data:
            data["alice"] = OperatorCredentials(totp_secret="JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "credentials.toml").stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o602])
def test_refused_when_group_or_others_can_access_it(tmp_path, mode):
    store = CredentialStore(tmp_path)
    with store.transaction() as data:
        data["alice"] = OperatorCredentials(totp_secret="JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
    os.chmod(store.path, mode)
    with pytest.raises(CredentialsError, match=r"accessible by group or others .*chmod 600"):
        store.load()
    with pytest.raises(CredentialsError):
        with store.transaction():
            pass
    assert stat.S_IMODE(store.path.stat().st_mode) == mode  # not silently "fixed"


def test_refused_when_owned_by_another_user(tmp_path, monkeypatch):
    store = CredentialStore(tmp_path)
    with store.transaction() as data:
        data["alice"] = OperatorCredentials()
    monkeypatch.setattr(os, "getuid", lambda: os.stat(store.path).st_uid + 1)
    with pytest.raises(CredentialsError, match="owned by uid"):
        store.load()


def test_symlink_is_refused(tmp_path):
    real = tmp_path / "elsewhere.toml"
    real.write_text('version = 1\n')
    real.chmod(0o600)
    (tmp_path / "credentials.toml").symlink_to(real)
    with pytest.raises(CredentialsError, match="cannot open"):
        CredentialStore(tmp_path).load()


@pytest.mark.parametrize("content", [
    b"this is [not toml",
    b"\xff\xfe garbage",
    b'version = 2\n',
    b'version = 1\n[operators.alice]\ntotp_failures = "many"\n',
    b'version = 1\n[operators.alice]\ntotp_secret = "short"\n',
    b'version = 1\n[[operators.alice.fido2]]\ncredential_id = "!!"\n',
])
def test_corrupted_file_fails_closed_with_one_line(tmp_path, content):
    path = tmp_path / "credentials.toml"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(CredentialsError, match="corrupted credentials file") as info:
        CredentialStore(tmp_path).load()
    assert "\n" not in str(info.value)


def test_concurrent_read_modify_write_loses_no_update(tmp_path):
    store = CredentialStore(tmp_path)

    def bump(n):
        for _ in range(n):
            with CredentialStore(tmp_path).transaction() as data:
                data.setdefault("alice", OperatorCredentials()).totp_failures += 1

    threads = [threading.Thread(target=bump, args=(20,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.operator("alice").totp_failures == 80


def test_failed_transaction_writes_nothing(tmp_path):
    store = CredentialStore(tmp_path)
    with store.transaction() as data:
        data["alice"] = OperatorCredentials(totp_failures=1)
    with pytest.raises(RuntimeError):
        with store.transaction() as data:
            data["alice"].totp_failures = 99
            raise RuntimeError("boom")
    assert store.operator("alice").totp_failures == 1
