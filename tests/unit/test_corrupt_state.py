"""Corrupt state heals or says so: never an internal error (exit 70)."""
from __future__ import annotations

import json
import os

import pytest

from eic_proxy import config
from eic_proxy.errors import ExitCode, KeyError_, UsageError
from eic_proxy.keys.lifecycle import KeyManager
from eic_proxy.store import audit


@pytest.mark.parametrize("value", ["inf", "-1e999", "nan", "1e400h", "99999d"])
def test_absurd_key_lifetimes_are_config_errors(value):
    with pytest.raises(UsageError) as err:
        config._coerce("key-lifetime", value, "--key-lifetime")
    assert err.value.exit_code == ExitCode.CONFIG


def test_key_lifetime_inf_on_the_command_line_is_exit_3(isolated_env):
    from eic_proxy.cli import main

    assert main(["key-path", "--key-lifetime", "inf"]) == ExitCode.CONFIG


@pytest.mark.parametrize("pub, private", [
    (b"garbage\n", None),
    (b"ssh-ed25519 not*base64!\n", None),
    (b"ecdsa-sha2-nistp256 AAAAE2VjZHNh\n", None),
    (None, b"\x00\x01 not a key"),
    (None, b""),
])
def test_an_invalid_key_file_is_replaced(isolated_env, pub, private):
    km = KeyManager()
    first = km.ensure()
    if pub is not None:
        km.public_path.write_bytes(pub)
    if private is not None:
        km.private_path.write_bytes(private)
    healed = km.ensure()
    assert healed.fingerprint != first.fingerprint
    assert km.private_path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    km.private_key(healed)  # loads


def test_garbage_in_the_keyring_is_a_key_error(isolated_env, monkeypatch, tmp_path):
    store = tmp_path / "kr.json"
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "tests.testbed.keyring_backend.FileKeyring")
    monkeypatch.setenv("EIC_TEST_KEYRING_FILE", str(store))
    km = KeyManager(store="keyring")
    key = km.ensure()
    doc = json.loads(store.read_text())
    for k in doc:
        doc[k] = json.dumps({"pem": "-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n", "created": 0})
    store.write_text(json.dumps(doc))
    with pytest.raises(KeyError_) as err:
        km.private_key(key)
    assert err.value.exit_code == ExitCode.KEY and "keys rotate --force" in err.value.hint


def test_a_non_utf8_byte_in_the_audit_log_spoils_one_line_only(isolated_env):
    audit.append("connect", host="a")
    with open(audit.log_path(), "ab") as fh:
        fh.write(b'{"event":"connect","host":"\xff\xfe"}\n\xc3\x28 broken\n')
    audit.append("connect", host="b")
    hosts = [e.get("host") for e in audit.read()]
    assert hosts[0] == "a" and hosts[-1] == "b" and len(hosts) == 3


def test_audit_and_keys_commands_survive_a_non_utf8_audit_log(isolated_env, capsys):
    from eic_proxy.cli import main

    audit.append("push", instance_id="i-0123456789abcdef0", os_user="ec2-user", request_id="r1")
    with open(audit.log_path(), "ab") as fh:
        fh.write(b"\xff\xfe\xfd\n")
    assert main(["audit", "--json"]) == 0
    assert main(["keys"]) == 0
    assert os.path.exists(audit.log_path())
