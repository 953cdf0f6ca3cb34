"""``eic-proxy policy``: the least-privilege IAM policy for connecting through an endpoint.

Actions, resources and condition keys follow docs/protocol.md §7 (the Service Authorization
Reference): ``SendSSHPublicKey`` on instances with ``ec2:osuser``; ``OpenTunnel`` on endpoints with
``ec2-instance-connect:remotePort`` / ``privateIpAddress`` / ``maxTunnelDuration``; the two
Describe actions (which take no resource-level permissions) on ``*``; ``ec2:GetConsoleOutput`` on the
same instances (verified host keys); ``aws:SourceIp`` on every statement when source CIDRs are given.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from dataclasses import dataclass
from typing import Any, Optional

from eic_proxy.control.resolve import INSTANCE_ID_RE, REGION_RE, partition_for
from eic_proxy.errors import UsageError

ENDPOINT_ID_RE = re.compile(r"^eice-[0-9a-f]{8,17}$")
OS_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9@._-]{0,31}\$?$")  # docs/protocol.md §1
TAG_KEY_RE = re.compile(r"^[\w .:/=+\-@]{1,128}$")
ACCOUNT_RE = re.compile(r"^(\d{12}|\*)$")


@dataclass(frozen=True)
class PolicySpec:
    instances: tuple[str, ...] = ()        # instance IDs or ARNs
    tags: tuple[str, ...] = ()             # KEY=VALUE resource tags of the instances
    os_users: tuple[str, ...] = ()
    endpoints: tuple[str, ...] = ()        # endpoint IDs or ARNs
    ports: tuple[int, ...] = (22,)
    private_ips: tuple[str, ...] = ()      # target addresses or CIDRs
    max_tunnel_duration: Optional[int] = None
    source_ips: tuple[str, ...] = ()       # aws:SourceIp CIDRs
    region: str = "*"
    account: str = "*"
    allow_start: bool = False


def _arn(spec: PolicySpec, kind: str, value: str, id_re: re.Pattern, what: str) -> str:
    if value.startswith("arn:"):
        parts = value.split(":", 5)
        if len(parts) != 6 or parts[2] != "ec2" or not parts[5].startswith(kind + "/"):
            raise UsageError(f"{value!r} is not an EC2 {what} ARN", hint=f"arn:aws:ec2:REGION:ACCOUNT:{kind}/ID")
        return value
    if value != "*" and not id_re.match(value):
        raise UsageError(f"{value!r} is not an {what} ID or ARN")
    return f"arn:{partition_for(spec.region)}:ec2:{spec.region}:{spec.account}:{kind}/{value}"


def validate(spec: PolicySpec) -> None:
    if spec.region != "*" and not REGION_RE.match(spec.region):
        raise UsageError(f"--region {spec.region!r} is not a region name")
    if not ACCOUNT_RE.match(spec.account):
        raise UsageError(f"--account {spec.account!r} is not a 12-digit account ID")
    for user in spec.os_users:
        if not OS_USER_RE.match(user):
            raise UsageError(f"--os-user {user!r} is not a valid OS user name",
                             hint="letters, digits, @ . _ - (up to 32), as EC2 Instance Connect accepts")
    for port in spec.ports:
        if not 1 <= port <= 65535:
            raise UsageError(f"--port {port} is out of range 1..65535")
    for value in spec.private_ips + spec.source_ips:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise UsageError(f"{value!r} is not an IP address or CIDR") from None
    for tag in spec.tags:
        key, sep, _ = tag.partition("=")
        if not sep or not TAG_KEY_RE.match(key):
            raise UsageError(f"--tag {tag!r} must be KEY=VALUE")
    if spec.max_tunnel_duration is not None:
        from eic_proxy.config import check_max_tunnel_duration

        check_max_tunnel_duration(spec.max_tunnel_duration)


def build(spec: PolicySpec) -> dict[str, Any]:
    """The policy document (IAM JSON grammar, Version 2012-10-17)."""
    validate(spec)
    source: dict[str, Any] = {}
    if spec.source_ips:
        source = {"IpAddress": {"aws:SourceIp": list(spec.source_ips)}}

    def statement(sid: str, actions: list[str], resources: list[str], conditions: dict[str, dict]) -> dict:
        merged: dict[str, dict] = {}
        for part in (conditions, source):
            for op, pairs in part.items():
                merged.setdefault(op, {}).update(pairs)
        doc: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": actions if len(actions) > 1 else actions[0],
                               "Resource": resources if len(resources) > 1 else resources[0]}
        if merged:
            doc["Condition"] = merged
        return doc

    instance_arns = [_arn(spec, "instance", i, INSTANCE_ID_RE, "instance") for i in spec.instances] or \
        [_arn(spec, "instance", "*", INSTANCE_ID_RE, "instance")]
    tag_conditions: dict[str, dict] = {}
    for tag in spec.tags:
        key, _, value = tag.partition("=")
        tag_conditions.setdefault("StringEquals", {}).setdefault(f"ec2:ResourceTag/{key}", []).append(value)
    tag_conditions = {op: {k: v[0] if len(v) == 1 else v for k, v in pairs.items()}
                      for op, pairs in tag_conditions.items()}

    push_conditions = {op: dict(pairs) for op, pairs in tag_conditions.items()}
    if spec.os_users:
        push_conditions.setdefault("StringEquals", {})["ec2:osuser"] = _one_or_list(spec.os_users)

    tunnel_conditions: dict[str, dict] = {
        "NumericEquals": {"ec2-instance-connect:remotePort": _one_or_list([str(p) for p in spec.ports])}}
    if spec.private_ips:
        tunnel_conditions["IpAddress"] = {"ec2-instance-connect:privateIpAddress": _one_or_list(spec.private_ips)}
    if spec.max_tunnel_duration is not None:
        tunnel_conditions["NumericLessThanEquals"] = {
            "ec2-instance-connect:maxTunnelDuration": str(spec.max_tunnel_duration)}
    endpoint_arns = [_arn(spec, "instance-connect-endpoint", e, ENDPOINT_ID_RE, "endpoint") for e in spec.endpoints] \
        or [_arn(spec, "instance-connect-endpoint", "*", ENDPOINT_ID_RE, "endpoint")]

    statements = [
        statement("EicProxyDescribe", ["ec2:DescribeInstances", "ec2:DescribeInstanceConnectEndpoints"], ["*"], {}),
        statement("EicProxySendSSHPublicKey", ["ec2-instance-connect:SendSSHPublicKey"], instance_arns,
                  push_conditions),
        statement("EicProxyOpenTunnel", ["ec2-instance-connect:OpenTunnel"], endpoint_arns, tunnel_conditions),
        # First contact reads the instance's host keys from its console output (README: "Host keys").
        statement("EicProxyHostKeys", ["ec2:GetConsoleOutput"], instance_arns, tag_conditions),
    ]
    if spec.allow_start:
        statements.append(statement("EicProxyStartInstances", ["ec2:StartInstances"], instance_arns, tag_conditions))
    return {"Version": "2012-10-17", "Statement": statements}


def build_audit(region: str = "*", account: str = "*", log_group: str = "*") -> dict[str, Any]:
    """Read-only permissions of the audit side: ``audit --log-group`` (FilterLogEvents on that group),
    ``audit --cloudtrail`` (LookupEvents) and doctor's trail check (the three CloudTrail reads)."""
    part = partition_for(region) if region != "*" else "aws"
    group_arn = f"arn:{part}:logs:{region}:{account}:log-group:{log_group}:*"
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "EicProxyAuditLogGroup", "Effect": "Allow", "Action": "logs:FilterLogEvents", "Resource": group_arn},
        {"Sid": "EicProxyAuditCloudTrail", "Effect": "Allow",
         "Action": ["cloudtrail:LookupEvents", "cloudtrail:DescribeTrails", "cloudtrail:GetTrailStatus",
                    "cloudtrail:GetEventSelectors"], "Resource": "*"},
    ]}


