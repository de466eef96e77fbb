#!/usr/bin/env bash
# Replication benchmark: `lifeboat replicate` vs `restic copy` on the same VM disk.
#
# Both tools back up one generated raw disk (gen_disk.py) into a primary repository and
# copy it to a second repository (Lifeboat: a replica made with `init --replica-of`;
# restic: a repository made with `init --copy-chunker-params`). Then CHURN % of the
# disk is rewritten in scattered WRITE_SIZE writes of fresh random data, both back up
# again, and the timed step is the incremental copy of that night. Repositories are
# local directories on one filesystem, so "bytes sent over the link" is the growth of
# the destination directory and "PUT requests" the new files in it. Prints wall time,
# bytes sent, PUTs, peak RSS per tool and the ratios against the issue's goals, then
# restores the last night from Lifeboat's replica alone and compares it with the disk.
# See bench/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

size=4GiB
seed=1
churn=1
write_size=64KiB
workdir=$here/work/replicate
lifeboat=$root/target/release/lifeboat
restic=$(command -v restic || echo /usr/bin/restic)
init_args=()

usage() {
    cat <<EOF
usage: $0 [options]
  --size SIZE          disk size (default $size)
  --seed N             generator and churn seed (default $seed)
  --churn PERCENT      share of the disk rewritten before the second backup (default $churn)
  --write-size SIZE    size (and alignment) of each churn write (default $write_size)
  --fixed-chunks SIZE  make Lifeboat's primary with init --fixed-chunks SIZE
  --workdir DIR        images, repositories, logs (default bench/work/replicate)
  --lifeboat PATH      lifeboat binary (default target/release/lifeboat)
  --restic PATH        restic binary (default: restic on PATH)
EOF
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --size) size=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --churn) churn=$2; shift 2 ;;
        --write-size) write_size=$2; shift 2 ;;
        --fixed-chunks) init_args=(--fixed-chunks "$2"); shift 2 ;;
        --workdir) workdir=$2; shift 2 ;;
        --lifeboat) lifeboat=$2; shift 2 ;;
        --restic) restic=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

die() { echo "error: $*" >&2; exit 2; }
[[ -x $lifeboat ]] || die "no lifeboat binary at $lifeboat (run: cargo build --release -p lifeboat)"
[[ -x $restic ]] || die "no restic binary at $restic"
[[ -x /usr/bin/time ]] || die "GNU time is needed at /usr/bin/time (apt-get install time)"
lifeboat=$(cd "$(dirname "$lifeboat")" && pwd)/$(basename "$lifeboat")

mkdir -p "$workdir"
workdir=$(cd "$workdir" && pwd)
logs=$workdir/logs
rm -rf "$logs" "$workdir"/lb-* "$workdir"/rs-* "$workdir"/cache-* "$workdir/restored.img"
mkdir -p "$logs"
img=$workdir/disk.img

export LIFEBOAT_PASSWORD=lifeboat-replica-passphrase
export LIFEBOAT_FROM_PASSWORD=lifeboat-primary-passphrase
export RESTIC_PASSWORD=restic-bench-passphrase
export RESTIC_FROM_PASSWORD=restic-bench-passphrase
export LIFEBOAT_CACHE_DIR=$workdir/cache-lifeboat
rs_cache=(--cache-dir "$workdir/cache-restic")

# timed NAME CMD...: runs CMD under GNU time; sets wall (s) and rss (KiB).
timed() {
    local name=$1; shift
    if ! /usr/bin/time -f '%e %M' -o "$logs/$name.time" "$@" >"$logs/$name.out" 2>"$logs/$name.err"; then
        echo "!!! FAILED: $name: $*" >&2; tail -n 20 "$logs/$name.err" >&2; exit 1
    fi
    read -r wall rss < <(tail -n 1 "$logs/$name.time")
}
bytes() { du -sb "$1" | cut -f1; }
files() { find "$1" -type f | wc -l; }

echo "generating a $size disk (seed $seed) ..."
python3 "$here/gen_disk.py" "$img" --size "$size" --seed "$seed" >/dev/null
disk_size=$(stat -c %s "$img")
echo "machine: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg);" \
     "$("$lifeboat" --version) (tree $(git -C "$root" rev-parse --short HEAD)); restic $("$restic" version | awk '{print $2}')"

# --- night 1: backups, replica setup, first copy ----------------------------------------
LIFEBOAT_PASSWORD=$LIFEBOAT_FROM_PASSWORD "$lifeboat" -q -r "$workdir/lb-primary" init "${init_args[@]}"
"$lifeboat" -q -r "$workdir/lb-replica" init --replica-of "$workdir/lb-primary"
"$restic" -q -r "$workdir/rs-primary" "${rs_cache[@]}" init >/dev/null
"$restic" -q -r "$workdir/rs-copy" "${rs_cache[@]}" init --from-repo "$workdir/rs-primary" --copy-chunker-params >/dev/null

