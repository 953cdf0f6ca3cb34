"""Every user-facing failure: one exception hierarchy, one exit code per failure class.

Map of the hierarchy (each class fixes an exit code; ``cli.main`` is the only catch)::

    EicProxyError                       message + hint + exit code
    ├── UsageError                      bad arguments or config          (CONFIG)
    ├── CredentialsError                no/expired/prompting credentials (CREDENTIALS)
    ├── HostNotFound                    alias matches no instance        (HOST_NOT_FOUND)
    │   └── resolve.AmbiguousHost       alias matches several            (AMBIGUOUS_HOST)
    ├── InstanceStateError              instance not running             (INSTANCE_STATE)
    ├── NoEndpoint                      no usable EICE for the VPC       (NO_ENDPOINT)
    ├── AccessDenied                    IAM said no                      (ACCESS_DENIED)
    ├── KeyError_                       key push / key file problems     (KEY)
    ├── HandshakeError                  the endpoint refused the upgrade (SIGNATURE_*, HANDSHAKE_REJECTED, SERVICE_UNAVAILABLE)
    ├── TunnelClosed                    the endpoint closed abnormally   (TARGET_UNREACHABLE, TUNNEL_CLOSED, TUNNEL_EXPIRED)
    ├── NetworkError                    DNS, TCP, TLS, timeouts          (NETWORK, TLS, TIMEOUT)
    ├── ProtocolError                   garbage from the server          (PROTOCOL)
    ├── files.LockTimeout               a lock held by a stopped process (LOCKED)
    └── AwsApiError                     any other AWS API failure        (AWS_API)
"""
from __future__ import annotations

from enum import IntEnum, unique
from typing import Optional


@unique
class ExitCode(IntEnum):
    """Process exit codes. ssh itself exits 255 whatever we return; these serve scripts and tests."""

    OK = 0
    USAGE = 2  # argparse's own code for a bad command line
    CONFIG = 3
    CREDENTIALS = 4
    HOST_NOT_FOUND = 5
    INSTANCE_STATE = 6
    NO_ENDPOINT = 7
    ACCESS_DENIED = 8
    KEY = 9
    SIGNATURE_REJECTED = 10
    SIGNATURE_EXPIRED = 11
    HANDSHAKE_REJECTED = 12
    SERVICE_UNAVAILABLE = 13
    TARGET_UNREACHABLE = 14
    TUNNEL_CLOSED = 15
    TUNNEL_EXPIRED = 16
    NETWORK = 17
    TLS = 18
    TIMEOUT = 19
    PROTOCOL = 20
    AWS_API = 21
    AMBIGUOUS_HOST = 22
    CHECKS_FAILED = 23  # `doctor` found at least one problem
    LOCKED = 24  # another eic-proxy process held a lock (or the keyring did not answer) for the whole wait
    HOST_KEY = 25  # the host key is not the one the console lists, or cannot be verified (host-keys = strict)
    LOCAL_FILES = 26  # a file the connection needs could not be written: disk full, read-only, permission, quota
    CREDENTIALS_WAIT = 27  # the credential source (credential_process, SSO, a role, metadata) did not answer in time
    INTERNAL = 70
    # 128 + N, as shells report a process ended by signal N (we end cleanly, with the same code)
    INTERRUPTED = 130  # SIGINT
    BROKEN_PIPE = 141  # SIGPIPE: whoever read our output went away (`eic-proxy ls | head`)
    TERMINATED = 143  # SIGTERM


def error_line(message: str, hint: Optional[str] = None) -> str:
    """The one line every failure gets on stderr, from ``cli.main`` or from the tunnel itself."""
    return f"eic-proxy: error: {message}" + (f" (hint: {hint})" if hint else "")


class EicProxyError(Exception):
    """A failure the user can act on: a one-line message, an optional hint, an exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, hint: Optional[str] = None, exit_code: Optional[ExitCode] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.reported = False  # the tunnel already wrote its line (before closing ssh's input): say it once
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(EicProxyError):
    exit_code = ExitCode.CONFIG


class CredentialsError(EicProxyError):
    exit_code = ExitCode.CREDENTIALS


class LocalFileError(EicProxyError):
    """The user's own disk: full, read-only, not writable, over quota — not our bug."""

    exit_code = ExitCode.LOCAL_FILES


class HostNotFound(EicProxyError):
    exit_code = ExitCode.HOST_NOT_FOUND


class InstanceStateError(EicProxyError):
    exit_code = ExitCode.INSTANCE_STATE


class NoEndpoint(EicProxyError):
    exit_code = ExitCode.NO_ENDPOINT


class AccessDenied(EicProxyError):
    exit_code = ExitCode.ACCESS_DENIED


class KeyError_(EicProxyError):
    """Named with a trailing underscore so it never shadows the builtin KeyError."""

    exit_code = ExitCode.KEY


class HandshakeError(EicProxyError):
    exit_code = ExitCode.HANDSHAKE_REJECTED

    def __init__(self, message: str, hint: Optional[str] = None, exit_code: Optional[ExitCode] = None,
                 status: Optional[int] = None, error_code: Optional[str] = None) -> None:
        super().__init__(message, hint, exit_code)
        self.status = status
        self.error_code = error_code
        self.server_time: Optional[float] = None  # the refusal's Date header, as a timestamp (clock checks)


class TunnelClosed(EicProxyError):
    exit_code = ExitCode.TUNNEL_CLOSED


class NetworkError(EicProxyError):
    exit_code = ExitCode.NETWORK


class ProtocolError(EicProxyError):
    exit_code = ExitCode.PROTOCOL


class AwsApiError(EicProxyError):
    exit_code = ExitCode.AWS_API
