"""doctor's probes: each check asks AWS, the endpoint or ssh, and judges the answer with ``rules``.

The order is the order of the data path (docs/protocol.md §6, §7): credentials, instance, endpoint,
security groups (endpoint egress, instance ingress from the endpoint or — with PreserveClientIp —
from the client's own address), IAM (simulated, when the caller may simulate), push, handshake,
the SSH banner through the tunnel, and a real ``ssh`` login with the pushed key. Read-only: it
changes no AWS resource (a pushed key is gone after 60 s by design).
"""
from __future__ import annotations

import ipaddress
import os
from typing import Any, Callable, Optional

from eic_proxy.aws.client import api_errors, make_aws
from eic_proxy.aws.errors import translate
from eic_proxy.checks.rules import (
    FAIL,
    PASS,
    SKIP,
    Check,
    Facts,
    Status,
    iam_principal,
    records_management_events,
    rule_allows,
    simulation_asks,
)
from eic_proxy.checks.tunnel import TunnelChecks
from eic_proxy.errors import EicProxyError

CHECKIP_URL = "https://checkip.amazonaws.com"
BANNER_WAIT = 10.0
LOGIN_TIMEOUT = 30.0


class Doctor(TunnelChecks):
    def __init__(self, opts: Any, client_ip: Optional[str] = None,
                 emit: Optional[Callable[[Check], None]] = None) -> None:
        self.opts = opts
        self.facts = Facts(client_ip=client_ip)
        self.checks: list[Check] = []
        self.emit = emit

    # ---- bookkeeping -----------------------------------------------------------------------------
    def add(self, name: str, status: Status, detail: str, fix: Optional[str] = None) -> bool:
        check = Check(name, status, detail, fix)
        self.checks.append(check)
        if self.emit is not None:
            self.emit(check)
        return status != FAIL

    def skip_rest(self, names: list[str], why: str) -> None:
        for name in names:
            self.add(name, SKIP, why)

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    # ---- the run ---------------------------------------------------------------------------------
    def run(self) -> bool:
        self.check_installed_block()
        steps: list[tuple[str, Callable[[], bool]]] = [
            ("credentials", self.check_credentials),
            ("instance", self.check_instance),
            ("endpoint", self.check_endpoint),
            ("endpoint egress", self.check_endpoint_egress),
            ("instance ingress", self.check_instance_ingress),
            ("iam", self.check_iam),
            ("host keys", self.check_host_keys),
            ("audit trail", self.check_trail),
            ("push", self.check_push),
            ("handshake", self.check_handshake),
        ]
        # Each step may add several lines; a failed step that later ones depend on ends the chain.
        gates = {"credentials", "instance", "endpoint", "push", "handshake"}
        for i, (name, step) in enumerate(steps):
            try:
                ok = step()
            except EicProxyError as exc:
                ok = self.add(name, FAIL, exc.message, exc.hint)
            if not ok and name in gates:
                rest = [n for n, _ in steps[i + 1:]] + ["ssh banner", "ssh login"]
                self.skip_rest(rest, f"needs a passing {name} check")
                return self.ok
        return self.ok

    # ---- the installed Host block -------------------------------------------------------------------
    def check_installed_block(self) -> bool:
        """Every file the installed blocks name still exists (an upgrade can move the program); no line
        when no block is installed."""
        from eic_proxy.sshblock import installed_paths

        paths = installed_paths()
        if not paths:
            return True
        missing = [(block, path) for block, path in paths if not os.path.exists(path)]
        if missing:
            block, path = missing[0]
            return self.add("ssh block", FAIL, f"the installed Host block {block!r} names {path}, which no longer "
                            "exists" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                            "an upgrade or a removed virtualenv moved it: run `eic-proxy ssh-config --install "
                            "PATTERN… ` again (with the options you gave it) to write the block anew")
        blocks = len({b for b, _ in paths})
        return self.add("ssh block", PASS, f"every file the installed block{'s' if blocks > 1 else ''} name"
                        f"{'' if blocks > 1 else 's'} exists ({len(paths)} paths)")

    # ---- credentials ------------------------------------------------------------------------------
    def check_credentials(self) -> bool:

        opts = self.opts
        aws = make_aws(opts.profile, opts.region, **({} if opts.timeout is None else
                                                      {"connect_timeout": opts.timeout, "read_timeout": opts.timeout}))
        self.facts.aws = aws
        aws.frozen_credentials()
        try:
            ident = aws.client("sts").get_caller_identity()
        except api_errors() as exc:
            err = translate(exc, "calling sts:GetCallerIdentity", aws.profile)
            return self.add("credentials", FAIL, err.message, err.hint)
        self.facts.caller = ident.get("Arn")
        self.add("credentials", PASS, f"{ident.get('Arn')} (account {ident.get('Account')})")
        profile = aws.profile or os.environ.get("AWS_PROFILE") or "default"
        return self.add("region/profile", PASS, f"region {aws.region}, profile {profile}"
                        + (f", endpoint URL {os.environ['AWS_ENDPOINT_URL']}" if os.environ.get("AWS_ENDPOINT_URL")
                           else ""))

    # ---- instance ---------------------------------------------------------------------------------
    def check_instance(self) -> bool:
        from eic_proxy.control.resolve import parse_host, resolve

        aws = self.facts.aws
        ec2 = aws.client("ec2")
        spec = parse_host(self.opts.host)
        try:
            target = resolve(aws, ec2, spec, self.opts.pick, allow_stopped=True)
        except EicProxyError as exc:
            return self.add("instance", FAIL, exc.message, exc.hint)
        self.facts.target = target
        try:
            resp = ec2.describe_instances(InstanceIds=[target.instance_id])
            self.facts.instance = resp["Reservations"][0]["Instances"][0]
        except api_errors() as exc:
            err = translate(exc, "describing the instance", aws.profile)
            return self.add("instance", FAIL, err.message, err.hint)
        label = f"{target.instance_id}" + (f" ({target.name})" if target.name else "")
        if target.state != "running":
            return self.add("instance", FAIL, f"{label} is {target.state}",
                            f"start it: `eic-proxy connect --start {self.opts.host}` or "
                            f"`aws ec2 start-instances --instance-ids {target.instance_id}`")
        return self.add("instance", PASS, f"{label} running, {target.ip} in {target.vpc_id} / {target.subnet_id}")

    # ---- endpoint ---------------------------------------------------------------------------------
    def check_endpoint(self) -> bool:
        from eic_proxy.control.endpoint import USABLE_STATES, choose_endpoint, describe_endpoints, family_ok

        aws, target, eice_id = self.facts.aws, self.facts.target, self.opts.eice_id
        # Every state, not only the usable ones: a failed or half-made endpoint is what to report.
        found = describe_endpoints(aws, aws.client("ec2"), vpc_id=None if eice_id else target.vpc_id,
                                   endpoint_id=eice_id, states=None)
        create = (f"aws ec2 create-instance-connect-endpoint --subnet-id {target.subnet_id}"
                  + (" --ip-address-type dualstack" if target.is_ipv6 else ""))
        if not found:
            return self.add("endpoint", FAIL, f"no EC2 Instance Connect Endpoint in {target.vpc_id}",
                            f"create one: `{create}`")
        chosen = choose_endpoint(found, target)
        if chosen is None:
            e = found[0]
            if e.state not in USABLE_STATES:
                fix = {"create-in-progress": "wait a few minutes for create-complete",
                       "create-failed": f"delete it and create it again: `{create}`",
                       "delete-in-progress": f"it is being deleted; create a new one: `{create}`",
                       "delete-complete": f"it was deleted; create a new one: `{create}`",
                       "delete-failed": "retry the deletion, then create a new one"}.get(e.state, "check it in the console")
                return self.add("endpoint", FAIL, f"{e.endpoint_id} is {e.state}, not usable", fix)
            if not family_ok(e, target):
                return self.add("endpoint", FAIL, f"{e.endpoint_id} is {e.ip_address_type}, the target "
                                f"{target.ip} is IPv{'6' if target.is_ipv6 else '4'}",
                                f"`aws ec2 modify-instance-connect-endpoint --instance-connect-endpoint-id "
                                f"{e.endpoint_id} --ip-address-type dualstack`")
            return self.add("endpoint", FAIL, f"{e.endpoint_id} is not in {target.vpc_id}",
                            "use an endpoint in the instance's VPC (--eice-id)")
        self.facts.endpoint = chosen
        return self.add("endpoint", PASS,
                        f"{chosen.endpoint_id} ({chosen.state}) in {chosen.subnet_id}; PreserveClientIp="
                        f"{str(chosen.preserve_client_ip).lower()}, IpAddressType={chosen.ip_address_type or 'ipv4'}")

    # ---- security groups --------------------------------------------------------------------------
    def _groups(self, **query: Any) -> list[dict]:

        aws = self.facts.aws
        try:
            return aws.client("ec2").describe_security_groups(**query).get("SecurityGroups", [])
        except api_errors() as exc:
            raise translate(exc, "describing security groups", aws.profile) from exc

    def _endpoint_group_ids(self) -> list[str]:
        """Asked by both security-group checks; looked up once."""
        if self.facts.endpoint_groups is None:
            e = self.facts.endpoint
            if e.security_group_ids:
                self.facts.endpoint_groups = list(e.security_group_ids)
            else:  # an endpoint created without groups gets the VPC's default group (D-SG)
                default = self._groups(Filters=[{"Name": "vpc-id", "Values": [e.vpc_id]},
                                                {"Name": "group-name", "Values": ["default"]}])
                self.facts.endpoint_groups = [g["GroupId"] for g in default]
        return self.facts.endpoint_groups

    def _instance_group_ids(self) -> list[str]:
        return [g["GroupId"] for g in self.facts.instance.get("SecurityGroups") or []]

    def check_endpoint_egress(self) -> bool:
        port, target = self.opts.port, self.facts.target
        eps = self._endpoint_group_ids()
        inst = set(self._instance_group_ids())
        for group in self._groups(GroupIds=eps) if eps else []:
            for perm in group.get("IpPermissionsEgress") or []:
                if rule_allows(perm, port, target.ip, inst):
                    return self.add("endpoint egress", PASS,
                                    f"{group['GroupId']} lets the endpoint reach {target.ip}:{port}")
        sg = eps[0] if eps else "<endpoint-sg>"
        dest = next(iter(sorted(inst)), None)
        perm = (f"IpProtocol=tcp,FromPort={port},ToPort={port},UserIdGroupPairs=[{{GroupId={dest}}}]" if dest
                else f"IpProtocol=tcp,FromPort={port},ToPort={port},IpRanges=[{{CidrIp={target.ip}/32}}]")
        return self.add("endpoint egress", FAIL,
                        f"no outbound rule of the endpoint's security group(s) {', '.join(eps) or '(none)'} "
                        f"allows tcp/{port} to {target.ip}",
                        f"`aws ec2 authorize-security-group-egress --group-id {sg} --ip-permissions '{perm}'`")

    def check_instance_ingress(self) -> bool:
        port, e = self.opts.port, self.facts.endpoint
        inst = self._instance_group_ids()
        groups = self._groups(GroupIds=inst) if inst else []
        sg = inst[0] if inst else "<instance-sg>"
        if e.preserve_client_ip:
            client = self.facts.client_ip or discover_client_ip()
            if client is None:
                return self.add("instance ingress", SKIP,
                                "the endpoint preserves client IPs, and this client's public address is unknown",
                                "pass --client-ip ADDRESS (your public IP as AWS sees it)")
            self.facts.client_ip = client
            for group in groups:
                for perm in group.get("IpPermissions") or []:
                    if rule_allows(perm, port, client, set()):
                        return self.add("instance ingress", PASS,
                                        f"{group['GroupId']} admits this client ({client}) on tcp/{port} "
                                        "(PreserveClientIp)")
            return self.add("instance ingress", FAIL,
                            f"the endpoint preserves client IPs, and no inbound rule of {', '.join(inst) or '(none)'} "
                            f"admits this client's address {client} on tcp/{port}",
                            f"`aws ec2 authorize-security-group-ingress --group-id {sg} --protocol tcp --port {port}"
                            f" --cidr {client}/32` (or your network's CIDR)")
        eps = set(self._endpoint_group_ids())
        subnet = self._subnet_cidr(e.subnet_id)
        for group in groups:
            for perm in group.get("IpPermissions") or []:
                if rule_allows(perm, port, None, eps, covers=subnet):
                    return self.add("instance ingress", PASS,
                                    f"{group['GroupId']} admits the endpoint on tcp/{port}")
        source = next(iter(sorted(eps)), None)
        how = f"--source-group {source}" if source else f"--cidr {subnet or '<endpoint-subnet-cidr>'}"
        return self.add("instance ingress", FAIL,
                        f"no inbound rule of {', '.join(inst) or '(none)'} admits the endpoint "
                        f"({', '.join(sorted(eps)) or 'no security group'}, subnet {subnet}) on tcp/{port}",
                        f"`aws ec2 authorize-security-group-ingress --group-id {sg} --protocol tcp --port {port} {how}`")

    def _subnet_cidr(self, subnet_id: str) -> Optional[str]:
        try:
            subnets = self.facts.aws.client("ec2").describe_subnets(SubnetIds=[subnet_id]).get("Subnets", [])
            return subnets[0].get("CidrBlock") if subnets else None
        except api_errors():
            return None

    # ---- IAM --------------------------------------------------------------------------------------
    def check_iam(self) -> bool:
        from eic_proxy.control.resolve import partition_for
        from eic_proxy.errors import AccessDenied

        aws, target, e, opts = self.facts.aws, self.facts.target, self.facts.endpoint, self.opts
        principal = iam_principal(self.facts.caller or "")
        if principal is None:
            return self.add("iam", SKIP, f"cannot simulate policies for {self.facts.caller} (not an IAM user or role)")
        account = principal.split(":")[4]
        asks = simulation_asks(partition_for(aws.region), aws.region, account, e.endpoint_id, target.instance_id,
                               target.ip, opts.port, opts.os_user if opts.push else None, opts.max_tunnel_duration)
        iam = aws.client("iam")
        denied = []
        for action, resource, ctx in asks:
            try:
                resp = iam.simulate_principal_policy(PolicySourceArn=principal, ActionNames=[action],
                                                     ResourceArns=[resource], ContextEntries=ctx)
            except api_errors() as exc:
                err = translate(exc, "simulating IAM policies", aws.profile)
                if isinstance(err, AccessDenied):
                    return self.add("iam", SKIP, "this identity may not call iam:SimulatePrincipalPolicy; the push "
                                    "and handshake below test the permissions for real")
                return self.add("iam", SKIP, f"IAM simulation failed: {err.message}")
            decision = (resp.get("EvaluationResults") or [{}])[0].get("EvalDecision", "")
            if decision != "allowed":
                denied.append((action, decision))
        if not denied:
            what = "SendSSHPublicKey (ec2:osuser=" + opts.os_user + "), " if opts.push else ""
            return self.add("iam", PASS, f"{principal} may call {what}OpenTunnel (port {opts.port}, "
                            f"{target.ip}) and the Describe calls")
        names = ", ".join(f"{a} ({d})" for a, d in denied)
        cmd = (f"eic-proxy policy --instance {target.instance_id} --os-user {opts.os_user} --endpoint {e.endpoint_id}"
               f" --port {opts.port} --region {aws.region} --account {account}"
               + (f" --max-tunnel-duration {opts.max_tunnel_duration}" if opts.max_tunnel_duration else ""))
        hint = f"attach the policy `{cmd}` prints to {principal}"
        if any(a.endswith("SendSSHPublicKey") for a, _ in denied):
            hint += f" (a condition on ec2:osuser may exclude {opts.os_user!r})"
        return self.add("iam", FAIL, f"{principal} is denied {names}", hint)

    def check_trail(self) -> bool:
        """A trail that records management events here records every EC2 Instance Connect call; none is
        a warning (skip), not a failure: connecting works without it."""

        aws = self.facts.aws
        ct = aws.client("cloudtrail")
        try:
            trails = ct.describe_trails(includeShadowTrails=True).get("trailList") or []
            for t in trails:
                if not (t.get("IsMultiRegionTrail") or t.get("HomeRegion") == aws.region):
                    continue
                if not ct.get_trail_status(Name=t.get("TrailARN") or t["Name"]).get("IsLogging"):
                    continue
                sel = ct.get_event_selectors(TrailName=t.get("TrailARN") or t["Name"])
                if records_management_events(sel):
                    group = str(t.get("CloudWatchLogsLogGroupArn") or "").split(":log-group:")[-1].rstrip(":*")
                    where = f", delivered to the CloudWatch Logs group {group} (`eic-proxy audit --log-group " \
                            f"{group}`)" if group else ""
                    return self.add("audit trail", PASS, f"trail {t['Name']} records EC2 Instance Connect calls{where}")
        except api_errors() as exc:
            err = translate(exc, "reading the CloudTrail set-up", aws.profile)
            return self.add("audit trail", SKIP, f"could not check: {err.message}")
        return self.add("audit trail", SKIP, f"warning: no logging trail in {aws.region} records management events, "
                        "so EC2 Instance Connect calls leave no record beyond 90 days of event history",
                        "create one: examples/terraform/audit.tf (trail, CloudWatch Logs, alarms)")

    def check_host_keys(self) -> bool:
        """Can first contact verify the host key: does the console list keys, and do they match what we hold?"""
        from eic_proxy.control.hostkey_guard import console_keys
        from eic_proxy.store import knownhosts

        iid = self.facts.target.instance_id
        keys, why = console_keys(self.facts.aws, iid)
        held = {b64 for _, b64 in knownhosts.known_keys(iid)}
        if not keys:
            status = FAIL if self.opts.host_keys == "strict" else SKIP
            return self.add("host keys", status, f"not verifiable: {why}",
                            "connections trust the first key seen (host-keys = verify) or refuse (strict)")
        shown = ", ".join(f"{k.key_type} {k.fingerprint}" for k in keys)
        if held and not held & {k.line.split()[1] for k in keys}:
            return self.add("host keys", FAIL, f"the keys held for {iid} are not the console's ({shown})",
                            f"if the instance was rebuilt: `eic-proxy known-hosts {self.opts.host} --refresh`")
        return self.add("host keys", PASS, f"the console lists {len(keys)} (verified on first contact): {shown}")


def discover_client_ip(timeout: float = 3.0) -> Optional[str]:
    """This client's public IPv4 as AWS sees it (checkip.amazonaws.com, or $EIC_PROXY_CHECKIP_URL)."""
    import urllib.request

    url = os.environ.get("EIC_PROXY_CHECKIP_URL") or CHECKIP_URL
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - fixed https or user-set URL
            text = resp.read(64).decode("ascii", "replace").strip()
        return str(ipaddress.ip_address(text))
    except (OSError, ValueError):
        return None
