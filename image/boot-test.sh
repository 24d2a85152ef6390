#!/usr/bin/env bash
# Boots the appliance image (image/build.sh's qcow2) under qemu with TCG (no KVM), UEFI (OVMF),
# user-mode networking with loopback ports of this host forwarded into the VM, and checks from
# the host that the appliance serves: an HTTP route (curl), DNS over UDP and TCP (dig), RADIUS
# Status-Server and a MAB Access-Request (radclient), the SMTP banner and the admin health
# endpoint when the image has them, and the live console on the serial line; then presses a key
# on the serial console, logs in as root, reads the appliance's own view (service state, data
# partition, kernel TLS), kills shardgate to see systemd restart it, and powers it off; then
# upgrades the used disk with image/upgrade.sh and boots it again to check the data partition
# (a dynamic DNS record, the first-boot certificate) was kept. Prints one ok:/FAIL:/skip: line per check, the
# timings, and PASS or FAIL; exits 0 only on PASS. qemu is always stopped: by the guest's
# poweroff, else killed; the whole VM run is bounded by `timeout`.
#
# Usage: bash image/boot-test.sh        (after image/build.sh; as root or with sudo for apt-get)
#   SHARDGATE_IMAGE_OUT=DIR          where build.sh put the image (default target/image/)
#   SHARDGATE_BOOT_TIMEOUT=SECONDS   how long the appliance may take to answer (default 300)
#   SHARDGATE_BOOT_KEEP=1            keep the work folder (serial log, overlay disk)
#   SHARDGATE_BOOT_UPGRADE=0         skip the upgrade and second boot
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
out="${SHARDGATE_IMAGE_OUT:-$repo/target/image}"
boot_timeout="${SHARDGATE_BOOT_TIMEOUT:-300}"
vm_limit=$((boot_timeout + 300))   # qemu never outlives this, whatever happens below

image="$out/shardgate.qcow2"
[ -r "$image" ] && [ -r "$out/manifest" ] || { echo "FAIL: no image in $out (run image/build.sh first)"; exit 1; }
manifest() { sed -n "s/^$1=//p" "$out/manifest"; }

bash "$repo/tests/ensure-packages.sh" --no-install-recommends \
  qemu-system-x86 qemu-utils ovmf curl bind9-dnsutils freeradius-utils python3 openssl fdisk

