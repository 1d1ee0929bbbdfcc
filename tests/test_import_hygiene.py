"""The core is headless: importing any module of opsgate.console or opsgate.actions, sub-packages included,
loads neither textual nor rich, nor a front end (opsgate.cli, opsgate.screens), nor the demo.

Every module is imported alone in a fresh interpreter, so what one module pulls in is not hidden by another.
``opsgate.console.demo`` is not core (only `opsgate demo` and the tests import it) and is left out.
"""

import importlib
import pkgutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT

CORE = ("opsgate.console", "opsgate.actions")
NOT_CORE = ("opsgate.console.demo",)
FORBIDDEN = ("textual", "rich", "opsgate.cli", "opsgate.screens", "opsgate.console.demo")


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def headless_modules() -> list[str]:
    """Every module and package under CORE, found by walking the installed packages' __path__."""
    names = []
    for package_name in CORE:
        package = importlib.import_module(package_name)
        names.append(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            if not _within(info.name, NOT_CORE):
                names.append(info.name)
    return sorted(names)


def test_the_walk_finds_the_sub_packages():
    names = headless_modules()
    for expected in ("opsgate.console.catalog.loader", "opsgate.console.stepup.totp", "opsgate.console.audit.trail",
                     "opsgate.console.audit.forward.forwarder", "opsgate.console.run", "opsgate.actions.ssh"):
        assert expected in names
    assert not [n for n in names if _within(n, NOT_CORE)]


@pytest.mark.parametrize("module", headless_modules())
def test_module_does_not_load_textual_rich_a_front_end_or_the_demo(module):
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        f"forbidden = {FORBIDDEN!r}; "
        "bad = sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in forbidden)); "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    # -P: the checkout's folders (console/, cli/ ...) are not put on sys.path; only the installed opsgate counts.
    result = subprocess.run([sys.executable, "-P", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{module} loaded: {result.stdout.strip()} {result.stderr[-500:]}"
