"""What the ``opsgate`` process imports only when it is used.

paramiko imports ``invoke`` (when installed; it is optional) at import time, for one thing only:
running the command of an ssh_config ``Match exec`` block (``paramiko.config``: ``invoke.run``). Loading
invoke costs about 100 ms of CPU at every start (it pulls in asyncio, unittest.mock and a YAML parser),
and almost no config has ``Match exec``. ``defer_invoke`` puts a stand-in module in ``sys.modules`` before
paramiko is imported: paramiko's ``import invoke`` finds it, and the first attribute paramiko reads of
it (``invoke.run``) imports the real package, which then replaces the stand-in. What paramiko does is
unchanged: the same function runs the same command; without invoke installed, nothing is put in place
and paramiko keeps its ImportError for ``Match exec`` as before.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types

_lock = threading.Lock()


class _Deferred(types.ModuleType):
    """Stands in for a module until one of its attributes is read; then that module is imported."""

    def __getattr__(self, name: str):  # only for attributes the stand-in lacks: all but its name and spec
        return getattr(_load(self), name)


def _load(stub: _Deferred) -> types.ModuleType:
    with _lock:
        module = sys.modules.get(stub.__name__)
        if module is stub or module is None:
            sys.modules.pop(stub.__name__, None)
            module = importlib.import_module(stub.__name__)
    return module


def defer_invoke() -> None:
    """Before paramiko is imported: make its ``import invoke`` cheap until ``Match exec`` needs invoke."""
    if "invoke" in sys.modules or "paramiko.config" in sys.modules:
        return  # loaded already (or paramiko holds its own reference): nothing to save
    try:
        spec = importlib.util.find_spec("invoke")
    except (ImportError, ValueError):
        return
    if spec is None:
        return  # not installed: paramiko's own import fails and it keeps that error, as without this
    stub = _Deferred("invoke")
    stub.__spec__ = None  # not a module being initialised: `import invoke` returns it as it is
    sys.modules["invoke"] = stub
