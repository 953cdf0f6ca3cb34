"""Presigned URL: the golden vector pinned by the AWS CLI's own test (eice-protocol.md §3.1)."""
import datetime
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

from botocore.credentials import Credentials

from eic_proxy.signer import presign_url

HOST = "eice-123.ec2-instance-connect-endpoint.us-west-2.amazonaws.com"


def _sign(creds, **kw):
    frozen = datetime.datetime(2020, 1, 1, 1, 1, 1)
    with mock.patch("botocore.auth.get_current_datetime", return_value=frozen):
        return presign_url(creds, "us-west-2", HOST, "eice-123", 22, kw.pop("ip", "10.0.0.0"), **kw)


def test_golden_signature_matches_aws_cli_vector():
    url = _sign(Credentials("access_key", "secret_key"), max_tunnel_duration=1)
    q = dict(parse_qsl(urlsplit(url).query))
    assert q["X-Amz-Signature"].startswith("3a567404") and q["X-Amz-Signature"].endswith("3f28")


def test_url_shape_and_parameter_order():
    url = _sign(Credentials("access_key", "secret_key"))
    parts = urlsplit(url)
    assert parts.scheme == "wss" and parts.hostname == HOST and parts.port is None
    assert parts.path == "/openTunnel"
    names = [k for k, _ in parse_qsl(parts.query)]
    assert names[:3] == ["instanceConnectEndpointId", "remotePort", "privateIpAddress"]
    assert "maxTunnelDuration" not in names  # only sent when the user asks (§3.1)
    q = dict(parse_qsl(parts.query))
    assert q["X-Amz-Expires"] == "60"
    assert q["X-Amz-SignedHeaders"] == "host"
    assert q["X-Amz-Credential"] == "access_key/20200101/us-west-2/ec2-instance-connect/aws4_request"
    assert names[-1] == "X-Amz-Signature"


def test_session_token_is_signed_in_the_query():
    url = _sign(Credentials("access_key", "secret_key", "tok/en+"))
    q = dict(parse_qsl(urlsplit(url).query))
    assert q["X-Amz-Security-Token"] == "tok/en+"


def test_ipv6_target_is_encoded():
    url = _sign(Credentials("a", "b"), ip="2600:1f10::1")
    assert "privateIpAddress=2600%3A1f10%3A%3A1" in url
