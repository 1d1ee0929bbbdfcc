"""``opsgated``: the gate service (init, serve, session, enroll-token). Run it as its own OS user."""

from __future__ import annotations

import argparse
import os
import pwd
import signal
import sys
import threading

from opsgate.cli.context import Context, global_flags
from opsgate.cli.main import version
from opsgate.console.errors import EXIT_OK, ConfigError, OpsgateError, UsageError

SSHD_LINES = """\
# On every target, as root: trust the gate's CA for the account {user}, and nothing else for it.
install -d -m 0755 /etc/ssh/opsgate_principals
echo '{ca}' > /etc/ssh/opsgate_user_ca.pub
echo {user} > /etc/ssh/opsgate_principals/{user}
# in /etc/ssh/sshd_config, then reload sshd:
#   TrustedUserCAKeys /etc/ssh/opsgate_user_ca.pub
#   AuthorizedPrincipalsFile /etc/ssh/opsgate_principals/%u
# and leave {user} no static key (rm ~{user}/.ssh/authorized_keys), or plain ssh bypasses the gate.
"""

SYSTEMD_UNIT = """\
# /etc/systemd/system/opsgated.service
[Unit]
Description=opsgate gate: step-up enforced with command-bound SSH certificates
After=network.target

[Service]
User={user}
ExecStart={exe} serve --config {config} --state-dir {state}
RuntimeDirectory=opsgated
RuntimeDirectoryMode=0755
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={state}
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""


def _refuse_root() -> None:
    if os.geteuid() == 0:
        raise UsageError("opsgated must run as its own user, not root: useradd --system opsgate, then "
                         "run it as that user (sudo -u opsgate opsgated ...)")


def _gate_config(ctx: Context):
    if ctx.config.gate is None:
        raise ConfigError(f"{ctx.config_path}: the gate's config needs a [gate] table (socket, operators)")
    return ctx.config


def cmd_init(ctx: Context) -> int:
    from opsgate.console.gate.ca import UserCA

    _refuse_root()
    config = _gate_config(ctx)
    ca = UserCA.create(ctx.state_dir)
    users = sorted({t.user for t in config.targets.values() if t.user}) or ["sre"]
    print(f"opsgated: CA created in {ctx.state_dir} (user_ca, 0600; user_ca.pub)\n")
    for user in users:
        print(SSHD_LINES.format(ca=ca.public_line(), user=user))
    print(SYSTEMD_UNIT.format(user=pwd.getpwuid(os.geteuid()).pw_name, exe=sys.argv[0], config=ctx.config_path,
                              state=ctx.state_dir))
    return EXIT_OK


def _service(ctx: Context):
    from opsgate.console.gate.service import GateService

    _refuse_root()
    return GateService(_gate_config(ctx), ctx.state_dir)


def cmd_serve(ctx: Context) -> int:
    from opsgate.console.gate.server import listen, serve_socket

    service = _service(ctx)
    path = ctx.args.socket or service.config.gate.socket
    if path is None:
        raise UsageError("no socket: set [gate] socket in the gate's config or pass --socket PATH")
    sock = listen(path)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    forwarder = None
    if service.config.forwarding is not None:  # the authoritative trail goes to the collector as a console's does
        from opsgate.console.audit.forward.forwarder import Forwarder

        forwarder = Forwarder(service.audit.path, service.state_dir, service.config.forwarding).start()
    print(f"opsgated: serving on {path}", file=sys.stderr, flush=True)
    try:
        serve_socket(service, sock, stop)
    finally:
        sock.close()
        if forwarder is not None:
            forwarder.stop(timeout=5)
        try:
            os.unlink(path)
        except OSError:
            pass
    return EXIT_OK


def cmd_session(ctx: Context) -> int:
    from opsgate.console.gate.server import serve_session

    serve_session(_service(ctx), ctx.args.operator)
    return EXIT_OK


def cmd_enroll_token(ctx: Context) -> int:
    from opsgate.console.gate.service import TOKEN_LIFETIME, EnrollTokens

    _refuse_root()
    token = EnrollTokens(ctx.state_dir).create(ctx.args.user)
    print(f"enrollment token for {ctx.args.user} (one use, valid {TOKEN_LIFETIME // 3600} h):\n{token}\n"
          f"they run: opsgate enroll otp --token {token}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    # Subcommands accept the global flags too, without resetting what was given before the command.
    common = global_flags(argparse.SUPPRESS)
    p = argparse.ArgumentParser(prog="opsgated", parents=[global_flags(None)],
                                description="The opsgate gate: step-up enforced with command-bound SSH certificates.")
    p.add_argument("--version", action="version", version=f"opsgated {version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sp = sub.add_parser("init", parents=[common], help="create the CA and state dir; print the sshd lines for targets")
    sp.set_defaults(handler=cmd_init)
    sp = sub.add_parser("serve", parents=[common], help="serve consoles on the Unix socket")
    sp.add_argument("--socket", metavar="PATH", help="default: [gate] socket")
    sp.set_defaults(handler=cmd_serve)
    sp = sub.add_parser("session", parents=[common], help="serve one console on stdin/stdout (ssh forced command)")
    sp.add_argument("--operator", required=True,
                    help="set by the admin in the gate user's authorized_keys command=, never by the operator")
    sp.set_defaults(handler=cmd_session)
    sp = sub.add_parser("enroll-token", parents=[common], help="a one-use token for USER's first factor")
    sp.add_argument("user")
    sp.set_defaults(handler=cmd_enroll_token)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(Context(args))
    except ConfigError as e:
        for problem in e.problems:
            print(f"opsgated: {problem}", file=sys.stderr)
        return e.exit_code
    except OpsgateError as e:
        print(f"opsgated: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
