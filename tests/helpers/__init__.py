"""Helpers shared by the tests: servers (sshd, rsyslogd), configs, fixtures, the CLI runner.

Test modules import from here (``from tests.helpers.cli import run_opsgate``), never from each other.
The pytest fixtures live in ``tests.helpers.fixtures`` and are loaded by ``tests/conftest.py``.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: config.example.toml, pyproject.toml
