"""The CLI's contract: one stderr line, a distinct exit code, no traceback, nothing on stdout."""
import subprocess
import sys

from eic_proxy import __version__
from eic_proxy.cli import main
from eic_proxy.errors import ExitCode


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "eic_proxy", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=env, timeout=60)


def test_version():
    r = run("--version")
    assert r.returncode == 0 and __version__ in r.stdout


def test_key_path_prints_stable_path(isolated_env):
    a, b = run("key-path"), run("key-path")
    assert a.returncode == 0 and a.stdout == b.stdout and a.stdout.strip().endswith("id_ed25519")
    assert a.stdout.strip().startswith(str(isolated_env))


def test_bad_max_duration(capsys):
    code = main(["connect", "i-0123456789abcdef0", "--max-tunnel-duration", "4000"])
    out, err = capsys.readouterr()
    assert code == ExitCode.CONFIG and out == ""
    assert err.count("\n") == 1 and "3600" in err


def test_no_region(monkeypatch, capsys):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    code = main(["connect", "i-0123456789abcdef0"])
    assert code == ExitCode.CONFIG and "--region" in capsys.readouterr().err


def test_unknown_profile(capsys):
    code = main(["connect", "i-0123456789abcdef0", "--profile", "nope", "--region", "us-east-1"])
    assert code == ExitCode.CONFIG and "nope" in capsys.readouterr().err


def test_no_credentials(monkeypatch, capsys):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    code = main(["connect", "i-0123456789abcdef0", "--region", "us-east-1"])
    err = capsys.readouterr().err
    assert code == ExitCode.CREDENTIALS, err
    assert "aws sso login" in err or "aws configure" in err
    assert "Traceback" not in err
