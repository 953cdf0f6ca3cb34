"""Packaging: `python -m build` makes an sdist and a wheel; `pipx install` of the wheel into a
fresh venv gives an `eic-proxy` that carries real ssh traffic on the bed."""
from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from eic_proxy import __version__

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    # sdist first, then the wheel from it (build's default): what a user installs, and no stale build/ dir
    p = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return out


def test_build_makes_sdist_and_wheel_with_everything_in_them(dist):
    wheel = next(dist.glob(f"eic_proxy-{__version__}-py3-none-any.whl"))
    sdist = next(dist.glob(f"eic_proxy-{__version__}.tar.gz"))
    names = zipfile.ZipFile(wheel).namelist()
    modules = sorted(str(p.relative_to(REPO)) for p in (REPO / "eic_proxy").rglob("*.py"))
    assert sorted(n for n in names if n.startswith("eic_proxy/") and n.endswith(".py")) == modules
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "eic-proxy = eic_proxy.entry:main" in zipfile.ZipFile(wheel).read(entry).decode()
    with tarfile.open(sdist) as tf:
        members = tf.getnames()
    assert any(m.endswith("/setup.cfg") for m in members) and any(m.endswith("/eic_proxy/commands/connect.py") for m in members)


def test_pipx_install_of_the_wheel_connects(dist, client, world, tmp_path):
    wheel = next(dist.glob("*.whl"))
    env = dict(client.env, PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(tmp_path / "bin"),
               PIPX_MAN_DIR=str(tmp_path / "man"))
    p = subprocess.run([sys.executable, "-m", "pipx", "install", "--python", sys.executable, str(wheel)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    exe = tmp_path / "bin" / "eic-proxy"
    assert exe.exists()
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, env=env)
    assert version.stdout.strip() == f"eic-proxy {__version__}"
    venv_python = Path(exe.resolve()).parent / "python"
    where = subprocess.run([str(venv_python), "-c", "import eic_proxy; print(eic_proxy.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path).stdout
    assert str(REPO) not in where  # the installed copy, not this checkout
    cfg = client.config.read_text().replace(client.bed.eic_proxy_path(), str(exe))
    (tmp_path / "ssh_config").write_text(cfg)
    r = client.run(["ssh", "-F", str(tmp_path / "ssh_config"), "web-1", "echo via-pipx"], env=env)
    assert r.returncode == 0 and r.stdout == b"via-pipx\n", r.stderr


def test_pipx_install_of_a_checkout_as_the_readme_says(tmp_path):
    """The README's first command, `pipx install ./eic-proxy`, from a fresh copy of the sources."""
    import shutil

    src = tmp_path / "eic-proxy"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    env = dict(PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(tmp_path / "bin"), PIPX_MAN_DIR=str(tmp_path / "man"),
               PATH="/usr/bin:/bin", HOME=str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "pipx", "install", "--python", sys.executable, "./eic-proxy"],
                       cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    version = subprocess.run([str(tmp_path / "bin" / "eic-proxy"), "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == f"eic-proxy {__version__}"
    readme = (REPO / "README.md").read_text()
    assert "pipx install ./eic-proxy" in readme and "\npipx install eic-proxy" not in readme
