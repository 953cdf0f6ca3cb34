"""The Homebrew formula's `test do` runs on a Mac (brew test): here we check it asks what the code does."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_formula_tests_version_and_the_installed_block():
    text = (ROOT / "packaging/homebrew/eic-proxy.rb").read_text()
    test_block = text.split("test do", 1)[1]
    for needed in ('--version', 'ENV["HOME"] = testpath', '"ssh-config", "--install"', 'refute_match "Cellar"',
                   "ProxyCommand #{opt_bin}/eic-proxy connect"):
        assert needed in test_block, needed
    assert "websocket-client" not in text  # no longer a dependency
