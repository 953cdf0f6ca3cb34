"""Fake AWS: moto's server, plus the EC2 Instance Connect Endpoint actions moto lacks and a
SendSSHPublicKey that really stores the key where the fake instances' sshd reads it.

Every API call is recorded (service, action) so tests can count them; faults can be queued per action.
"""
from __future__ import annotations

import collections
import datetime as dt
import email.utils
import io
import json
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import parse_qs

ACCOUNT = "123456789012"
TESTBED_UA = "eic-testbed"  # the bed's own set-up calls carry this and are not recorded

_current: Optional["FakeAws"] = None  # moto's response classes are global; they find the bed here


@dataclass(frozen=True)
class Call:
    service: str
    action: str
    at: float
    params: dict


class FakeAws:
    """Owns the moto WSGI server, the endpoint table, the pushed keys and the call log."""

    def __init__(self, workdir: Path, region: str = "us-east-1") -> None:
        self.region = region
        self.workdir = workdir
        self.keys_root = workdir / "pushed-keys"
        self.keys_root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.keys_root, 0o755)
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.pushes: list[dict[str, Any]] = []
        self.calls: list[Call] = []
        self.faults: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.lock = threading.RLock()
        self.dns_allocator: Optional[Callable[[str], tuple[str, str]]] = None
        self.dualstack_allocator: Optional[Callable[[str], tuple[str, str]]] = None
        self.push_hooks: list[Callable[[dict], None]] = []
        # What STS says the caller is, and the identity policies SimulatePrincipalPolicy evaluates
        # (None: an administrator, everything allowed). CloudTrail events, newest last.
        self.caller_arn = f"arn:aws:iam::{ACCOUNT}:user/eic-tester"
        self.identity_policies: Optional[list[dict]] = None
        self.trail: list[dict[str, Any]] = []
        self.client_public_ip = "203.0.113.10"  # what the fake checkip service answers
        # Instances shown with only an IPv6 address (moto always gives one a private IPv4): id → address.
        self.ipv6_only: dict[str, str] = {}
        # GetConsoleOutput: each instance's real sshd host key (the bed fills it in), and per-instance
        # consoles for tests: "missing" (no key block), "other" (another machine's keys), "scrolled"
        # (the block cut off), or any text.
        self.host_keys: dict[str, str] = {}
        self.consoles: dict[str, str] = {}
        self.logs_page_size: Optional[int] = None  # FilterLogEvents page size when the caller sets none
        self.clock_skew = 0.0  # seconds AWS's clock runs ahead of this machine's: requests are checked as SigV4 does
        self._server: Any = None
        self._thread: Optional[threading.Thread] = None
        self.url = ""

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        global _current
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import WSGIRequestHandler, make_server

        bed = self

        class Quiet(WSGIRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

            def date_time_string(self, timestamp: Any = None) -> str:  # every response's Date: AWS's own clock
                return email.utils.formatdate(time.time() + bed.clock_skew, usegmt=True)

        _install_moto_patches()
        _current = self
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", 0, _Recorder(self, app), threaded=True,
                                   request_handler=Quiet)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-aws", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def reset(self) -> None:
        """Forget calls, pushes, faults and trail; restore the default caller (moto's resources stay)."""
        with self.lock:
            self.calls.clear()
            self.pushes.clear()
            self.faults.clear()
            self.trail.clear()
            self.caller_arn = f"arn:aws:iam::{ACCOUNT}:user/eic-tester"
            self.identity_policies = None
            self.consoles.clear()
            self.logs_page_size = None
            self.clock_skew = 0.0

    def record_event(self, name: str, request_id: str, params: dict[str, Any], error: Optional[str] = None,
                     resources: Optional[list[dict[str, str]]] = None) -> None:
        """A CloudTrail event of the EC2 Instance Connect event source, as LookupEvents returns it."""
        now = dt.datetime.now(dt.timezone.utc)
        detail = {"eventVersion": "1.08", "userIdentity": {"type": "IAMUser", "arn": self.caller_arn,
                                                           "accountId": ACCOUNT},
                  "eventTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "eventSource": "ec2-instance-connect.amazonaws.com",
                  "eventName": name, "awsRegion": self.region, "requestParameters": params,
                  "requestID": request_id, "eventID": str(uuid.uuid4())}
        if error:
            detail["errorCode"] = error
        with self.lock:
            self.trail.append({"EventId": detail["eventID"], "EventName": name, "ReadOnly": "false",
                               "EventTime": now.timestamp(), "EventSource": "ec2-instance-connect.amazonaws.com",
                               "Username": self.caller_arn.rsplit("/", 1)[-1], "Resources": resources or [],
                               "CloudTrailEvent": json.dumps(detail)})

    # ---- test helpers ----------------------------------------------------------------------------
    def count(self, action: Optional[str] = None, service: Optional[str] = None) -> int:
        with self.lock:
            return sum(1 for c in self.calls
                       if (action is None or c.action == action) and (service is None or c.service == service))

    def describe_calls(self) -> int:
        with self.lock:
            return sum(1 for c in self.calls if c.action.startswith("Describe"))

    def inject(self, action: str, error_code: str, times: int = 1, status: int = 400, message: str = "") -> None:
        """Make the next ``times`` calls of ``action`` fail with ``error_code``."""
        with self.lock:
            for _ in range(times):
                self.faults[action].append((error_code, status, message or f"injected {error_code}"))

    def ec2_backend(self) -> Any:
        from moto.ec2.models import ec2_backends

        return ec2_backends[ACCOUNT][self.region]

    def instance_state(self, instance_id: str) -> Optional[str]:
        try:
            return self.ec2_backend().get_instance(instance_id)._state.name
        except Exception:
            return None

    def create_endpoint(self, subnet_id: str, *, preserve_client_ip: bool = False,
                        security_group_ids: Optional[list[str]] = None, ip_address_type: Optional[str] = None,
                        state: str = "create-complete", tags: Optional[list[dict]] = None) -> dict[str, Any]:
        backend = self.ec2_backend()
        subnet = backend.get_subnet(subnet_id)
        eid = "eice-" + secrets.token_hex(9)[:17]
        dns, fips = self.dns_allocator(eid) if self.dns_allocator else (f"{eid}.invalid", f"{eid}.fips.invalid")
        # A dual-stack endpoint's dual-stack names reach it over IPv6 too: on the bed, ::1 (there is one
        # IPv6 loopback address, so one such endpoint per bed); other endpoints' names are IPv4 only.
        dual = (self.dualstack_allocator(eid) if self.dualstack_allocator and ip_address_type == "dualstack"
                else (dns, fips))
        record = {
            "OwnerId": ACCOUNT,
            "InstanceConnectEndpointId": eid,
            "InstanceConnectEndpointArn": f"arn:aws:ec2:{self.region}:{ACCOUNT}:instance-connect-endpoint/{eid}",
            "State": state,
            "StateMessage": "",
            "DnsName": dns,
            "FipsDnsName": fips,
            "NetworkInterfaceIds": ["eni-" + secrets.token_hex(8)[:17]],
            "VpcId": subnet.vpc_id,
            "AvailabilityZone": subnet.availability_zone,
            "AvailabilityZoneId": getattr(subnet, "availability_zone_id", None) or "use1-az1",
            "CreatedAt": dt.datetime.now(dt.timezone.utc),
            "SubnetId": subnet_id,
            "PreserveClientIp": bool(preserve_client_ip),
            "SecurityGroupIds": list(security_group_ids or []),
            "Tags": list(tags or []),
            "IpAddressType": ip_address_type or "ipv4",
            "PublicDnsNames": {
                "Ipv4": {"DnsName": dns, "FipsDnsName": fips},
                "Dualstack": {"DnsName": dual[0], "FipsDnsName": dual[1]},
            },
        }
        with self.lock:
            self.endpoints[eid] = record
        return record

    def set_endpoint_state(self, endpoint_id: str, state: str) -> None:
        with self.lock:
            self.endpoints[endpoint_id]["State"] = state

    def delete_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        with self.lock:
            record = self.endpoints.pop(endpoint_id)
        return dict(record, State="delete-in-progress")

    def console_output(self, instance_id: str) -> str:
        """A cloud-init-like boot console (Amazon Linux shape: ``ec2:`` prefixes) with the host keys."""
        kind = self.consoles.get(instance_id, "")
        if kind and kind not in ("missing", "other", "scrolled"):
            return kind
        key = self.host_keys.get(instance_id, "")
        if kind == "other" or (key and kind != "missing"):
            if kind == "other":
                key = _other_host_key()
            boot = ["[    0.000000] Linux version 6.1.0-amazon (builder@build) #1 SMP",
                    "[    9.812345] cloud-init[1600]: Cloud-init v. 22.2.2 running 'modules:final'", "ec2: ",
                    "ec2: #############################################################",
                    "ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----",
                    f"ec2: 256 {_fingerprint(key)} no comment (ED25519)",
                    "ec2: -----END SSH HOST KEY FINGERPRINTS-----",
                    "ec2: #############################################################",
                    "-----BEGIN SSH HOST KEY KEYS-----", f"{key} root@{instance_id}",
                    "-----END SSH HOST KEY KEYS-----"]
            if kind == "scrolled":
                boot = boot[:9] + [f"{key[:30]}"]
            return "\r\n".join(boot) + "\r\n"
        return "[    0.000000] Linux version 6.1.0-amazon (builder@build) #1 SMP\r\nlogin: \r\n"

    def key_file(self, instance_id: str, os_user: str) -> Path:
        return self.keys_root / instance_id / os_user

    def store_key(self, instance_id: str, os_user: str, key: str, request_id: str) -> None:
        """Append the key with its push time (ms) where the instance's AuthorizedKeysCommand reads it."""
        d = self.keys_root / instance_id
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o755)
        line = f"{int(time.time() * 1000)} {key}\n"
        with self.lock:
            with open(d / os_user, "a") as fh:
                fh.write(line)
            os.chmod(d / os_user, 0o644)
            push = {"at": time.time(), "instance_id": instance_id, "os_user": os_user, "key": key,
                    "request_id": request_id}
            self.pushes.append(push)
        for hook in list(self.push_hooks):
            hook(push)


