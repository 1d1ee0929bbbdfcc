"""``[console] authenticators`` and ``attestation_roots``: the security keys enrollment accepts."""

import pytest

from opsgate.console.catalog.loader import load_config, parse_config
from opsgate.console.errors import ConfigError
from tests.helpers import ROOT


def test_aaguids_are_normalised_and_absent_means_any_model():
    cfg = parse_config(b'[console]\noperator = "alice"\nauthenticators = ["CB69481E8FF7403993EC0A2729A154A8", '
                       b'"ee882879-721c-4913-9775-3dfcce97072a"]\nattestation_roots = ["~/yubico-root.pem"]\n')
    assert cfg.settings.authenticators == ("cb69481e-8ff7-4039-93ec-0a2729a154a8",
                                           "ee882879-721c-4913-9775-3dfcce97072a")
    assert cfg.settings.attestation_roots[0].name == "yubico-root.pem" and "~" not in str(cfg.settings.attestation_roots[0])
    plain = parse_config(b'[console]\noperator = "alice"\n')
    assert plain.settings.authenticators is None and plain.settings.attestation_roots == ()
    assert load_config(ROOT / "config.example.toml").settings.authenticators is None  # documented, commented out


def test_a_bad_aaguid_is_reported_with_its_key_path():
    with pytest.raises(ConfigError) as e:
        parse_config(b'[console]\nauthenticators = ["yubikey", 5]\nattestation_roots = [1]\n', "c.toml")
    assert e.value.problems == [
        "c.toml: console.authenticators[0]: expected an AAGUID (32 hex digits, as "
        "\"cb69481e-8ff7-4039-93ec-0a2729a154a8\"), got 'yubikey'",
        "c.toml: console.authenticators[1]: expected an AAGUID (32 hex digits, as "
        "\"cb69481e-8ff7-4039-93ec-0a2729a154a8\"), got 5",
        "c.toml: console.attestation_roots[0]: expected a path, got integer",
    ]
