"""Every user-facing failure: one exception hierarchy; the class of an error decides its exit code.

The complete map (``cli.main`` is the only catch; no raise site chooses a code, a test holds every
subclass of ``EicProxyError`` in the package to this map)::

    EicProxyError                         message + hint                      INTERNAL
    ├── UsageError                        bad arguments                       CONFIG
    │   ├── ConfigError                   a bad config file or setting        CONFIG
    │   └── NotOurs                       a directory of another user's       CONFIG
    ├── CredentialsError                  no/expired/prompting credentials    CREDENTIALS
    │   └── CredentialsTimeout            the credential source hung          CREDENTIALS_WAIT
    ├── LocalFileError                    the user's disk: full, read-only    LOCAL_FILES
    ├── HostNotFound                      alias matches no instance           HOST_NOT_FOUND
    │   └── AmbiguousHost                 alias matches several               AMBIGUOUS_HOST
    ├── InstanceStateError                instance not running                INSTANCE_STATE
    │   └── InstanceWaitTimeout           --start waited too long             TIMEOUT
    ├── NoEndpoint                        no usable EICE for the VPC          NO_ENDPOINT
    ├── AccessDenied                      IAM said no (an API call)           ACCESS_DENIED
    ├── KeyError_                         key push / key file problems        KEY
    │   ├── AgentError                    the ssh-agent refused               KEY
    │   └── KeyringTimeout                the OS keyring did not answer       LOCKED
    ├── HostKeyError                      host key not the console's          HOST_KEY
    ├── HandshakeError                    the endpoint refused the upgrade    HANDSHAKE_REJECTED
    │   ├── SignatureRejected             the URL's signature                 SIGNATURE_REJECTED
    │   ├── SignatureExpired              the URL's time (a clock)            SIGNATURE_EXPIRED
    │   ├── HandshakeDenied               IAM said no to OpenTunnel           ACCESS_DENIED
    │   └── EndpointBusy                  429 / 5xx                           SERVICE_UNAVAILABLE
    ├── TunnelClosed                      the endpoint closed abnormally      TUNNEL_CLOSED
    │   ├── TargetUnreachable             the endpoint cannot reach it        TARGET_UNREACHABLE
    │   ├── TunnelExpired                 maxTunnelDuration reached           TUNNEL_EXPIRED
    │   ├── NoFreeSlot                    all 20 slots ours, for the wait     SERVICE_UNAVAILABLE
    │   └── PortSilent                    --start: nothing answers            TIMEOUT
    ├── NetworkError                      DNS, TCP, proxies                   NETWORK
    │   ├── TlsError                      certificates, TLS handshake         TLS
    │   └── NetworkTimeout                a timeout, a stall                  TIMEOUT
    ├── ProtocolError                     garbage from the server             PROTOCOL
    ├── LockTimeout                       a lock held by a stopped process    LOCKED
    └── AwsApiError                       any other AWS API failure           AWS_API
        ├── InvalidRecord                 an identifier of the wrong shape    AWS_API
        ├── AwsBusy                       throttled or unavailable            SERVICE_UNAVAILABLE
        └── ClockRejected                 signed at the wrong time            SIGNATURE_EXPIRED

A tunnel ended by a signal exits 128+N whatever its error (``tunnel.protocol.Outcome``): that is how
it ended, not what went wrong.
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
    """A failure the user can act on: a one-line message, an optional hint; the class fixes the exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.reported = False  # the tunnel already wrote its line (before closing ssh's input): say it once

    def __str__(self) -> str:
        return self.message


class UsageError(EicProxyError):
    exit_code = ExitCode.CONFIG


class ConfigError(UsageError):
    """A config file that cannot be read or parsed, or a setting out of range."""


class NotOurs(UsageError, PermissionError):
    """A directory of ours that belongs to another user: refused where it is needed (exit 3), done
    without where it is not (a cache, a record), like any directory we cannot write."""

    def __init__(self, path: object, uid: int) -> None:
        import errno

        super().__init__(f"{path} belongs to another user (uid {uid}); eic-proxy will not trust it",
                         hint="remove it, or point XDG_CACHE_HOME / XDG_DATA_HOME at a directory of yours")
        self.errno = errno.EACCES
        self.strerror = "belongs to another user"
        self.filename = str(path)


