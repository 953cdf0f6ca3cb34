"""What the helper loads and runs before it forks its first connection, so that connections find it
done: the warm path's modules, ``connect``'s parser, the TLS context, and a rehearsal of the signer and
the protocol on made-up data (bench/RESULTS.md has what each saves per tunnel)."""
from __future__ import annotations

import struct
import sys

# What the warm connect path imports, so a child finds it loaded; the cold path's (botocore) follows
# once the helper is idle, one group per idle moment so a connection never waits for a whole preload.
WARM = ("eic_proxy.options", "eic_proxy.report", "eic_proxy.lifecycle.connection", "eic_proxy.lifecycle.session",
        "eic_proxy.control.locate", "eic_proxy.transport.pump", "eic_proxy.transport.link", "eic_proxy.tunnel.protocol",
        "eic_proxy.transport.handshake", "eic_proxy.tunnel.signer", "eic_proxy.control.push", "eic_proxy.lifecycle.limiter",
        "eic_proxy.transport.probe", "eic_proxy.control.hostkey_guard", "eic_proxy.keys.lifecycle", "eic_proxy.store.cache",
        "eic_proxy.store.audit", "eic_proxy.aws.sharedfiles", "eic_proxy.aws.client", "eic_proxy.control.endpoint",
        "eic_proxy.control.resolve", "eic_proxy.aws.proxy", "eic_proxy.store.knownhosts", "ssl", "base64", "hashlib",
        "platformdirs", "encodings.idna", "eic_proxy.lifecycle.handover", "pickle", "eic_proxy.store.inflight")
# (cryptography is left out: only a key rotation needs it, a few times a day, and it weighs 7 MiB.)
COLD = (("botocore.session", "botocore.client"), ("eic_proxy.aws.models:cut_models",),
        ("eic_proxy.aws.client:make_spare_session",))


def preload(modules: tuple[str, ...]) -> None:
    """Import each module (``module:function`` also calls the function)."""
    for name in modules:
        module, _, function = name.partition(":")
        try:
            __import__(module)
            if function:
                getattr(sys.modules[module], function)()
        except Exception:  # noqa: BLE001 - what fails to load here only costs the connection the load
            pass


def warm_up() -> None:
    """Build what every connection would build first (``connect``'s parser, the log level, the TLS
    context of this environment's trust store: a child with another CA bundle loads its own), then
    run the rest of what it runs on made-up data (``rehearsal``). What fails here only leaves the work
    to the connections."""
    try:
        from eic_proxy.aws.sharedfiles import SharedSettings
        from eic_proxy.options import connect_parser
        from eic_proxy.report import setup_logging
        from eic_proxy.transport.handshake import tls_context

        connect_parser()
        setup_logging(0)  # the level most connections use, set before they are forked
        tls_context(SharedSettings(None).ca_bundle)
        rehearsal()
    except Exception:  # noqa: BLE001
        pass


def rehearsal() -> None:
    """Run the parser, the signer and the protocol on made-up data before any connection is forked:
    CPython 3.11 rewrites a function's bytecode while it warms up (specialisation), and a child doing
    that copies the page from the helper. Measured: ~0.3 MiB less copied per tunnel. Touches no file
    and no network."""
    from eic_proxy.aws.sharedfiles import StaticCredentials
    from eic_proxy.options import connect_parser
    from eic_proxy.tunnel.protocol import TunnelProtocol
    from eic_proxy.tunnel.signer import presign_url

    frame = struct.pack("!BB", 0x82, 100) + b"\0" * 100  # a server's BINARY frame: unmasked
    for _ in range(3):
        connect_parser().parse_args(["connect", "i-0123456789abcdef0", "22", "ec2-user"])
        presign_url(StaticCredentials("AKIAREHEARSAL0000000", "-"), "us-east-1", "eice.invalid",
                    "eice-0123456789abcdef0", 22, "10.0.0.1")
        proto = TunnelProtocol(0.0, keepalive=30.0, warn_before=None)
        proto.local_data(b"\0" * 1000, 0.5)
        proto.receive_bytes(frame, 0.6)
        proto.tick(1.0)
        proto.local_eof(1.1)
        proto.take()


