"""The TUI tests' shared fixture: a demo environment (embedded SSH target, state, step-up) under tmp_path."""

from __future__ import annotations

import pytest

from tests.helpers.tui_fixtures import start_demo


@pytest.fixture
def demo(tmp_path):
    d = start_demo(tmp_path)
    try:
        yield d
    finally:
        d.close()