class CredentialsError(EicProxyError):
    exit_code = ExitCode.CREDENTIALS


class CredentialsTimeout(CredentialsError):
    """The credential source (credential_process, SSO, a role, metadata) did not answer in time."""

    exit_code = ExitCode.CREDENTIALS_WAIT


class LocalFileError(EicProxyError):
    """The user's own disk: full, read-only, not writable, over quota — not our bug."""

    exit_code = ExitCode.LOCAL_FILES


class HostNotFound(EicProxyError):
    exit_code = ExitCode.HOST_NOT_FOUND


class AmbiguousHost(HostNotFound):
    exit_code = ExitCode.AMBIGUOUS_HOST


class InstanceStateError(EicProxyError):
    exit_code = ExitCode.INSTANCE_STATE


class InstanceWaitTimeout(InstanceStateError):
    exit_code = ExitCode.TIMEOUT


class NoEndpoint(EicProxyError):
    exit_code = ExitCode.NO_ENDPOINT


class AccessDenied(EicProxyError):
    exit_code = ExitCode.ACCESS_DENIED


class KeyError_(EicProxyError):
    """Named with a trailing underscore so it never shadows the builtin KeyError."""

    exit_code = ExitCode.KEY


class AgentError(KeyError_):
    pass


class KeyringTimeout(KeyError_):
    exit_code = ExitCode.LOCKED


class HostKeyError(EicProxyError):
    exit_code = ExitCode.HOST_KEY


class HandshakeError(EicProxyError):
    exit_code = ExitCode.HANDSHAKE_REJECTED

    def __init__(self, message: str, hint: Optional[str] = None, status: Optional[int] = None,
                 error_code: Optional[str] = None) -> None:
        super().__init__(message, hint)
        self.status = status
        self.error_code = error_code
        self.server_time: Optional[float] = None  # the refusal's Date header, as a timestamp (clock checks)


class SignatureRejected(HandshakeError):
    exit_code = ExitCode.SIGNATURE_REJECTED


class SignatureExpired(HandshakeError):
    exit_code = ExitCode.SIGNATURE_EXPIRED


class HandshakeDenied(HandshakeError):
    exit_code = ExitCode.ACCESS_DENIED


class EndpointBusy(HandshakeError):
    exit_code = ExitCode.SERVICE_UNAVAILABLE


class TunnelClosed(EicProxyError):
    exit_code = ExitCode.TUNNEL_CLOSED


class TargetUnreachable(TunnelClosed):
    exit_code = ExitCode.TARGET_UNREACHABLE


class TunnelExpired(TunnelClosed):
    exit_code = ExitCode.TUNNEL_EXPIRED


class NoFreeSlot(TunnelClosed):
    exit_code = ExitCode.SERVICE_UNAVAILABLE


class PortSilent(TunnelClosed):
    exit_code = ExitCode.TIMEOUT


class NetworkError(EicProxyError):
    exit_code = ExitCode.NETWORK


class TlsError(NetworkError):
    exit_code = ExitCode.TLS


class NetworkTimeout(NetworkError):
    exit_code = ExitCode.TIMEOUT


class ProtocolError(EicProxyError):
    exit_code = ExitCode.PROTOCOL


class LockTimeout(EicProxyError, TimeoutError):
    """Another eic-proxy process held a lock for the whole wait: stopped (Ctrl-Z, SIGSTOP) or hung."""

    exit_code = ExitCode.LOCKED


class AwsApiError(EicProxyError):
    exit_code = ExitCode.AWS_API


class InvalidRecord(AwsApiError, ValueError):
    """An identifier of the wrong shape, from the API or from a (crafted, or older) cache file."""


class AwsBusy(AwsApiError):
    exit_code = ExitCode.SERVICE_UNAVAILABLE


class ClockRejected(AwsApiError):
    exit_code = ExitCode.SIGNATURE_EXPIRED
