#!/usr/bin/env bash
# One command: install, start the local test bed (fake AWS + fake EICE + real sshd on loopback) and
# run real ssh, scp, sftp and rsync through eic-proxy, printing what happened.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m tests.testbed demo "$@"
