"""``python -S eic_proxy_connect.py connect HOST PORT USER``: eic-proxy's ProxyCommand, started lean.

pip's ``eic-proxy`` wrapper imports ``re`` before our code runs, and ``site`` reads every ``.pth`` file
of site-packages (an editable install's finder, setuptools' distutils hack): together 3-25 ms on every
connection (bench/RESULTS.md). ``eic-proxy ssh-config`` writes this file into Host blocks on POSIX,
started with ``-S``; the thin client needs only the standard library and the package beside this
file, and ``entry.main`` runs ``site`` after all when the connection cannot go to the helper. A
hand-written ``ProxyCommand eic-proxy connect %h %p %r`` works the same, a little slower.
"""
import sys

here = sys.path.pop(0)  # our directory (site-packages): ahead of the standard library it could shadow it
if sys.flags.no_site:
    sys.path.append(here)  # the package beside us, after the standard library
    try:
        import sitecustomize  # noqa: F401 - what `site` would have run
    except ImportError:
        pass

from eic_proxy.entry import main  # noqa: E402

sys.exit(main())
