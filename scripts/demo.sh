#!/usr/bin/env bash
# The main job, end to end, on the embedded default (a local repository):
# generate a sample VM disk, back it up, change some blocks as a guest would,
# back up again, restore the latest snapshot, check it byte for byte, verify.
# Usage: scripts/demo.sh [WORKDIR]   (default ./demo-work; deleted and recreated)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(realpath -m "${1:-demo-work}")
size_gib=${DEMO_DISK_GIB:-2}

echo "== building lifeboat (release)"
cargo build --release --quiet
lifeboat=${CARGO_TARGET_DIR:-$PWD/target}/release/lifeboat

rm -rf "$work"; mkdir -p "$work"
export LIFEBOAT_REPO=$work/repo LIFEBOAT_CACHE_DIR=$work/cache LIFEBOAT_PASSWORD=demo-passphrase
disk=$work/web01-root.img

echo "== generating a ${size_gib} GiB sample VM disk (sparse: binaries, logs, zeroed blocks, holes)"
truncate -s "${size_gib}G" "$disk"
head -c 192M /dev/urandom | dd of="$disk" bs=1M seek=1 conv=notrunc status=none          # "binaries"
# (`yes` dies of SIGPIPE when head has enough, which pipefail would count as failure)
{ yes "Nov 22 01:00:00 web01 nginx[812]: 10.0.0.7 GET /index.html 200" || true; } | head -c 256M \
    | dd of="$disk" bs=1M seek=400 conv=notrunc status=none                               # logs
dd if=/dev/zero of="$disk" bs=1M seek=700 count=128 conv=notrunc status=none              # zeroed blocks
head -c 64M /dev/urandom | dd of="$disk" bs=1M seek=1500 conv=notrunc status=none         # more data

# With QEMU's tools the disk becomes a qcow2 image, as on a KVM host: the first backup
# starts a dirty bitmap and the second reads only the blocks the guest changed.
if command -v qemu-img >/dev/null && command -v qemu-io >/dev/null && command -v qemu-nbd >/dev/null; then
    qemu-img convert -O qcow2 "$disk" "$work/web01-root.qcow2" && rm "$disk"
    disk=$work/web01-root.qcow2
    guest_write() { qemu-io -f qcow2 -c "write -P $((RANDOM % 256)) $(($1 * 64))k 64k" "$disk" >/dev/null; }
else
    echo "(qemu-utils not installed: using a raw image, which has no change tracking)"
    guest_write() { head -c 64K /dev/urandom | dd of="$disk" bs=64K seek="$1" conv=notrunc status=none; }
fi

"$lifeboat" init
echo "== night 1: full backup"
"$lifeboat" backup --vm web01 --disk root "$disk"

echo "== the guest writes 32 scattered 64 KiB blocks (about 0.1% of the disk)"
for i in $(seq 1 32); do guest_write $((i * 311)); done
echo "== night 2: backup again (only changed chunks are read and stored)"
"$lifeboat" backup --vm web01 --disk root "$disk"

"$lifeboat" snapshots
echo "== restoring the latest snapshot"
"$lifeboat" restore latest --vm web01 --disk root "$work/restored.img"
if [[ $disk == *.qcow2 ]]; then
    qemu-img convert -O raw "$disk" "$work/source.raw"
    cmp "$work/source.raw" "$work/restored.img" && echo "restored disk is byte-identical to what the guest sees"
else
    cmp "$disk" "$work/restored.img" && echo "restored disk is byte-identical to the source"
fi
echo "== verifying every chunk in the repository"
"$lifeboat" verify --read-data

disk_alloc=$(du -B1 "$disk" | cut -f1)   # qcow2: the file size is the allocated data
repo_bytes=$(du -sb "$work/repo" | cut -f1)
echo "== summary"
echo "disk: $((size_gib * 1024)) MiB apparent, $((disk_alloc >> 20)) MiB allocated"
echo "repository after two nightly backups: $((repo_bytes >> 20)) MiB ($(awk "BEGIN{printf \"%.1f\", $disk_alloc*2/$repo_bytes}")x smaller than two full copies of the allocated data)"
