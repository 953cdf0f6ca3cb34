"""The helper's parts with data only: where it lives, which build it is, its messages, the cut EC2 model."""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from eic_proxy.aws.models import EC2_OPERATIONS, trim_model
from eic_proxy.helper import address, wire

SOURCE = Path(__file__).resolve().parents[2] / "eic_proxy"


def test_the_helper_directory_follows_the_platform_rules():
    assert address.helper_dir({"HOME": "/h", "XDG_RUNTIME_DIR": "/run/user/7"}) == "/run/user/7/eic-proxy"
    assert address.helper_dir({"HOME": "/h"}) == "/h/.local/state/eic-proxy"
    assert address.helper_dir({"HOME": "/h", "XDG_STATE_HOME": "/s"}) == "/s/eic-proxy"
    assert address.helper_dir({"HOME": "/h", "XDG_STATE_HOME": "relative"}) == "/h/.local/state/eic-proxy"
    assert address.helper_dir({"HOME": "/h", "EIC_PROXY_HELPER_DIR": "/x"}) == "/x"


def test_a_private_directory_is_made_0700_and_anything_else_is_refused(tmp_path):
    d = tmp_path / "a" / "b"
    assert address.make_private_dir(str(d))
    assert (d.stat().st_mode & 0o777) == 0o700 and (d.parent.stat().st_mode & 0o777) == 0o700
    os.chmod(d, 0o750)
    assert not address.private_dir_ok(str(d))
    link = tmp_path / "link"
    link.symlink_to(d)
    os.chmod(d, 0o700)
    assert not address.private_dir_ok(str(link))  # a symlink is not our directory


def test_the_identity_changes_with_the_code_and_names_one_socket_per_build(monkeypatch, tmp_path):
    pkg = tmp_path / "eic_proxy"
    (pkg / "transport").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    import eic_proxy

    monkeypatch.setattr(eic_proxy, "__file__", str(pkg / "__init__.py"))
    first = address.identity()
    os.utime(pkg / "transport", ns=(1, 1))  # an installer replaced a module in transport/
    second = address.identity()
    assert first != second and address.socket_name(first) != address.socket_name(second)
    assert re.fullmatch(r"helper-[0-9a-f]{8}\.sock", address.socket_name(first))


def test_messages_round_trip_and_garbage_is_a_wire_error():
    a, b = socket.socketpair()
    with a, b:
        wire.send(a, {"argv": ["connect", "web-1"], "env": {"A": "1"}})
        assert wire.recv(b) == {"argv": ["connect", "web-1"], "env": {"A": "1"}}
        a.sendall((5).to_bytes(4, "big") + b"\xff\xff\xff\xff\xff")
        with pytest.raises(wire.WireError):
            wire.recv(b)
        a.sendall((wire.MAX_MESSAGE + 1).to_bytes(4, "big"))
        with pytest.raises(wire.WireError, match="bytes"):
            wire.recv(b)
        a.close()
        with pytest.raises(wire.WireError, match="closed"):
            wire.recv(b)


def test_the_cut_model_keeps_the_operations_and_every_shape_they_reach():
    model = {"metadata": {"endpointPrefix": "ec2"}, "operations": {
        "DescribeInstances": {"input": {"shape": "In"}, "output": {"shape": "Out"}, "errors": [{"shape": "Err"}]},
        "RunInstances": {"input": {"shape": "RunIn"}}},
        "shapes": {"In": {"type": "structure", "members": {"Ids": {"shape": "IdList"}}},
                   "IdList": {"type": "list", "member": {"shape": "String"}},
                   "Out": {"type": "structure", "members": {"Tags": {"shape": "TagMap"}}},
                   "TagMap": {"type": "map", "key": {"shape": "String"}, "value": {"shape": "Value"}},
                   "Value": {"type": "string"}, "String": {"type": "string"}, "Err": {"type": "structure"},
                   "RunIn": {"type": "structure", "members": {"X": {"shape": "Only"}}}, "Only": {"type": "string"}}}
    cut = trim_model(model, ("DescribeInstances",))
    assert list(cut["operations"]) == ["DescribeInstances"]
    assert set(cut["shapes"]) == {"In", "IdList", "String", "Out", "TagMap", "Value", "Err"}
    assert cut["metadata"] == model["metadata"]


