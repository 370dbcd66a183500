#!/usr/bin/env bash
# moto's server (PyPI `moto[server]`): a real AWS API implementation that checks SigV4
# signatures when its IAM authentication is on. tests/aws_sigv4.rs signs requests against it.
# Installed once into a virtualenv under the tools directory; prints the server's path.
set -euo pipefail
version=5.1.18
root="${TRIBUTARY_TOOLS_DIR:-$HOME/.cache/tributary}/moto"
if [[ "$("$root/bin/python" -c 'import moto; print(moto.__version__)' 2>/dev/null)" != "$version" ]]; then
  rm -rf "$root"
  python3 -m venv "$root"
  "$root/bin/pip" install --quiet "moto[server,apigateway]==$version" "boto3"
fi
printf '%s\n' "$root/bin/moto_server"
