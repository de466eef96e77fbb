#!/usr/bin/env bash
# Builds a small BIOS-bootable raw disk image for the VM launcher's tests, without
# root: a FAT "superfloppy" (no partition table) made bootable with syslinux, holding
# the host's Debian kernel and an initramfs with static busybox. The guest prints a
# marker on the serial console (ttyS0), loads e1000, takes 10.0.2.15/24 (QEMU
# user-net's default) and serves HTTP on a TCP port, then stays up. If the VM has a
# guest-agent channel (org.qemu.guest_agent.0), a shell loop answers guest-sync on it.
# It powers off on the ACPI power button (QMP system_powerdown), like a real guest
# asked to shut down. `GET /cgi-bin/note?WORD` appends WORD to a small notes area
# on its virtio disk (/dev/vda, the 1 MiB after the FAT volume) and returns the notes:
# what the guest wrote survives backup, failover and failback or it does not.
#
#   make-test-guest.sh OUT.img [--marker TEXT] [--port N] [--broken]
#
# --broken: the kernel is told to run an init that does not exist and has no root=,
# so it prints "Kernel panic - not syncing" on ttyS0; panic=0 makes it halt there
# instead of rebooting.
#
# Needs: linux-image-amd64, busybox-static, syslinux, syslinux-common, mtools,
# dosfstools, cpio (scripts/test.sh installs them). The initramfs is cached under
# ${TMPDIR:-/tmp}, keyed by its inputs, so building several guests stays fast.
set -euo pipefail

usage() { echo "usage: $0 OUT.img [--marker TEXT] [--port N] [--broken]" >&2; exit 2; }
[ $# -ge 1 ] || usage
out=$1; shift
marker=LIFEBOAT-GUEST-UP
port=80
broken=0
while [ $# -gt 0 ]; do
    case $1 in
        --marker) [ $# -ge 2 ] || usage; marker=$2; shift 2 ;;
        --port) [ $# -ge 2 ] || usage; port=$2; shift 2 ;;
        --broken) broken=1; shift ;;
        *) usage ;;
    esac
