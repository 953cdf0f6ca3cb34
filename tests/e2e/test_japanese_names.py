"""Japanese (and other wide or combining) Name tags: `ls` lines up by display width and shows, for each
instance, the exact ssh command that reaches it — which then works through real ssh."""
from __future__ import annotations

import shlex

import pytest

from eic_proxy.text import width

pytestmark = pytest.mark.e2e

NAMES = {"データベース-9": 171, "ｗｅｂ－全角": 172, "cafe\u0301-ｱ": 173, "ab~c=9": 174, "jp*9": 176, "db (old)": 175}


@pytest.fixture(scope="module")
def named(bed, world):
    return {name: bed.add_instance(name, "main-a", octet) for name, octet in NAMES.items()}


def test_ls_lines_up_and_each_printed_ssh_command_works(client, named):
    r = client.proxy("ls")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    header = lines[0]
    column = {h: width(header[:header.index(h)]) for h in ("INSTANCE", "PRIVATE IP", "SSH")}
    for name, inst in named.items():
        (line,) = [line for line in lines if inst.instance_id in line]
        assert line.startswith(name)
        assert width(line[:line.index(inst.instance_id)]) == column["INSTANCE"], line
        assert width(line[:line.index(inst.ip + " ")]) == column["PRIVATE IP"], line
        assert width(line[:line.index("ssh ")]) == column["SSH"], line
        command = line[line.index("ssh "):]
        if name in ("db (old)", "jp*9"):
            assert command == f"ssh {inst.instance_id}"  # ssh cannot carry this name, or it reads as a glob
        if name == "ab~c=9":
            assert command == "ssh 'ab~c=9'"
        argv = shlex.split(command)
        r = client.run([argv[0], "-F", str(client.config), *argv[1:], "echo reached"])
        assert r.returncode == 0 and r.stdout == b"reached\n", (command, r.stderr)