def _one_or_list(values: Any) -> Any:
    values = list(values)
    return values[0] if len(values) == 1 else values


def notes(spec: PolicySpec) -> list[str]:
    """What the user should know about the policy they asked for (printed on stderr)."""
    out = []
    if not spec.os_users:
        out.append("no --os-user: the policy lets this identity push keys for any OS user")
    if not spec.instances and not spec.tags:
        out.append("no --instance or --tag: keys can be pushed to every instance in the account")
    if spec.max_tunnel_duration is not None:
        out.append(f"OpenTunnel now requires maxTunnelDuration <= {spec.max_tunnel_duration}: connect with "
                   f"--max-tunnel-duration {spec.max_tunnel_duration} (or max-tunnel-duration in config.ini)")
    if 22 not in spec.ports:
        out.append("port 22 is not allowed: ssh through eic-proxy needs it")
    return out


def to_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


def to_terraform(doc: dict[str, Any], name: str = "eic_proxy") -> str:
    """An ``aws_iam_policy_document`` data source with the same statements, plus the policy resource."""
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_-]*$", name):
        raise UsageError(f"--name {name!r} is not a Terraform identifier")

    def strings(values: Any) -> str:
        items = values if isinstance(values, list) else [values]
        return "[" + ", ".join(_hcl(str(v)) for v in items) + "]"

    lines = [f'data "aws_iam_policy_document" "{name}" {{']
    for st in doc["Statement"]:
        lines += ["  statement {",
                  f"    sid       = {_hcl(st['Sid'])}",
                  f"    effect    = {_hcl(st['Effect'])}",
                  f"    actions   = {strings(st['Action'])}",
                  f"    resources = {strings(st['Resource'])}"]
        for op, pairs in st.get("Condition", {}).items():
            for key, values in pairs.items():
                lines += ["", "    condition {",
                          f"      test     = {_hcl(op)}",
                          f"      variable = {_hcl(key)}",
                          f"      values   = {strings(values)}",
                          "    }"]
        lines.append("  }")
    lines += ["}", "",
              f'resource "aws_iam_policy" "{name}" {{',
              f'  name        = {json.dumps(name.replace("_", "-"))}',
              '  description = "Least privilege for eic-proxy: SSH through EC2 Instance Connect Endpoints"',
              f"  policy      = data.aws_iam_policy_document.{name}.json",
              "}", ""]
    return "\n".join(lines)


