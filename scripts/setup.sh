#!/usr/bin/env bash
# Create .venv and install SEGA with its pinned dependencies (idempotent; fast when already done).
# --tests: also make sure Debian's chromium is there for the browser tests (apt-get, as root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--tests" ] && [ ! -x /usr/bin/chromium ]; then
  # Browser tests use Debian's chromium (never a playwright-downloaded browser).
  if [ "$(id -u)" = 0 ]; then apt=(apt-get); elif sudo -n true 2>/dev/null; then apt=(sudo -n apt-get); else apt=(); fi
  if [ ${#apt[@]} -eq 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: the browser tests need Debian's chromium at /usr/bin/chromium: run 'sudo apt-get install -y chromium'" >&2
    exit 1
  fi
  "${apt[@]}" update -qq && DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq chromium >/dev/null
fi
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.sega-installed
want="$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and alone: the pin resolves to the CPU build where one is provided locally.
  .venv/bin/python -m pip install -q "$(grep '^torch==' requirements.txt)"
  .venv/bin/python -m pip install -q -r requirements.txt -r requirements-dev.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
# Node tooling (glTF validator, web viewer) from the lockfile; skipped with a note when npm is absent
# (building avatars does not need it; `sega view` and the browser/GLB tests do).
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: npm not found - skipping the web viewer build (install Node.js 20+ for 'sega view' and the browser tests)" >&2
  exit 0
fi
if [ ! -f web/node_modules/.package-lock.json ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
  npm ci --prefix web --no-audit --no-fund
fi
# Web viewer -> web/dist (git-ignored), rebuilt when its sources or the lockfile change.
if [ ! -f web/dist/viewer.js ] || [ -n "$(find web/src web/static web/build.mjs web/package-lock.json -newer web/dist/viewer.js -print -quit)" ]; then
  npm run build --prefix web --silent
fi
