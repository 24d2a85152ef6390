#!/usr/bin/env bash
# Runs every shardgate test on a fresh Debian machine: installs what the tests use (real
# clients and peers from Debian), builds the binary, then runs the whole workspace's tests.
# Usage: bash tests/run-all.sh            (as root, or with sudo available for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the integration tests drive: openssl (s_client), iproute2 (network
# namespaces for the tuning tests), freeradius-utils (radclient) and python3-pyrad (RADIUS).
packages=(openssl iproute2 ca-certificates freeradius-utils python3-pyrad)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The integration tests start the real binary: build it first.
cargo build --bins --quiet
cargo test --workspace --no-fail-fast
