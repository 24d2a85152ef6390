#!/usr/bin/env bash
# Proves the kTLS offload of `tls = { mode = "terminate" }` routes in a VM: boots Debian's own
# kernel (which has kTLS) under qemu/TCG with an initramfs holding busybox, shardgate, openssl
# and the kernel's `tls` module; `init` (next to this file) drives TLS 1.3 and TLS 1.2
# exchanges through shardgate and prints the evidence on the serial console. This script then
# checks that evidence and prints PASS or FAIL; it exits 0 only on PASS.
#
# Usage: bash tests/ktls-vm/run.sh   (as root, or with sudo for apt-get)
#   SHARDGATE_BIN=path/to/shardgate   use this binary (default: build the release binary)
#   KTLS_VM_KERNEL=download           always use the downloaded kernel package (see below)
#   KTLS_VM_KEEP=1                    keep the work directory (serial log, initramfs)
# Needs (installed if missing): qemu-system-x86, busybox-static, openssl, cpio, kmod, xz-utils.
# The kernel: an installed Debian kernel (/boot/vmlinuz-*, /lib/modules/*) that has the `tls`
# module, else Debian's current `linux-image-amd64` kernel package, downloaded with
# `apt-get download` and unpacked into the work directory — never installed, so the host's
# /boot and bootloader are not touched.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
started=$SECONDS

bash "$repo/tests/ensure-packages.sh" --no-install-recommends \
  qemu-system-x86 busybox-static openssl cpio kmod xz-utils

work="$(mktemp -d /tmp/ktls-vm.XXXXXX)"
cleanup() { if [ "${KTLS_VM_KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT

# The kernel: $kroot/boot/vmlinuz-$kernel and $kroot/lib/modules/$kernel with kernel/net/tls.
kroot=/ kernel=""
if [ "${KTLS_VM_KERNEL:-}" != download ]; then
  for image in $(ls -v /boot/vmlinuz-* 2>/dev/null); do
    version="${image#/boot/vmlinuz-}"
    if [ -r "$image" ] && ls /lib/modules/"$version"/kernel/net/tls/tls.ko* >/dev/null 2>&1; then kernel=$version; fi
  done
fi
if [ -z "$kernel" ]; then
  package="$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n 1)"
  if [ -z "$package" ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    package="$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n 1)"
  fi
  [ -n "$package" ] || { echo "FAIL: cannot find Debian's linux-image-amd64 kernel package"; exit 1; }
  echo "downloading $package (unpacked in $work, not installed)"
  (cd "$work" && apt-get download -qq "$package" 2>/dev/null)
  kroot="$work/kernel"
  dpkg-deb -x "$work"/"$package"_*.deb "$kroot"
  rm -f "$work"/"$package"_*.deb
  kernel="${package#linux-image-}"
  depmod -b "$kroot" "$kernel"
fi
[ -r "$kroot/boot/vmlinuz-$kernel" ] || { echo "FAIL: no readable kernel image vmlinuz-$kernel"; exit 1; }
echo "kernel: $kroot/boot/vmlinuz-$kernel"

bin="${SHARDGATE_BIN:-}"
if [ -z "$bin" ]; then
  target_dir="${CARGO_TARGET_DIR:-$repo/target}"
  (cd "$repo" && CARGO_TARGET_DIR="$target_dir" cargo build --release --quiet -p shardgate-appliance)
  bin="$target_dir/release/shardgate"
fi
[ -x "$bin" ] || { echo "FAIL: no shardgate binary at $bin"; exit 1; }

root="$work/root"
mkdir -p "$root"/{bin,dev,etc/shardgate,etc/ktls-vm,modules,var/shardgate,usr/lib/ssl}

# Copies an executable and every shared library it loads (ldd), keeping their paths.
install_with_libs() {
  local exe=$1 dest=$2
  install -D -m 755 "$exe" "$root$dest"
  ldd "$exe" | grep -o '/[^ ]*' | while read -r lib; do
    [ -e "$root$lib" ] || install -D -m 755 "$(readlink -f "$lib")" "$root$lib"
  done
}
cp /bin/busybox "$root/bin/busybox"
ln -s busybox "$root/bin/sh"   # for /init's #!; init installs the other applets
strip -o "$work/shardgate" "$bin" 2>/dev/null || cp "$bin" "$work/shardgate"
install_with_libs "$work/shardgate" /bin/shardgate
install_with_libs "$(command -v openssl)" /usr/bin/openssl
cp /usr/lib/ssl/openssl.cnf "$root/usr/lib/ssl/openssl.cnf"
install -m 755 "$here/init" "$root/init"
install -m 755 "$here/echo-back" "$root/etc/ktls-vm/echo-back"

# The tls module and the crypto templates kTLS allocates (gcm(aes), rfc7539(chacha20,poly1305)),
# with their dependencies, dependencies first. Decompressed here: busybox insmod may not read .xz.
declare -A seen=()
order=()
add_module() {
  local name=$1 dep file
  [ -z "${seen[$name]:-}" ] || return 0
  seen[$name]=1
  file="$(modinfo -b "$kroot" -k "$kernel" -F filename "$name" 2>/dev/null || true)"
  case "$file" in ""|"(builtin)") return 0 ;; esac
  for dep in $(modinfo -b "$kroot" -k "$kernel" -F depends "$name" | tr ',' ' '); do add_module "$dep"; done
  case "$file" in
    *.ko.xz) xz -dc "$file" > "$root/modules/$name.ko" ;;
    *.ko.zst) zstd -qdc "$file" > "$root/modules/$name.ko" ;;
    *.ko.gz) gzip -dc "$file" > "$root/modules/$name.ko" ;;
    *) cp "$file" "$root/modules/$name.ko" ;;
  esac
  order+=("$name.ko")
}
for m in tls gcm ghash-generic ctr chacha20poly1305 chacha_generic poly1305_generic; do add_module "$m"; done
printf '%s\n' "${order[@]}" > "$root/modules/order"

