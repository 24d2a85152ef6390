#!/usr/bin/env bash
# Builds the shardgate appliance disk image: a minimal Debian 12 (bookworm) system from Debian
# packages only (debootstrap --variant=minbase, no recommends), Debian's kernel, the shardgate
# release binary, its systemd unit and config, the tuning profile, and the live console on tty1
# and ttyS0 in place of a login prompt. Details: image/README.md.
#
# Usage: bash image/build.sh        (as root: debootstrap and chroot need it)
# Outputs, in $SHARDGATE_IMAGE_OUT (default target/image/):
#   shardgate.raw       the disk, for `dd` onto a disk or USB stick ("flash")
#   shardgate.qcow2     the same disk for a hypervisor ("boot")
#   shardgate.raw.zst   the raw disk compressed (zstd -12) for downloads
#   manifest            what went in (key=value: features, ports, partition ids, sizes)
#   root-password       the root password for the console's login prompt (0600)
#   admin-password      the admin API's `admin` password, when the image has [admin] (0600)
# Environment:
#   SHARDGATE_BIN=PATH            use this binary (default: cargo build --release -p shardgate-appliance)
#   SHARDGATE_IMAGE_OUT=DIR       where the outputs go
#   SHARDGATE_IMAGE_MIRROR=URL    the Debian archive (default http://deb.debian.org/debian)
#   SHARDGATE_IMAGE_EMAIL=auto|on|off   the [email] SMTP server (config/email.toml); auto: when
#                                 the binary's check-config accepts it
#   SHARDGATE_IMAGE_ADMIN=auto|on|off   the [admin] API (config/admin.toml), the same way
#   SHARDGATE_IMAGE_ROOT_PASSWORD=PW    the root password (default: a random one, written out)
#   SHARDGATE_IMAGE_ADMIN_PASSWORD=PW   the admin API user `admin` (default: random, written out)
#   SHARDGATE_IMAGE_DATA_MIB=N    the data partition's size (default 64; it grows to fill a
#                                 larger disk at first boot)
#   SHARDGATE_IMAGE_CACHE=DIR     keeps the debootstrapped base system (tar) between builds
#                                 (default $SHARDGATE_IMAGE_OUT/cache); remove it to refresh
#
# How the disk is made without loop devices or mounts: the root and data file systems are
# filled from folders (`mkfs.ext4 -d`), the EFI system partition with mtools (`mcopy`), and the
# GPT is written onto the disk file with sfdisk; the partitions are then copied in with dd.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
started=$SECONDS

out="${SHARDGATE_IMAGE_OUT:-$repo/target/image}"
mirror="${SHARDGATE_IMAGE_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
email_mode="${SHARDGATE_IMAGE_EMAIL:-auto}"
admin_mode="${SHARDGATE_IMAGE_ADMIN:-auto}"
data_mib="${SHARDGATE_IMAGE_DATA_MIB:-64}"
cache="${SHARDGATE_IMAGE_CACHE:-$out/cache}"

die() { echo "image/build.sh: $*" >&2; exit 1; }
step() { printf '[%4ds] %s\n' "$((SECONDS - started))" "$*"; }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and chroot need it)"
for mode in "$email_mode" "$admin_mode"; do
  case "$mode" in auto|on|off) ;; *) die "SHARDGATE_IMAGE_EMAIL/ADMIN must be auto, on or off (got '$mode')" ;; esac
done
[[ "$data_mib" =~ ^[0-9]+$ ]] && [ "$data_mib" -ge 16 ] || die "SHARDGATE_IMAGE_DATA_MIB must be a number >= 16"

step "host tools"
bash "$repo/tests/ensure-packages.sh" --no-install-recommends \
  debootstrap e2fsprogs dosfstools mtools fdisk qemu-utils systemd-boot-efi zstd openssl

