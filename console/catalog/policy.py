"""Step-up policy: factors, requirements, grants, and whether a grant satisfies a requirement.

After RFC 9470: a requirement is (factor, max_age); a grant is (operator, factor, auth_time).
"""

from __future__ import annotations

from dataclasses import dataclass

from opsgate.console.durations import format_duration

FACTORS = ("none", "otp", "fido2")  # weakest to strongest
RISKS = ("low", "medium", "high", "critical")
FACTOR_WORDS = {"none": "no step-up", "otp": "OTP", "fido2": "security key"}
FACTOR_SHORT = {"none": "-", "otp": "OTP", "fido2": "KEY"}
CLOCK_SKEW = 5.0  # seconds a grant's auth_time may lie in the future (clock steps between processes)
ONE_RUN_WINDOW = 120.0  # max_age 0: an unused grant older than this is stale, not "this run's" step-up


def factor_rank(factor: str) -> int:
    return FACTORS.index(factor)


@dataclass(frozen=True)
class Requirement:
    """What an action of a given risk needs before it runs."""

    factor: str = "none"
    max_age: float = 0.0  # seconds; 0 means a fresh step-up for every run
    confirm: bool = False  # type the target's name
    approvals: int = 0  # other operators who must approve with their own factor
    user_verification: bool = False  # FIDO2: require UV (PIN/biometric), not only presence
    reason: bool = False  # the operator must say why (--reason)

    @property
    def needs_stepup(self) -> bool:
        return self.factor != "none"

    def describe(self) -> str:
        """In words: "OTP within 15 min", "security key, every run, typed confirmation, 1 approval"."""
        if self.factor == "none":
            parts = ["no step-up"]
        elif self.max_age == 0:
            parts = [FACTOR_WORDS[self.factor], "every run"]
        else:
            parts = [f"{FACTOR_WORDS[self.factor]} within {format_duration(self.max_age)}"]
        if self.confirm:
            parts.append("typed confirmation")
        if self.approvals:
            parts.append(f"{self.approvals} approval" + ("s" if self.approvals > 1 else ""))
        if self.reason:
            parts.append("a reason")
        return ", ".join(parts)

    def short(self) -> str:
        """For list badges: "OTP 15m", "KEY every run", "-"."""
        if self.factor == "none":
            text = "-"
        elif self.max_age == 0:
            text = f"{FACTOR_SHORT[self.factor]} every run"
        else:
            text = f"{FACTOR_SHORT[self.factor]} {format_duration(self.max_age, short=True)}"
        if self.approvals:
            text += f" +{self.approvals}"
        return text


@dataclass(frozen=True)
class Grant:
    """The result of a successful step-up."""

    operator: str
    factor: str
    auth_time: float  # unix seconds
    user_verified: bool = False  # FIDO2: the key verified the user (PIN or biometric), not only presence


def satisfies(grant: Grant | None, requirement: Requirement, now: float, *, used: bool = False) -> bool:
    """True when ``grant`` meets ``requirement`` at ``now``.

    ``max_age == 0`` means every run: only a grant that has not been used for a run yet, and that is at
    most ``ONE_RUN_WINDOW`` old, counts. An unknown factor, or an auth_time more than ``CLOCK_SKEW``
    in the future, never counts.
    """
    if requirement.factor == "none":
        return True
    if grant is None:
        return False
    if grant.factor not in FACTORS:
        return False
    if factor_rank(grant.factor) < factor_rank(requirement.factor):
        return False
    if requirement.user_verification and not (grant.factor == "fido2" and grant.user_verified):
        return False  # a touch-only grant never meets a policy that asks the key to verify the user
    if not grant.auth_time <= now + CLOCK_SKEW:  # from the future (or NaN): clock trouble, do not trust it
        return False
    if requirement.max_age == 0:
        # Every run: an unused grant from a moment ago, never one left lying around for hours.
        return not used and now - grant.auth_time <= ONE_RUN_WINDOW
    return now - grant.auth_time <= requirement.max_age


def seconds_left(grant: Grant | None, requirement: Requirement, now: float) -> float:
    """How long ``grant`` keeps satisfying ``requirement`` (0 when it does not)."""
    if grant is None or not satisfies(grant, requirement, now) or requirement.max_age == 0:
        return 0.0
    return max(0.0, grant.auth_time + requirement.max_age - now)
