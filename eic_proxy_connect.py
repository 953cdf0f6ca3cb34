"""``python eic_proxy_connect.py connect HOST PORT USER``: eic-proxy's ProxyCommand, started lean.

pip's ``eic-proxy`` wrapper imports ``re`` before our code runs (~4 ms of a 2-core machine's CPU on
every connection, bench/RESULTS.md); this file skips the wrapper. ``eic-proxy ssh-config`` writes it
into Host blocks on POSIX; a hand-written ``ProxyCommand eic-proxy connect %h %p %r`` works the same.
"""
import sys

del sys.path[0]  # our directory (site-packages): importing from it ahead of the standard library could shadow it

from eic_proxy.entry import main  # noqa: E402

sys.exit(main())
