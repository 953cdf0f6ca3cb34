"""Display width: East Asian wide and full-width characters take two columns, combining marks none."""
import pytest

from eic_proxy.commands.ls import ssh_command
from eic_proxy.text import pad, table, width


@pytest.mark.parametrize("text, columns", [
    ("web-1", 5), ("データベース-1", 14), ("ｗｅｂ", 6), ("ｱｲｳ", 3), ("cafe\u0301", 4), ("東京-α", 6),
    ("a\u200bb", 2), ("", 0),
])
def test_width_counts_columns_not_code_points(text, columns):
    assert width(text) == columns


def test_table_lines_up_by_display_width():
    lines = table(["NAME", "INSTANCE"], [["データベース-1", "i-01"], ["web", "i-02"], ["cafe\u0301", "i-03"]])
    starts = [width(line[:line.index("I" if n == 0 else "i-")]) for n, line in enumerate(lines)]
    assert starts == [16, 16, 16, 16]
    assert pad("データ", 8) == "データ  "


@pytest.mark.parametrize("name, unique, command", [
    ("web-1", True, "ssh web-1"),
    ("データベース-1", True, "ssh データベース-1"),      # no shell syntax: as it is
    ("Web-Upper", True, "ssh Web-Upper"),              # the block passes %n: the case is kept
    ("jp*1", True, "ssh i-0123"),                      # would be read as a glob
    ("ab~c=1", True, "ssh 'ab~c=1'"),                  # shell syntax ssh accepts: quoted for the shell
    ("db (old)", True, "ssh i-0123"),                  # ssh refuses spaces and parentheses in a host name
    ("a;b", True, "ssh i-0123"),
    ("-x", True, "ssh i-0123"),                        # would be read as an option
    ("web-1", False, "ssh i-0123"),                    # several instances share the name
    (None, True, "ssh i-0123"),
])
def test_ls_shows_the_exact_ssh_command(name, unique, command):
    assert ssh_command(name, "i-0123", unique) == command
