"""What every command needs: the parsed flags, the config, the state dir and the console's parts, each
built once, on first use.

``OPSGATE_SOFTKEY=PATH`` makes the commands use the software authenticator (console/demo/softkey.py)
kept in PATH instead of a USB security key. It is for tests and the demo only: the key's private keys
sit in a plain file, so it proves nothing about who is at the keyboard. A warning says so every time.
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from opsgate.console import paths
from opsgate.console.catalog.loader import load_config
from opsgate.console.catalog.model import Config
from opsgate.console.errors import ConfigError
from opsgate.console.paths import AUDIT_FILE

if TYPE_CHECKING:
    from opsgate.console.wiring import ConsoleParts


def global_flags(default) -> argparse.ArgumentParser:
    """--config and --state-dir, for `opsgate` and `opsgated` and each of their subcommands.

    The top parser gets ``default=None``; subcommands ``argparse.SUPPRESS``, so a flag given before the
    command is not reset by the subcommand's own copy of it."""
    g = argparse.ArgumentParser(add_help=False)
    g.add_argument("--config", metavar="PATH", default=default,
                   help="config file (else $OPSGATE_CONFIG, ./opsgate.toml, user config dir)")
    g.add_argument("--state-dir", metavar="DIR", default=default,
                   help="state dir (else $OPSGATE_STATE_DIR, console.state_dir, user state dir)")
    return g


class Context:
    """What every subcommand needs: the parsed flags, the config and the state dir, loaded once."""

    def __init__(self, args: argparse.Namespace):
        self.args = args

    @cached_property
    def config_path(self) -> Path:
        return paths.find_config(self.args.config)

    @cached_property
    def config(self) -> Config:
        return load_config(self.config_path, default_operator=getattr(self.args, "operator", None))

    @cached_property
    def state_dir(self) -> Path:
        # --state-dir or OPSGATE_STATE_DIR alone is enough (a reviewer may verify a trail without the config).
        if self.args.state_dir or os.environ.get("OPSGATE_STATE_DIR"):
            return paths.state_dir(self.args.state_dir, None)
        return paths.state_dir(None, self.config.settings.state_dir)

    @property
    def operator(self) -> str:
        return getattr(self.args, "operator", None) or self.config.settings.operator

    @cached_property
    def trail_path(self) -> Path:
        """The audit trail to read: the state dir's, or in gate mode a copy of the gate's, brought up to date."""
        try:
            gate = self.config.gate
        except ConfigError:
            if not (self.args.state_dir or os.environ.get("OPSGATE_STATE_DIR")):
                raise
            gate = None  # a reviewer with only a state dir reads the trail in it
        if gate is not None:
            from opsgate.console.gate.client import sync_trail

            return sync_trail(self.config, self.state_dir)
        return self.state_dir / AUDIT_FILE

    @cached_property
    def parts(self) -> "ConsoleParts":
        """The console for this command: grants persist in the state dir (``opsgate auth`` then ``run``).
        Imported here: ``list``, ``check`` and the audit commands never load the run pipeline."""
        from opsgate.console.wiring import assemble

        authenticator = authenticator_from_env()
        parts = assemble(self.config, self.state_dir, persist_grants=True, authenticator=authenticator)
        # The software key may be enrolled only when it is asked for by name (the warning has been printed);
        # an explicit [console] authenticators list still has the last word.
        parts.stepup.allow_software_key = authenticator is not None
        return parts


SOFTKEY_ENV = "OPSGATE_SOFTKEY"


def authenticator_from_env() -> Callable | None:
    """The software key named by $OPSGATE_SOFTKEY (tests/demo), else None: discover a USB key.

    Several paths separated by ``os.pathsep`` are several keys plugged in at once."""
    value = os.environ.get(SOFTKEY_ENV)
    if not value:
        return None
    from opsgate.console.demo.softkey import SoftKey

    paths = [p for p in value.split(os.pathsep) if p]
    print(f"opsgate: WARNING: using the DEMO/TEST software key{'s' if len(paths) > 1 else ''} {', '.join(paths)} "
          f"(${SOFTKEY_ENV}); {'they are' if len(paths) > 1 else 'it is'} not a security key", file=sys.stderr)
    if len(paths) == 1:
        return lambda: SoftKey(paths[0])
    return lambda: [SoftKey(p) for p in paths]
