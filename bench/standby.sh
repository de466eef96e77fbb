#!/usr/bin/env bash
# Warm standby benchmark: one night's incremental `standby sync` vs a full restore of
# the same snapshot.
#
# Generates a deterministic raw disk (gen_disk.py), converts it to qcow2, backs it up
# and runs the first `standby sync` (a full write of base.qcow2). Then writes CHURN %
# of the disk as scattered fresh random writes with qemu-io, backs up again (changed
# block tracking), and from a cold page cache times (1) the incremental
# `standby sync` and (2) `lifeboat restore` of the same snapshot to a file. Prints
# both times and their ratio, and the bytes the sync wrote against the bytes the
# guest changed. Finally checks the new standby point reads exactly as the restore.
#
# Goals (issue 10): bytes written <= 2x the changed bytes; sync time <= 10 % of the
# full restore.
#
# Exit status: 0 done (goals met or not), 1 a command failed or the point differs
# from the restore, 2 usage/setup error. See bench/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

size=4GiB
seed=1
churn=1
write_size=64KiB
workdir=$here/work/standby
lifeboat=$root/target/release/lifeboat
fixed_chunks=""
fetches=32
keep=0

usage() {
    cat <<EOF
usage: $0 [options]
  --size SIZE         virtual disk size (default $size; e.g. 256MiB for a quick check)
  --seed N            generator and churn seed (default $seed)
  --churn PERCENT     share of the disk rewritten before the second backup (default $churn)
  --write-size SIZE   size (and alignment) of each churn write (default $write_size)
  --fixed-chunks SIZE lifeboat init --fixed-chunks SIZE (e.g. 64KiB); default: CDC
  --fetches N         standby sync and restore --fetches (default $fetches)
  --workdir DIR       images, repository, standby dir, logs (default bench/work/standby)
  --lifeboat PATH     lifeboat binary (default target/release/lifeboat)
  --keep              keep the image, repository and standby directory afterwards
EOF
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --size) size=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --churn) churn=$2; shift 2 ;;
        --write-size) write_size=$2; shift 2 ;;
        --fixed-chunks) fixed_chunks=$2; shift 2 ;;
        --fetches) fetches=$2; shift 2 ;;
        --workdir) workdir=$2; shift 2 ;;
        --lifeboat) lifeboat=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

die() { echo "error: $*" >&2; exit 2; }
[[ -x $lifeboat ]] || die "no lifeboat binary at $lifeboat (run: cargo build --release -p lifeboat)"
[[ -x /usr/bin/time ]] || die "GNU time is needed at /usr/bin/time (apt-get install time)"
command -v python3 >/dev/null || die "python3 is needed"
for t in qemu-img qemu-io qemu-nbd; do
    command -v $t >/dev/null || die "$t is needed (apt-get install qemu-utils)"
done
lifeboat=$(cd "$(dirname "$lifeboat")" && pwd)/$(basename "$lifeboat")

mkdir -p "$workdir"
workdir=$(cd "$workdir" && pwd)
logs=$workdir/logs
rm -rf "$logs"
mkdir -p "$logs"
base=$workdir/base-$size-seed$seed.qcow2
img=$workdir/disk.qcow2
repo=$workdir/repo
standby=$workdir/standby
restored=$workdir/restored.img

export LIFEBOAT_PASSWORD=lifeboat-bench-passphrase
export LIFEBOAT_CACHE_DIR=$workdir/lifeboat-cache
lb=("$lifeboat" -r "$repo")

# --- the disk: generated raw -> qcow2, cached per size/seed ---------------------------
if [[ ! -f $base ]]; then
    raw=$workdir/base-$size-seed$seed.img
    echo "generating $raw ..."
    python3 "$here/gen_disk.py" "$raw" --size "$size" --seed "$seed" >/dev/null
    qemu-img convert -f raw -O qcow2 "$raw" "$base.tmp"
    mv "$base.tmp" "$base"
    rm -f "$raw"
fi
rm -rf "$img" "$repo" "$standby" "$restored" "$LIFEBOAT_CACHE_DIR"
cp --sparse=always "$base" "$img"
disk_size=$(qemu-img info --output=json "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
tree=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -z $(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null) ]] || tree="$tree+dirty"
echo "machine: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores ($cpu); $(uname -sr);" \
    "fs $(df -T "$workdir" | awk 'NR==2 {print $2}'); $("$lifeboat" --version | head -1), tree $tree;" \
    "$(qemu-img --version | head -1 | awk '{print "qemu-img", $3}'); load $(cut -d' ' -f1-3 /proc/loadavg)"

