"""The host-alias grammar: ALIAS[--REGION[--PROFILE]]."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eic_proxy.control.resolve import parse_host
from eic_proxy.errors import UsageError


@pytest.mark.parametrize("text,kind,value", [
    ("i-0123456789abcdef0", "id", "i-0123456789abcdef0"),
    ("web-1", "name", "web-1"),
    ("db.prod", "name", "db.prod"),
    ("web-*", "glob", "web-*"),
    ("tag:Role=db", "tag", "db"),
    ("10.0.1.5", "ipv4", "10.0.1.5"),
    ("2600:1f10::5", "ipv6", "2600:1f10::5"),
    ("[2600:1f10::5]", "ipv6", "2600:1f10::5"),
    ("ip-10-0-1-5.ec2.internal", "dns", "ip-10-0-1-5.ec2.internal"),
    ("ip-10-0-1-5.eu-west-1.compute.internal", "dns", "ip-10-0-1-5.eu-west-1.compute.internal"),
])
def test_kinds(text, kind, value):
    spec = parse_host(text)
    assert (spec.kind, spec.value, spec.region, spec.profile) == (kind, value, None, None)


def test_region_and_profile_suffix():
    s = parse_host("web-1--eu-west-1--prod")
    assert (s.kind, s.value, s.region, s.profile) == ("name", "web-1", "eu-west-1", "prod")
    s = parse_host("i-0123456789abcdef0--us-gov-west-1")
    assert (s.kind, s.region, s.profile) == ("id", "us-gov-west-1", None)
    assert parse_host("tag:Env=prod--us-east-1").tag_key == "Env"


def test_double_dash_without_region_stays_in_the_name():
    assert parse_host("web--1").value == "web--1"
    assert parse_host("a--b--c").value == "a--b--c"


@pytest.mark.parametrize("bad", ["", "  ", "tag:novalue", "--us-east-1"])
def test_bad_aliases(bad):
    with pytest.raises(UsageError):
        parse_host(bad)


names = st.text(st.characters(whitelist_categories=("Ll", "Nd"), whitelist_characters="-._"), min_size=1,
                max_size=30).filter(lambda s: not s.startswith("-") and "--" not in s and not s.endswith("-"))


@given(names, st.sampled_from(["us-east-1", "eu-west-2", "ap-southeast-1"]), names)
def test_suffix_round_trip(name, region, profile):
    spec = parse_host(f"{name}--{region}--{profile}")
    assert (spec.region, spec.profile) == (region, profile)
    assert parse_host(name).value == spec.value


def test_auto_scaling_group_alias():
    from eic_proxy.control.resolve import ASG_TAG, _query

    spec = parse_host("asg:web-fleet--eu-west-1")
    assert (spec.kind, spec.value, spec.tag_key, spec.region, spec.alias) == ("asg", "web-fleet", ASG_TAG,
                                                                               "eu-west-1", "asg:web-fleet")
    assert {"Name": f"tag:{ASG_TAG}", "Values": ["web-fleet"]} in _query(spec)["Filters"]
    with pytest.raises(UsageError):
        parse_host("asg:")
