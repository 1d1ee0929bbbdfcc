"""The opsgate config key `jump` on [targets.X]: parsed, checked, and handed to the transport."""

from __future__ import annotations

import pytest

from opsgate.console.catalog.loader import parse_config
from opsgate.console.errors import ConfigError
from opsgate.console.run import target_endpoint

CONFIG = """
[console]
operator = "alice"
known_hosts = []

[targets.db-1]
host = "10.0.0.5"
{jump}

[actions.uptime]
title = "uptime"
risk = "low"
targets = ["db-1"]
command = "uptime"
"""


@pytest.mark.parametrize("jump", ["bastion", "ops@bastion:2222,inner", "none", "ssh://u@[2001:db8::1]:22"])
def test_jump_reaches_the_endpoint(jump):
    config = parse_config(CONFIG.format(jump=f"jump = {jump!r}".replace("'", '"')).encode())
    target = config.targets["db-1"]
    assert target.jump == jump
    assert target_endpoint(target, config.settings).jump == jump


def test_no_jump_leaves_ssh_config_in_charge():
    config = parse_config(CONFIG.format(jump="").encode())
    assert target_endpoint(config.targets["db-1"], config.settings).jump is None


@pytest.mark.parametrize("jump", ["", "a b", "-oProxyCommand=id", "a;b", "a,,b", "host:port"])
def test_bad_jump_is_a_config_error_with_its_key_path(jump):
    with pytest.raises(ConfigError) as info:
        parse_config(CONFIG.format(jump=f"jump = {jump!r}".replace("'", '"')).encode())
    assert any("targets.db-1.jump" in p for p in info.value.problems), info.value.problems