def test_every_ec2_call_in_the_code_is_in_the_cut_model():
    """A call missing from EC2_OPERATIONS would fail in a helper's connection (the client lacks the method)."""
    calls = set()
    for path in SOURCE.rglob("*.py"):
        text = path.read_text()
        calls |= set(re.findall(r"\bec2\.([a-z_]+)\(", text))
        calls |= set(re.findall(r'client\("ec2"\)\.([a-z_]+)\(', text))
    assert calls, "the pattern found no call at all"
    camel = {"".join(w.capitalize() for w in name.split("_")) for name in calls}
    assert camel <= set(EC2_OPERATIONS), camel - set(EC2_OPERATIONS)


def test_the_cut_model_builds_a_client_with_those_operations(tmp_path, monkeypatch):
    import botocore.session

    from eic_proxy.aws import client, models

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    models.cut_models()
    [model] = tmp_path.glob("eic-proxy/models/*/ec2/*/service-2.json")
    assert oct(model.stat().st_mode & 0o777) == "0o600"
    session = client._make_session(None)
    assert isinstance(session, botocore.session.Session)
    ec2 = session.create_client("ec2", region_name="eu-west-1", aws_access_key_id="a", aws_secret_access_key="b")
    assert sorted(ec2.meta.service_model.operation_names) == sorted(EC2_OPERATIONS)
    model.write_text("{not json")  # a damaged copy: botocore's own model is used, nothing fails
    whole = client._make_session(None).create_client("ec2", region_name="eu-west-1", aws_access_key_id="a",
                                                      aws_secret_access_key="b")
    assert len(whole.meta.service_model.operation_names) > 100


@pytest.mark.parametrize("value, idle", [("30", 30.0), ("nan", 900.0), ("-5", 900.0), ("inf", 900.0), ("soon", 900.0)])
def test_the_idle_time_from_the_environment_is_a_positive_number_or_the_default(monkeypatch, value, idle):
    from eic_proxy.helper import server

    monkeypatch.setenv("EIC_PROXY_HELPER_IDLE", value)
    assert server._idle_from_env() == idle


def test_the_rehearsal_runs_the_real_code_on_made_up_data():
    """The helper's warm-up swallows a failing rehearsal (it only costs memory); here it must not fail at all,
    or a change to the parser, the signer or the protocol went unnoticed by it."""
    from eic_proxy.helper import warm

    warm.rehearsal()


def test_the_carrier_group_is_the_same_for_equal_environments_whatever_their_objects_history():
    """Two tunnels of one environment share a carrier: equal values give one group, though the strings
    came from different places (marshal's bytes differed with interning and shared objects: seen as a
    second tunnel carried alone in a full suite run)."""
    import sys as _sys
    from types import SimpleNamespace

    from eic_proxy.helper.carrier import group_of

    def request(env: dict, cwd: str = "/work", identity: str = "build-1") -> dict:
        return {"identity": identity, "env": env, "cwd": cwd}

    plan = SimpleNamespace(verbose=2)
    shared = "".join(["1"])
    first = request({"HOME": "/home/u", "A": shared, "B": shared})  # one object met twice
    second = request({_sys.intern("".join(["HO", "ME"])): "".join(["/home/", "u"]), "A": "".join(["1", ""]),
                      "B": str(1)})
    assert group_of(first, plan) == group_of(second, plan)
    others = [request({"HOME": "/home/u", "A": "1", "B": "2"}), request(first["env"], cwd="/tmp"),
              request(first["env"], identity="build-2"), request({"HOME": "/home/u", "A": "1", "B": "1", "C": ""}),
              request({"HOME": "/home/u", "A": "1=B", "B": "1"})]
    groups = {group_of(r, plan) for r in others} | {group_of(first, SimpleNamespace(verbose=0))}
    assert len(groups) == len(others) + 1 and group_of(first, plan) not in groups