done
case $port in ''|*[!0-9]*) echo "--port must be a number, got '$port'" >&2; exit 2 ;; esac
case $marker in *[\'\"\\$\`]*|'') echo "--marker must be non-empty without quotes, \\, \$ or \`" >&2; exit 2 ;; esac

need() {
    command -v "$1" >/dev/null || { echo "$1 not found: install $2 (scripts/test.sh does)" >&2; exit 1; }
}
need mkfs.fat dosfstools
need mcopy mtools
need syslinux syslinux
need cpio cpio
need gzip gzip
kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$kernel" ] && [ -r "$kernel" ] || { echo "no readable /boot/vmlinuz-*: install linux-image-amd64" >&2; exit 1; }
kver=${kernel#/boot/vmlinuz-}
# busybox-static's binary; a dynamic busybox would not run in the initramfs.
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "no /bin/busybox: install busybox-static" >&2; exit 1; }
if command -v file >/dev/null && ! file -L "$busybox" | grep -q 'statically linked'; then
    echo "$busybox is not statically linked: install busybox-static" >&2; exit 1
fi
e1000=/lib/modules/$kver/kernel/drivers/net/ethernet/intel/e1000/e1000.ko
[ -r "$e1000" ] || { echo "no $e1000: install linux-image-amd64 (the kernel's modules)" >&2; exit 1; }
# virtio-serial (the stand-in guest agent) and virtio-blk (the notes), in load order;
# the ACPI power button and evdev (shutdown on system_powerdown).
virtio_mods=""
for m in virtio/virtio_ring virtio/virtio virtio/virtio_pci_legacy_dev virtio/virtio_pci_modern_dev \
    virtio/virtio_pci char/virtio_console block/virtio_blk acpi/button input/evdev; do
    f=/lib/modules/$kver/kernel/drivers/$m.ko
    [ -r "$f" ] || { echo "no $f: install linux-image-amd64 (the kernel's modules)" >&2; exit 1; }
    virtio_mods="$virtio_mods $f"
done

# The init script; the marker and port are baked in, so they are part of the cache key.
init_script() {
    cat <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo '$marker' > /dev/console
insmod /lib/e1000.ko
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2
mkdir -p /www
echo '$marker' > /www/index.html
httpd -p $port -h /www
echo "serving tcp port $port" > /dev/console
# A stand-in for qemu-ga: answers guest-sync on the agent channel, if there is one.
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_console \
    virtio_blk button evdev; do
    insmod /lib/\$m.ko
done
# Power off when the power button is pressed: any event from its input device.
for ev in /sys/class/input/event*; do
    [ "\$(cat \$ev/device/name 2>/dev/null)" = "Power Button" ] || continue
    (dd if=/dev/\${ev##*/sys/class/} bs=24 count=1 >/dev/null 2>&1; echo "powering off" > /dev/console; sync; poweroff -f) &
done
mkdir -p /www/cgi-bin
cat > /www/cgi-bin/note <<'NOTE'
#!/bin/sh
# The notes area: 4 KiB at 64 MiB on the disk, NUL-padded.
echo "Content-Type: text/plain"
echo ""
notes=\$(dd if=/dev/vda bs=4096 skip=16384 count=1 2>/dev/null | tr -d '\\000')
if [ -n "\$QUERY_STRING" ]; then
    notes="\$notes\$QUERY_STRING;"
    printf '%s' "\$notes" | dd of=/dev/vda bs=4096 seek=16384 count=1 conv=sync,notrunc,fsync 2>/dev/null
fi
printf 'notes:%s\n' "\$notes"
NOTE
chmod 755 /www/cgi-bin/note
(
# Ports show up once the host's control messages arrive: wait a little for them.
for i in \$(seq 20); do
    ls /sys/class/virtio-ports/vport* >/dev/null 2>&1 && break
    sleep 0.25
done
for port in /sys/class/virtio-ports/*; do
    [ "\$(cat \$port/name 2>/dev/null)" = org.qemu.guest_agent.0 ] || continue
    dev=/dev/\${port##*/}
    # A read returns end-of-file while no host client is connected: start over.
    while true; do
        while read -r line; do
            id=\$(echo "\$line" | sed -n 's/.*"id": *\\([0-9]*\\).*/\\1/p')
            [ -n "\$id" ] && echo "{\\"return\\": \$id}" >&0
        done <>\$dev
        sleep 0.2
    done &
    echo "guest agent on \$dev" > /dev/console
done
) &
while true; do sleep 3600; done
EOF
}

cache_root=${TMPDIR:-/tmp}/lifeboat-test-guest-cache
# shellcheck disable=SC2086
key=$( { init_script; sha256sum "$kernel" "$busybox" "$e1000" $virtio_mods; } | sha256sum | cut -c1-16)
cache=$cache_root/$key
if [ ! -s "$cache/initrd.gz" ]; then
    mkdir -p "$cache_root"
    work=$(mktemp -d "$cache_root/build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    root=$work/root
    mkdir -p "$root"/{bin,dev,proc,sys,lib,tmp}
    cp "$busybox" "$root/bin/busybox"
    cp "$e1000" "$root/lib/e1000.ko"
    # shellcheck disable=SC2086
    cp $virtio_mods "$root/lib/"
    init_script > "$root/init"
    chmod 755 "$root/init"
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$work/initrd.gz"
    cp "$kernel" "$work/vmlinuz"
    # Rename into place: concurrent builders of the same key never see half a cache.
    mkdir -p "$work/out" && mv "$work/initrd.gz" "$work/vmlinuz" "$work/out/"
    mv -T "$work/out" "$cache" 2>/dev/null || true
fi

# no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can
# time out and panic ("IO-APIC + timer doesn't work!"); a VM has no broken timer to
# detect.
if [ "$broken" = 1 ]; then
    append="console=ttyS0 rdinit=/nonexistent panic=0 no_timer_check"
else
    append="console=ttyS0 panic=0 no_timer_check"
fi

tmp_img=$out.tmp.$$
rm -f "$tmp_img"
# 64 MiB (size in KiB), one FAT volume from sector 0: the BIOS boots its boot sector.
mkfs.fat -C -n LBGUEST "$tmp_img" 65536 >/dev/null
cfg=$(mktemp)
cat > "$cfg" <<EOF
SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 1
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND $append
EOF
mcopy -i "$tmp_img" "$cache/vmlinuz" ::vmlinuz
mcopy -i "$tmp_img" "$cache/initrd.gz" ::initrd.gz
mcopy -i "$tmp_img" "$cfg" ::syslinux.cfg
rm -f "$cfg"
syslinux --install "$tmp_img"
# The notes area after the FAT volume (the guest writes it through /dev/vda).
truncate -s +1M "$tmp_img"
mv "$tmp_img" "$out"
