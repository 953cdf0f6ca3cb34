"""``eic-proxy key-path``: the private key path for IdentityFile (the key is created on first use)."""
from __future__ import annotations

import argparse
from typing import Any

from eic_proxy.options import KEY_FLAGS, add_common, add_flags, settings


def add_parser(sub: Any) -> None:
    k = sub.add_parser("key-path", help="print the private key path for IdentityFile",
                       description="Print the path of the local private key (created on first use; in "
                                   "keyring mode, the public key, which is what IdentityFile then names).")
    add_flags(k, *KEY_FLAGS)
    add_common(k)


def run(args: argparse.Namespace) -> int:
    from eic_proxy.keys.lifecycle import make_key_manager

    key = make_key_manager(settings(args, "")).ensure()
    print(key.private_path or key.public_path)
    return 0
