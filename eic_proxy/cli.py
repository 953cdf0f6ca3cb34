"""Command line: parse, dispatch, and map every failure to one stderr line and an exit code."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Optional, Sequence, cast

from . import __version__

log = logging.getLogger("eic_proxy")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--region", help="AWS region (default: profile / AWS_REGION)")
    p.add_argument("--profile", help="AWS profile (default: AWS_PROFILE / default)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more output on stderr (-vv: debug)")


def _add_key_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent", action="store_const", const=True, default=None,
                   help="add the key to your ssh-agent (lifetime: the key's remaining life)")
    p.add_argument("--key-type", choices=["ed25519", "rsa-2048", "rsa-4096"], help="managed key type (default ed25519)")
    p.add_argument("--key-lifetime", metavar="DURATION", help="rotate the managed key after this long (default 4h)")


def _add_lookup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-cache", dest="use_cache", action="store_false",
                   help="ignore and do not write the resolution cache")
    p.add_argument("--pick", choices=["newest", "oldest"],
                   help="when a name matches several instances, take the newest/oldest by launch time")


class _Unused:
    """Stands in for the sub-parsers a run does not need: argparse set-up of all of them costs ~5 ms,
    a visible share of a ProxyCommand's start-up (bench/RESULTS.md)."""

    def add_argument(self, *args: object, **kwargs: object) -> None:
        return None


