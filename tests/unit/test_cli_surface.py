"""--version, a --help for every sub-command, and shell completion generated from the parser."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from eic_proxy import __version__
from eic_proxy.cli import COMMANDS

RUN = [sys.executable, "-m", "eic_proxy"]


def test_version():
    p = subprocess.run(RUN + ["--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == f"eic-proxy {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_sub_command_has_help(command):
    p = subprocess.run(RUN + [command, "--help"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"usage: eic-proxy {command}")
    body = p.stdout.split("\n\n", 2)
    assert len(body) >= 2 and len(body[1].strip()) > 20  # a description paragraph, not just the usage
    top = subprocess.run(RUN + ["--help"], capture_output=True, text=True).stdout
    assert command in top  # listed, with its one-line help, in `eic-proxy --help`


def _complete(script: str, *words: str) -> list[str]:
    line = " ".join(f"'{w}'" for w in words)
    out = subprocess.run(["bash", "-c", f"{script}\nCOMP_WORDS=(eic-proxy {line}); COMP_CWORD={len(words)}; "
                                        "_eic_proxy; printf '%s\\n' \"${COMPREPLY[@]}\""],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_offers_commands_options_and_choices():
    script = subprocess.run(RUN + ["completion", "bash"], capture_output=True, text=True, check=True).stdout
    assert sorted(_complete(script, "")) == sorted(list(COMMANDS) + ["--version", "--help"])
    assert _complete(script, "do") == ["doctor"]
    assert _complete(script, "connect", "--max-t") == ["--max-tunnel-duration"]
    assert "--local-port" in _complete(script, "tunnel", "--")
    assert _complete(script, "keys", "r") == ["rotate"]
    assert _complete(script, "completion", "") == ["bash", "zsh"]


def test_zsh_completion_wraps_the_bash_function():
    script = subprocess.run(RUN + ["completion", "zsh"], capture_output=True, text=True, check=True).stdout
    assert script.startswith("#compdef eic-proxy\n") and "bashcompinit" in script and "_eic_proxy()" in script
    if shutil.which("zsh"):
        subprocess.run(["zsh", "-n", "-c", script], check=True)


def test_a_closed_stdout_ends_quietly_like_a_shell_pipeline():
    """`eic-proxy policy | head -0`: no 'internal error', no traceback, 128 + SIGPIPE."""
    p = subprocess.Popen(RUN + ["completion", "bash"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader is gone before the first write
    err = p.stderr.read().decode()
    assert p.wait(30) == 141 and err == ""


def test_unknown_endpoint_id_is_a_no_endpoint_error():
    from botocore.exceptions import ClientError

    from eic_proxy.aws.errors import translate
    from eic_proxy.errors import ExitCode, NoEndpoint

    exc = ClientError({"Error": {"Code": "InvalidInstanceConnectEndpointId.NotFound",
                                 "Message": "The instance connect endpoint ID 'eice-0' does not exist"}},
                      "DescribeInstanceConnectEndpoints")
    err = translate(exc, "listing EC2 Instance Connect Endpoints")
    assert isinstance(err, NoEndpoint) and err.exit_code == ExitCode.NO_ENDPOINT and "--eice-id" in err.hint
