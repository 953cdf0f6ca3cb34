"""botocore's data files kept as marshal (aws/models.py): used when they match their source, read again
when it changed, ignored when damaged; and a client made through them is the same client."""
from __future__ import annotations

import json
import os

import pytest

from eic_proxy.aws import models


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def test_a_copy_is_used_while_it_matches_its_source_and_replaced_when_the_source_changes(cache, monkeypatch):
    source = cache / "data" / "thing.json"
    source.parent.mkdir()
    source.write_text(json.dumps({"b": 1, "a": [1, {"c": None}]}))
    loader = models._marshal_file_loader(models.models_dir())
    assert loader.load_file(str(source)[:-5]) == {"b": 1, "a": [1, {"c": None}]}
    [copy] = (models.models_dir() / models.MARSHAL_DIR).iterdir()
    assert oct(copy.stat().st_mode & 0o777) == "0o600"
    parsed: list[str] = []
    original = json.loads
    monkeypatch.setattr(json, "loads", lambda *a, **k: parsed.append("parsed") or original(*a, **k))
    assert list(loader.load_file(str(source)[:-5])) == ["b", "a"]  # the copy, in the file's order
    assert parsed == []
    source.write_text(json.dumps({"new": True}))
    os.utime(source, ns=(1, 1))
    assert loader.load_file(str(source)[:-5]) == {"new": True} and parsed == ["parsed"]
    copy.write_bytes(b"\x00garbage")
    assert loader.load_file(str(source)[:-5]) == {"new": True}  # a damaged copy is read past, then rewritten


def test_a_client_made_through_the_copies_is_the_same_client(cache, monkeypatch):
    import botocore.session

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    plain = botocore.session.Session().create_client("ec2-instance-connect", region_name="eu-west-1")
    made = []
    for _ in range(2):  # the first parses and writes the copies, the second reads them
        session = botocore.session.Session()
        models.use_fast_data_loader(session)
        made.append(session.create_client("ec2-instance-connect", region_name="eu-west-1"))
    for client in made:
        assert client.meta.service_model.operation_names == plain.meta.service_model.operation_names
        assert client.meta.endpoint_url == plain.meta.endpoint_url
    assert any((models.models_dir() / models.MARSHAL_DIR).glob("services-*"))