# A self-signed RSA certificate and the appliance config: one terminate route 8443 → 9000.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ktls.test" \
  -addext "subjectAltName=DNS:ktls.test" \
  -keyout "$root/etc/shardgate/vm.key" -out "$root/etc/shardgate/vm.crt" 2>/dev/null
cat > "$root/etc/shardgate/shardgate.toml" <<'EOF'
[runtime]
data_dir = "/var/shardgate"
drain_timeout = "1s"

[[certificates]]
name = "vm"
cert = "/etc/shardgate/vm.crt"
key = "/etc/shardgate/vm.key"
default = true

[[routes]]
name = "ktls"
[routes.match]
ports = [8443]
[routes.action]
type = "forward"
targets = [{ host = "127.0.0.1", port = 9000 }]
tls = { mode = "terminate" }

[[routes]]
name = "ktls-http"
[routes.match]
ports = [8444]
[routes.action]
type = "forward"
protocol = "http"
targets = [{ host = "127.0.0.1", port = 9001 }]
tls = { mode = "terminate" }
EOF
# Check the config on the host first (with host paths to the same files).
sed "s#/etc/shardgate/#$root/etc/shardgate/#" "$root/etc/shardgate/shardgate.toml" > "$work/host.toml"
"$bin" check-config "$work/host.toml" >/dev/null

(cd "$root" && find . | cpio -o -H newc --quiet) > "$work/initrd.cpio"
prepared=$SECONDS

serial="$work/serial.log"
boot=$SECONDS
# No network device: everything runs on the guest's loopback.
timeout 300 qemu-system-x86_64 -accel tcg -m 1024 -smp 1 -nographic -no-reboot -nic none \
  -kernel "$kroot/boot/vmlinuz-$kernel" -initrd "$work/initrd.cpio" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init" </dev/null > "$serial" 2>&1 || true
booted=$((SECONDS - boot))
tr -d '\r' < "$serial" > "$work/serial.txt"
grep '^KTLSVM ' "$work/serial.txt" | sed 's/^KTLSVM //' > "$work/evidence.txt" || true
echo "---- evidence from the VM's serial console ----"
grep -v '^log \|^stats ' "$work/evidence.txt" || true
grep '^stats ' "$work/evidence.txt" | grep -E 'sessions|handshakes|failures|errors|bytes_' || true
grep '^log ' "$work/evidence.txt" | grep -v ' DEBUG ' | head -n 20 || true
grep '^log .*TLS established' "$work/evidence.txt" | sed 's/.*\(version=.*\)/log TLS established \1/' || true
grep '^log .*DEBUG' "$work/evidence.txt" | grep -v 'TLS established' | head -n 20 || true
echo "----"

