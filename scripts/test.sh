#!/usr/bin/env bash
# One command: install everything the tests need, then lint (ruff), types (mypy) and the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# Lint and types first: they fail in seconds, the suite takes minutes.
.venv/bin/ruff check eic_proxy eic_proxy_connect.py tests bench
.venv/bin/mypy
# Windows and macOS cannot run here: their platform branches are type-checked as those platforms.
.venv/bin/mypy --platform win32
.venv/bin/mypy --platform darwin
# The e2e modules run on parallel workers, each with a test bed of its own (one loopback /16 each);
# a module stays on one worker (--dist loadfile). EIC_TEST_WORKERS=0 runs everything in this process.
workers=${EIC_TEST_WORKERS:-$(nproc 2>/dev/null || echo 2)}
[ "$workers" -gt 4 ] && workers=4
if [ "$workers" -gt 1 ]; then
  exec .venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
fi
exec .venv/bin/python -m pytest "$@"