cache_state=warm
drop_caches() {
    sync
    if (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then cache_state=cold; else cache_state=warm; fi
}

# timed NAME CMD...: runs CMD under GNU time, output in $logs/NAME.*; sets wall, rss (KiB).
timed() {
    local name=$1; shift
    local log=$logs/$name
    if ! /usr/bin/time -f '%e %M' -o "$log.time" "$@" >"$log.out" 2>"$log.err"; then
        echo "!!! FAILED: $name: $*" >&2
        grep -v '^Command exited' "$log.err" | tail -n 20 >&2
        exit 1
    fi
    read -r wall rss < <(tail -n 1 "$log.time")
}

# churn: CHURN % of the disk as WRITE_SIZE writes of fresh random bytes at distinct,
# seeded, aligned offsets; prints the number of writes and the bytes changed.
churn() {
    local dir=$workdir/churn
    rm -rf "$dir"; mkdir -p "$dir"
    python3 - "$dir" "$disk_size" "$churn" "$write_size" "$seed" <<'EOF' >"$dir/summary"
import random, sys
d, size, pct, wsize, seed = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
t = wsize.strip().lower().replace("ib", "").rstrip("b")
u = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
w = int(float(t[:-1]) * u[t[-1]]) if t[-1] in u else int(t)
slots = size // w
n = max(1, min(slots, round(size * pct / 100 / w)))
rng = random.Random(seed * 1_000_003 + 11)
with open(d + "/commands", "w") as f:
    for i, s in enumerate(rng.sample(range(slots), n)):
        src = "%s/w%05d" % (d, i)
        open(src, "wb").write(rng.randbytes(w))
        f.write("write -q -s %s %d %d\n" % (src, s * w, w))
print(n, n * w)
EOF
    local cmds=() line i
    while IFS= read -r line; do cmds+=(-c "$line"); done <"$dir/commands"
    for ((i = 0; i < ${#cmds[@]}; i += 1024)); do
        qemu-io -f qcow2 "${cmds[@]:i:1024}" "$img" >>"$logs/churn.log" 2>&1 \
            || { echo "!!! qemu-io failed (see $logs/churn.log)" >&2; exit 1; }
    done
    read -r churn_writes churn_bytes <"$dir/summary"
    rm -rf "$dir"
}

"${lb[@]}" --json init ${fixed_chunks:+--fixed-chunks "$fixed_chunks"} >"$logs/init.out"
chunker=${fixed_chunks:+fixed $fixed_chunks}
chunker=${chunker:-CDC (default, 1 MiB average)}
echo "disk: $(awk "BEGIN {printf \"%.2f GiB\", $disk_size/2^30}") qcow2; chunks: $chunker; fetches $fetches"

echo "first backup + first standby sync ..."
timed backup-1 "${lb[@]}" --json backup --vm bench --disk disk "$img"
drop_caches
timed sync-1 "${lb[@]}" --json standby sync --dir "$standby" --fetches "$fetches"
first_sync=$wall
echo "  first sync (full write of base.qcow2): ${first_sync} s"

churn
echo "churn: $churn_writes writes of $write_size, $(awk "BEGIN {printf \"%.1f MiB\", $churn_bytes/2^20}")"
timed backup-2 "${lb[@]}" --json backup --vm bench --disk disk "$img"
mode=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["mode"])' "$logs/backup-2.out")
echo "second backup: ${wall} s, mode $mode"

drop_caches
timed sync-2 "${lb[@]}" --json standby sync --dir "$standby" --fetches "$fetches"
sync_secs=$wall sync_rss=$rss
drop_caches
timed restore "${lb[@]}" --json restore latest --vm bench --disk disk "$restored" --fetches "$fetches"
restore_secs=$wall restore_rss=$rss

# The new point must read exactly as the restore.
point=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["disks"][0]["points"][-1]["path"])' "$logs/sync-2.out")
qemu-img convert -O raw "$point" "$workdir/point.raw"
if ! cmp --silent "$workdir/point.raw" "$restored"; then
    echo "!!! CORRECTNESS FAILURE: standby point $point differs from the restore" >&2
    exit 1
fi
rm -f "$workdir/point.raw"

python3 - "$logs/sync-2.out" "$churn_bytes" "$sync_secs" "$restore_secs" "$sync_rss" "$restore_rss" "$cache_state" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["disks"][0]
changed, sync_s, restore_s = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
MiB = 2**20
bytes_ratio = r["bytes_written"] / changed
time_ratio = sync_s / restore_s
print()
print("page cache before each timed run: %s" % sys.argv[7])
print("incremental standby sync: %.2f s (mode %s), wrote %.1f MiB + zeroed %.1f MiB, %d chunks fetched (%.1f MiB), peak RSS %.0f MiB"
      % (sync_s, r["mode"], r["bytes_written"] / MiB, r["bytes_zeroed"] / MiB, r["chunks_fetched"],
         r["bytes_fetched"] / MiB, int(sys.argv[5]) / 1024))
print("full restore of the same snapshot: %.2f s, peak RSS %.0f MiB" % (restore_s, int(sys.argv[6]) / 1024))
print("changed by the guest: %.1f MiB" % (changed / MiB))
print("bytes written / changed: %.2fx  (goal <= 2x: %s)" % (bytes_ratio, "met" if bytes_ratio <= 2 else "NOT met"))
print("sync time / restore time: %.1f %%  (goal <= 10 %%: %s)" % (100 * time_ratio, "met" if time_ratio <= 0.10 else "NOT met"))
print("standby point identical to the restore: yes")
EOF

if [[ $keep != 1 ]]; then rm -rf "$img" "$repo" "$standby" "$restored" "$LIFEBOAT_CACHE_DIR"; fi
