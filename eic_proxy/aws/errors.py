"""botocore's exceptions as our one-line errors with a hint: each AWS failure mapped to the class (and so
the exit code) that says what the user can do about it."""
from __future__ import annotations

from typing import Optional

from eic_proxy.errors import (
    AccessDenied,
    AwsApiError,
    AwsBusy,
    ClockRejected,
    CredentialsError,
    EicProxyError,
    HostNotFound,
    InstanceStateError,
    KeyError_,
    NetworkError,
    NetworkTimeout,
    NoEndpoint,
    TlsError,
    UsageError,
)

_ACCESS_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthException",
                  "AuthFailure", "UnauthorizedException"}
_EXPIRED = {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidClientTokenId",
            "SignatureDoesNotMatch", "InvalidToken"}


def clock_error(response: dict, message: str) -> EicProxyError:
    """A refusal for the signing time, with how far this computer's clock is off (the response's Date)."""
    from eic_proxy.clock import http_date, off_by, offset_from

    headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    offset = offset_from(http_date(str(headers.get("date", ""))))
    if offset is not None:
        message += " (" + off_by(offset, "AWS's") + ")"
    return ClockRejected(message, hint="set this computer's clock right (automatic date and time; after sleep, a VM's "
                                       "or WSL's clock can lag)")


def translate(exc: BaseException, doing: str, profile: Optional[str] = None) -> EicProxyError:
    """Turn a botocore/network exception into an EicProxyError with a hint."""
    import botocore.exceptions as bx

    p = f" --profile {profile}" if profile else ""
    if isinstance(exc, EicProxyError):
        return exc
    if isinstance(exc, (bx.UnauthorizedSSOTokenError, bx.SSOTokenLoadError, bx.TokenRetrievalError)):
        return CredentialsError(f"the SSO session has expired or was never started ({doing})",
                                hint=f"run `aws sso login{p}`")
    if isinstance(exc, bx.ProfileNotFound):
        return UsageError(f"AWS profile {exc.kwargs.get('profile')!r} does not exist",
                          hint="check ~/.aws/config, or run `aws configure --profile NAME`")
    if isinstance(exc, bx.NoCredentialsError):
        return CredentialsError("no AWS credentials found", hint=f"run `aws configure{p}` or `aws sso login{p}`")
    if isinstance(exc, (bx.PartialCredentialsError, bx.CredentialRetrievalError, bx.InvalidConfigError)):
        return CredentialsError(f"AWS credentials are incomplete or unreadable: {exc}",
                                hint=f"check the profile in ~/.aws/config, or run `aws configure{p}`")
    if isinstance(exc, (bx.ConnectTimeoutError, bx.ReadTimeoutError)):
        return NetworkTimeout(f"timed out {doing}: {exc}", hint="check the network, proxy settings and AWS_ENDPOINT_URL")
    if isinstance(exc, bx.SSLError):
        return TlsError(f"TLS error {doing}: {exc}", hint="check AWS_CA_BUNDLE / the profile's ca_bundle")
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectionError, bx.HTTPClientError)):
        return NetworkError(f"cannot reach the AWS API {doing}: {exc}",
                            hint="check the network, proxy settings and AWS_ENDPOINT_URL")
    if isinstance(exc, bx.ParamValidationError):
        return UsageError(f"invalid request {doing}: {exc}")
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "")
        msg = err.get("Message", "") or str(exc)
        from eic_proxy.clock import is_time_refusal

        if is_time_refusal(code, msg):
            return clock_error(exc.response, f"AWS refused the request as signed at the wrong time {doing}: {code}: {msg}")
        if code in _ACCESS_DENIED:
            return AccessDenied(f"access denied {doing}: {msg}",
                                hint="your IAM identity needs this permission; `eic-proxy policy` prints a policy")
        if code in _EXPIRED:
            return CredentialsError(f"AWS rejected the credentials {doing}: {msg}",
                                    hint=f"refresh them: `aws sso login{p}` or `aws configure{p}`")
        if code.startswith("InvalidInstanceConnectEndpointId"):
            return NoEndpoint(f"endpoint not found {doing}: {msg}",
                              hint="check --eice-id (or eice-id in config.ini); "
                                   "`aws ec2 describe-instance-connect-endpoints` lists them")
        if code.startswith("InvalidInstanceID") or code == "EC2InstanceNotFoundException":
            return HostNotFound(f"instance not found {doing}: {msg}",
                                hint="check the instance ID, --region and --profile")
        if code in ("EC2InstanceStateInvalidException", "IncorrectInstanceState"):
            return InstanceStateError(f"instance is not running {doing}: {msg}",
                                      hint="start it, e.g. `aws ec2 start-instances --instance-ids ID`")
        if code == "InvalidArgsException":
            return KeyError_(f"the service rejected the request {doing}: {msg}",
                             hint="check --os-user and the key type (Ed25519 or RSA 2048/4096)")
        if code in ("ThrottlingException", "Throttling", "RequestLimitExceeded", "ServiceUnavailable",
                    "ServiceException", "EC2InstanceUnavailableException", "InternalError"):
            return AwsBusy(f"AWS is busy or unavailable {doing}: {code}: {msg}", hint="retry in a moment")
        return AwsApiError(f"AWS error {doing}: {code}: {msg}")
    if isinstance(exc, bx.BotoCoreError):
        return AwsApiError(f"AWS client error {doing}: {exc}")
    return AwsApiError(f"unexpected error {doing}: {exc.__class__.__name__}: {exc}")