bin="${SHARDGATE_BIN:-}"
if [ -z "$bin" ]; then
  step "cargo build --release -p shardgate-appliance"
  target_dir="${CARGO_TARGET_DIR:-$repo/target}"
  (cd "$repo" && CARGO_TARGET_DIR="$target_dir" cargo build --release --quiet -p shardgate-appliance)
  bin="$target_dir/release/shardgate"
fi
[ -x "$bin" ] || die "no shardgate binary at $bin"
bin="$(readlink -f "$bin")"

mkdir -p "$out" "$cache"
work="$(mktemp -d "${TMPDIR:-/var/tmp}/shardgate-image.XXXXXX")"
root="$work/rootfs"
# Unmounts whatever the chroot steps mounted (deepest first), then removes the work folder.
cleanup() {
  local status=$? mountpoint
  if [ -d "$root" ]; then
    for mountpoint in $(awk -v r="$root" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
      umount -l "$mountpoint" 2>/dev/null || true
    done
  fi
  if [ "${SHARDGATE_IMAGE_KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the base system (cached) -------------------------------------------------------------
# systemd as init with networkd and resolved (stub listener off: shardgate serves port 53),
# Debian's kernel with initramfs-tools, CA roots for ACME, iproute2 for the operator.
packages=(systemd systemd-sysv systemd-resolved udev dbus kmod linux-image-amd64 initramfs-tools
  ca-certificates iproute2 procps less)
key="$(printf '%s\n' "$suite" "$mirror" "${packages[@]}" | sha256sum | cut -c1-16)"
base="$cache/base-$suite-$key.tar"
mkdir -p "$root"
if [ -f "$base" ]; then
  step "base system from the cache ($base)"
  tar -C "$root" --numeric-owner --xattrs --xattrs-include='*' -xpf "$base"
else
  step "debootstrap $suite (minbase, no recommends) from $mirror"
  debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" \
    "$suite" "$root" "$mirror" > "$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
  tar -C "$root" --numeric-owner --xattrs --xattrs-include='*' -cpf "$base.partial" .
  mv "$base.partial" "$base"
fi
kernel="$(basename "$(ls -d "$root"/usr/lib/modules/* | sort -V | tail -n 1)")"
[ -r "$root/boot/vmlinuz-$kernel" ] || die "no kernel image in the base system"
step "kernel $kernel"

# ---- what makes it shardgate --------------------------------------------------------------
step "install shardgate, units, config"
cp -a --no-preserve=ownership "$here/rootfs/." "$root/"
install -D -m 755 "$bin" "$root/usr/bin/shardgate"
strip "$root/usr/bin/shardgate" 2>/dev/null || true
install -D -m 644 "$here/README.md" "$root/usr/share/shardgate/README.md"
mkdir -p "$root/var/lib/shardgate" "$root/boot/efi"

# The config: the base file plus the fragments of features the binary has.
mkdir -p "$root/etc/shardgate"
config="$root/etc/shardgate/config.toml"
cp "$here/config/config.toml" "$config"
# check-config reads the certificate: a throw-away one here, removed below (each appliance
# makes its own on first boot: shardgate-self-signed.service).
chroot "$root" /usr/lib/shardgate/self-signed-certificate
checks_in_chroot() { chroot "$root" /usr/bin/shardgate check-config "$1"; }
# The admin API's user `admin`: its password hash goes into the [admin] fragment.
admin_password="${SHARDGATE_IMAGE_ADMIN_PASSWORD:-$(head -c 12 /dev/urandom | base64 | tr -d '/+=')}"
admin_hash="$(openssl passwd -6 -stdin <<< "$admin_password")"
declare -A feature=()
for name in email admin; do
  mode="${name}_mode"; mode="${!mode}"
  feature[$name]=off
  [ "$mode" != off ] || continue
  { cat "$config"; echo; sed "s|@ADMIN_PASSWORD_HASH@|$admin_hash|" "$here/config/$name.toml"; } > "$root/etc/shardgate/candidate.toml"
  if problems="$(checks_in_chroot /etc/shardgate/candidate.toml 2>&1)"; then
    mv "$root/etc/shardgate/candidate.toml" "$config"
    feature[$name]=on
    step "[$name]: included (config/$name.toml)"
  else
    rm -f "$root/etc/shardgate/candidate.toml"
    [ "$mode" = auto ] || die "[$name] was asked for (on) but check-config refuses config/$name.toml: $problems"
    step "[$name]: left out (this binary's check-config refuses config/$name.toml: $(echo "$problems" | head -n 2 | tr '\n' ' '))"
  fi
done
checks_in_chroot /etc/shardgate/config.toml > /dev/null \
  || die "the image config does not pass check-config: $(checks_in_chroot /etc/shardgate/config.toml 2>&1 || true)"
rm -rf "$root/etc/shardgate/tls"
console_mode=interim
if chroot "$root" /usr/bin/shardgate console --help > /dev/null 2>&1 && [ "${feature[admin]}" = on ]; then
  console_mode=tui
  # The console logs in to the admin API with this (root only, kept with the config).
  install -m 600 /dev/null "$root/etc/shardgate/console.env"
  printf 'SHARDGATE_ADMIN_PASSWORD=%s\n' "$admin_password" > "$root/etc/shardgate/console.env"
fi
if [ "${feature[admin]}" = on ]; then
  install -m 600 /dev/null "$out/admin-password"; printf '%s\n' "$admin_password" > "$out/admin-password"
fi
step "console: $console_mode"

# System settings.
echo shardgate > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tshardgate\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
echo 'LANG=C.UTF-8' > "$root/etc/locale.conf"
echo 'KEYMAP=us' > "$root/etc/vconsole.conf"
ln -sf /usr/share/zoneinfo/Etc/UTC "$root/etc/localtime"
: > "$root/etc/machine-id"   # generated at first boot
rm -f "$root/var/lib/dbus/machine-id"
ln -sf /run/systemd/resolve/resolv.conf "$root/etc/resolv.conf"
password="${SHARDGATE_IMAGE_ROOT_PASSWORD:-$(head -c 12 /dev/urandom | base64 | tr -d '/+=')}"
echo "root:$password" | chroot "$root" chpasswd
install -m 600 /dev/null "$out/root-password"; printf '%s\n' "$password" > "$out/root-password"

# Units: shardgate, networkd/resolved, the console on tty1 and ttyS0 instead of a getty;
# masked: apt timers, e2scrub (no LVM here), systemd-firstboot prompts (an appliance).
systemctl --root="$root" enable shardgate.service shardgate-self-signed.service systemd-networkd.service systemd-resolved.service \
  shardgate-console@tty1.service shardgate-console@ttyS0.service > /dev/null 2>&1
systemctl --root="$root" mask getty@tty1.service serial-getty@ttyS0.service \
  apt-daily.timer apt-daily-upgrade.timer systemd-networkd-wait-online.service systemd-firstboot.service \
  e2scrub_all.timer e2scrub_reap.service > /dev/null 2>&1

# ---- smaller ------------------------------------------------------------------------------
step "trim (docs, man pages, locales, apt lists, unneeded kernel modules)"
find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/{man,info,lintian,linda}/* "$root/var/cache/debconf"/*-old
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log
# Kernel modules an edge box does not use: sound, video capture, GPUs (the console uses the
# firmware framebuffer), wireless, bluetooth, staging, industrial I/O, ISDN, InfiniBand.
moddir="$root/usr/lib/modules/$kernel/kernel"
rm -rf "$moddir"/sound "$moddir"/drivers/{media,staging,iio,comedi,isdn,infiniband,bluetooth} \
  "$moddir"/drivers/gpu/drm/{amd,nouveau,i915,radeon} "$moddir"/drivers/net/wireless \
  "$moddir"/net/{wireless,mac80211,bluetooth}
# The rest are compressed (xz, CRC32 as the kernel's own decompressor wants; kmod loads them).
find "$moddir" -name '*.ko' -print0 | xargs -0 -r -n 64 -P "$(nproc)" xz -q --check=crc32 -6
chroot "$root" depmod "$kernel"
# The initramfs with the remaining storage and NIC drivers (MODULES=most: any disk it is
# flashed to), without the GPU drivers just removed.
chroot "$root" update-initramfs -u -k "$kernel" > "$work/initramfs.log" 2>&1 \
  || { cat "$work/initramfs.log" >&2; die "update-initramfs failed"; }

# ---- partitions ---------------------------------------------------------------------------
# GPT: 1 EFI system partition (systemd-boot, kernel, initrd), 2 root (ext4), 3 data (ext4,
# /var/lib/shardgate, holds config/ bind-mounted at /etc/shardgate; kept across upgrades).
esp_uuid="$(cat /proc/sys/kernel/random/uuid)"; root_uuid="$(cat /proc/sys/kernel/random/uuid)"
data_uuid="$(cat /proc/sys/kernel/random/uuid)"; data_fs_uuid="$(cat /proc/sys/kernel/random/uuid)"
root_fs_uuid="$(cat /proc/sys/kernel/random/uuid)"

step "EFI system partition"
esp="$work/esp"
mkdir -p "$esp"/EFI/BOOT "$esp"/EFI/systemd "$esp"/loader/entries "$esp"/shardgate
cp "$root/boot/vmlinuz-$kernel" "$esp/shardgate/vmlinuz"
cp "$root/boot/initrd.img-$kernel" "$esp/shardgate/initrd.img"
cp /usr/lib/systemd/boot/efi/systemd-bootx64.efi "$esp/EFI/BOOT/BOOTX64.EFI"
cp /usr/lib/systemd/boot/efi/systemd-bootx64.efi "$esp/EFI/systemd/systemd-bootx64.efi"
printf 'default shardgate.conf\ntimeout 0\nconsole-mode keep\n' > "$esp/loader/loader.conf"
cmdline="root=PARTUUID=$root_uuid rw console=tty1 console=ttyS0,115200n8 quiet loglevel=3"
printf 'title shardgate appliance (Debian %s, kernel %s)\nlinux /shardgate/vmlinuz\ninitrd /shardgate/initrd.img\noptions %s\n' \
  "$suite" "$kernel" "$cmdline" > "$esp/loader/entries/shardgate.conf"
# Room for a second kernel and initrd (an upgrade writes the new pair before the switch).
esp_mib=$(( ($(du -sm "$esp" | cut -f1) * 2 + 16 + 31) / 32 * 32 ))
[ "$esp_mib" -ge 64 ] || esp_mib=64
rm -f "$work/esp.img"
mkfs.vfat -F 32 -s 1 -n SHARDGATE -i "$(echo "$esp_uuid" | tr -d - | cut -c1-8)" -C "$work/esp.img" $((esp_mib * 1024)) > /dev/null
mcopy -s -i "$work/esp.img" "$esp"/EFI "$esp"/loader "$esp"/shardgate ::/
# The kernel and initrd live on the ESP only.
rm -f "$root"/boot/vmlinuz-* "$root"/boot/initrd.img-* "$root"/boot/System.map-* "$root"/vmlinuz* "$root"/initrd.img*

step "data partition"
data="$work/data"
mkdir -p "$data/config"
mv "$root/etc/shardgate"/* "$data/config/"
cp -a "$data/config/." "$root/etc/shardgate/"   # the same defaults under the bind mount
cat > "$root/etc/fstab" <<EOF
# shardgate appliance (image/build.sh)
# By label: image/upgrade.sh rewrites the ESP and root but keeps this disk's data partition.
PARTUUID=$root_uuid / ext4 rw,errors=remount-ro,x-systemd.growfs 0 1
PARTUUID=$esp_uuid /boot/efi vfat umask=0077,noauto,nofail 0 2
LABEL=shardgate-data /var/lib/shardgate ext4 rw,nofail,x-systemd.growfs 0 2
# The config lives on the data partition, so an image upgrade keeps it.
/var/lib/shardgate/config /etc/shardgate none bind,nofail,x-systemd.requires-mounts-for=/var/lib/shardgate 0 0
EOF
mkfs.ext4 -q -L shardgate-data -U "$data_fs_uuid" -d "$data" "$work/data.img" "${data_mib}M" > /dev/null

step "root partition"
root_mib=$(( ($(du -sm "$root" | cut -f1) * 5 / 4 + 64 + 31) / 32 * 32 ))
mkfs.ext4 -q -L shardgate-root -U "$root_fs_uuid" -d "$root" "$work/root.img" "${root_mib}M" > /dev/null

# ---- the disk -----------------------------------------------------------------------------
step "GPT disk"
raw="$out/shardgate.raw"
start=2048   # sectors of 512 bytes: 1 MiB alignment
esp_start=$start
root_start=$((esp_start + esp_mib * 2048))
data_start=$((root_start + root_mib * 2048))
total_sectors=$((data_start + data_mib * 2048 + 2048))   # + room for the backup GPT
rm -f "$raw"
truncate -s $((total_sectors * 512)) "$raw"
sfdisk --quiet "$raw" <<EOF
label: gpt
start=$esp_start, size=$((esp_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$esp_uuid, name="esp"
start=$root_start, size=$((root_mib * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$root_uuid, name="shardgate-root"
start=$data_start, size=$((data_mib * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$data_uuid, name="shardgate-data"
EOF
dd if="$work/esp.img" of="$raw" bs=1M seek=$((esp_start / 2048)) conv=notrunc,sparse status=none
dd if="$work/root.img" of="$raw" bs=1M seek=$((root_start / 2048)) conv=notrunc,sparse status=none
dd if="$work/data.img" of="$raw" bs=1M seek=$((data_start / 2048)) conv=notrunc,sparse status=none

step "qcow2 and zstd"
rm -f "$out/shardgate.qcow2" "$out/shardgate.raw.zst"
qemu-img convert -f raw -O qcow2 -c "$raw" "$out/shardgate.qcow2"
zstd -q -T0 -12 "$raw" -o "$out/shardgate.raw.zst"

mib() { echo $(( ($(stat -c %s "$1") + 1048575) / 1048576 )); }
allocated_mib() { echo $(( ($(du -k "$1" | cut -f1) + 1023) / 1024 )); }
cat > "$out/manifest" <<EOF
suite=$suite
kernel=$kernel
shardgate=$("$bin" --version 2>/dev/null | tr ' ' '_')
email=${feature[email]}
admin=${feature[admin]}
console=$console_mode
http_port=80
https_port=443
dns_port=53
radius_auth_port=1812
radius_acct_port=1813
radius_secret=shardgate-change-me
smtp_port=25
admin_port=9090
admin_scheme=https
esp_mib=$esp_mib
root_mib=$root_mib
data_mib=$data_mib
root_partuuid=$root_uuid
esp_partuuid=$esp_uuid
raw_mib=$(mib "$raw")
raw_allocated_mib=$(allocated_mib "$raw")
qcow2_mib=$(mib "$out/shardgate.qcow2")
zst_mib=$(mib "$out/shardgate.raw.zst")
rootfs_used_mib=$(du -sm "$root" | cut -f1)
build_seconds=$((SECONDS - started))
EOF
step "done: $raw ($(mib "$raw") MiB), shardgate.qcow2 ($(mib "$out/shardgate.qcow2") MiB), shardgate.raw.zst ($(mib "$out/shardgate.raw.zst") MiB)"
echo "manifest: $out/manifest; root password: $out/root-password"
