"""Hot-path rules: masking in C (wsaccel), one sub-parser per run."""
from __future__ import annotations

from eic_proxy.tunnel import wsframes


def test_frames_are_masked_by_wsaccel():
    assert wsframes.MASKER == "wsaccel"


def test_masking_matches_the_rfc():
    key = b"\x01\x02\x03\x04"
    frame = wsframes.encode(wsframes.OP_BINARY, b"\x00" * 6, key)
    assert frame == b"\x82\x86" + key + b"\x01\x02\x03\x04\x01\x02"


def test_every_command_is_known_to_the_one_command_parser():
    """main() sets up only the sub-parser it needs; COMMANDS must name every one of them."""
    from eic_proxy.cli import COMMANDS, build_parser

    full = build_parser()
    choices = next(a for a in full._actions if a.dest == "command").choices
    assert sorted(choices) == sorted(COMMANDS)
    for name in COMMANDS:
        one = build_parser(name)
        assert list(next(a for a in one._actions if a.dest == "command").choices) == [name]
