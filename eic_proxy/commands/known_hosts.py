"""``eic-proxy known-hosts HOST [--refresh] [--json]``: the host keys held for an instance, and where from.

Keys come from the instance's console output ("console", verified) or, when the console showed none
and ``host-keys = verify``/``tofu``, from the first key the server presented ("first-use").
``--refresh`` forgets them and reads the console again: for an instance that really was rebuilt.
"""
from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from typing import Any

from eic_proxy.options import LOOKUP_FLAGS, add_common, add_flags, locate_host
from eic_proxy.text import pad


def add_parser(sub: Any) -> None:
    k = sub.add_parser("known-hosts", help="show (or --refresh) the verified host keys of HOST",
                       description="Show the SSH host keys eic-proxy holds for the instance behind HOST: "
                                   "their fingerprints, where they came from (the console output, or first "
                                   "use) and their age. --refresh reads them from the console again.")
    k.add_argument("host", metavar="HOST", help="instance ID, Name tag, tag:KEY=VALUE, IP or DNS name")
    k.add_argument("--refresh", action="store_true",
                   help="forget the held keys and read them from the console output again (a rebuilt instance)")
    k.add_argument("--json", action="store_true", help="machine-readable output")
    add_flags(k, *LOOKUP_FLAGS)
    add_common(k)


def run(args: argparse.Namespace) -> int:
    from eic_proxy.control.hostkey_guard import console_keys
    from eic_proxy.store import knownhosts
    from eic_proxy.tunnel.hostkeys import fingerprint

    aws, located, _, _ = locate_host(args)
    iid = located.target.instance_id
    note = ""
    if args.refresh:
        knownhosts.forget_keys(iid)
        keys, why = console_keys(aws, iid)
        if keys:
            knownhosts.record_keys(iid, [k.line for k in keys], "console")
        else:
            note = f"the console shows no host keys: {why}; the next connection applies host-keys (verify/strict/tofu)"
    meta = knownhosts.source_of(iid)
    held = [{"type": t, "fingerprint": fingerprint(base64.b64decode(b64))} for t, b64 in knownhosts.known_keys(iid)]
    doc = {"host": args.host, "instance_id": iid, "source": meta.get("source") if held else None,
           "age_seconds": round(time.time() - float(meta["at"])) if held and meta.get("at") else None,
           "keys": held, "note": note or meta.get("note") or None}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    if not held:
        print(f"{iid}: no host keys held yet (the first connection reads the console output)")
    else:
        how = {"console": "from the console output (verified)", "first-use": "from first use (not verified)"}
        age = doc["age_seconds"]
        print(f"{iid}: {len(held)} host key{'s' if len(held) != 1 else ''} "
              f"{how.get(str(doc['source']), 'of unknown origin')}"
              + (f", {age // 86400} d {age % 86400 // 3600} h old" if isinstance(age, int) else ""))
        for k in held:
            print(f"  {pad(k['type'], 20)} {k['fingerprint']}")
    if doc["note"]:
        print(f"eic-proxy: note: {doc['note']}", file=sys.stderr)
    return 0
