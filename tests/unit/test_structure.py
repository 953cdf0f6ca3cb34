"""The shape of the code that issue 28 asked for, held: one settings table, exception classes that decide
exit codes, packages that only import downward, modules of at most 400 lines."""
from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import eic_proxy
from eic_proxy import errors, settings
from eic_proxy.config import ConnectOptions, Settings, _coerce
from eic_proxy.errors import ConfigError, EicProxyError, ExitCode

ROOT = Path(eic_proxy.__file__).parent
README = ROOT.parent / "README.md"


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages([str(ROOT)], "eic_proxy."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return names


# ---- one settings table ---------------------------------------------------------------------------
def test_the_config_layer_has_one_field_per_layered_row():
    assert {f.name for f in dataclasses.fields(Settings)} == {s.name for s in settings.LAYERED}


def test_connect_options_defaults_are_the_tables():
    fields = {f.name: f.default for f in dataclasses.fields(ConnectOptions)}
    for row in settings.TABLE:
        if row.name in fields:
            assert fields[row.name] == row.default, row.name


def test_every_connect_flag_of_the_table_is_in_connects_help_and_aliases_are_hidden():
    from eic_proxy.options import connect_parser

    sub = connect_parser()._subparsers._group_actions[0].choices["connect"]  # type: ignore[union-attr]
    text = sub.format_help()
    for row in settings.TABLE:
        if row.flag:
            assert row.flag in text, row.flag
        for alias in row.aliases:
            assert alias not in text, alias


def test_old_spellings_still_work_with_the_same_meaning():
    from eic_proxy.cli import build_parser
    from eic_proxy.options import parse_connect

    opts, _ = parse_connect(["connect", "i-0123456789abcdef0", "22", "--max-connections", "7"])
    assert opts.max_connections == 7
    opts, _ = parse_connect(["connect", "i-0123456789abcdef0", "--endpoint-connections", "5", "--no-cache"])
    assert opts.max_connections == 5 and opts.use_cache is False
    doctor = build_parser("doctor").parse_args(["doctor", "web-1", "--port", "3389"])
    assert doctor.remote_port == 3389
    tunnel = build_parser("tunnel").parse_args(["tunnel", "web-1", "--local-port", "0", "--max-connections", "3"])
    assert tunnel.max_open == 3 and tunnel.max_connections is None  # the listener's cap, as it always meant there


def test_the_environment_and_the_file_take_every_layered_setting_by_the_tables_names(tmp_path):
    from eic_proxy.config import from_env

    for row in settings.LAYERED:
        assert row.env == "EIC_PROXY_" + row.name.upper() and row.key == row.name.replace("_", "-")
    layer = from_env({"EIC_PROXY_KEY_TYPE": "rsa-4096", "EIC_PROXY_HELPER": "no", "EIC_PROXY_IP_FAMILY": "6"})
    assert (layer.key_type, layer.helper, layer.ip_family) == ("rsa-4096", False, "6")
    with pytest.raises(ConfigError, match="must be auto, 4 or 6"):
        _coerce("ip-family", "5", "environment")


def test_the_readme_lists_the_settings_the_table_has():
    text = README.read_text(encoding="utf-8")
    listed = text.split("<!-- settings-table:begin -->\n", 1)[1].split("\n<!-- settings-table:end -->", 1)[0]
    assert listed == settings.settings_list(), "regenerate the README's list from settings.settings_list()"


def test_the_quick_config_path_is_the_one_config_uses(monkeypatch, tmp_path):
    from eic_proxy import config

    monkeypatch.delenv("EIC_PROXY_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert settings.config_file() == str(config.config_path()) == str(tmp_path / "eic-proxy" / "config.ini")
    monkeypatch.setenv("EIC_PROXY_CONFIG", "~/x.ini")
    assert settings.config_file() == str(config.config_path()) == str(Path("~/x.ini").expanduser())


# ---- exception classes decide exit codes ----------------------------------------------------------
def _error_classes() -> set[type]:
    for name in _modules():
        importlib.import_module(name)
    seen: set[type] = set()
    todo = [EicProxyError]
    while todo:
        cls = todo.pop()
        seen.add(cls)
        todo.extend(c for c in cls.__subclasses__() if c.__module__.startswith("eic_proxy"))
    return seen


def test_every_error_class_is_in_errors_py_and_its_map():
    doc = errors.__doc__ or ""
    for cls in _error_classes():
        assert cls.__module__ == "eic_proxy.errors", f"{cls.__qualname__} is defined in {cls.__module__}"
        line = next((ln for ln in doc.splitlines() if re.search(rf"[─ ]{cls.__name__}\b", ln)), None)
        assert line is not None, f"{cls.__name__} is missing from the map in errors.py"
        assert line.split()[-1] == ExitCode(cls.exit_code).name, f"{cls.__name__}: the map says {line.split()[-1]}"


def test_no_raise_site_chooses_an_exit_code():
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and any(k.arg == "exit_code" for k in node.keywords):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                assert name in ("append", "_finish"), f"{path.relative_to(ROOT)}:{node.lineno} passes exit_code= to {name}"
    assert "exit_code" not in inspect.signature(EicProxyError.__init__).parameters


# ---- packages along the lines the imports draw ----------------------------------------------------
# A package may import only from those listed after it (and from itself).
LAYERS = {
    "tunnel": {"errors", "clock"},
    "control": {"errors", "clock", "model", "aws", "store", "keys", "tunnel", "config", "settings", "text", "console"},
    "transport": {"errors", "clock", "tunnel", "aws", "settings", "console"},
    "lifecycle": {"errors", "clock", "model", "aws", "store", "keys", "tunnel", "control", "transport", "config",
                  "settings", "report"},
    "checks": {"errors", "clock", "model", "aws", "store", "keys", "tunnel", "control", "transport", "lifecycle",
               "config", "settings", "sshblock", "text"},
}
ABOVE_ALL = {"commands", "cli", "entry", "__main__"}  # nothing below the command line imports it


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("eic_proxy."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "eic_proxy":
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("eic_proxy."))
    return found


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_runs_upward(path):
    rel = path.relative_to(ROOT).parts
    package = rel[0] if len(rel) > 1 else rel[0][:-3]
    used = _imports(path) - {package, "__version__"}
    if package not in ABOVE_ALL:
        assert not used & ABOVE_ALL, f"{'/'.join(rel)} imports {sorted(used & ABOVE_ALL)}"
    if package in LAYERS:
        assert used <= LAYERS[package], f"{'/'.join(rel)} imports {sorted(used - LAYERS[package])}"


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long


# ---- the listener: one plan per connection --------------------------------------------------------
def test_each_listener_connection_gets_a_plan_of_its_own():
    from eic_proxy.aws.sharedfiles import StaticCredentials
    from eic_proxy.control.locate import Located
    from eic_proxy.lifecycle.connection import Plan, for_another_connection, session_of
    from eic_proxy.lifecycle.handover import AwsSettings
    from eic_proxy.model import Endpoint, Target

    target = Target(instance_id="i-0123456789abcdef0", ip="10.0.0.5", vpc_id="vpc-1", subnet_id="subnet-1", state="running")
    endpoint = Endpoint(endpoint_id="eice-0123456789abcdef0", dns_name="e.example", fips_dns_name=None, vpc_id="vpc-1",
                        subnet_id="subnet-1", state="create-complete")
    plan = Plan(ConnectOptions(host="web-1"), Located(target, endpoint),
                AwsSettings("dev", "eu-west-1", False, None, StaticCredentials("AK", "SK"), 1.0, 1.0, True),
                pushed_at=1.0, push_request_id="req-of-another", key_used=True)
    a, b = session_of(for_another_connection(plan)), session_of(for_another_connection(plan))
    assert a is not b and a.push_request_id is None and not a.key_used and not a.opened
    a.push_request_id, a.opened = "req-a", True
    assert b.push_request_id is None and not b.opened  # what one connection writes, the other never reads