def _time_refusal(amz_date: str, skew: float) -> Optional[tuple[str, int, str]]:
    """What AWS answers a request signed more than 5 minutes off its own clock (SigV4's window)."""
    try:
        signed = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc).timestamp()
    except ValueError:
        return None
    now = time.time() + skew
    if signed - now > 300:
        return ("SignatureDoesNotMatch", 403, f"Signature not yet current: {amz_date} is still later than "
                f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now + 300))}")
    if now - signed > 300:
        return ("RequestExpired", 400, "Request has expired.")
    return None


class _Recorder:
    """WSGI middleware: records each call and serves queued faults before moto sees the request."""

    def __init__(self, bed: FakeAws, app: Any) -> None:
        self.bed = bed
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        if TESTBED_UA in environ.get("HTTP_USER_AGENT", ""):
            return self.app(environ, start_response)
        if environ.get("PATH_INFO") == "/checkip":  # stands in for https://checkip.amazonaws.com
            payload = (self.bed.client_public_ip + "\n").encode()
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(payload)))])
            return [payload]
        service, action, params = _classify(environ, body)
        with self.bed.lock:
            self.bed.calls.append(Call(service, action, time.time(), params))
            fault = self.bed.faults[action].popleft() if self.bed.faults.get(action) else None
        if fault is None and self.bed.clock_skew:
            fault = _time_refusal(environ.get("HTTP_X_AMZ_DATE", ""), self.bed.clock_skew)
        if fault is None:
            if action == "DescribeInstances" and self.bed.ipv6_only:
                return self._rewritten(environ, start_response)
            return self.app(environ, start_response)
        code, status, message = fault
        if service == "ec2":
            payload = (f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
                       f'<Message>{message}</Message></Error></Errors><RequestID>{uuid.uuid4()}</RequestID>'
                       f'</Response>').encode()
            headers = [("Content-Type", "text/xml")]
        elif service in ("iam", "sts"):  # the query protocol's other error shape
            payload = (f'<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>'
                       f'</Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>').encode()
            headers = [("Content-Type", "text/xml")]
        else:
            payload = json.dumps({"__type": code, "message": message}).encode()
            headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", code)]
        start_response(f"{status} Error", headers + [("Content-Length", str(len(payload)))])
        return [payload]


    def _rewritten(self, environ: dict, start_response: Callable) -> Any:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list, exc_info: Any = None) -> None:
            captured["status"], captured["headers"] = status, headers

        body = _ipv6_only(b"".join(self.app(environ, capture)), dict(self.bed.ipv6_only))
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        start_response(captured["status"], headers + [("Content-Length", str(len(body)))])
        return [body]