COMMANDS = ("connect", "tunnel", "doctor", "resolve", "ssh-config", "keys", "ls", "cache", "policy", "audit",
            "key-path", "completion")


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line; with ``only``, just that sub-command is set up (the others are not needed)."""
    parser = argparse.ArgumentParser(
        prog="eic-proxy",
        description="OpenSSH ProxyCommand for private EC2 instances through EC2 Instance Connect Endpoints.",
    )
    parser.add_argument("--version", action="version", version=f"eic-proxy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, **kwargs: Any) -> Any:
        return sub.add_parser(name, **kwargs) if only in (None, name) else _Unused()

    c = add("connect", help="tunnel stdin/stdout to HOST:PORT (use as ssh ProxyCommand)",
                       description="Tunnel stdin/stdout to an instance through its VPC's EICE. "
                                   "Meant for `ProxyCommand eic-proxy connect %%h %%p %%r`.")
    c.add_argument("host", metavar="HOST", help="instance ID, Name tag (or glob), tag:KEY=VALUE, private IP or "
                                                 "DNS name; append --REGION[--PROFILE] to pick account and region")
    c.add_argument("port", metavar="PORT", nargs="?", type=int, default=22, help="remote port (default 22)")
    c.add_argument("user", metavar="USER", nargs="?", help="remote user from ssh's %%r (sets the OS user)")
    c.add_argument("--os-user", help="OS user for the key push (default: USER, else ec2-user)")
    c.add_argument("--eice-id", help="use this EC2 Instance Connect Endpoint instead of discovering one")
    c.add_argument("--max-tunnel-duration", type=int, metavar="SECONDS",
                   help="ask the endpoint to cut the tunnel after SECONDS (1..3600); required by some IAM policies")
    c.add_argument("--no-push", dest="push", action="store_false",
                   help="do not push the key (you bring a key the instance already trusts)")
    c.add_argument("--start", action="store_true",
                   help="start the instance if it is stopped and wait until its port answers")
    c.add_argument("--start-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="how long --start waits for the instance and its port (default 300)")
    c.add_argument("--typed", metavar="NAME", help=argparse.SUPPRESS)  # ssh's %n: the host with its original case
    c.add_argument("--identity", metavar="PATH", help="push the public half of this key of yours instead of ours")
    c.add_argument("--max-connections", dest="endpoint_connections", type=int, default=20, metavar="N",
                   help="concurrent tunnels per endpoint before new ones queue (service limit: 20)")
    c.add_argument("--queue-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="how long a queued tunnel waits for a free slot (default 300)")
    c.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="timeout for AWS API calls and the WebSocket handshake (default 10 / 15)")
    c.add_argument("--keepalive", type=float, default=30.0, metavar="SECONDS",
                   help="WebSocket ping interval; 3 unanswered pings end the tunnel (0: off; default 30)")
    c.add_argument("--banner-wait", type=float, default=5.0, metavar="SECONDS",
                   help="port 22: warn when the instance has sent nothing this long after the tunnel opened "
                        "(default 5)")
    c.add_argument("--expiry-warning", type=float, default=60.0, metavar="SECONDS",
                   help="warn this long before the maximum tunnel duration is reached (default 60; 0: off)")
    _add_key_options(c)
    _add_lookup(c)
    _add_common(c)

    t = add("tunnel", help="listen on a local port and tunnel each connection to HOST (RDP, tools)",
                       description="Listen on 127.0.0.1 and ::1 and tunnel every accepted connection to the "
                                   "instance's --remote-port through its endpoint (one WebSocket each). For RDP "
                                   "(3389), or port 22 for tools that cannot run a ProxyCommand. Ctrl-C stops it.")
    t.add_argument("host", metavar="HOST", help="instance ID, Name tag, tag:KEY=VALUE, IP or DNS name")
    t.add_argument("--local-port", type=int, required=True, metavar="N", help="local port (0: pick a free one)")
    t.add_argument("--remote-port", type=int, default=22, metavar="P", help="instance port (default 22)")
    t.add_argument("--os-user", help="OS user for the key push on port 22 (default ec2-user)")
    t.add_argument("--max-connections", type=int, default=10, metavar="N",
                   help="connections open at once through this listener (default 10; the endpoint allows 20)")
    t.add_argument("--push", dest="push", action="store_true", default=None,
                   help="push the managed key for every connection (default: only for port 22)")
    t.add_argument("--no-push", dest="push", action="store_false", help="never push a key")
    t.add_argument("--eice-id", help="use this endpoint instead of discovering one")
    t.add_argument("--max-tunnel-duration", type=int, metavar="SECONDS", help="per-connection duration cap (1..3600)")
    t.add_argument("--queue-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="how long a connection waits for a free slot (default 300)")
    t.add_argument("--timeout", type=float, metavar="SECONDS", help="API and handshake timeout")
    _add_key_options(t)
    _add_lookup(t)
    _add_common(t)

    d = add("doctor", help="check the whole chain to HOST and say how to fix what fails",
                       description="Check credentials, instance, endpoint (state, PreserveClientIp, IP type), "
                                   "security groups, IAM (simulated when allowed), key push, handshake, the SSH "
                                   "banner and a real login, one line each; every failure names its fix. "
                                   "Read-only. Exit 0 only when every check passes.")
    d.add_argument("host", metavar="HOST", help="instance ID, Name tag, tag:KEY=VALUE, IP or DNS name")
    d.add_argument("--port", type=int, default=22, help="remote port (default 22)")
    d.add_argument("--os-user", help="OS user to check (default: config, else ec2-user)")
    d.add_argument("--client-ip", metavar="ADDRESS",
                   help="your public IP as AWS sees it (for endpoints that preserve client IPs; default: "
                        "asked of checkip.amazonaws.com)")
    d.add_argument("--eice-id", help="check this endpoint instead of discovering one")
    d.add_argument("--max-tunnel-duration", type=int, metavar="SECONDS", help="as you pass it to connect")
    d.add_argument("--no-push", dest="push", action="store_false", help="skip the push and login checks")
    d.add_argument("--timeout", type=float, metavar="SECONDS", help="API and handshake timeout")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    _add_key_options(d)
    d.add_argument("--pick", choices=["newest", "oldest"], help="when the name matches several instances")
    _add_common(d)

    r = add("resolve", help="show how HOST resolves (instance, IP, VPC, endpoint, cache age)",
                       description="Show the whole resolution of HOST without connecting.")
    r.add_argument("host", metavar="HOST")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.add_argument("--eice-id", help="use this endpoint instead of discovering one")
    _add_lookup(r)
    _add_common(r)

    g = add("ssh-config", help="print (or --install) the ssh_config Host block",
                       description="Print an ssh_config Host block that routes PATTERNs through eic-proxy; "
                                   "--install puts it in ~/.ssh/eic-proxy.config and includes that from "
                                   "~/.ssh/config.")
    g.add_argument("patterns", metavar="PATTERN", nargs="*",
                   help="ssh Host patterns to route through eic-proxy (default: i-*)")
    g.add_argument("--user", help="set User in the block (the OS user; default: ssh's own default)")
    g.add_argument("--name", help="block name in the managed file (default: PROFILE[@REGION] or 'default')")
    g.add_argument("--install", action="store_true", help="write the block and add one Include to ~/.ssh/config")
    _add_key_options(g)
    _add_common(g)

    ks = add("keys", help="show, rotate or clear the managed key",
                        description="Show the managed key (type, fingerprint, age, where it lives, recent pushes); "
                                    "`rotate` replaces it, `clear` removes it from disk, keyring and agent.")
    ks.add_argument("action", nargs="?", choices=["show", "rotate", "clear"], default="show")
    ks.add_argument("--force", action="store_true", help="rotate even if the key was used in the last minute")
    ks.add_argument("--json", action="store_true", help="machine-readable output (show)")
    _add_key_options(ks)
    _add_common(ks)

    ls = add("ls", help="list instances and whether their VPC has a usable endpoint",
                        description="List instances in the region: name, ID, private IP, state, VPC, endpoint.")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.add_argument("--all", action="store_true", help="include terminated instances")
    _add_common(ls)

    cc = add("cache", help="manage the resolution and credentials cache",
                        description="Clear cached instance/endpoint locations and cached temporary AWS credentials.")
    cc.add_argument("action", choices=["clear"])
    _add_common(cc)

    po = add("policy", help="print the least-privilege IAM policy for connecting",
                        description="Print the least-privilege IAM policy (JSON, or Terraform with --format "
                                    "terraform) that lets an identity connect with eic-proxy: SendSSHPublicKey "
                                    "for the given instances and OS users, OpenTunnel on the given endpoints, "
                                    "ports, targets and duration, and the Describe calls eic-proxy makes.")
    po.add_argument("--instance", action="append", default=[], metavar="ID|ARN", help="instance (repeatable)")
    po.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                    help="instances carrying this tag (repeatable)")
    po.add_argument("--os-user", action="append", default=[], metavar="USER", help="ec2:osuser (repeatable)")
    po.add_argument("--endpoint", action="append", default=[], metavar="ID|ARN", help="endpoint (repeatable)")
    po.add_argument("--port", action="append", type=int, default=[], metavar="PORT",
                    help="remotePort allowed (repeatable; default 22)")
    po.add_argument("--private-ip", action="append", default=[], metavar="IP|CIDR",
                    help="privateIpAddress allowed (repeatable)")
    po.add_argument("--max-tunnel-duration", type=int, metavar="SECONDS", help="maxTunnelDuration cap (1..3600)")
    po.add_argument("--source-ip", action="append", default=[], metavar="CIDR",
                    help="aws:SourceIp the calls must come from (repeatable)")
    po.add_argument("--region", default="*", help="region in the ARNs (default *)")
    po.add_argument("--account", default="*", help="account ID in the ARNs (default *)")
    po.add_argument("--allow-start", action="store_true", help="also allow ec2:StartInstances (for --start)")
    po.add_argument("--format", choices=["json", "terraform"], default="json")
    po.add_argument("--name", default="eic_proxy", help="Terraform name of the policy document (default eic_proxy)")
    po.add_argument("-v", "--verbose", action="count", default=0, help=argparse.SUPPRESS)

    au = add("audit", help="show the local audit log (pushes, connections), optionally with CloudTrail",
                        description="Show the local audit log: key pushes and connections (start, end, bytes each "
                                    "way, duration, exit reason, RequestIds). --cloudtrail adds the matching "
                                    "SendSSHPublicKey/OpenTunnel events from CloudTrail LookupEvents.")
    au.add_argument("--host", metavar="PATTERN", help="only entries for this alias or instance ID (glob)")
    au.add_argument("--since", metavar="WHEN", help="30m, 2h, 7d, or an ISO date/time")
    au.add_argument("--limit", type=int, metavar="N", help="only the last N local entries")
    au.add_argument("--cloudtrail", action="store_true", help="also look up CloudTrail events and line them up")
    au.add_argument("--principal", metavar="ARN", help="with --cloudtrail: only events by this principal (substring)")
    au.add_argument("--json", action="store_true", help="machine-readable output")
    _add_common(au)

    co = add("completion", help="print shell completion for bash or zsh",
             description="Print a completion script: `eval \"$(eic-proxy completion bash)\"` in ~/.bashrc, or "
                         "`eic-proxy completion zsh > \"${fpath[1]}/_eic-proxy\"`.")
    co.add_argument("shell", choices=["bash", "zsh"])
    co.add_argument("-v", "--verbose", action="count", default=0, help=argparse.SUPPRESS)

    k = add("key-path", help="print the private key path for IdentityFile",
                       description="Print the path of the local private key (created on first use; in "
                                   "keyring mode, the public key, which is what IdentityFile then names).")
    _add_key_options(k)
    _add_common(k)
    return parser


def setup_logging(verbose: int) -> None:
    if os.environ.get("EIC_PROXY_DEBUG"):
        verbose = max(verbose, 2)
    level = max(logging.WARNING - 10 * verbose, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("eic-proxy: %(message)s" if verbose < 2
                                           else "eic-proxy: %(name)s: %(message)s"))
    root = logging.getLogger("eic_proxy")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def program(args: argparse.Namespace) -> int:
    """Run the sub-command, without error handling."""
    if args.command == "connect":
        from .connect import run

        return run(_connect_options(args, args.host, args.port, args.os_user or args.user))
    if args.command == "tunnel":
        from .listener import run_tunnel

        opts = _connect_options(args, args.host, args.remote_port, args.os_user)
        return run_tunnel(opts, args.local_port, args.max_connections, args.push)
    if args.command == "doctor":
        from .doctor import run_doctor

        args.use_cache = False  # fresh lookups: the doctor checks what AWS says now
        return run_doctor(_connect_options(args, args.host, args.port, args.os_user), args.client_ip, args.json)
    if args.command == "resolve":
        return _resolve(args)
    if args.command == "ssh-config":
        return _ssh_config(args)
    if args.command == "keys":
        from .keycmd import run_keys

        return run_keys(args, _settings(args, ""))
    if args.command == "ls":
        from .listing import run_ls

        return run_ls(args.profile, args.region, args.json, args.all)
    if args.command == "cache":
        from .awsfiles import credentials_cache
        from .cache import Cache

        n = Cache().clear() + credentials_cache().clear()
        print(f"removed {n} cached entries (locations and temporary credentials)", file=sys.stderr)
        return 0
    if args.command == "policy":
        return _policy(args)
    if args.command == "completion":
        from .completion import script

        sys.stdout.write(script(args.shell, build_parser()))
        return 0
    if args.command == "audit":
        from .auditcmd import run_audit

        return run_audit(args)
    if args.command == "key-path":
        from .connect import make_key_manager

        s = _settings(args, "")
        key = make_key_manager(s).ensure()
        print(key.private_path or key.public_path)
        return 0
    raise AssertionError(args.command)


def _connect_options(args: argparse.Namespace, host: str, port: int, os_user: Optional[str]):
    """ConnectOptions from the flags of connect / tunnel / doctor, layered with env and config."""
    from .connect import DEFAULT_OS_USER, ConnectOptions

    typed = getattr(args, "typed", None)
    if typed and typed.lower() == host.lower():
        host = typed  # ssh lowercases %h; Name tags are case-sensitive
    s = _settings(args, host, os_user=os_user)
    return ConnectOptions(
        key_type=s.key_type or "ed25519", key_lifetime=s.key_lifetime, key_store=s.key_store,
        agent=bool(s.agent), identity=s.identity, max_connections=getattr(args, "endpoint_connections", 20),
        queue_timeout=getattr(args, "queue_timeout", 300.0), timeout=getattr(args, "timeout", None),
        keepalive=getattr(args, "keepalive", 30.0), expiry_warning=getattr(args, "expiry_warning", 60.0),
        banner_wait=getattr(args, "banner_wait", 5.0),
        host=host, port=port, os_user=s.os_user or DEFAULT_OS_USER,
        region=s.region, profile=s.profile, eice_id=s.eice_id,
        max_tunnel_duration=s.max_tunnel_duration, push=getattr(args, "push", True) is not False,
        use_cache=getattr(args, "use_cache", True), pick=getattr(args, "pick", None),
        start=getattr(args, "start", False), start_timeout=getattr(args, "start_timeout", 300.0),
        known_hosts_alias=args.host if typed else None,
    )


def _settings(args: argparse.Namespace, host: str, os_user: Optional[str] = None):
    """Flags, host suffix, environment and config file, layered as config.py documents."""
    from .config import Settings, effective
    from .resolve import parse_host

    lifetime = getattr(args, "key_lifetime", None)
    if lifetime is not None:
        from .config import _coerce

        lifetime = cast(Optional[int], _coerce("key-lifetime", lifetime, "--key-lifetime"))
    flags = Settings(profile=args.profile, region=args.region, os_user=os_user, eice_id=getattr(args, "eice_id", None),
                     max_tunnel_duration=getattr(args, "max_tunnel_duration", None),
                     key_type=getattr(args, "key_type", None), key_lifetime=lifetime,
                     agent=getattr(args, "agent", None), identity=getattr(args, "identity", None))
    if not host:
        return effective("", flags)
    spec = parse_host(host)
    return effective(spec.alias, flags, Settings(profile=spec.profile, region=spec.region))


def _ssh_config(args: argparse.Namespace) -> int:
    from .connect import make_key_manager
    from .sshconfig import DEFAULT_PATTERNS, BlockOptions, install, prepare_known_hosts, render

    s = _settings(args, "")
    opts = BlockOptions(patterns=tuple(args.patterns) or DEFAULT_PATTERNS, profile=args.profile,
                        region=args.region, user=args.user, name=args.name, agent=bool(s.agent),
                        key_type=args.key_type, key_lifetime=args.key_lifetime)
    key = make_key_manager(s).ensure()  # IdentityFile must exist before ssh starts
    prepare_known_hosts()
    # With the agent, ssh must be pointed at the public half, which exists before it starts (docs/testbed.md §4).
    block = render(opts, key.public_path if s.agent else key.private_path)
    if not args.install:
        sys.stdout.write(block)
        return 0
    report = install(block, opts.block_name)
    print(f"{'updated' if report.block_replaced else 'added'} block {opts.block_name!r} in {report.own_file}",
          file=sys.stderr)
    if report.include_added:
        extra = f" (backup: {report.backup})" if report.backup else ""
        print(f"added `Include {report.own_file}` at the top of {report.ssh_config}{extra}", file=sys.stderr)
    else:
        print(f"{report.ssh_config} already includes it", file=sys.stderr)
    return 0


def _policy(args: argparse.Namespace) -> int:
    from .policy import PolicySpec, build, notes, to_json, to_terraform

    spec = PolicySpec(instances=tuple(args.instance), tags=tuple(args.tag), os_users=tuple(args.os_user),
                      endpoints=tuple(args.endpoint), ports=tuple(args.port) or (22,),
                      private_ips=tuple(args.private_ip), max_tunnel_duration=args.max_tunnel_duration,
                      source_ips=tuple(args.source_ip), region=args.region, account=args.account,
                      allow_start=args.allow_start)
    doc = build(spec)
    sys.stdout.write(to_terraform(doc, args.name) if args.format == "terraform" else to_json(doc))
    for note in notes(spec):
        print(f"eic-proxy: note: {note}", file=sys.stderr)
    return 0


def _resolve(args: argparse.Namespace) -> int:
    import json

    from .aws import make_aws
    from .cache import Cache
    from .locate import Locator
    from .resolve import parse_host

    spec = parse_host(args.host)
    s = _settings(args, args.host)
    aws = make_aws(s.profile, s.region)
    located = Locator(aws, Cache() if args.use_cache else None, args.pick, s.eice_id,
                      allow_stopped=True).locate(spec)
    t, e = located.target, located.endpoint
    doc = {
        "host": args.host, "kind": spec.kind, "instance_id": t.instance_id, "name": t.name, "ip": t.ip,
        "state": t.state, "vpc_id": t.vpc_id, "subnet_id": t.subnet_id, "endpoint_id": e.endpoint_id,
        "endpoint_dns_name": e.fips_dns_name if aws.use_fips else e.dns_name, "endpoint_state": e.state,
        "region": aws.region, "profile": aws.profile, "os_user": s.os_user or "ec2-user",
        "target_cache_age": located.target_age, "endpoint_cache_age": located.endpoint_age,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        width = max(len(k) for k in doc)
        for k, v in doc.items():
            if k.endswith("cache_age"):
                v = "fresh lookup" if v is None else f"{v:.0f} s"
            print(f"{k:<{width}}  {'-' if v is None else v}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .errors import EicProxyError, ExitCode

    args = None
    if hasattr(os, "umask"):
        os.umask(0o077)  # whatever the caller's umask, nothing we create is readable by others
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = build_parser(argv[0] if argv and argv[0] in COMMANDS else None).parse_args(argv)
        setup_logging(args.verbose)
        return program(args)
    except EicProxyError as exc:
        if not exc.reported:  # the tunnel says its line itself, before ssh's input closes
            _report(exc.message, exc.hint, args)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # `eic-proxy ls | head`: the reader is gone. Quietly, as a shell would (128 + SIGPIPE).
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return int(ExitCode.BROKEN_PIPE)
    except Exception as exc:  # the last line of defence: one line, never a traceback unless asked
        _report(f"internal error: {exc.__class__.__name__}: {exc}", "please report this with the output of -vv", args)
        return int(ExitCode.INTERNAL)


def _report(message: str, hint: Optional[str], args: Optional[argparse.Namespace]) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("traceback", exc_info=True)
    line = f"eic-proxy: error: {message}"
    if hint:
        line += f" (hint: {hint})"
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except OSError:
        pass
