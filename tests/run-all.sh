#!/usr/bin/env bash
# Runs every shardgate test on a fresh Debian machine: installs what the tests use (real
# clients and peers from Debian), builds the binary, then runs the whole workspace's tests.
# Usage: bash tests/run-all.sh            (as root, or with sudo available for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the integration tests drive: openssl (s_client), iproute2 (network
# namespaces for the tuning tests), freeradius-utils (radclient) and python3-pyrad (RADIUS),
# bind9-dnsutils (dig), knot-dnsutils (kdig) and knot (knotd, the DNS equivalence peer).
packages=(openssl iproute2 ca-certificates freeradius-utils python3-pyrad bind9-dnsutils knot-dnsutils knot)
# The HTTP proxy tests: curl as the client, python3 for the HTTP/1.1 test backend.
packages+=(curl python3)
# The kTLS VM proof (tests/ktls-vm): qemu, busybox and tools to build its initramfs. It fetches
# Debian's kernel package itself (unpacked in a temporary directory, never installed).
# ACME: pebble (the ACME test CA the acme tests issue from) and curl (fetches its root).
packages+=(pebble curl)
packages+=(qemu-system-x86 busybox-static cpio kmod xz-utils)
# The console test runs `shardgate console` headless in tmux (80x24, capture-pane).
packages+=(tmux)
# The web dashboard test: headless Chromium driven over the DevTools protocol by a small
# Python script (python3-websocket). Chromium is large; it is installed once.
packages+=(chromium python3-websocket)
# The SMTP gateway tests: swaks as the client (plain, STARTTLS, implicit TLS, AUTH, pipelining;
# its TLS needs Net::SSLeay / IO::Socket::SSL).
packages+=(swaks libnet-ssleay-perl libio-socket-ssl-perl)
# Mail delivery: Postfix's smtp-sink (/usr/sbin/smtp-sink) is the next hop and the MX.
packages+=(postfix)
# The appliance image (image/, only with SHARDGATE_IMAGE_TEST=1): debootstrap, file system and
# disk tools, UEFI firmware for qemu.
if [ "${SHARDGATE_IMAGE_TEST:-0}" = 1 ]; then
  packages+=(debootstrap e2fsprogs dosfstools mtools fdisk qemu-utils systemd-boot-efi zstd ovmf)
fi
# Mail authentication: opendkim-tools (opendkim-testkey checks our published DKIM record through
# our DNS server, opendkim-testmsg signs what we verify) and python3-dkim (dkimpy verifies what
# we sign).
packages+=(opendkim-tools python3-dkim)
bash tests/ensure-packages.sh --no-install-recommends "${packages[@]}"

# The integration tests start the real binary: build it first.
cargo build --bins --quiet
cargo test --workspace --no-fail-fast

# testssl.sh against the TLS listener: fails on any HIGH or CRITICAL finding (about 3 minutes).
SHARDGATE_BIN="${CARGO_TARGET_DIR:-target}/debug/shardgate" bash tests/testssl/run.sh

# kTLS offload proof: Debian's kernel (which has kTLS) under qemu/TCG, with the binary built
# above; about half a minute (tests/ktls-vm/README.md).
SHARDGATE_BIN="${CARGO_TARGET_DIR:-target}/debug/shardgate" bash tests/ktls-vm/run.sh

# The bootable appliance image: build it (Debian archive, root, a release build, several
# minutes) and boot it under qemu/TCG; only when asked, as it needs the network and time
# (image/README.md).
if [ "${SHARDGATE_IMAGE_TEST:-0}" = 1 ]; then
  bash image/build.sh
  bash image/boot-test.sh
else
  echo "image: build and boot test skipped (set SHARDGATE_IMAGE_TEST=1 to run them)"
fi