def _ipv6_only(body: bytes, addresses: dict[str, str]) -> bytes:
    """DescribeInstances XML with the named instances' IPv4 fields removed and their IPv6 set."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(body)
    ns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    q = (lambda t: f"{{{ns}}}{t}") if ns else (lambda t: t)
    ET.register_namespace("", ns)
    for item in root.iter(q("item")):
        iid = item.find(q("instanceId"))
        if iid is None or iid.text not in addresses or item.find(q("instanceState")) is None:
            continue
        for tag in ("privateIpAddress", "privateDnsName", "ipAddress", "dnsName"):
            el = item.find(q(tag))
            if el is not None:
                item.remove(el)
        ET.SubElement(item, q("ipv6Address")).text = addresses[iid.text]
    return ET.tostring(root, xml_declaration=True, encoding="UTF-8")


def _classify(environ: dict, body: bytes) -> tuple[str, str, dict]:
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        prefix, _, action = target.rpartition(".")
        service = "ec2-instance-connect" if prefix.startswith("AWSEC2InstanceConnect") else prefix
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            params = {}
        return service, action, params
    auth = environ.get("HTTP_AUTHORIZATION", "")
    service = "unknown"
    if "Credential=" in auth:
        scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        if len(scope) >= 4:
            service = scope[3]
    q = parse_qs(body.decode("utf-8", "replace")) if body else parse_qs(environ.get("QUERY_STRING", ""))
    action = (q.get("Action") or ["?"])[0]
    return service, action, {k: v[0] if len(v) == 1 else v for k, v in q.items()}


# ---- moto patches ----------------------------------------------------------------------------------
_patched = False


def _install_moto_patches() -> None:
    global _patched
    if _patched:
        return
    from moto.cloudtrail.responses import CloudTrailResponse
    from moto.core.exceptions import JsonRESTError
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses import EC2Response
    from moto.ec2instanceconnect.responses import Ec2InstanceConnectResponse
    from moto.iam.exceptions import NoSuchEntity as IamNoSuchEntity
    from moto.iam.responses import IamResponse
    from moto.sts.responses import TokenResponse as StsResponse

    def bed() -> FakeAws:
        assert _current is not None
        return _current

    def create_instance_connect_endpoint(self: Any) -> Any:
        subnet_id = self._get_param("SubnetId")
        try:
            self.ec2_backend.get_subnet(subnet_id)
        except Exception:
            raise EC2ClientError("InvalidSubnetID.NotFound", f"The subnet ID '{subnet_id}' does not exist") from None
        vpc = self.ec2_backend.get_subnet(subnet_id).vpc_id
        with bed().lock:
            if any(e["VpcId"] == vpc for e in bed().endpoints.values()):
                raise EC2ClientError("InstanceConnectEndpointLimitExceeded",
                                     "You've reached the maximum number of EC2 Instance Connect Endpoints per VPC")
        tags = []
        for spec in self._get_param("TagSpecifications", []) or []:
            tags.extend(spec.get("Tags", []))
        record = bed().create_endpoint(
            subnet_id,
            preserve_client_ip=str(self._get_param("PreserveClientIp", "false")).lower() == "true",
            security_group_ids=self._get_param("SecurityGroupIds", []) or [],
            ip_address_type=self._get_param("IpAddressType"),
            tags=tags,
        )
        return ActionResult({"InstanceConnectEndpoint": record, "ClientToken": self._get_param("ClientToken")})

    def describe_instance_connect_endpoints(self: Any) -> Any:
        ids = self._get_param("InstanceConnectEndpointIds", []) or []
        filters = self._filters_from_querystring()
        with bed().lock:
            items = list(bed().endpoints.values())
        if ids:
            missing = [i for i in ids if i not in bed().endpoints]
            if missing:
                raise EC2ClientError("InvalidInstanceConnectEndpointId.NotFound",
                                     f"The instance connect endpoint ID '{missing[0]}' does not exist")
            items = [e for e in items if e["InstanceConnectEndpointId"] in ids]
        items = [e for e in items if _matches(e, filters)]
        max_results = int(self._get_param("MaxResults") or 50)
        start = int(self._get_param("NextToken") or 0)
        page = items[start:start + max_results]
        result: dict[str, Any] = {"InstanceConnectEndpoints": page}
        if start + max_results < len(items):
            result["NextToken"] = str(start + max_results)
        return ActionResult(result)

    def delete_instance_connect_endpoint(self: Any) -> Any:
        eid = self._get_param("InstanceConnectEndpointId")
        if eid not in bed().endpoints:
            raise EC2ClientError("InvalidInstanceConnectEndpointId.NotFound",
                                 f"The instance connect endpoint ID '{eid}' does not exist")
        return ActionResult({"InstanceConnectEndpoint": bed().delete_endpoint(eid)})

    def send_ssh_public_key(self: Any) -> str:
        req = json.loads(self.body or "{}")
        instance_id = req.get("InstanceId", "")
        os_user = req.get("InstanceOSUser", "")
        key = (req.get("SSHPublicKey") or "").strip()
        state = bed().instance_state(instance_id)
        if state is None:
            raise JsonRESTError("EC2InstanceNotFoundException", f"Instance not found: {instance_id}")
        if state != "running":
            raise JsonRESTError("EC2InstanceStateInvalidException",
                                f"Instance {instance_id} is not in a valid state ({state})")
        if not _valid_public_key(key):
            raise JsonRESTError("InvalidArgsException", "Invalid request: SSH Public key is invalid")
        request_id = str(uuid.uuid4())
        bed().store_key(instance_id, os_user, " ".join(key.split()[:2]), request_id)
        bed().record_event("SendSSHPublicKey", request_id, {"instanceId": instance_id, "instanceOSUser": os_user},
                           resources=[{"ResourceType": "AWS::EC2::Instance", "ResourceName": instance_id}])
        return json.dumps({"RequestId": request_id, "Success": True})

    def get_caller_identity(self: Any) -> Any:
        arn = bed().caller_arn
        return ActionResult({"UserId": "AIDATESTBEDCALLER0001", "Account": ACCOUNT, "Arn": arn})

    def simulate_principal_policy(self: Any) -> Any:
        from .iam_eval import evaluate

        q = self.querystring
        source = q.get("PolicySourceArn", [""])[0]
        if source != _iam_arn(bed().caller_arn):
            raise IamNoSuchEntity(f"PolicySourceArn {source} does not exist")
        actions = [q[k][0] for k in sorted(q, key=_member_order) if k.startswith("ActionNames.member.")]
        resources = [q[k][0] for k in sorted(q, key=_member_order) if k.startswith("ResourceArns.member.")] or ["*"]
        context: dict[str, list[str]] = {}
        n = 1
        while f"ContextEntries.member.{n}.ContextKeyName" in q:
            name = q[f"ContextEntries.member.{n}.ContextKeyName"][0]
            values = [q[k][0] for k in sorted(q, key=_member_order)
                      if k.startswith(f"ContextEntries.member.{n}.ContextKeyValues.member.")]
            context[name] = values
            n += 1
        policies = bed().identity_policies
        results = []
        for action in actions:
            for resource in resources:
                decision = "allowed" if policies is None else evaluate(policies, action, resource, context)
                results.append({"EvalActionName": action, "EvalResourceName": resource, "EvalDecision": decision,
                                "MatchedStatements": [], "MissingContextValues": []})
        return ActionResult({"EvaluationResults": results, "IsTruncated": False})

    def lookup_events(self: Any) -> str:
        req = json.loads(self.body or "{}")
        start = float(req.get("StartTime") or 0)
        end = float(req.get("EndTime") or 1e12)
        attrs = {a.get("AttributeKey"): a.get("AttributeValue") for a in req.get("LookupAttributes") or []}
        with bed().lock:
            events = [e for e in bed().trail if start <= e["EventTime"] <= end]
        if attrs.get("EventSource"):
            events = [e for e in events if e["EventSource"] == attrs["EventSource"]]
        if attrs.get("EventName"):
            events = [e for e in events if e["EventName"] == attrs["EventName"]]
        events.sort(key=lambda e: -e["EventTime"])  # newest first, as CloudTrail returns them
        first = int(req.get("NextToken") or 0)
        size = int(req.get("MaxResults") or 50)
        out: dict[str, Any] = {"Events": events[first:first + size]}
        if first + size < len(events):
            out["NextToken"] = str(first + size)
        return json.dumps(out)

    def get_console_output(self: Any) -> Any:
        import base64

        iid = self._get_param("InstanceId")
        instance = self.ec2_backend.get_instance(iid)  # raises InvalidInstanceID.NotFound as EC2 does
        text = bed().console_output(instance.id)
        return ActionResult({"InstanceId": instance.id, "Timestamp": utcnow(),
                             "Output": base64.b64encode(text.encode()).decode()})

    EC2Response.get_console_output = get_console_output

    # CloudWatch Logs: honour JSON filter patterns as CloudWatch does (moto matches them all).
    from moto.logs.utils import EventMessageFilter

    from .logs_pattern import matches as json_pattern_matches

    original_init, original_matches = EventMessageFilter.__init__, EventMessageFilter.matches

    def filter_init(self: Any, pattern: str) -> None:
        original_init(self, pattern)
        self.eic_json = pattern.strip() if pattern and pattern.strip().startswith("{") else None

    def filter_matches(self: Any, message: str) -> bool:
        if getattr(self, "eic_json", None):
            return json_pattern_matches(self.eic_json, message)
        return original_matches(self, message)

    EventMessageFilter.__init__ = filter_init
    EventMessageFilter.matches = filter_matches

    from moto.logs.models import LogsBackend

    original_filter = LogsBackend.filter_log_events

    def filter_log_events(self: Any, group: str, streams: Any, start: Any, end: Any, limit: Any, token: Any,
                          pattern: Any, interleaved: Any) -> Any:
        # A smaller page when a test asks for one, so that pagination is exercised with few records.
        return original_filter(self, group, streams, start, end, limit or bed().logs_page_size, token, pattern,
                               interleaved)

    LogsBackend.filter_log_events = filter_log_events
    EC2Response.create_instance_connect_endpoint = create_instance_connect_endpoint
    EC2Response.describe_instance_connect_endpoints = describe_instance_connect_endpoints
    EC2Response.delete_instance_connect_endpoint = delete_instance_connect_endpoint
    Ec2InstanceConnectResponse.send_ssh_public_key = send_ssh_public_key
    StsResponse.get_caller_identity = get_caller_identity
    IamResponse.simulate_principal_policy = simulate_principal_policy
    CloudTrailResponse.lookup_events = lookup_events
    _patched = True


def _member_order(key: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in key.split("."))


def _iam_arn(caller: str) -> str:
    """The IAM principal behind an STS caller ARN (assumed-role session → its role)."""
    if ":assumed-role/" in caller:
        head, _, rest = caller.partition(":assumed-role/")
        return head.replace(":sts:", ":iam:") + ":role/" + rest.split("/")[0]
    return caller


def _matches(endpoint: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    fields = {"instance-connect-endpoint-id": "InstanceConnectEndpointId", "state": "State",
              "subnet-id": "SubnetId", "vpc-id": "VpcId"}
    tags = {t["Key"]: t["Value"] for t in endpoint.get("Tags", [])}
    for name, values in filters.items():
        if name in fields:
            if endpoint.get(fields[name]) not in values:
                return False
        elif name.startswith("tag:"):
            if tags.get(name[4:]) not in values:
                return False
        elif name == "tag-key":
            if not set(values) & set(tags):
                return False
        elif name == "tag-value":
            if not set(values) & set(tags.values()):
                return False
        else:
            return False
    return True


def _fingerprint(line: str) -> str:
    import base64
    import hashlib

    blob = base64.b64decode(line.split()[1]) if len(line.split()) > 1 else b""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _other_host_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _valid_public_key(line: str) -> bool:
    """What the service accepts: ssh-ed25519, or ssh-rsa of 2048/4096 bits (docs/protocol.md §1.1)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    if not 80 <= len(line) <= 4096:
        return False
    try:
        key = load_ssh_public_key(" ".join(line.split()[:2]).encode())
    except Exception:
        return False
    if isinstance(key, ed25519.Ed25519PublicKey):
        return True
    return isinstance(key, rsa.RSAPublicKey) and key.key_size in (2048, 4096)
