"""The ``eic-proxy`` executable: ``connect`` goes to the warm helper first, everything else to ``cli``.

Kept apart from ``cli.py`` so a ProxyCommand that the helper serves never imports argparse, logging
or any module of the data path (``helper/client.py``).
"""
from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing costs a ProxyCommand ~2 ms to import; annotations are strings here
if TYPE_CHECKING:
    from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["connect"]:
        from eic_proxy.helper.client import run_via_helper

        code = run_via_helper(args)
        if code is not None:
            return code
    if "site" not in sys.modules:  # started with -S (eic_proxy_connect.py): the CLI needs site-packages
        import site

        site.main()
    from eic_proxy.cli import main as cli_main

    return cli_main(args)
