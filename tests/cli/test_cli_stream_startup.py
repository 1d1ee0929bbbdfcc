"""What `opsgate` leaves out of its start-up must still be there when used: paramiko's `invoke`, for
ssh_config's `Match exec`, is imported at its first use (cli/imports.py). Each case runs in a fresh
interpreter: the test process has paramiko (and maybe invoke) loaded already."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def run_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_match_exec_still_runs_its_command_with_invoke_deferred():
    pytest.importorskip("invoke")
    out = run_python("""
        import sys
        from opsgate.cli.imports import defer_invoke
        defer_invoke()
        from opsgate.actions.sshconfig import _Config
        print("before", type(sys.modules["invoke"]).__name__, "asyncio" in sys.modules)
        config = _Config.from_text('Match exec "exit 0"\\n  User bob\\nMatch exec "exit 1"\\n  Port 2222\\n')
        found = config.lookup("web-1")
        print("lookup", found.get("user"), found.get("port"))
        print("after", type(sys.modules["invoke"]).__name__, sys.modules["invoke"].__name__)
    """)
    assert "before _Deferred False" in out  # paramiko imported, invoke (and what it pulls in) not yet
    assert "lookup bob None" in out  # the command ran: exit 0 matched, exit 1 did not
    assert "after module invoke" in out


def test_the_deferred_module_is_the_real_one_once_read():
    pytest.importorskip("invoke")
    out = run_python("""
        import sys
        from opsgate.cli.imports import defer_invoke
        defer_invoke()
        import paramiko.config
        import invoke as real
        print(paramiko.config.invoke.run is real.run, sys.modules["invoke"].run is real.run)
    """)
    assert out.split() == ["True", "True"]


def test_nothing_is_deferred_when_invoke_is_loaded_or_missing():
    out = run_python("""
        import sys, importlib.util
        from opsgate.cli import imports
        real_find = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "invoke" else real_find(name, *a)
        imports.defer_invoke()
        print("missing", "invoke" in sys.modules)
    """)
    assert out.split() == ["missing", "False"]  # paramiko then keeps its ImportError for Match exec, as before
    if importlib_util_has("invoke"):
        out = run_python("""
            import sys, invoke
            from opsgate.cli.imports import defer_invoke
            defer_invoke()
            print(type(sys.modules["invoke"]).__name__)
        """)
        assert out.split() == ["module"]


def importlib_util_has(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def run_exit(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered, as to a file
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                          env=env)


def test_exit_process_keeps_the_code_the_buffered_output_and_the_atexit_handlers():
    out = run_exit("""
        import atexit, sys
        from opsgate.cli.main import exit_process
        atexit.register(lambda: print("atexit ran"))
        sys.stdout.write("x" * 100000 + "\\n")
        print("last line")
        sys.stderr.write("to stderr\\n")
        exit_process(7)
        print("not reached")
    """)
    assert out.returncode == 7
    assert out.stdout == "x" * 100000 + "\nlast line\natexit ran\n"
    assert out.stderr == "to stderr\n"


def test_exit_process_leaves_a_live_thread_to_the_normal_exit():
    out = run_exit("""
        import sys, threading
        from opsgate.cli.main import exit_process
        go = threading.Event()
        worker = threading.Thread(target=lambda: (go.wait(), print("worker finished")))
        worker.start()
        exit_process(5)
        print("returned")
        go.set()
        sys.exit(5)
    """)
    assert out.returncode == 5
    assert out.stdout == "returned\nworker finished\n"


def test_exit_process_leaves_a_failing_flush_to_the_normal_exit():
    out = run_exit("""
        import io, sys
        from opsgate.cli.main import exit_process

        class Full(io.StringIO):
            def flush(self):
                raise OSError(28, "No space left on device")

        real, sys.stdout = sys.stdout, Full()
        exit_process(0)
        sys.stdout = real
        print("returned")
    """)
    assert out.returncode == 0 and out.stdout == "returned\n"


def test_main_with_an_argv_returns_its_code(tmp_path):
    from opsgate.cli.main import main

    assert main(["--config", str(tmp_path / "missing.toml"), "run", "x", "--yes"]) == 2


def test_the_trail_check_says_the_same_while_the_transport_is_imported(tmp_path, capsys, monkeypatch):
    """`opsgate run` checks the trail in a thread while it imports paramiko: same verdict, same warning, and an
    error of the check is raised as before."""
    from types import SimpleNamespace

    import opsgate.cli.run as run_module
    from opsgate.console.audit.trail import AuditTrail
    from opsgate.console.paths import AUDIT_FILE

    trail = AuditTrail(tmp_path / AUDIT_FILE)
    trail.append("note", operator="alice", text="one")
    trail.append("note", operator="alice", text="two")
    ctx = SimpleNamespace(config=SimpleNamespace(gate=None), state_dir=tmp_path)
    run_module.warn_if_trail_broken(ctx, import_transport=True)
    assert capsys.readouterr().err == ""
    trail.path.write_text(trail.path.read_text().replace('"text":"one"', '"text":"0ne"'))
    (tmp_path / "audit.verified").unlink(missing_ok=True)
    expected = run_module.trail_problem(trail.path, tmp_path)
    assert expected is not None
    assert run_module._check_while_importing(trail.path, tmp_path) == expected
    run_module.warn_if_trail_broken(ctx, import_transport=True)
    assert "does not verify" in capsys.readouterr().err

    def broken(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(run_module, "trail_problem", broken)
    with pytest.raises(PermissionError):
        run_module.warn_if_trail_broken(ctx, import_transport=True)
