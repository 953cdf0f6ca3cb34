"""The Japanese guide (docs/ja/README.md) cannot drift: every eic-proxy command and flag it shows exists
(`eic-proxy CMD --help`), every repository file it names exists, and the README links to it."""
from __future__ import annotations

import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "ja" / "README.md"


# `eic-proxy` as a command followed by a sub-command or an option (not a path, not a package name)
COMMAND = r"(?<![\w/.-])eic-proxy\s+(?=-|[a-z])"


def _commands_in(text: str) -> list[str]:
    """Every `eic-proxy …` command line of the guide: in code blocks (with `\\` continuations) and inline code."""
    found: list[str] = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            found += re.findall(COMMAND + r"[^|;&#\n`\"]*", line.split(" # ")[0])
    prose = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]*)`", prose):
        found += re.findall(COMMAND + r"[^|;&`\"]*", span)
    return [c.strip() for c in found]


@lru_cache(maxsize=None)
def _help(command: str) -> str:
    r = subprocess.run([sys.executable, "-m", "eic_proxy", command, "--help"], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 0, (command, r.stderr)
    return r.stdout


def test_the_guide_shows_real_commands_and_flags():
    from eic_proxy.cli import COMMANDS

    commands = _commands_in(GUIDE.read_text(encoding="utf-8"))
    assert len(commands) >= 25, commands  # it shows the commands the operator needs, not a handful
    seen = set()
    for line in commands:
        words = line.split()
        sub = words[1]
        if sub.startswith("--"):
            assert sub in ("--version", "--help"), line
            continue
        assert sub in COMMANDS, f"no command {sub!r}: {line}"
        seen.add(sub)
        for flag in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", _help(sub)), f"{sub} has no {flag}: {line}"
    assert {"ssh-config", "doctor", "policy", "audit", "ls", "connect", "known-hosts", "keys"} <= seen


def test_the_guide_names_only_files_that_exist_and_the_readme_links_to_it():
    text = GUIDE.read_text(encoding="utf-8")
    for path in set(re.findall(r"`((?:examples|packaging|tests)/[\w./-]+)`", text)):
        assert (ROOT / path).exists(), path
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        assert (GUIDE.parent / link).resolve().exists(), link
    head = (ROOT / "README.md").read_text(encoding="utf-8")[:1500]
    assert "docs/ja/README.md" in head


@pytest.mark.parametrize("line, expected", [
    ("eic-proxy doctor web-1 --json          # スクリプト向け", "eic-proxy doctor web-1 --json"),
])
def test_the_extractor_reads_commands_as_written(line, expected):
    assert _commands_in(f"```sh\n{line}\n```\n") == [expected]


def _table_rows(text: str, heading: str) -> list[list[str]]:
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("|---")][1:]


def test_the_doctor_table_and_the_exit_codes_are_the_programs():
    from eic_proxy.errors import ExitCode

    text = GUIDE.read_text(encoding="utf-8")
    checks = {row[0] for row in _table_rows(text, "## 5.")}
    in_code = set(re.findall(r'add\("([a-z/ ]+)"', "".join(p.read_text() for p in (ROOT / "eic_proxy/checks").glob("*.py"))))
    assert checks == in_code
    codes = {int(row[0]) for row in _table_rows(text, "## 9.")}
    assert codes == {int(c) for c in ExitCode if 2 <= int(c) < 128}
