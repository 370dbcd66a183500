#!/usr/bin/env bash
# Installs the CouchDB-compatible test server of the http_stream suite: express-pouchdb (the
# CouchDB HTTP API of pouchdb-server) over PouchDB's in-memory adapter, pure JavaScript (no
# native build), versions pinned by package-lock.json beside this script.
#
#   bash tests/servers/couchdb/install.sh      install once (idempotent), print the folder
#
# Run it with `node <folder>/server.js <port>`: it listens on 127.0.0.1:<port> and prints
# `listening <port>`. Needs Node.js 18 or newer and npm (Debian: `apt-get install nodejs npm`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target="${TRIBUTARY_TOOLS_DIR:-$HOME/.cache/tributary}/couchdb"

command -v node >/dev/null 2>&1 || {
  echo "couchdb/install.sh: node not found; install Node.js 18+ (Debian: apt-get install nodejs npm)" >&2
  exit 1
}

# Installed already from the same lock file: nothing to do.
if [[ -f "$target/package-lock.json" && -d "$target/node_modules" ]] &&
  cmp -s "$here/package-lock.json" "$target/package-lock.json" &&
  cmp -s "$here/server.js" "$target/server.js"; then
  echo "$target"
  exit 0
fi

mkdir -p "$target"
cp "$here/package.json" "$here/package-lock.json" "$here/server.js" "$target/"
(cd "$target" && npm ci --no-audit --no-fund --loglevel=error >&2)
echo "$target"
