"""Property-based tests: host suffixes and config files round-trip."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eic_proxy import config
from eic_proxy.control.resolve import parse_host

names = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
regions = st.sampled_from(["us-east-1", "eu-west-1", "ap-southeast-2", "us-gov-west-1"])
values = st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True)


@given(name=names, region=st.none() | regions, profile=st.none() | values)
def test_host_suffix_round_trip(name, region, profile):
    text = name + (f"--{region}" if region else "") + (f"--{profile}" if region and profile else "")
    spec = parse_host(text)
    assert spec.alias == name and spec.region == region
    assert spec.profile == (profile if region else None)


settings_st = st.builds(
    config.Settings,
    profile=st.none() | values, region=st.none() | regions, os_user=st.none() | values,
    eice_id=st.none() | st.from_regex(r"eice-[0-9a-f]{17}", fullmatch=True),
    max_tunnel_duration=st.none() | st.integers(1, 3600),
    key_type=st.none() | st.sampled_from(["ed25519", "rsa-2048", "rsa-4096"]),
    key_lifetime=st.none() | st.integers(300, 86400), key_store=st.none() | st.sampled_from(["file", "keyring"]),
    agent=st.none() | st.booleans(), identity=st.none() | st.from_regex(r"/[a-z]{1,10}/id_[a-z0-9]{1,8}", fullmatch=True),
)


def _render(s: config.Settings) -> str:
    out = []
    for key, name in config.KEYS.items():
        v = getattr(s, name)
        if v is not None:
            out.append(f"{key} = {('yes' if v else 'no') if isinstance(v, bool) else v}")
    return "\n".join(out)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(defaults=settings_st, host=settings_st, pattern=names)
def test_config_round_trip_and_layering(tmp_path, defaults, host, pattern):
    path = tmp_path / "c.ini"
    path.write_text(f"[defaults]\n{_render(defaults)}\n\n[host {pattern}]\n{_render(host)}\n")
    cfg = config.load(path)
    assert cfg.defaults == defaults
    assert cfg.for_host(pattern) == host.over(defaults)
    assert cfg.for_host(pattern + "-other-x") == defaults
