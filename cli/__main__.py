"""``python -m opsgate.cli``: the same as the ``opsgate`` command."""

import sys

from opsgate.cli.main import main

sys.exit(main())
