"""NO_PROXY and proxy URL rules shared by the API calls and the WebSocket."""
import pytest

from eic_proxy.aws.proxy import bypass, proxy_for


@pytest.mark.parametrize("host, port, no_proxy, expected", [
    ("eice.ec2-instance-connect-endpoint.eu-west-1.amazonaws.com", 443, "amazonaws.com", True),
    ("x.amazonaws.com", 443, ".amazonaws.com", True),
    ("x.amazonaws.com", 443, "*.amazonaws.com", True),
    ("amazonaws.com", 443, ".amazonaws.com", True),
    ("evilamazonaws.com", 443, ".amazonaws.com", False),   # label boundary
    ("evilamazonaws.com", 443, "amazonaws.com", False),
    ("10.1.2.3", 443, "10.0.0.0/8", True),
    ("11.1.2.3", 443, "10.0.0.0/8", False),
    ("10.1.2.3", 443, "10.1.2.3", True),
    ("::1", 443, "::1/128", True),
    ("anything", 443, "*", True),
    ("host.example", 443, "host.example:8443", False),      # port-specific entry
    ("host.example", 8443, "host.example:8443", True),
    ("HOST.Example", 443, "host.example", True),
    ("host.example", 443, "", False),
    ("host.example", 443, "a.b, host.example", True),
])
def test_bypass(host, port, no_proxy, expected):
    assert bypass(host, port, {"NO_PROXY": no_proxy}) is expected


def test_proxy_for_picks_scheme_lowercase_first_and_auth():
    env = {"https_proxy": "http://u%40x:p%3Aw@proxy:3128", "HTTPS_PROXY": "http://ignored:1",
           "HTTP_PROXY": "plainproxy:8080"}
    p = proxy_for("wss://eice.example/openTunnel", env)
    assert (p.host, p.port, p.auth) == ("proxy", 3128, ("u@x", "p:w"))
    p = proxy_for("http://127.0.0.1:5000/", env)
    assert (p.host, p.port, p.auth) == ("plainproxy", 8080, None)
    assert proxy_for("wss://eice.example/", {**env, "no_proxy": "eice.example"}) is None
    assert proxy_for("wss://eice.example/", {}) is None


@pytest.mark.parametrize("value", ["http://[bad", "http://proxy:port", "http://user:secret@proxy:x"])
def test_a_proxy_setting_that_is_no_url_is_one_line_without_its_password(value):
    from eic_proxy.aws.proxy import proxy_for
    from eic_proxy.errors import ExitCode, UsageError

    with pytest.raises(UsageError) as info:
        proxy_for("wss://eice.example:443/openTunnel", {"HTTPS_PROXY": value})
    assert info.value.exit_code == ExitCode.CONFIG and "cannot be read as a URL" in info.value.message
    assert "secret" not in info.value.message
