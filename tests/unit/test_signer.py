"""Presigned URL: the golden vector pinned by the AWS CLI's own test (docs/protocol.md §3.1)."""
import datetime
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from eic_proxy.tunnel.signer import format_host, presign_url

HOST = "eice-123.ec2-instance-connect-endpoint.us-west-2.amazonaws.com"


FROZEN = datetime.datetime(2020, 1, 1, 1, 1, 1)


def _sign(creds, **kw):
    return presign_url(creds, "us-west-2", HOST, "eice-123", 22, kw.pop("ip", "10.0.0.0"), now=FROZEN, **kw)


def _botocore_sign(creds, dns, endpoint_id, port, ip, duration):
    """The same URL signed by botocore's SigV4QueryAuth, the oracle our hashlib signer must equal."""
    from urllib.parse import urlencode

    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest

    params = [("instanceConnectEndpointId", endpoint_id), ("remotePort", str(port)), ("privateIpAddress", ip)]
    if duration is not None:
        params.append(("maxTunnelDuration", str(duration)))
    request = AWSRequest(method="GET", url=f"https://{format_host(dns)}/openTunnel?{urlencode(params)}")
    with mock.patch("botocore.auth.get_current_datetime", return_value=FROZEN):
        SigV4QueryAuth(creds, "ec2-instance-connect", "eu-central-1", expires=60).add_auth(request)
    return "wss://" + request.url[len("https://"):]


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


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(akid=_text, secret=_text, token=st.one_of(st.none(), _text), endpoint_id=_text,
       port=st.integers(1, 65535), ip=st.one_of(st.ip_addresses().map(str), _text),
       duration=st.one_of(st.none(), st.integers(1, 3600)),
       dns=st.sampled_from([HOST, "eice-1.example.test", "127.0.0.1", "::1", "fd00::5"]))
def test_equals_botocore_for_any_input(akid, secret, token, endpoint_id, port, ip, duration, dns):
    ours = presign_url(Credentials(akid, secret, token), "eu-central-1", dns, endpoint_id, port, ip, duration,
                       now=FROZEN)
    assert ours == _botocore_sign(Credentials(akid, secret, token), dns, endpoint_id, port, ip, duration)
