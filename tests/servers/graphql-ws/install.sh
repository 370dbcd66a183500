#!/usr/bin/env bash
# Installs the GraphQL over WebSocket test server (graphql-ws, graphql and ws at the versions
# pinned in package-lock.json, with `npm ci`) and its script into
# "${TRIBUTARY_TOOLS_DIR:-$HOME/.cache/tributary}/graphql-ws", once. Safe to run again: an
# install whose package-lock.json and server.mjs match these is kept. Prints the directory.
# Needs Node.js 20 or newer and npm (Debian: `apt-get install nodejs npm`).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
target="${TRIBUTARY_TOOLS_DIR:-$HOME/.cache/tributary}/graphql-ws"

if [[ -d "$target/node_modules/graphql-ws" ]] &&
  cmp -s "$here/package-lock.json" "$target/package-lock.json" &&
  cmp -s "$here/server.mjs" "$target/server.mjs"; then
  echo "$target"
  exit 0
fi
command -v node >/dev/null || { echo "graphql-ws test server: node (Node.js >= 20) is missing" >&2; exit 1; }
mkdir -p "$target"
cp "$here/package.json" "$here/package-lock.json" "$here/server.mjs" "$target/"
(cd "$target" && nice -n 19 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
echo "$target"
