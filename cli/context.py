"""What every command needs: the parsed flags, the config and the state dir, each loaded once, on first use."""

from __future__ import annotations

import argparse
import os
from functools import cached_property
from pathlib import Path

from opsgate.console import paths
from opsgate.console.catalog.loader import load_config
from opsgate.console.catalog.model import Config


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
