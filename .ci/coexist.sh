#!/usr/bin/env bash
# credrefresh and PyPI's python-daemon (import name `daemon`) in one venv, in both install
# orders: each keeps working, and credrefresh installs nothing named `daemon`.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
.venv/bin/pip wheel -q --no-deps -w "$work/dist" .
wheel="$(ls "$work"/dist/credrefresh-*.whl)"
if python3 -c "import sys, zipfile; sys.exit(any(n.startswith('daemon/') for n in zipfile.ZipFile(sys.argv[1]).namelist()))" "$wheel"; then :; else
  echo "coexist: the wheel installs a top-level daemon/ package" >&2
  exit 1
fi
for order in "python-daemon $wheel" "$wheel python-daemon"; do
  venv="$work/venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  for package in $order; do
    "$venv/bin/pip" install -q "$package"
  done
  "$venv/bin/credrefresh" --help >/dev/null
  "$venv/bin/python" -m credrefresh --help >/dev/null
  "$venv/bin/python" -c "import daemon; daemon.DaemonContext"
  "$venv/bin/python" -c "import credrefresh; assert credrefresh.__version__ != '0+unknown'"
  "$venv/bin/pip" uninstall -q -y python-daemon
  "$venv/bin/credrefresh" --help >/dev/null
  echo "coexist: ok (install order: ${order//$work\/dist\//})"
done
