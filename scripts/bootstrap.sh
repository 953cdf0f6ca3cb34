#!/usr/bin/env bash
# Installs what eic-proxy's test bed needs: OpenSSH client+server, rsync, nc, git, tinyproxy (apt, when
# missing), and a virtualenv in .venv with eic-proxy and its test dependencies. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v nc >/dev/null 2>&1 || need+=(netcat-openbsd)
command -v git >/dev/null 2>&1 || need+=(git)
command -v tinyproxy >/dev/null 2>&1 || [ -x /usr/bin/tinyproxy ] || need+=(tinyproxy)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: need root to install: ${need[*]}" >&2; exit 1
  fi
  echo "bootstrap: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' >.venv/pip.log 2>&1; then
  cat .venv/pip.log >&2; echo "bootstrap: pip install failed" >&2; exit 1
fi
.venv/bin/python -c "import eic_proxy, moto, websockets, wsaccel, hcl2, paramiko, ansible, build, pipx, mypy" && .venv/bin/ruff --version >/dev/null || { echo "bootstrap: install failed" >&2; exit 1; }
