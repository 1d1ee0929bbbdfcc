"""~/.ssh/config the way OpenSSH reads it, or a refusal: where to connect, through what, as whom.

`resolve_route(endpoint)` turns an endpoint into a `Route`: the jump hosts to go through (ProxyJump,
each resolved through ssh_config itself), the target, and the ProxyCommand that reaches the first of
them, if any. Nothing here opens a connection.

`Include` is expanded before paramiko parses the text (globs, in sorted order; a relative path is taken
from ~/.ssh, as OpenSSH does for a user config and for a file given with `ssh -F`, wherever the endpoint's
ssh_config file is; from /etc/ssh only when that file is in /etc/ssh). An included file that has its own
Host/Match lines may be included only where every host is selected (before the first Host line, or in
`Host *` / `Match all`); inside a narrower block it is refused (OpenSSH would nest the blocks, paramiko
cannot). Like OpenSSH, an included file (or ~/.ssh/config itself) writable by others, or owned by another
user, is refused.

No directive is silently ignored. Every directive that applies to a host is either honoured
(`HONOURED`), safe to ignore because opsgate does the same or something stricter (`TOLERATED`),
accepted only with harmless values (`ONLY_VALUES`), or refused with an `SSHConfigError` naming the
directive, the host and the file (`REFUSED`, and any directive OpenSSH does not know either, unless
IgnoreUnknown lists it, as OpenSSH would). paramiko's `SSHConfig` does the block matching (Host,
Match, first value wins); `Match` criteria it does not implement are refused too.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import getpass
import glob
import os
import re
import shlex
import socket
from dataclasses import dataclass

import paramiko

from opsgate.actions.errors import SSHConfigError
from opsgate.actions.outcome import Endpoint

MAX_JUMPS = 8  # hops through ProxyJump, counting the ones a jump host's own ProxyJump adds (a loop ends here)

# Directives opsgate implements (ssh_config(5) spelling, for messages).
HONOURED = ("HostName", "Port", "User", "IdentityFile", "ProxyJump", "ProxyCommand", "IdentitiesOnly",
            "AddressFamily", "IgnoreUnknown", "Include", "HostKeyAlias", "CertificateFile", "IdentityAgent")
MAX_INCLUDE_DEPTH = 16  # OpenSSH's READCONF_MAX_DEPTH

# Directives opsgate ignores: they do not change where to connect or which host is trusted, or opsgate
# already does the same or something stricter (it never forwards, never asks, never writes known_hosts,
# never trusts an unknown host key, authenticates with public keys only).
TOLERATED = (
    "AddKeysToAgent", "BatchMode", "CASignatureAlgorithms", "ChallengeResponseAuthentication",
    "ClearAllForwardings", "Compression", "CompressionLevel", "ConnectionAttempts", "ConnectTimeout",
    "ControlMaster", "ControlPath", "ControlPersist", "EnableEscapeCommandline", "EnableSSHKeysign",
    "EscapeChar", "ExitOnForwardFailure", "FingerprintHash", "ForkAfterAuthentication", "ForwardAgent",
    "ForwardX11", "ForwardX11Timeout", "ForwardX11Trusted", "GatewayPorts", "GSSAPIAuthentication",
    "GSSAPIClientIdentity", "GSSAPIDelegateCredentials", "GSSAPIKexAlgorithms", "GSSAPIKeyExchange",
    "GSSAPIRenewalForcesRekey", "GSSAPIServerIdentity", "GSSAPITrustDns", "HashKnownHosts",
    "HostbasedAcceptedAlgorithms", "HostbasedAuthentication", "HostbasedKeyTypes", "IPQoS",
    "KbdInteractiveAuthentication", "KbdInteractiveDevices", "KnownHostsCommand", "LogLevel", "LogVerbose",
    "NoHostAuthenticationForLocalhost", "NumberOfPasswordPrompts", "ObscureKeystrokeTiming",
    "PasswordAuthentication", "PermitLocalCommand", "PermitRemoteOpen", "PreferredAuthentications",
    "Protocol", "RhostsRSAAuthentication", "RSAAuthentication", "SendEnv", "ServerAliveCountMax",
    "ServerAliveInterval", "StdinNull", "StreamLocalBindMask", "StreamLocalBindUnlink",
    "StrictHostKeyChecking", "SyslogFacility", "Tag", "TCPKeepAlive", "TunnelDevice", "UpdateHostKeys",
    "UsePrivilegedPort", "UseRoaming", "VerifyHostKeyDNS", "VisualHostKey", "WarnWeakCrypto", "XAuthLocation",
    "CanonicalDomains", "CanonicalizeFallbackLocal", "CanonicalizeMaxDots", "CanonicalizePermittedCNAMEs",
    "ChannelTimeout",
)

# Accepted with these values only (lower case); any other value is refused.
ONLY_VALUES = {
    "CanonicalizeHostname": ("no",),
    "CheckHostIP": ("no",),
    "ProxyUseFdpass": ("no",),
    "PubkeyAuthentication": ("yes", "unbound", "host-bound"),
    "RefuseConnection": ("no",),
    "RequestTTY": ("no", "auto"),  # opsgate never asks for a terminal, like `ssh host command`
    "SessionType": ("default",),
    "Tunnel": ("no",),
}

# Known to OpenSSH, change where or how opsgate would connect, and not implemented: refused.
REFUSED = {
    "BindAddress": "binding to a local address is not implemented",
    "BindInterface": "binding to a local interface is not implemented",
    "Ciphers": "restricting ciphers is not implemented",
    "DynamicForward": "port forwarding is not implemented",
    "GlobalKnownHostsFile": "opsgate trusts only its own known_hosts setting",
    "HostKeyAlgorithms": "restricting host key algorithms is not implemented",
    "KexAlgorithms": "restricting key exchange algorithms is not implemented",
    "LocalCommand": "running a local command after connecting is not implemented",
    "LocalForward": "port forwarding is not implemented",
    "MACs": "restricting MACs is not implemented",
    "PKCS11Provider": "PKCS#11 keys are not implemented",
    "PubkeyAcceptedAlgorithms": "restricting public key algorithms is not implemented",
    "PubkeyAcceptedKeyTypes": "restricting public key algorithms is not implemented",
    "RekeyLimit": "RekeyLimit is not implemented",
    "RemoteCommand": "opsgate runs the action's command, not a RemoteCommand",
    "RemoteForward": "port forwarding is not implemented",
    "RequiredRSASize": "RequiredRSASize is not implemented",
    "RevokedHostKeys": "a RevokedHostKeys file is not read; mark the key @revoked in known_hosts",
    "SecurityKeyProvider": "security key providers are not implemented",
    "SetEnv": "setting remote environment variables is not implemented",
    "SmartcardDevice": "smartcard keys are not implemented",
    "UserKnownHostsFile": "opsgate trusts only its own known_hosts setting",
}

_SPELLING = {name.lower(): name for name in (*HONOURED, *TOLERATED, *ONLY_VALUES, *REFUSED)}
# Match criteria paramiko evaluates; others (localnetwork, tagged, ...) it would treat as matching.
_MATCH_CRITERIA = ("all", "canonical", "final", "exec", "host", "originalhost", "user", "localuser")
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+\-]*")  # what %h %p %r %n may be in a ProxyCommand
_SETTING = re.compile(r"(\w+)(?:\s*=\s*|\s+)(.+)")  # a config line as paramiko splits it (SSHConfig.SETTINGS_REGEX)
# CertificateFile lines reach paramiko as IdentityFile values with this prefix: paramiko keeps only the first
# value of other keys, but accumulates IdentityFile over every matching block (in order), as OpenSSH does for
# both, and expands the same %-tokens and ~ in it. _hop() separates them again.
_CERTIFICATE_MARK = "opsgate-certificate-file:"


class _Config(paramiko.SSHConfig):
    """paramiko's parser and matcher, minus its %-expansion of ProxyCommand, ProxyJump and IdentityFile
    (done here, with the endpoint's own user and port, %%, and a check of what reaches the shell)."""

    TOKENS_BY_CONFIG_KEY = {k: v for k, v in paramiko.SSHConfig.TOKENS_BY_CONFIG_KEY.items()
                            if k not in ("proxycommand", "proxyjump", "identityfile")}

    def canonicalize(self, hostname, options, domains):  # paramiko's is a partial CanonicalizeHostname
        raise _Canonicalize(hostname)


class _Canonicalize(Exception):
    """CanonicalizeHostname would rewrite the host name: not implemented, refused."""


@dataclass(frozen=True)
class Hop:
    """One SSH server on the way: a jump host or the target."""

    alias: str  # the name looked up in ssh_config (a Host alias, or an address)
    host: str  # HostName: what is connected to and looked up in known_hosts
    port: int
    user: str
    identity_files: tuple[str, ...]
    identities_only: bool = False
    use_agent: bool = True
    family: int = socket.AF_UNSPEC
    host_key_alias: str | None = None  # HostKeyAlias: the name its host key (and certificate) is checked under
    certificate_files: tuple[str, ...] = ()  # CertificateFile: user certificates for the identities
    agent_socket: str | None = None  # IdentityAgent with a socket path; None: $SSH_AUTH_SOCK


@dataclass(frozen=True)
class Route:
    """How to reach a target: `hops` in connection order (jump hosts, then the target)."""

    hops: tuple[Hop, ...]
    proxy_command: str | None = None  # shell command whose stdin/stdout reach hops[0]; None: TCP

    @property
    def target(self) -> Hop:
        return self.hops[-1]

    @property
    def jumps(self) -> tuple[Hop, ...]:
        return self.hops[:-1]


@dataclass(frozen=True)
class JumpSpec:
    """One entry of a ProxyJump list: [user@]host[:port] or ssh://[user@]host[:port]."""

    host: str
    user: str | None = None
    port: int | None = None


def parse_jump(value: str, where: str) -> tuple[JumpSpec, ...]:
    """A ProxyJump value ("none" or a comma-separated list of hops); raises SSHConfigError."""
    if value.strip().lower() == "none":
        return ()
    specs = []
    for raw in value.split(","):
        item = raw.strip()
        if item.startswith("ssh://"):
            item = item[len("ssh://"):].rstrip("/")
        user = None
        if "@" in item:
            user, item = item.rsplit("@", 1)
        port: str | None = None
        if item.startswith("["):  # [v6 address]:port
            close = item.find("]")
            host, rest = item[1:close], item[close + 1:]
            if close < 0 or (rest and not rest.startswith(":")):
                raise SSHConfigError(f"{where}: bad ProxyJump hop {raw.strip()!r}")
            port = rest[1:] or None
        elif item.count(":") == 1:
            host, port = item.split(":")
        else:
            host = item
        if not host or (user is not None and not user) or not _SAFE_TOKEN.fullmatch(host) or host.startswith("-"):
            raise SSHConfigError(f"{where}: bad ProxyJump hop {raw.strip()!r}")
        try:
            number = int(port) if port is not None else None
        except ValueError:
            number = None
        if port is not None and (number is None or not 0 < number < 65536):
            raise SSHConfigError(f"{where}: bad port in ProxyJump hop {raw.strip()!r}")
        specs.append(JumpSpec(host, user, number))
    return tuple(specs)


class _Context:
    """One ssh_config file (with what it includes), looked up for the hosts of one endpoint's route."""

    def __init__(self, endpoint: Endpoint):
        self.name = endpoint.name
        self.path: str | None = None
        self.config: _Config | None = None
        if not endpoint.ssh_config:
            return
        path = os.path.expanduser(endpoint.ssh_config)
        if not os.path.exists(path):
            return
        self.path = path
        # Relative Include paths: ~/.ssh for a user config (OpenSSH's rule, which holds for `ssh -F FILE`
        # too), /etc/ssh for the system-wide one.
        system = os.path.dirname(os.path.abspath(path)) == "/etc/ssh"
        self.include_dir = "/etc/ssh" if system else os.path.expanduser("~/.ssh")
        try:
            text = "\n".join(self._read(path, 0, check=path == os.path.expanduser("~/.ssh/config"))) + "\n"
            self.config = _Config.from_text(text)
        except SSHConfigError:
            raise
        except Exception as e:  # paramiko raises several types for bad configs
            raise SSHConfigError(f"{self.name}: cannot use ssh config {path}: {e}") from e

    def _read(self, path: str, depth: int, *, check: bool = True) -> list[str]:
        """The lines of `path` with its Includes expanded and CertificateFile marked (see _CERTIFICATE_MARK)."""
        if check:
            _check_owner(path, self.name)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as e:
            raise SSHConfigError(f"{self.name}: cannot read ssh config {path}: {e.strerror}") from e
        _check_match_lines(text, self.name, path)
        out: list[str] = []
        everyone = True  # the current block selects every host: before any Host/Match, Host *, Match all
        for lineno, raw in enumerate(text.splitlines(), 1):
            match = _SETTING.match(raw.strip())
            if not match or raw.strip().startswith("#"):
                out.append(raw)
                continue
            key, value = match.group(1).lower(), match.group(2).strip()
            if key in ("host", "match"):
                everyone = value.split() == ["*"] if key == "host" else value.lower() == "all"
                out.append(raw)
            elif key == "include":
                out.extend(self._include(value, f"{path}:{lineno}", everyone, depth))
            elif key == "certificatefile":
                if len(value) > 1 and value.startswith('"') and value.endswith('"'):
                    value = value[1:-1]
                out.append(f"IdentityFile {_CERTIFICATE_MARK}{value}")
            else:
                out.append(raw)
        return out

    def _include(self, value: str, where: str, everyone: bool, depth: int) -> list[str]:
        if depth + 1 > MAX_INCLUDE_DEPTH:
            raise SSHConfigError(f"{self.name}: {where}: Include nested more than {MAX_INCLUDE_DEPTH} deep "
                                 f"(a file that includes itself?)")
        try:
            patterns = shlex.split(value)
        except ValueError as e:
            raise SSHConfigError(f"{self.name}: {where}: unparsable Include line: {e}") from e
        out: list[str] = []
        for pattern in patterns:
            pattern = os.path.expanduser(pattern)
            if not os.path.isabs(pattern):
                pattern = os.path.join(self.include_dir, pattern)
            for path in sorted(glob.glob(pattern)):  # no match: nothing, as in OpenSSH
                if os.path.isdir(path):
                    continue
                lines = self._read(path, depth + 1)
                headers = any((m := _SETTING.match(line.strip())) and m.group(1).lower() in ("host", "match")
                              for line in lines)
                if headers and not everyone:
                    raise SSHConfigError(
                        f"{self.name}: {where}: Include of {path}, which has Host or Match lines, inside a "
                        f"Host or Match block is not supported by opsgate (OpenSSH would nest the blocks); "
                        f"move the Include before the first Host line, or into Host *")
                out.extend(lines)
                if headers:
                    out.append("Host *")  # back to the including block, which selects every host
        return out

    def lookup(self, alias: str) -> dict:
        if self.config is None:
            return {"hostname": alias}
        try:
            return self.config.lookup(alias)
        except (_Canonicalize, KeyError) as e:  # KeyError: CanonicalizeHostname without CanonicalDomains
            if isinstance(e, KeyError) and e.args != ("canonicaldomains",):
                raise SSHConfigError(f"{self.name}: cannot use ssh config {self.path} for host {alias}: "
                                     f"missing {e}") from e
            raise SSHConfigError(
                f"{self.name}: ssh config {self.path} sets for host {alias}: CanonicalizeHostname (opsgate "
                f"supports only: no). opsgate does not ignore such settings; refusing to connect "
                f"(nothing was run)") from e
        except Exception as e:  # Match exec failing, canonicalisation failing, ...
            raise SSHConfigError(f"{self.name}: cannot use ssh config {self.path} for host {alias}: {e}") from e


def _check_owner(path: str, name: str) -> None:
    """OpenSSH's rule for user config files: owned by the user (or root), not writable by group or others."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise SSHConfigError(f"{name}: cannot read ssh config {path}: {e.strerror}") from e
    if (st.st_uid not in (0, os.getuid())) or st.st_mode & 0o022:
        raise SSHConfigError(f"{name}: bad owner or permissions on ssh config {path} (others could change "
                             f"where opsgate connects); refusing it, as OpenSSH does")


def _check_match_lines(text: str, name: str, path: str) -> None:
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        match = re.match(r"(?i)match(?:\s*=\s*|\s+)(.*)", line)
        if not match:
            continue
        try:
            words = shlex.split(match.group(1))
        except ValueError as e:
            raise SSHConfigError(f"{name}: {path}:{lineno}: unparsable Match line: {e}") from e
        i = 0
        while i < len(words):
            criterion = words[i].lstrip("!").lower()
            if criterion not in _MATCH_CRITERIA:
                raise SSHConfigError(
                    f"{name}: {path}:{lineno}: Match {criterion} is not supported by opsgate; "
                    f"refusing to connect rather than guess which hosts that block applies to")
            i += 1 if criterion in ("all", "canonical", "final") else 2


def _refusals(options: dict, alias: str) -> list[str]:
    """What in `options` (one host's lookup) opsgate cannot honour, one phrase each."""
    ignore_unknown = [p.strip() for p in str(options.get("ignoreunknown", "")).split(",") if p.strip()]
    problems = []
    for key, value in options.items():
        spelled = _SPELLING.get(key)
        if key == "hostname" or spelled in HONOURED or spelled in TOLERATED:
            continue
        if spelled in ONLY_VALUES:
            if str(value).strip().lower() not in ONLY_VALUES[spelled]:
                problems.append(f"{spelled} {value} (opsgate supports only: {', '.join(ONLY_VALUES[spelled])})")
        elif spelled == "LocalCommand":
            if str(options.get("permitlocalcommand", "no")).lower() == "yes":
                problems.append(f"LocalCommand ({REFUSED['LocalCommand']})")
        elif spelled in REFUSED:
            problems.append(f"{spelled} ({REFUSED[spelled]})")
        elif not any(fnmatch.fnmatchcase(key, p.lower()) for p in ignore_unknown):
            problems.append(f"{key} (not a directive opsgate knows; OpenSSH rejects unknown directives too "
                            f"unless IgnoreUnknown lists them)")
    return problems


def _expand(value: str, hop: Hop, directive: str, where: str, *, shell: bool, local: bool = False) -> str:
    """ssh_config %-tokens of ProxyCommand/ProxyJump: %% %h %n %p %r; with `local` (paths: IdentityFile,
    CertificateFile, IdentityAgent) also %d %i %u %L %l."""
    tokens = {"%": "%", "h": hop.host, "n": hop.alias, "p": str(hop.port), "r": hop.user}
    if local:
        tokens.update(d=os.path.expanduser("~"), i=str(os.getuid()), u=getpass.getuser(),
                      L=socket.gethostname().split(".")[0], l=socket.gethostname())

    def sub(match: re.Match[str]) -> str:
        token = match.group(1)
        if token not in tokens:
            raise SSHConfigError(f"{where}: {directive} uses %{token}, which opsgate does not expand "
                                 f"(it knows %{', %'.join(sorted(tokens))})")
        text = tokens[token]
        if shell and token != "%" and not _SAFE_TOKEN.fullmatch(text):
            raise SSHConfigError(f"{where}: refusing to pass {text!r} (%{token}) to the ProxyCommand shell: "
                                 f"it contains characters a shell would interpret")
        return text

    return re.sub(r"%(.?)", sub, value, flags=re.DOTALL)


def _environment(value: str, directive: str, where: str) -> str:
    """${VAR} in a path, as OpenSSH expands it in IdentityAgent and CertificateFile; an unset one is refused."""

    def sub(match: re.Match[str]) -> str:
        if match.group(1) not in os.environ:
            raise SSHConfigError(f"{where}: {directive} {value} uses ${{{match.group(1)}}}, which is not set")
        return os.environ[match.group(1)]

    return re.sub(r"\$\{(\w+)\}", sub, value)


def _agent(options: dict, hop: Hop, where: str) -> tuple[bool, str | None]:
    """IdentityAgent: (use an agent, its socket). None: $SSH_AUTH_SOCK; "$VAR": that variable, read when
    connecting; else a path (~, ${VAR}, %d %i %u %h %n %p %r %% expanded)."""
    value = options.get("identityagent")
    if value is None or value.upper() in ("SSH_AUTH_SOCK", "$SSH_AUTH_SOCK"):
        return True, None
    if value.lower() == "none":
        return False, None
    if re.fullmatch(r"\$\w+", value):
        return True, value
    path = _environment(_expand(value, hop, "IdentityAgent", where, shell=False, local=True), "IdentityAgent", where)
    return True, os.path.expanduser(path)


def _hop(options: dict, alias: str, user: str | None, port: int | None, identity: str | None, where: str) -> Hop:
    try:
        number = port or int(options.get("port", 22))
    except ValueError as e:
        raise SSHConfigError(f"{where}: bad Port in ssh config: {options.get('port')!r}") from e
    listed = tuple(options.get("identityfile", ()))
    certificates = tuple(p[len(_CERTIFICATE_MARK):] for p in listed if p.startswith(_CERTIFICATE_MARK))
    listed = tuple(p for p in listed if not p.startswith(_CERTIFICATE_MARK))
    family = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}.get(str(options.get("addressfamily", "any")).lower())
    if family is None and str(options.get("addressfamily", "any")).lower() != "any":
        raise SSHConfigError(f"{where}: bad AddressFamily {options.get('addressfamily')!r}")
    hop = Hop(
        alias=alias,
        host=options.get("hostname", alias),
        port=number,
        user=user or options.get("user") or getpass.getuser(),
        identity_files=(os.path.expanduser(identity),) if identity else (),
        identities_only=str(options.get("identitiesonly", "no")).lower() == "yes",
        family=family or socket.AF_UNSPEC,
        host_key_alias=options.get("hostkeyalias") or None,
    )

    def paths(values: tuple[str, ...], directive: str) -> tuple[str, ...]:  # ~, ${VAR} and %-tokens, as OpenSSH
        return tuple(os.path.expanduser(_environment(_expand(v, hop, directive, where, shell=False, local=True),
                                                     directive, where)) for v in values)

    use_agent, agent_socket = _agent(options, hop, where)
    return dataclasses.replace(hop, use_agent=use_agent, agent_socket=agent_socket,
                               identity_files=hop.identity_files or paths(listed, "IdentityFile"),
                               certificate_files=paths(certificates, "CertificateFile"))


def _proxy(options: dict) -> tuple[str, str] | None:
    """The first of ProxyJump and ProxyCommand obtained wins, as in OpenSSH ("none" disables both)."""
    for key in options:
        if key in ("proxyjump", "proxycommand"):
            value = options[key]
            if value is None or str(value).strip().lower() == "none":
                return None
            return key, str(value)
    return None


def _route(ctx: _Context, alias: str, *, user: str | None, port: int | None, identity: str | None,
           jumps: tuple[JumpSpec, ...] | None, depth: int) -> Route:
    """The route to `alias`; `jumps` (like ssh -J) replaces its own ProxyJump/ProxyCommand when given."""
    where = ctx.name if depth == 0 else f"{ctx.name}: jump host {alias}"
    if depth > MAX_JUMPS:
        raise SSHConfigError(f"{ctx.name}: more than {MAX_JUMPS} jump hosts on the way (a ProxyJump loop "
                             f"through {alias}?) in {ctx.path}")
    options = ctx.lookup(alias)
    problems = _refusals(options, alias)
    if problems:
        raise SSHConfigError(
            f"{where}: ssh config {ctx.path} sets for host {alias}: {'; '.join(problems)}. "
            f"opsgate does not ignore such settings; refusing to connect (nothing was run)")
    hop = _hop(options, alias, user, port, identity, where)
    if jumps is None:
        proxy = _proxy(options)
        if proxy is not None and proxy[0] == "proxycommand":
            return Route((hop,), _expand(proxy[1], hop, "ProxyCommand", where, shell=True))
        jumps = parse_jump(_expand(proxy[1], hop, "ProxyJump", where, shell=False), where) if proxy else ()
    if not jumps:
        return Route((hop,), None)
    # ssh -J a,b,c target is ssh -W target c, where c is reached with -J a,b (its own proxy settings
    # overridden), and so on down to a, which is reached with its own ssh_config (its own ProxyJump too).
    last = jumps[-1]
    before = _route(ctx, last.host, user=last.user, port=last.port, identity=None,
                    jumps=jumps[:-1] or None, depth=depth + 1)
    return Route(before.hops + (hop,), before.proxy_command)


def resolve_route(endpoint: Endpoint) -> Route:
    """Where and how to reach `endpoint`, from its fields over ssh_config; raises SSHConfigError."""
    ctx = _Context(endpoint)
    jumps = None
    if endpoint.jump is not None:  # opsgate's own `jump` wins over ssh_config, as ssh -J does
        jumps = parse_jump(endpoint.jump, f"{endpoint.name}: jump")
    return _route(ctx, endpoint.host, user=endpoint.user, port=endpoint.port, identity=endpoint.identity_file,
                  jumps=jumps, depth=0)
