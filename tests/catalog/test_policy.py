"""satisfies(): factor ordering, max_age, every-run grants, expiry and clock trouble."""

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opsgate.console.catalog.policy import CLOCK_SKEW, FACTORS, ONE_RUN_WINDOW, Grant, Requirement, satisfies, seconds_left

NOW = 1_700_000_000.0


@pytest.mark.parametrize("have,need", list(itertools.product(FACTORS, FACTORS)))
def test_factor_ordering_none_otp_fido2(have, need):
    grant = Grant("alice", have, NOW - 1)
    ok = satisfies(grant, Requirement(need, 900), NOW)
    assert ok == (FACTORS.index(have) >= FACTORS.index(need))


def test_no_step_up_needed_without_a_grant():
    assert satisfies(None, Requirement("none"), NOW)
    assert not satisfies(None, Requirement("otp", 900), NOW)
    assert not satisfies(None, Requirement("fido2", 0), NOW)


def test_within_max_age_and_expiry_at_the_boundary():
    req = Requirement("otp", 900)
    assert satisfies(Grant("a", "otp", NOW - 899), req, NOW)
    assert satisfies(Grant("a", "otp", NOW - 900), req, NOW)  # inclusive
    assert not satisfies(Grant("a", "otp", NOW - 900.001), req, NOW)
    assert not satisfies(Grant("a", "otp", NOW - 86400), req, NOW)


def test_max_age_zero_means_every_run():
    req = Requirement("fido2", 0)
    grant = Grant("a", "fido2", NOW - 1)
    assert satisfies(grant, req, NOW, used=False)
    assert not satisfies(grant, req, NOW, used=True)


def test_max_age_zero_refuses_a_stale_unused_grant():
    req = Requirement("otp", 0)
    assert satisfies(Grant("a", "otp", NOW - ONE_RUN_WINDOW), req, NOW)
    assert not satisfies(Grant("a", "otp", NOW - ONE_RUN_WINDOW - 1), req, NOW)
    assert not satisfies(Grant("a", "otp", NOW - 3600), req, NOW)


def test_used_does_not_matter_when_max_age_is_positive():
    req = Requirement("otp", 300)
    assert satisfies(Grant("a", "otp", NOW - 10), req, NOW, used=True)


@pytest.mark.parametrize("max_age", [0, 300])
def test_future_auth_time_is_not_trusted(max_age):
    req = Requirement("otp", max_age)
    assert satisfies(Grant("a", "otp", NOW + CLOCK_SKEW), req, NOW)  # small skew between processes
    assert not satisfies(Grant("a", "otp", NOW + CLOCK_SKEW + 0.1), req, NOW)
    assert not satisfies(Grant("a", "otp", NOW + 3600), req, NOW)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonsense_auth_time_never_counts(bad):
    for max_age in (0, 300):
        assert not satisfies(Grant("a", "otp", bad), Requirement("otp", max_age), NOW)


def test_unknown_factor_never_counts():
    assert not satisfies(Grant("a", "password", NOW), Requirement("otp", 300), NOW)


def test_seconds_left():
    req = Requirement("otp", 900)
    assert seconds_left(Grant("a", "otp", NOW - 1), req, NOW) == pytest.approx(899)
    assert seconds_left(Grant("a", "otp", NOW - 901), req, NOW) == 0
    assert seconds_left(Grant("a", "fido2", NOW), Requirement("fido2", 0), NOW) == 0
    assert seconds_left(None, req, NOW) == 0


@given(have=st.sampled_from(FACTORS), need=st.sampled_from(FACTORS[1:]),
       age=st.floats(-1e6, 1e6), max_age=st.sampled_from([0, 60, 900, 43200]), used=st.booleans())
def test_satisfies_matches_the_model(have, need, age, max_age, used):
    grant = Grant("a", have, NOW - age)
    expected = (
        FACTORS.index(have) >= FACTORS.index(need)
        and NOW - age <= NOW + CLOCK_SKEW
        and ((not used and age <= ONE_RUN_WINDOW) if max_age == 0 else age <= max_age)
    )
    assert satisfies(grant, Requirement(need, max_age), NOW, used=used) == expected


def test_describe_and_short_still_read_well():
    assert Requirement("otp", 900).describe() == "OTP within 15 min"
    assert Requirement("fido2", 0, confirm=True, approvals=1).describe() == \
        "security key, every run, typed confirmation, 1 approval"
    assert Requirement("fido2", 0, approvals=2).short() == "KEY every run +2"