failures=()
check() { # description, then a command that must succeed
  local what=$1; shift
  if "$@"; then echo "ok:   $what"; else echo "FAIL: $what"; failures+=("$what"); fi
}
stat_value() { # before|after, counter name
  awk -v w="$1" -v c="$2" '$1 == "tls_stat" && $2 == w && $3 == c { print $4 }' "$work/evidence.txt" | tail -n 1
}
counter() { # a field of the stats' "total" (the first Counters object in the JSON)
  local v
  v="$(grep '^stats ' "$work/evidence.txt" | grep -o "\"$1\": *[0-9]*" | head -n 1 | grep -o '[0-9]*$')"
  echo "${v:--1}"
}
rose() { # counter names to try: the first one present must have risen by at least $exchanges
  local name before after
  for name in "$@"; do
    before="$(stat_value before "$name")"; after="$(stat_value after "$name")"
    if [ -n "$before" ] && [ -n "$after" ]; then
      echo "      $name: $before -> $after"
      [ $((after - before)) -ge "$exchanges" ]; return
    fi
  done
  echo "      none of $* in /proc/net/tls_stat"; return 1
}
exchanges="$(sed -n 's/^exchanges total=//p' "$work/evidence.txt")"; exchanges=${exchanges:-0}
http_total="$(sed -n 's/^http total=//p' "$work/evidence.txt")"; http_total=${http_total:-0}
http_matched="$(grep -c '^http .* rc=0 match=yes$' "$work/evidence.txt" || true)"
matched="$(grep -c '^exchange .* rc=0 match=yes$' "$work/evidence.txt" || true)"
ktls="$(counter ktls_sessions)"; userspace="$(counter userspace_tls_sessions)"
relay_errors="$(counter relay_errors)"; tls_failures="$(counter tls_failures)"

check "the VM ran to the end" grep -q '^DONE$' "$work/evidence.txt"
check "shardgate logged \"kTLS: available\"" grep -q '^log .*kTLS: available' "$work/evidence.txt"
check "exchanges ran ($exchanges)" [ "$exchanges" -ge 8 ]
check "every exchange echoed its bytes and s_client exited 0 ($matched/$exchanges)" [ "$matched" -eq "$exchanges" ]
check "HTTPS keep-alive exchanges through the HTTP proxy ran ($http_total)" [ "$http_total" -ge 2 ]
check "every HTTPS exchange got both responses and their bodies ($http_matched/$http_total)" [ "$http_matched" -eq "$http_total" ]
check "kernel TLS TX carried them" rose TlsTxSw TlsCurrTxSw
check "kernel TLS RX carried them" rose TlsRxSw TlsCurrRxSw
both_versions() { grep -q 'version=Some(TLSv1_3)' "$work/evidence.txt" && grep -q 'version=Some(TLSv1_2)' "$work/evidence.txt"; }
check "shardgate negotiated TLS 1.3 and TLS 1.2" both_versions
check "ktls_sessions ($ktls) = exchanges + HTTPS exchanges" [ "$ktls" -eq $((exchanges + http_total)) ]
check "userspace_tls_sessions ($userspace) = 0" [ "$userspace" -eq 0 ]
check "relay_errors ($relay_errors) = 0 and tls_failures ($tls_failures) = 0" [ "$relay_errors" -eq 0 -a "$tls_failures" -eq 0 ]

echo "timing: image ready in $((prepared - started)) s, VM boot to result $booted s, total $((SECONDS - started)) s"
if ((${#failures[@]})); then
  echo "FAIL: kTLS VM proof (${#failures[@]} check(s) failed; serial log: set KTLS_VM_KEEP=1 to keep $serial)"
  exit 1
fi
echo "PASS: kTLS VM proof ($exchanges TLS 1.3/1.2 relay exchanges and $http_total HTTPS keep-alive exchanges carried by kernel TLS)"