lb_backup() {
    LIFEBOAT_PASSWORD=$LIFEBOAT_FROM_PASSWORD "$lifeboat" -q -r "$workdir/lb-primary" \
        backup --vm bench --disk disk "$img" >/dev/null
}
rs_backup() { "$restic" -q -r "$workdir/rs-primary" "${rs_cache[@]}" backup "$img" >/dev/null; }

echo "night 1: backups ..."
lb_backup; rs_backup
echo "night 1: first copies ..."
timed lb-first "$lifeboat" --json -r "$workdir/lb-replica" replicate --from "$workdir/lb-primary"
lb_first=$wall; lb_first_rss=$rss
timed rs-first "$restic" -r "$workdir/rs-copy" "${rs_cache[@]}" copy --from-repo "$workdir/rs-primary"
rs_first=$wall; rs_first_rss=$rss

# --- night 2: scattered churn, backups, the timed incremental copy -----------------------
python3 - "$img" "$disk_size" "$churn" "$write_size" "$seed" <<'EOF'
import os, random, sys
path, size, churn, ws, seed = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
units = {"K": 1 << 10, "M": 1 << 20}
write = int(ws.rstrip("iB").rstrip("KM")) * units.get(ws.rstrip("iB")[-1], 1)
rng = random.Random(seed * 7919 + 1)
slots = rng.sample(range(size // write), int(size * churn / 100) // write)
with open(path, "r+b") as f:
    for slot in slots:
        f.seek(slot * write)
        f.write(rng.randbytes(write))
print(f"churn: {len(slots)} writes of {write} bytes = {len(slots) * write} bytes")
EOF
lb_before=$(bytes "$workdir/lb-primary"); rs_before=$(bytes "$workdir/rs-primary")
echo "night 2: backups ..."
lb_backup; rs_backup
lb_new=$(( $(bytes "$workdir/lb-primary") - lb_before ))
rs_new=$(( $(bytes "$workdir/rs-primary") - rs_before ))
lb_dst_bytes=$(bytes "$workdir/lb-replica"); lb_dst_files=$(files "$workdir/lb-replica")
rs_dst_bytes=$(bytes "$workdir/rs-copy"); rs_dst_files=$(files "$workdir/rs-copy")
echo "night 2: incremental copies ..."
timed lb-incr "$lifeboat" --json -r "$workdir/lb-replica" replicate --from "$workdir/lb-primary"
lb_incr=$wall; lb_incr_rss=$rss
timed rs-incr "$restic" -r "$workdir/rs-copy" "${rs_cache[@]}" copy --from-repo "$workdir/rs-primary"
rs_incr=$wall; rs_incr_rss=$rss
lb_sent=$(( $(bytes "$workdir/lb-replica") - lb_dst_bytes )); lb_puts=$(( $(files "$workdir/lb-replica") - lb_dst_files ))
rs_sent=$(( $(bytes "$workdir/rs-copy") - rs_dst_bytes )); rs_puts=$(( $(files "$workdir/rs-copy") - rs_dst_files ))
timed lb-again "$lifeboat" --json -r "$workdir/lb-replica" replicate --from "$workdir/lb-primary"
lb_again=$wall

echo "checking: restore of the last night from the replica alone ..."
"$lifeboat" -q -r "$workdir/lb-replica" restore latest "$workdir/restored.img"
cmp "$workdir/restored.img" "$img" && identical=yes || identical=NO
rm -f "$workdir/restored.img"

python3 - <<EOF
lb_first, rs_first, lb_incr, rs_incr = $lb_first, $rs_first, $lb_incr, $rs_incr
lb_sent, lb_new, rs_sent, rs_new = $lb_sent, $lb_new, $rs_sent, $rs_new
M = 2**20
print()
print(f"{'':34}{'lifeboat':>14}{'restic':>14}")
print(f"{'first copy, s':34}{lb_first:>14.2f}{rs_first:>14.2f}   restic/lifeboat {rs_first/max(lb_first,0.01):.1f}x")
print(f"{'first copy, peak RSS MiB':34}{$lb_first_rss/1024:>14.0f}{$rs_first_rss/1024:>14.0f}")
print(f"{'night 2: new data stored, MiB':34}{lb_new/M:>14.1f}{rs_new/M:>14.1f}")
print(f"{'incremental copy, s':34}{lb_incr:>14.2f}{rs_incr:>14.2f}   restic/lifeboat {rs_incr/max(lb_incr,0.01):.1f}x (goal >= 5x)")
print(f"{'incremental: bytes sent, MiB':34}{lb_sent/M:>14.1f}{rs_sent/M:>14.1f}   lifeboat sent/new {lb_sent/max(lb_new,1):.3f} (goal <= 1.05)")
print(f"{'incremental: PUTs (new files)':34}{$lb_puts:>14}{$rs_puts:>14}")
print(f"{'incremental: peak RSS MiB':34}{$lb_incr_rss/1024:>14.0f}{$rs_incr_rss/1024:>14.0f}")
print(f"{'lifeboat run with nothing new, s':34}{$lb_again:>14.2f}")
print(f"restore from the replica alone identical: $identical")
EOF
[[ $identical == yes ]]