work="$(mktemp -d "${TMPDIR:-/tmp}/shardgate-boot.XXXXXX")"
test_started=$SECONDS
qemu_pid=""
stop_qemu() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$qemu_pid" 2>/dev/null || true
  fi
  qemu_pid=""
}
cleanup() {
  local status=$?
  stop_qemu
  if [ "${SHARDGATE_BOOT_KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free loopback ports (TCP and UDP) for the forwards.
free_port() {
  python3 -c 'import socket
t = socket.socket(); t.bind(("127.0.0.1", 0)); port = t.getsockname()[1]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", port)); print(port)'
}
http_port=$(free_port); https_port=$(free_port); dns_port=$(free_port); radius_port=$(free_port); smtp_port=$(free_port); admin_port=$(free_port)
forwards="hostfwd=tcp:127.0.0.1:$http_port-:$(manifest http_port),hostfwd=tcp:127.0.0.1:$https_port-:$(manifest https_port)"
forwards+=",hostfwd=udp:127.0.0.1:$dns_port-:$(manifest dns_port),hostfwd=tcp:127.0.0.1:$dns_port-:$(manifest dns_port)"
forwards+=",hostfwd=udp:127.0.0.1:$radius_port-:$(manifest radius_auth_port)"
forwards+=",hostfwd=tcp:127.0.0.1:$smtp_port-:$(manifest smtp_port),hostfwd=tcp:127.0.0.1:$admin_port-:$(manifest admin_port)"

# A throw-away overlay: the built image stays as it was. 256 MiB larger than the image, so
# the first boot's growth of the data partition (systemd-repart, growfs) is exercised too.
qemu-img create -q -f qcow2 -b "$image" -F qcow2 "$work/disk.qcow2"
qemu-img resize -q "$work/disk.qcow2" +256M

# Boots DISK (FORMAT qcow2 or raw) with fresh UEFI variables and the serial console on
# $work/serial.sock (logged to $serial_log); sets qemu_pid, boot_started and ready (seconds
# until the HTTP route answered, empty if it never did within $boot_timeout).
boot() {
  local disk=$1 format=$2
  serial_log="$work/serial-$(basename "$disk").log"
  rm -f "$work/serial.sock"
  cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars.fd"
  boot_started=$SECONDS
  timeout --kill-after=10 "$vm_limit" qemu-system-x86_64 -accel tcg -machine q35 -m 1024 -smp 2 \
    -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,file="$work/vars.fd" \
    -drive if=virtio,format="$format",file="$disk" \
    -nic user,model=virtio-net-pci,"$forwards" \
    -chardev "socket,id=serial0,path=$work/serial.sock,server=on,wait=off,logfile=$serial_log" \
    -serial chardev:serial0 -display none -monitor none -no-reboot \
    </dev/null > "$work/qemu.log" 2>&1 &
  qemu_pid=$!
  # Ready = the HTTP route answers (the appliance is up and its listeners are open).
  ready=""
  while [ $((SECONDS - boot_started)) -lt "$boot_timeout" ]; do
    if ! kill -0 "$qemu_pid" 2>/dev/null; then echo "qemu exited early:"; cat "$work/qemu.log"; break; fi
    if curl -fsS -m 3 -o "$work/http.html" "http://127.0.0.1:$http_port/" 2>/dev/null; then ready=$((SECONDS - boot_started)); break; fi
    sleep 2
  done
}
# The certificate the HTTPS route serves (SHA-256 fingerprint).
certificate() {
  openssl s_client -connect "127.0.0.1:$https_port" -servername shardgate < /dev/null 2>/dev/null \
    | openssl x509 -noout -fingerprint -sha256 2>/dev/null
}

boot "$work/disk.qcow2" qcow2
failures=()
check() { # description, then a command that must succeed
  local what=$1; shift
  if "$@" > "$work/check.out" 2>&1; then echo "ok:   $what"; else echo "FAIL: $what"; sed 's/^/      /' "$work/check.out" | head -n 15; failures+=("$what"); fi
}
skip() { echo "skip: $1"; }

check "the appliance came up (HTTP route answered within ${boot_timeout}s: ${ready:-never})" [ -n "$ready" ]
if [ -n "$ready" ]; then
  check "HTTP route 'welcome' (:80) serves the status page" grep -q "shardgate appliance" "$work/http.html"
  https_page() { curl -ksS -m 10 "https://127.0.0.1:$https_port/" | grep -q "shardgate appliance"; }
  check "HTTPS route 'welcome-https' (:443, TLS terminated, first-boot certificate) serves it" https_page
  first_certificate="$(certificate)"
  dns_udp() { [ "$(dig +short +time=3 +tries=2 @127.0.0.1 -p "$dns_port" www.appliance.test A)" = 192.0.2.80 ]; }
  dns_tcp() { [ "$(dig +tcp +short +time=3 +tries=2 @127.0.0.1 -p "$dns_port" www.appliance.test A)" = 192.0.2.80 ]; }
  check "DNS over UDP (:53): www.appliance.test A 192.0.2.80" dns_udp
  check "DNS over TCP (:53): www.appliance.test A 192.0.2.80" dns_tcp
  secret="$(manifest radius_secret)"
  status_server() {
    echo "Message-Authenticator = 0x00" | radclient -x -t 3 -r 2 "127.0.0.1:$radius_port" status "$secret" | tee /dev/stderr | grep -q "Received Access-Accept"
  }
  mab() {
    echo 'User-Name = "aabbcc000001", User-Password = "aabbcc000001", Calling-Station-Id = "aa-bb-cc-00-00-01", Message-Authenticator = 0x00' \
      | radclient -x -t 3 -r 2 "127.0.0.1:$radius_port" auth "$secret" | tee /dev/stderr | grep -q "Tunnel-Private-Group-Id.*10"
  }
  check "RADIUS Status-Server (:1812) answered with Access-Accept" status_server
  check "RADIUS MAB Access-Request (:1812): Access-Accept with VLAN 10" mab
  if [ "$(manifest email)" = on ]; then
    smtp_banner() { python3 -c 'import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10); line = s.makefile().readline(); print(line.strip()); sys.exit(0 if line.startswith("220") else 1)' "$smtp_port"; }
    check "SMTP banner (:25) starts with 220" smtp_banner
  else
    skip "SMTP banner: the image has no [email] (manifest email=off)"
  fi
  if [ "$(manifest admin)" = on ]; then
    check "admin API /api/health (:$(manifest admin_port), $(manifest admin_scheme)) answers 200" \
      curl -kfsS -m 10 "$(manifest admin_scheme)://127.0.0.1:$admin_port/api/health"
  else
    skip "admin API /api/health: the image has no [admin] (manifest admin=off)"
  fi
  console_drawn() { tr -d '\r' < "$serial_log" | grep -q "shardgate appliance on shardgate (ttyS0)"; }
  check "the live console ($(manifest console)) is drawn on the serial line" console_drawn
  if [ "$(manifest console)" = tui ]; then
    # The TUI's title line: "shardgate console  <admin API>  config gen N" (bounded wait: it
    # starts once the admin API accepts the console's login).
    tui_drawn() {
      local waited=0
      until tr -d '\r' < "$serial_log" | grep -q "config gen"; do
        [ "$waited" -lt 90 ] || return 1
        sleep 3; waited=$((waited + 3))
      done
    }
    check "shardgate console (the TUI) is drawn on the serial line, logged in to the admin API" tui_drawn
  fi

  # The operator's side: a key on the live console, log in, look around, power off.
  password="$(cat "$out/root-password" 2>/dev/null || true)"
  timeout 300 python3 "$here/serial.py" "$work/serial.sock" "$password" \
    "systemctl is-active shardgate" \
    "findmnt -no SOURCE,FSTYPE /var/lib/shardgate" \
    "findmnt -no SOURCE /etc/shardgate" \
    "lsblk -bno NAME,SIZE /dev/vda3" \
    "cat /proc/net/tls_stat | head -n 4" \
    "journalctl -b -u shardgate --no-pager -o cat | grep -m1 'kTLS'" \
    "shardgate stats --config /etc/shardgate/config.toml | grep -m2 -E 'ktls_sessions|userspace_tls_sessions' | tr -d ' ,'" \
    "systemctl is-active shardgate-console@tty1" \
    "systemctl --failed --no-legend --plain | head -n 5" \
    "df -m / /var/lib/shardgate | tail -n 2" \
    "systemd-analyze | head -n 1" \
    "journalctl -b -u shardgate -o cat | grep -m1 -E 'host tuning (applied|failed)' | cut -c 28-160" \
    "shardgate dns add kept.appliance.test TXT before-upgrade --config /etc/shardgate/config.toml" \
    "old=\$(systemctl show -p MainPID --value shardgate); kill -9 \$old; for i in \$(seq 1 45); do new=\$(systemctl show -p MainPID --value shardgate); if [ \"\$new\" != 0 ] && [ \"\$new\" != \"\$old\" ] && (exec 3<>/dev/tcp/127.0.0.1/80 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3) 2>/dev/null; then break; fi; sleep 1; done; echo restarts=\$(systemctl show -p NRestarts --value shardgate)" \
    "systemd-analyze blame --no-pager | head -n 5" \
    > "$work/serial-session.txt" 2>&1 || true
  session() { grep -q "^SERIAL $1" "$work/serial-session.txt"; }
  check "a key on the serial console drops to a login prompt" session login-prompt
  check "root logs in on the serial console" session logged-in
  check "shardgate.service is active" session "0 active"
  check "the data partition (/dev/vda3, ext4) is mounted at /var/lib/shardgate" session "1 /dev/vda3 ext4"
  check "/etc/shardgate is the config folder on the data partition" session "2 /dev/vda3"
  grown() { # the data partition started at manifest data_mib; the overlay added 256 MiB
    local bytes
    bytes="$(awk '$1 == "SERIAL" && $2 == 3 && $3 == "vda3" { print $4 }' "$work/serial-session.txt")"
    echo "vda3: ${bytes:-?} bytes (built with $(manifest data_mib) MiB)"
    [ -n "$bytes" ] && [ "$bytes" -gt $(( ($(manifest data_mib) + 128) * 1048576 )) ]
  }
  check "the data partition grew into the larger disk (systemd-repart)" grown
  grep '^SERIAL' "$work/serial-session.txt" | grep -v 'status=' | sed 's/^SERIAL /      vm: /'
  if grep -q "^SERIAL 4 TlsCurrTxSw" "$work/serial-session.txt"; then
    echo "info: kernel TLS is available in the VM (/proc/net/tls_stat present; tls module loaded)"
  else
    echo "info: kernel TLS is NOT available in the VM (no /proc/net/tls_stat)"
  fi
  check "shardgate logged kTLS: available" session "5 .*kTLS: available"
  check "the live console runs on tty1 too (shardgate-console@tty1 active)" session "7 active"
  no_failed_units() { ! grep '^SERIAL 8 ' "$work/serial-session.txt" | grep -v '^SERIAL 8 status='; }
  check "no failed systemd units" no_failed_units
  restarted() { session "13 restarts=1" && session "13 HTTP/1.[01] 200"; }
  check "killed with SIGKILL, shardgate is restarted by systemd and serves again" restarted
  ktls_used() { grep -q '^SERIAL 6 "ktls_sessions":[1-9]' "$work/serial-session.txt"; }
  check "the HTTPS request was carried by kernel TLS (ktls_sessions > 0)" ktls_used

  echo "info: $(sed -n 's/^SERIAL 10 //p' "$work/serial-session.txt" | head -n 1)"
  echo "info: $(sed -n 's/^SERIAL 11 //p' "$work/serial-session.txt" | head -n 1 | grep . || echo 'no tuning line in the log')"
  sed -n 's/^SERIAL 14 \([^s]\)/info: slowest unit: \1/p' "$work/serial-session.txt"
  # A clean poweroff (the guest's systemd stops shardgate and halts; -no-reboot ends qemu).
  for _ in $(seq 1 60); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 1; done
  powered_off() { ! kill -0 "$qemu_pid" 2>/dev/null; }
  check "the appliance powered off cleanly within 60 s" powered_off
  check "shardgate dns add on the appliance succeeded" session "12 status=0"
  first_boot_ready=$ready
  stop_qemu

  # An upgrade: the image's ESP and root written over this disk's (image/upgrade.sh), the data
  # partition kept; the appliance must come back with the same certificate and dynamic record.
  if [ "${SHARDGATE_BOOT_UPGRADE:-1}" = 1 ]; then
    qemu-img convert -O raw "$work/disk.qcow2" "$work/disk.raw"
    rm -f "$work/disk.qcow2"
    check "image/upgrade.sh rewrites the ESP and root of the used disk" bash "$here/upgrade.sh" "$out/shardgate.raw" "$work/disk.raw"
    boot "$work/disk.raw" raw
    check "the upgraded appliance came up (HTTP route answered: ${ready:-never} s)" [ -n "$ready" ]
    if [ -n "$ready" ]; then
      kept_record() { dig +short +time=3 +tries=2 @127.0.0.1 -p "$dns_port" kept.appliance.test TXT | grep -q before-upgrade; }
      check "the dynamic DNS record added before the upgrade answers (data partition kept)" kept_record
      same_certificate() { local now; now="$(certificate)"; echo "before: $first_certificate"; echo "after:  $now"; [ -n "$now" ] && [ "$now" = "$first_certificate" ]; }
      check "the HTTPS route serves the same first-boot certificate (config partition kept)" same_certificate
    fi
    stop_qemu
  fi
  ready=$first_boot_ready
fi
stop_qemu

echo "timing: boot to ready ${ready:-never} s (first boot: TCG, 2 vCPUs), whole test $((SECONDS - test_started)) s"
if ((${#failures[@]})) || [ -z "$ready" ]; then
  echo "---- last 40 lines of the serial console ----"
  tr -d '\r' < "$serial_log" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' | tail -n 40
  echo "FAIL: appliance image boot test (${#failures[@]} check(s) failed; SHARDGATE_BOOT_KEEP=1 keeps $work)"
  exit 1
fi
echo "PASS: appliance image boot test"
