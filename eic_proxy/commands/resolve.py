"""``eic-proxy resolve HOST``: the whole resolution of a host alias, without connecting."""
from __future__ import annotations

import argparse
from typing import Any

from eic_proxy.options import LOOKUP_FLAGS, add_common, add_flags, locate_host


def add_parser(sub: Any) -> None:
    r = sub.add_parser("resolve", help="show how HOST resolves (instance, IP, VPC, endpoint, cache age)",
                       description="Show the whole resolution of HOST without connecting.")
    r.add_argument("host", metavar="HOST")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    add_flags(r, "eice_id")
    add_flags(r, *LOOKUP_FLAGS)
    add_common(r)


def run(args: argparse.Namespace) -> int:
    import json

    aws, located, spec, s = locate_host(args)
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
        from eic_proxy.text import pad, width

        columns = max(width(k) for k in doc)
        for k, v in doc.items():
            if k.endswith("cache_age"):
                v = "fresh lookup" if v is None else f"{v:.0f} s"
            print(f"{pad(k, columns)}  {'-' if v is None else v}")
    return 0
