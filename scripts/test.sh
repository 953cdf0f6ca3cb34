#!/usr/bin/env bash
# One command: install everything the tests need, then lint (ruff), types (mypy) and the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# Lint and types first: they fail in seconds, the suite takes minutes.
.venv/bin/ruff check eic_proxy tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