def _hcl(value: str) -> str:
    """A quoted HCL string: JSON escapes, and ``${``/``%{`` kept literal instead of interpolated."""
    return json.dumps(value).replace("${", "$${").replace("%{", "%%{")


def add_parser(sub: Any) -> None:
    po = sub.add_parser("policy", help="print the least-privilege IAM policy for connecting",
                        description="Print the least-privilege IAM policy (JSON, or Terraform with --format "
                                    "terraform) that lets an identity connect with eic-proxy: SendSSHPublicKey "
                                    "for the given instances and OS users, OpenTunnel on the given endpoints, "
                                    "ports, targets and duration, and the Describe calls eic-proxy makes.")
    po.add_argument("--instance", action="append", default=[], metavar="ID|ARN", help="instance (repeatable)")
    po.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                    help="instances carrying this tag (repeatable)")
    po.add_argument("--os-user", action="append", default=[], metavar="USER", help="ec2:osuser (repeatable)")
    po.add_argument("--endpoint", action="append", default=[], metavar="ID|ARN", help="endpoint (repeatable)")
    po.add_argument("--remote-port", "--port", dest="port", action="append", type=int, default=[], metavar="PORT",
                    help="remotePort allowed (repeatable; default 22)")
    po.add_argument("--private-ip", action="append", default=[], metavar="IP|CIDR",
                    help="privateIpAddress allowed (repeatable)")
    po.add_argument("--max-tunnel-duration", type=int, metavar="SECONDS", help="maxTunnelDuration cap (1..3600)")
    po.add_argument("--source-ip", action="append", default=[], metavar="CIDR",
                    help="aws:SourceIp the calls must come from (repeatable)")
    po.add_argument("--region", default="*", help="region in the ARNs (default *)")
    po.add_argument("--account", default="*", help="account ID in the ARNs (default *)")
    po.add_argument("--allow-start", action="store_true", help="also allow ec2:StartInstances (for --start)")
    po.add_argument("--audit", action="store_true",
                    help="instead: the read-only permissions of `audit --log-group/--cloudtrail` and doctor's trail check")
    po.add_argument("--log-group", metavar="NAME", help="with --audit: the CloudWatch Logs group of the trail (default *)")
    po.add_argument("--format", choices=["json", "terraform"], default="json")
    po.add_argument("--name", default="eic_proxy", help="Terraform name of the policy document (default eic_proxy)")
    po.add_argument("-v", "--verbose", action="count", default=0, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from eic_proxy.commands.policy import PolicySpec, build, notes, to_json, to_terraform

    if args.audit:
        doc = build_audit(args.region, args.account, args.log_group or "*")
        sys.stdout.write(to_terraform(doc, args.name) if args.format == "terraform" else to_json(doc))
        return 0
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
