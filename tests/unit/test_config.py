"""Config file parsing and the documented precedence: suffix > flags > environment > [host] > [defaults]."""
import pytest

from eic_proxy.config import ConfigError, Settings, effective, load


def write(tmp_path, text):
    p = tmp_path / "config.ini"
    p.write_text(text)
    return p


CONFIG = """
[defaults]
region = eu-west-1
os-user = ec2-user

[host db-* !db-test]
profile = prod
os-user = ubuntu

[host db-* web-*]
profile = second-section-loses
max-tunnel-duration = 600
eice-id = eice-0123456789abcdef0
"""


def test_first_matching_section_wins_per_key(tmp_path):
    cfg = load(write(tmp_path, CONFIG))
    s = cfg.for_host("db-1")
    assert (s.profile, s.os_user, s.region, s.max_tunnel_duration) == ("prod", "ubuntu", "eu-west-1", 600)
    assert cfg.for_host("db-test").profile == "second-section-loses"  # excluded by !db-test
    assert cfg.for_host("other") == Settings(region="eu-west-1", os_user="ec2-user")


def test_precedence_layers(tmp_path):
    path = write(tmp_path, CONFIG)
    env = {"EIC_PROXY_REGION": "us-west-2", "EIC_PROXY_PROFILE": "from-env"}
    s = effective("db-1", Settings(), environ=env, path=path)
    assert (s.region, s.profile, s.os_user) == ("us-west-2", "from-env", "ubuntu")
    s = effective("db-1", Settings(profile="flag", os_user="alice"), environ=env, path=path)
    assert (s.profile, s.os_user, s.region) == ("flag", "alice", "us-west-2")
    s = effective("db-1", Settings(profile="flag", region="ap-south-1"), Settings(region="ca-central-1"),
                  environ=env, path=path)
    assert (s.profile, s.region) == ("flag", "ca-central-1")


def test_missing_file_is_empty(tmp_path):
    assert effective("x", Settings(), environ={}, path=tmp_path / "nope.ini") == Settings()


@pytest.mark.parametrize("text, words", [
    ("[host a]\ncolour = red\n", ["colour", "known settings"]),
    ("[hosts a]\nregion = x\n", ["unknown section"]),
    ("[host a]\nmax-tunnel-duration = 9999\n", ["1..3600"]),
    ("[host a]\nmax-tunnel-duration = soon\n", ["whole number"]),
    ("region = x\n", ["not valid INI"]),
])
def test_bad_files_name_the_problem(tmp_path, text, words):
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    msg = info.value.message + " " + (info.value.hint or "")
    assert all(w in msg for w in words), msg


def test_bad_environment_value(tmp_path):
    with pytest.raises(ConfigError):
        effective("x", Settings(), environ={"EIC_PROXY_MAX_TUNNEL_DURATION": "0"}, path=tmp_path / "none")
