"""The wheel, as a user gets it: built from this checkout, installed in a fresh venv next to the PyPI
distribution named ``console``. It must add one top-level package, ``opsgate`` (the checkout's ``console/``
folder is ``opsgate.console`` inside it), and the command must work there.

Needs PyPI (the build backend, the dependencies, ``console``): a `system` test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.cli import clean_env

pytestmark = pytest.mark.system

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
DIST_INFO = f"opsgate-{VERSION}.dist-info"
TIMEOUT = 300  # pip on a slow network; with a warm pip cache the whole module takes ~10 s


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    site_packages: Path
    workdir: Path  # a directory outside the checkout: its console/ folder must not shadow anything

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


def child_env(**extra: str) -> dict[str, str]:
    """No OPSGATE_* and nothing pointing Python at another environment; pip's own settings are kept."""
    return {k: v for k, v in clean_env(**extra).items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def run(argv: list[str], cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, env=child_env(**extra_env), capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def copy_sources(into: Path) -> Path:
    """The files a wheel is built from, copied: building in place would leave build/ in the checkout."""
    src = into / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in PYPROJECT["tool"]["setuptools"]["package-dir"].values():
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return src


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    src = copy_sources(base)
    dist = base / "dist"
    # Absolute paths: a bare "src" would be read as the name of a package on PyPI.
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)], cwd=base)
    wheels = list(dist.glob("opsgate-*.whl"))
    assert len(wheels) == 1, wheels
    venv = base / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base)
    # This pip installs into the fresh venv (--python): no ensurepip, same pip configuration.
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", str(wheels[0]),
         "console"], cwd=base)
    site = run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               cwd=base).stdout.strip()
    workdir = base / "work"
    workdir.mkdir()
    return Installed(wheels[0], venv, Path(site), workdir)


def top_level(paths: list[str]) -> set[str]:
    return {p.split("/", 1)[0] for p in paths if p and not p.startswith("..")}


def test_the_wheel_holds_one_top_level_package_opsgate(installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
    assert top_level(names) == {"opsgate", DIST_INFO}
    for package in ("cli", "screens", "console", "actions"):
        assert f"opsgate/{package}/__init__.py" in names
    # What pip installed from it, as its RECORD lists it (the console script lives outside site-packages).
    record = (installed.site_packages / DIST_INFO / "RECORD").read_text().splitlines()
    assert top_level([line.split(",", 1)[0] for line in record]) == {"opsgate", DIST_INFO}
    # PyPI's `console` sits next to it, untouched by our wheel.
    assert (installed.site_packages / "console").is_dir()
    assert not any(line.startswith("console/") for line in record)


def test_opsgate_version(installed):
    result = run([installed.bin("opsgate"), "--version"], cwd=installed.workdir)
    assert VERSION in result.stdout


def test_opsgate_check_accepts_the_example_config(installed):
    result = run([installed.bin("opsgate"), "check", "--config", str(ROOT / "config.example.toml")],
                 cwd=installed.workdir, HOME=str(installed.workdir))
    assert result.stdout.startswith("OK: ")


def test_opsgate_and_pypi_console_import_side_by_side(installed):
    code = "import opsgate.cli.main, console; print(opsgate.cli.main.__file__); print(console.__file__)"
    result = run([installed.bin("python"), "-c", code], cwd=installed.workdir)
    ours, theirs = (Path(line) for line in result.stdout.splitlines())
    assert ours.is_relative_to(installed.site_packages / "opsgate")
    assert theirs.is_relative_to(installed.site_packages / "console")
