"""``eic-proxy cache clear``: forget cached locations and cached temporary credentials."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from eic_proxy.options import add_common


def add_parser(sub: Any) -> None:
    cc = sub.add_parser("cache", help="manage the resolution and credentials cache",
                        description="Clear cached instance/endpoint locations and cached temporary AWS credentials.")
    cc.add_argument("action", choices=["clear"])
    add_common(cc)


def run(args: argparse.Namespace) -> int:
    from eic_proxy.aws.sharedfiles import credentials_cache
    from eic_proxy.store.cache import Cache

    n = Cache().clear() + credentials_cache().clear()
    print(f"removed {n} cached entries (locations and temporary credentials)", file=sys.stderr)
    return 0
