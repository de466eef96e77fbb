#!/usr/bin/env bash
# Installs what the tests need on a fresh machine, then runs every check CI runs:
# formatting, clippy with warnings as errors, the whole test suite (unit tests plus
# end-to-end tests against a real S3-compatible server, moto_server, on 127.0.0.1), and
# a short run of every fuzz target (installs cargo-fuzz if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

# QEMU for the changed-block-tracking and live-VM tests. Debian's qemu-system-x86 is
# older than a backported qemu-utils and replaces it: install both at the same version.
if ! command -v qemu-system-x86_64 >/dev/null || ! command -v qemu-nbd >/dev/null || ! command -v qemu-io >/dev/null; then
    echo "== installing qemu-utils and qemu-system-x86"
    if [ "$(id -u)" != 0 ]; then
        echo "need root to apt-get install qemu-utils qemu-system-x86 (same version); install them and re-run" >&2
        exit 1
    fi
    apt-get update -qq
    version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-downgrades \
        "qemu-utils=$version" "qemu-system-x86=$version" >/dev/null
fi

# The VM launcher's tests boot guests that scripts/make-test-guest.sh builds from the
# host's kernel, static busybox and syslinux on a FAT image.
guest_pkgs="linux-image-amd64 busybox-static syslinux syslinux-common mtools dosfstools cpio"
if ! ls /boot/vmlinuz-* >/dev/null 2>&1 || ! [ -d /usr/lib/syslinux ] || ! command -v syslinux >/dev/null \
    || ! command -v mcopy >/dev/null || ! command -v mkfs.fat >/dev/null || ! command -v cpio >/dev/null \
    || ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
    echo "== installing $guest_pkgs"
    if [ "$(id -u)" != 0 ]; then
        echo "need root to apt-get install $guest_pkgs; install them and re-run" >&2
        exit 1
    fi
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $guest_pkgs >/dev/null
fi

# openssl makes the private CA and certificate of the https:// endpoint test.
if ! command -v openssl >/dev/null; then
    echo "== installing openssl"
    if [ "$(id -u)" != 0 ]; then
        echo "need root to apt-get install openssl; install it and re-run" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi

if ! python3 -c 'import moto.server, flask' 2>/dev/null; then
    echo "== installing moto[server] (the S3-compatible server the tests run against)"
    python3 -m pip install --quiet 'moto[server]>=5,<6'
fi
command -v pyenv >/dev/null && pyenv rehash 2>/dev/null || true

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace
# Builds every fuzz target (a separate crate, fuzz/) and runs each briefly: a decoder
# change that panics on its seeds or their first mutations fails CI. The long runs
# are `scripts/fuzz.sh 600` by hand; figures in docs/RELIABILITY.md.
echo "== fuzz smoke run"
./scripts/fuzz.sh 10
