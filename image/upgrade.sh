#!/usr/bin/env bash
# Upgrades a shardgate appliance disk in place from a newer image (image/build.sh's
# shardgate.raw): rewrites the EFI system partition (boot loader, kernel, initrd) and the root
# partition (the system and shardgate), and keeps the data partition (config, certificates,
# storage, dynamic DNS records) as it is.
#
# Usage: bash image/upgrade.sh NEW_IMAGE TARGET
#   NEW_IMAGE  shardgate.raw of the new version (a .raw.zst: decompress it first)
#   TARGET     the appliance's disk (/dev/sdX, with the appliance powered off and the disk
#              attached elsewhere) or a raw disk file
# Both must have the image's GPT layout (partitions named esp, shardgate-root, shardgate-data);
# the new ESP and root must fit in the target's (the root file system then grows to fill its
# partition at boot). The partitions' unique ids are copied too, so the new boot entry finds
# its root. Nothing is written until every check has passed.
set -euo pipefail
die() { echo "image/upgrade.sh: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: image/upgrade.sh NEW_IMAGE TARGET"
new=$1 target=$2
[ -r "$new" ] || die "cannot read $new"
[ -w "$target" ] || die "cannot write $target"
[ "$(readlink -f "$new")" != "$(readlink -f "$target")" ] || die "NEW_IMAGE and TARGET are the same file"
command -v sfdisk > /dev/null || die "needs sfdisk (Debian package fdisk)"

# One partition of a disk by GPT name: "NUMBER START SIZE UUID" (sectors of 512 bytes).
partition() {
  local disk=$1 name=$2 line
  line="$(sfdisk -d "$disk" 2>/dev/null | grep "name=\"$name\"" | head -n 1)" || true
  [ -n "$line" ] || die "$disk has no partition named $name (not a shardgate image?)"
  local number start size uuid
  number="$(sed -n 's/^[^ ]*[^0-9]\([0-9]\+\) :.*/\1/p' <<< "$line")"
  start="$(sed -n 's/.*start= *\([0-9]*\).*/\1/p' <<< "$line")"
  size="$(sed -n 's/.*size= *\([0-9]*\).*/\1/p' <<< "$line")"
  uuid="$(sed -n 's/.*uuid=\([0-9A-Fa-f-]*\).*/\1/p' <<< "$line")"
  echo "$number $start $size $uuid"
}

# The target must not be in use.
if [ -b "$target" ] && lsblk -nro MOUNTPOINT "$target" | grep -q .; then
  die "$target has mounted partitions: upgrade it from another system, with the appliance off"
fi

declare -A copies=()
for name in esp shardgate-root; do
  read -r _ new_start new_size new_uuid <<< "$(partition "$new" "$name")"
  read -r t_number t_start t_size _ <<< "$(partition "$target" "$name")"
  [ "$new_size" -le "$t_size" ] \
    || die "the new $name partition ($((new_size / 2048)) MiB) does not fit the target's ($((t_size / 2048)) MiB): reflash instead (the data partition can be copied with dd)"
  copies[$name]="$new_start $new_size $t_number $t_start $new_uuid"
done
partition "$target" shardgate-data > /dev/null   # present, and left alone

for name in esp shardgate-root; do
  read -r new_start new_size t_number t_start new_uuid <<< "${copies[$name]}"
  echo "writing $name: $((new_size / 2048)) MiB into partition $t_number of $target"
  dd if="$new" of="$target" bs=4M iflag=skip_bytes,count_bytes oflag=seek_bytes conv=notrunc,fsync status=none \
    skip=$((new_start * 512)) count=$((new_size * 512)) seek=$((t_start * 512))
  sfdisk --quiet --part-uuid "$target" "$t_number" "$new_uuid"
done
sync
echo "upgraded $target: new ESP and root; the data partition (config, certificates, storage) is kept"
