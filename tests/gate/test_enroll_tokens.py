"""Enrollment tokens (``opsgated enroll-token``): what an admin hands over must work as printed."""

from __future__ import annotations

import argparse
import re

from opsgate.console.gate.service import EnrollTokens


def test_a_token_is_one_argv_word_that_never_looks_like_an_option_and_is_used_once(tmp_path):
    tokens = EnrollTokens(tmp_path)
    parser = argparse.ArgumentParser()
    parser.add_argument("--token")
    made = [tokens.create("alice") for _ in range(200)]  # a urlsafe token began with "-" one time in 64
    for token in made:
        assert re.fullmatch(r"[0-9a-f]{32}", token)
        assert parser.parse_args(["--token", token]).token == token
    assert tokens.use("alice", made[0]) and not tokens.use("alice", made[0])
    assert not tokens.use("bob", made[1])
