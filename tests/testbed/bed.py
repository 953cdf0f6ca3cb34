"""The whole local test bed in one object: fake AWS, fake EICE, real sshd per fake instance."""
from __future__ import annotations

import ipaddress
import os
import random
import secrets
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .ca import TestCA
from .fake_aws import ACCOUNT, TESTBED_UA, FakeAws
from .fake_eice import FakeEice
from .sshd import Sshd, ensure_users, install_script

ACCESS_KEY = "AKIATESTBED000000001"
SECRET_KEY = "testbed/secret/key/not/a/real/one/000000"
REGION = "us-east-1"


@dataclass
class Instance:
    instance_id: str
    ip: str
    name: Optional[str]
    subnet_id: str
    vpc_id: str
    sshd: Optional[Sshd] = None


_HELD: dict[int, int] = {}  # octet -> descriptor of its lock file, while a bed of this process uses it


def _free_octet() -> int:
    """A second octet whose 127.N.0.0/16 nobody on this machine listens on (parallel beds stay apart).

    Taken with a lock file as well: two beds starting at the same moment (pytest-xdist's workers, two
    suites at once) could both find the same range unbound before either listens on it (seen once)."""
    import fcntl

    locks = Path(tempfile.gettempdir()) / "eic-testbed-octets"
    locks.mkdir(mode=0o700, exist_ok=True)
    for _ in range(50):
        n = random.randint(20, 250)
        if n in _HELD:
            continue
        fd = os.open(locks / str(n), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        s = socket.socket()
        try:
            s.bind((f"127.{n}.1.250", 22))
        except OSError:
            os.close(fd)
            continue
        finally:
            s.close()
        _HELD[n] = fd
        return n
    raise RuntimeError("no free loopback range for the test bed")


def _release_octets(octets: list[int]) -> None:
    for n in octets:
        fd = _HELD.pop(n, None)
        if fd is not None:
            os.close(fd)


class Testbed:
    """Start with ``start()``; ``env(home)`` gives the environment a client process needs."""

    def __init__(self, workdir: Optional[Path] = None, region: str = REGION) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("the test bed needs root (sshd on port 22, the endpoint on port 443, useradd)")
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="eic-testbed-"))
        os.chmod(self.workdir, 0o755)  # sshd's AuthorizedKeysCommandUser must read pushed keys below it
        self.region = region
        self.octet = _free_octet()
        self._other_octets: list[int] = []
        self.ca = TestCA.create(self.workdir / "ca")
        self.aws = FakeAws(self.workdir, region)
        self.eice = FakeEice(self.aws, self.ca, self.workdir / "eice", {ACCESS_KEY: SECRET_KEY})
        (self.workdir / "eice").mkdir(exist_ok=True)
        self.instances: dict[str, Instance] = {}
        self._next_eice = 1
        self._ec2: Any = None
        self.vpcs: dict[str, str] = {}
        self.subnets: dict[str, str] = {}

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "Testbed":
        install_script()
        ensure_users()
        self.aws.start()
        self.eice.start()
        self.aws.dns_allocator = self._allocate_endpoint_addresses
        self.aws.dualstack_allocator = self._allocate_dualstack_address
        return self

    def stop(self) -> None:
        for inst in self.instances.values():
            if inst.sshd:
                inst.sshd.stop()
        self.eice.stop()
        self.aws.stop()
        _release_octets([self.octet, *self._other_octets])

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _allocate_endpoint_addresses(self, _endpoint_id: str) -> tuple[str, str]:
        n = self._next_eice
        self._next_eice += 2
        dns, fips = f"127.{self.octet}.250.{n}", f"127.{self.octet}.250.{n + 1}"
        self.eice.listen(dns)
        self.eice.listen(fips)
        return dns, fips

    def _allocate_dualstack_address(self, _endpoint_id: str) -> tuple[str, str]:
        if "::1" in self.eice.servers:
            raise ValueError("the bed has one IPv6 loopback address: one dual-stack endpoint at most")
        self.eice.listen("::1")
        return "::1", "::1"

    # ---- AWS resources ---------------------------------------------------------------------------
    @property
    def ec2(self) -> Any:
        if self._ec2 is None:
            self._ec2 = self.client("ec2")
        return self._ec2

    def client(self, service: str) -> Any:
        """A boto3 client of the bed's own (not the product's) for setting up fake AWS resources."""
        import boto3
        from botocore.config import Config

        return boto3.client(service, region_name=self.region, endpoint_url=self.aws.url,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                            config=Config(user_agent_extra=TESTBED_UA))

    def put_trail_records(self, log_group: str, records: list[dict[str, Any]]) -> None:
        """CloudTrail records into the log group, as the trail's delivery to CloudWatch Logs writes them."""
        import json
        import time

        logs = self.client("logs")
        stream = f"{ACCOUNT}_CloudTrail_{self.region}_{secrets.token_hex(3)}"
        logs.create_log_stream(logGroupName=log_group, logStreamName=stream)
        now = int(time.time() * 1000)
        events = [{"timestamp": now - 1000 * (len(records) - i), "message": json.dumps(r)}
                  for i, r in enumerate(records)]
        for i in range(0, len(events), 5000):
            logs.put_log_events(logGroupName=log_group, logStreamName=stream, logEvents=events[i:i + 5000])

    def add_trail(self, name: str = "org-trail", log_group: str = "/aws/cloudtrail/org") -> str:
        """A logging, multi-region trail of management events delivered to a CloudWatch Logs group."""
        s3, logs, trail = self.client("s3"), self.client("logs"), self.client("cloudtrail")
        bucket = f"trail-{name}-{secrets.token_hex(4)}"
        if self.region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": self.region})
        logs.create_log_group(logGroupName=log_group)
        group_arn = logs.describe_log_groups(logGroupNamePrefix=log_group)["logGroups"][0]["arn"]
        trail.create_trail(Name=name, S3BucketName=bucket, IsMultiRegionTrail=True,
                           CloudWatchLogsLogGroupArn=group_arn,
                           CloudWatchLogsRoleArn=f"arn:aws:iam::{ACCOUNT}:role/trail-to-logs")
        trail.start_logging(Name=name)
        return log_group

    def free_octet(self) -> int:
        """A second octet for another VPC: free on this machine and not used by this bed yet."""
        used = {int(c.split(".")[1]) for c in self._vpc_cidrs()}
        for _ in range(50):
            n = _free_octet()
            if n not in used and n != self.octet:
                self._other_octets.append(n)
                return n
            _release_octets([n])
        raise RuntimeError("no free loopback range for another VPC")

    def _vpc_cidrs(self) -> list[str]:
        return [v["CidrBlock"] for v in self.ec2.describe_vpcs()["Vpcs"] if v["CidrBlock"].startswith("127.")]

    def add_vpc(self, name: str, second_octet: Optional[int] = None) -> str:
        octet = second_octet if second_octet is not None else self.octet
        vpc = self.ec2.create_vpc(CidrBlock=f"127.{octet}.0.0/16")["Vpc"]["VpcId"]
        self.vpcs[name] = vpc
        # AWS gives a VPC's default group an inbound rule from itself; moto leaves it out.
        default = self.default_group(vpc)
        self.ec2.authorize_security_group_ingress(GroupId=default, IpPermissions=[
            {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": default}]}])
        return vpc

    def default_group(self, vpc: str) -> str:
        groups = self.ec2.describe_security_groups(Filters=[
            {"Name": "vpc-id", "Values": [self.vpcs.get(vpc, vpc)]}, {"Name": "group-name", "Values": ["default"]}])
        return groups["SecurityGroups"][0]["GroupId"]

    def add_subnet(self, name: str, vpc: str, third_octet: int, second_octet: Optional[int] = None) -> str:
        octet = second_octet if second_octet is not None else self.octet
        subnet = self.ec2.create_subnet(VpcId=self.vpcs.get(vpc, vpc),
                                        CidrBlock=f"127.{octet}.{third_octet}.0/24")["Subnet"]["SubnetId"]
        self.subnets[name] = subnet
        return subnet

    def add_endpoint(self, subnet: str, **kw: Any) -> dict[str, Any]:
        return self.aws.create_endpoint(self.subnets.get(subnet, subnet), **kw)

    def add_instance(self, name: Optional[str], subnet: str, host_octet: int, *, sshd: bool = True,
                     tags: Optional[dict[str, str]] = None, eic_package: bool = True,
                     security_group_ids: Optional[list[str]] = None) -> Instance:
        subnet_id = self.subnets.get(subnet, subnet)
        sub = self.ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]
        net = ipaddress.ip_network(sub["CidrBlock"])
        ip = str(net.network_address + host_octet)
        taken = next((i for i in self.instances.values() if i.ip == ip), None)
        if taken is not None:  # moto answers a reused address with a bare HTTP 500
            raise ValueError(f"{ip} is taken by {taken.name} ({taken.instance_id}); pick another host octet")
        all_tags = dict(tags or {})
        if name:
            all_tags["Name"] = name
        kw: dict[str, Any] = {}
        if all_tags:
            kw["TagSpecifications"] = [{"ResourceType": "instance",
                                        "Tags": [{"Key": k, "Value": v} for k, v in all_tags.items()]}]
        image = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        # As EC2 does: the VPC's default group when none is named (ingress from itself, egress all).
        kw["SecurityGroupIds"] = security_group_ids or [self.default_group(sub["VpcId"])]
        resp = self.ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                                      SubnetId=subnet_id, PrivateIpAddress=ip, **kw)
        iid = resp["Instances"][0]["InstanceId"]
        inst = Instance(iid, ip, name, subnet_id, sub["VpcId"])
        if sshd:
            inst.sshd = Sshd(self.workdir, iid, ip, self.aws.keys_root / iid, eic_package=eic_package)
            inst.sshd.start()
            self.aws.host_keys[iid] = " ".join(inst.sshd.host_public_key())
        self.instances[iid] = inst
        return inst

    def add_ipv6_only_instance(self, name: str) -> Instance:
        """An instance with only an IPv6 address (::1, the one IPv6 loopback address), in a VPC of its
        own whose dual-stack endpoint is the only one that can reach it (docs/protocol.md §7)."""
        octet = self.free_octet()
        vpc = self.add_vpc(f"{name}-vpc", octet)
        sub = self.ec2.create_subnet(VpcId=vpc, CidrBlock=f"127.{octet}.1.0/24", Ipv6CidrBlock="::/64")["Subnet"]
        self.subnets[f"{name}-subnet"] = sub["SubnetId"]
        self.add_endpoint(sub["SubnetId"], ip_address_type="dualstack")
        inst = self.add_instance(name, sub["SubnetId"], 10, sshd=False)
        self.aws.ipv6_only[inst.instance_id] = "::1"
        inst.ip = "::1"
        inst.sshd = Sshd(self.workdir, inst.instance_id, "::1", self.aws.keys_root / inst.instance_id)
        inst.sshd.start()
        return inst

    def move_instance(self, inst: Instance, host_octet: int) -> str:
        """Give ``inst`` a new private IP in its subnet (as an ENI swap would) and move its sshd there."""
        subnet = self.ec2.describe_subnets(SubnetIds=[inst.subnet_id])["Subnets"][0]
        new_ip = str(ipaddress.ip_network(subnet["CidrBlock"]).network_address + host_octet)
        moto_inst = self.aws.ec2_backend().get_instance(inst.instance_id)
        nic = moto_inst.nics[0]
        nic.private_ip_address = new_ip
        for item in nic.private_ip_addresses:
            if item.get("Primary"):
                item["PrivateIpAddress"] = new_ip
        inst.ip = new_ip
        if inst.sshd:
            inst.sshd.stop()
            inst.sshd = Sshd(self.workdir, inst.instance_id, new_ip, self.aws.keys_root / inst.instance_id)
            inst.sshd.start()  # same workdir: same host key, as the same machine would have
        return new_ip

    def default_world(self) -> Instance:
        """One VPC, one subnet, one endpoint, one instance named web-1: the demo's world."""
        self.add_vpc("main")
        self.add_subnet("main-a", "main", 1)
        self.add_endpoint("main-a")
        self.add_trail()  # as most accounts have: doctor finds EC2 Instance Connect calls recorded
        return self.add_instance("web-1", "main-a", 10)

    # ---- clients ---------------------------------------------------------------------------------
    def env(self, home: Path, **extra: str) -> dict[str, str]:
        """Environment for a client process: fake credentials, loopback endpoints, isolated dirs."""
        home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AWS_") and k.lower() not in ("http_proxy", "https_proxy", "no_proxy",
                                                                   "all_proxy")
               and not k.startswith("XDG_") and k not in ("EIC_PROXY_DEBUG", "EIC_PROXY_HELPER")}
        bindir = str(Path(sys.executable).parent)
        env.update({
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / ".local/share"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_STATE_HOME": str(home / ".local/state"),
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.aws.url,
            "AWS_CA_BUNDLE": str(self.ca.pem_path),
            "AWS_CONFIG_FILE": str(home / ".aws/config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / ".aws/credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "EIC_PROXY_CHECKIP_URL": self.aws.url + "/checkip",  # optional override; never the internet in tests
            "PATH": bindir + os.pathsep + env.get("PATH", "/usr/bin:/bin"),
        })
        env.update(extra)
        assert_loopback(env["AWS_ENDPOINT_URL"])
        return env

    def eic_proxy_path(self) -> str:
        exe = Path(sys.executable).parent / "eic-proxy"
        if not exe.exists():
            raise RuntimeError(f"{exe} not found: install the project (pip install -e .)")
        return str(exe)

    def ssh_config(self, home: Path, extra_proxy_args: str = "", user: str = "ec2-user") -> Path:
        """An ssh_config whose Host block sends everything through ``eic-proxy connect``."""
        key = home / ".local/share/eic-proxy/keys/id_ed25519"
        cfg = home / "ssh_config"
        cfg.write_text("\n".join([
            "Host *",
            f"    User {user}",
            f"    ProxyCommand {self.eic_proxy_path()} connect %h %p %r{(' ' + extra_proxy_args) if extra_proxy_args else ''}",
            f"    IdentityFile {key}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {home}/known_hosts",
            "    StrictHostKeyChecking accept-new",
            "    BatchMode yes",
            "    LogLevel ERROR",
            "    ConnectTimeout 20",
            "",
        ]))
        return cfg


def assert_loopback(url: str) -> None:
    """Tests never talk to real AWS: every endpoint URL must point at loopback."""
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise AssertionError(f"endpoint {url} is not loopback")
