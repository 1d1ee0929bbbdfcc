"""console/ and actions/ are headless: importing any of their modules loads neither textual nor rich."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def headless_modules() -> list[str]:
    names = []
    for package in ("console", "actions"):
        names.append(package)
        names += [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(ROOT / package)])]
    return names


@pytest.mark.parametrize("module", headless_modules())
def test_module_does_not_load_textual_or_rich(module):
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')); "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"{module} loaded: {result.stdout.strip()} {result.stderr[-500:]}"
