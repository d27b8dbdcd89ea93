#!/usr/bin/env bash
# Installs what the Xen Orchestra contract tests (tests/contract/test_xen_orchestra.py) run under:
# node and npm (Debian packages, when run as root and they are missing), then the npm packages
# pinned by tests/js/package-lock.json, when node_modules is missing or older than the lockfile.
# Without root and without node it only says so: those tests are then skipped.
set -eu
cd "$(dirname "$0")/.."
js=tests/js
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "node-deps: no node/npm and not root, cannot install them: the Xen Orchestra tests will be skipped" >&2
    exit 0
  fi
  echo "node-deps: installing nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
# npm ci writes node_modules/.package-lock.json last: its age is that of the install
installed=$js/node_modules/.package-lock.json
if [ ! -f "$installed" ] || [ "$js/package-lock.json" -nt "$installed" ]; then
  echo "node-deps: npm ci in $js"
  npm ci --prefix "$js" --no-audit --no-fund --loglevel=error
fi
