#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine (system packages + Python packages, the package itself
# editable), then runs ruff, mypy and pytest.
# Usage: bash scripts/test.sh [pytest args...]      e.g. bash scripts/test.sh -m slow (with arguments: one plain pytest run)
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

# The tests, benchmarks and `moca` run against the installed package, installed editable into this checkout's
# own .venv. --system-site-packages: torch, optuna, mlflow... already on the machine are reused, not downloaded
# again, and the editable install stays private to this checkout (a global one would be shared by every
# checkout on the machine). A stock Debian needs python3-venv for it.
PY=python
command -v python >/dev/null 2>&1 || PY=python3
if [ -z "${VIRTUAL_ENV:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    $PY -m venv --system-site-packages .venv 2>/dev/null || {
      SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
      echo "installing Debian package python3-venv (to make .venv)" >&2
      $SUDO apt-get install -y -qq python3-venv >/dev/null
      $PY -m venv --system-site-packages .venv
    }
  fi
  PY=.venv/bin/python
fi

$PY -m pip install -q -r requirements-dev.txt
$PY -m pip install -q --no-deps --no-build-isolation -e .
# Lint and type check first: a finding fails the run before the (long) tests start.
$PY -m ruff check .
$PY -m mypy
if [ $# -gt 0 ]; then
  exec $PY -m pytest "$@"
fi
# The default run: two test processes (pytest-xdist; a file's tests stay in one process, so its module fixtures start
# once), then the `serial` tests alone, whose searches budget wall-clock seconds and would be paced by the other process.
$PY -m pytest -n 2 --dist loadfile -m "not slow and not serial"
# Only the files that mark tests `serial` are collected for it: collecting all of them again costs ~7 s here.
mapfile -t serial_files < <(grep -l "mark\.serial" tests/test_*.py)
if [ ${#serial_files[@]} -gt 0 ]; then
  $PY -m pytest -m "serial and not slow" "${serial_files[@]}"
fi
