#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine (system packages + Python packages), then runs pytest.
# Usage: bash scripts/test.sh [pytest args...]      e.g. bash scripts/test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/bin/chromium ] || need+=(chromium chromium-driver)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
command -v pg_ctlcluster >/dev/null 2>&1 || [ -d /usr/lib/postgresql ] || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages: ${need[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "warning: apt-get not found; tests needing ${need[*]} will be skipped" >&2
  fi
fi

# A stock Debian/Ubuntu Python refuses pip outside a virtual environment (PEP 668, "externally-managed-environment"):
# there, make and use .venv (Debian needs python3-venv for it); elsewhere install into the active Python.
PY=python
command -v python >/dev/null 2>&1 || PY=python3
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$($PY -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]; then
  if [ ! -x .venv/bin/python ]; then
    $PY -m venv .venv 2>/dev/null || {
      SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
      echo "installing Debian package python3-venv (to make .venv)" >&2
      $SUDO apt-get install -y -qq python3-venv >/dev/null
      $PY -m venv .venv
    }
  fi
  PY=.venv/bin/python
fi

$PY -m pip install -q -r requirements-dev.txt
$PY -m pytest "$@"
