"""Shared pytest setup: the fixtures of ``tests/helpers``, and the ``system`` marker.

Test modules are the ``tests`` package (``tests/__init__.py``, one per folder): pytest puts the checkout on
``sys.path`` and helpers are imported as ``tests.helpers.*``. No test module imports another.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.helpers")  # plain asserts in helpers report their values too

pytest_plugins = ["tests.helpers.fixtures"]  # sshd, start_sshd, rsyslog


@pytest.hookimpl(tryfirst=True)  # before -m selects on the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses a real sshd or rsyslogd (through any fixture) is a `system` test."""
    from tests.helpers.fixtures import SYSTEM_FIXTURES

    for item in items:
        if SYSTEM_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.system)
