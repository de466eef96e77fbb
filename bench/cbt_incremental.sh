#!/usr/bin/env bash
# CBT incremental benchmark: Lifeboat's dirty-bitmap incremental backup vs restic's
# second backup of the same qcow2 image, in one run.
#
# Generates a deterministic raw disk (gen_disk.py), converts it to qcow2, backs it up
# once with each tool, then (per run) writes fresh scattered churn into the image
# with qemu-io and times each tool's next backup from a cold page cache. Prints wall
# time, speedup, what Lifeboat read (bytes and % of the virtual disk), bytes dirty,
# bytes each repository grew by, peak RSS, and whether the issue's goals are met.
# After every run Lifeboat's latest snapshot is restored and compared byte for byte
# with `qemu-img convert -O raw` of the image.
#
# Exit status: 0 done (goals met or not), 1 a tool failed or a restore differs,
# 2 usage/setup error, 3 a Lifeboat backup after the first was NOT incremental.
# See bench/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

size=4GiB
seed=1
churn=1
write_size=64KiB
runs=1
workdir=$here/work/cbt
lifeboat=$root/target/release/lifeboat
restic=$(command -v restic || echo /usr/bin/restic)
chunk_avg=""
fixed_chunks=""
keep=0

usage() {
    cat <<EOF
usage: $0 [options]
  --size SIZE        virtual disk size (default $size; e.g. 64MiB for a quick check)
  --seed N           generator and churn seed (default $seed)
  --churn PERCENT    share of the virtual disk rewritten before each second backup
                     (default $churn)
  --write-size SIZE  size of each churn write, also its offset alignment (default
                     $write_size, the qcow2 bitmap granularity)
  --runs N           churn + second backup of each tool N times; medians (default $runs)
  --workdir DIR      images, repositories, logs (default bench/work/cbt, gitignored)
  --lifeboat PATH    lifeboat binary (default target/release/lifeboat)
  --restic PATH      restic binary (default: restic on PATH)
  --chunk-avg SIZE   Lifeboat repository's average chunk size (lifeboat init
                     --chunk-avg; default: Lifeboat's default)
  --fixed-chunks SIZE
                     Lifeboat repository cut into fixed, aligned chunks of SIZE
                     (lifeboat init --fixed-chunks; e.g. 64KiB, the bitmap granularity)
  --keep             keep the working image and both repositories afterwards
EOF
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --size) size=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --churn) churn=$2; shift 2 ;;
        --write-size) write_size=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --workdir) workdir=$2; shift 2 ;;
        --lifeboat) lifeboat=$2; shift 2 ;;
        --restic) restic=$2; shift 2 ;;
        --chunk-avg) chunk_avg=$2; shift 2 ;;
        --fixed-chunks) fixed_chunks=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

die() { echo "error: $*" >&2; exit 2; }
[[ -x $lifeboat ]] || die "no lifeboat binary at $lifeboat (run: cargo build --release -p lifeboat)"
[[ -x $restic ]] || die "no restic binary at $restic"
[[ -x /usr/bin/time ]] || die "GNU time is needed at /usr/bin/time (apt-get install time)"
command -v python3 >/dev/null || die "python3 is needed"
for t in qemu-img qemu-io qemu-nbd; do
    command -v $t >/dev/null || die "$t is needed (apt-get install qemu-utils)"
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
lifeboat=$(cd "$(dirname "$lifeboat")" && pwd)/$(basename "$lifeboat")

mkdir -p "$workdir"
workdir=$(cd "$workdir" && pwd)
logs=$workdir/logs
rm -rf "$logs"
mkdir -p "$logs"
base=$workdir/base-$size-seed$seed.qcow2
img=$workdir/disk.qcow2
lb_repo=$workdir/lifeboat-repo
rs_repo=$workdir/restic-repo
results=$workdir/results.tsv
: >"$results"

export LIFEBOAT_PASSWORD=lifeboat-bench-passphrase
export RESTIC_PASSWORD=restic-bench-passphrase
export LIFEBOAT_CACHE_DIR=$workdir/lifeboat-cache
restic_cache=$workdir/restic-cache
rs=("$restic" -r "$rs_repo" --cache-dir "$restic_cache")

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$results"; }

# --- the disk: generated raw -> qcow2, cached per size/seed ---------------------------
if [[ ! -f $base || ! -f $base.json ]]; then
    raw=$workdir/base-$size-seed$seed.img
    echo "generating $raw ..."
    python3 "$here/gen_disk.py" "$raw" --size "$size" --seed "$seed" --json >"$base.json.tmp"
    echo "converting to qcow2 ..."
    qemu-img convert -f raw -O qcow2 "$raw" "$base.tmp"
    mv "$base.tmp" "$base"
    mv "$base.json.tmp" "$base.json"
    rm -f "$raw"
fi
# A fresh working copy: no bitmaps, no earlier churn.
rm -rf "$img" "$lb_repo" "$rs_repo" "$LIFEBOAT_CACHE_DIR" "$restic_cache" "$workdir/churn"
cp --sparse=always "$base" "$img"
disk_size=$(qemu-img info --output=json "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
echo "disk: $img, qcow2 file $(du -b "$img" | awk '{printf "%.2f GiB", $1/2^30}') of $(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); b=d['bytes']; G=2**30
print('%.2f GiB virtual: random %.2f, text %.2f, binary %.2f, metadata %.2f, written zeros %.2f, holes %.2f GiB (generated raw; zeros and holes are unallocated in the qcow2)' % (d['size']/G, b['random']/G, b['text']/G, b['binary']/G, b['metadata']/G, b['zeros']/G, b['hole']/G))" "$base.json")"

# --- machine summary ---------------------------------------------------------------------
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
lb_version=$("$lifeboat" --version 2>/dev/null | head -1)
tree=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    tree="$tree+dirty"
fi
machine="$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores ($cpu), $mem RAM, $(uname -sr);\
 fs $(df -T "$workdir" | awk 'NR==2 {print $2}'); $lb_version (binary $lifeboat of\
 $(date -u -r "$lifeboat" '+%Y-%m-%d %H:%M UTC'); tree $tree); restic $("$restic" version | awk '{print $2}');\
 $(qemu-img --version | head -1 | awk '{print "qemu-img", $3}'); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "machine: $machine"

# --- helpers -------------------------------------------------------------------------------
cache_state=warm
drop_caches() {
    sync
    if (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
        cache_state=cold
    else
        cache_state=warm   # not root: both tools start with whatever is cached
    fi
}

# timed NAME CMD...: runs CMD under GNU time, output in $logs/NAME.*; sets wall, rss
# (KiB), inblocks (512-byte block-device reads of the command and the children it
# waited for, e.g. qemu-nbd), cpu (user+sys seconds).
timed() {
    local name=$1; shift
    local log=$logs/$name
    if ! /usr/bin/time -f '%e %M %I %U %S' -o "$log.time" "$@" >"$log.out" 2>"$log.err"; then
        echo >&2
        echo "!!! FAILED: $name: $*" >&2
        grep -v '^Command exited' "$log.err" | tail -n 20 >&2
        echo "!!! (logs: $log.*)" >&2
        exit 1
    fi
    local user sys
    read -r wall rss inblocks user sys < <(tail -n 1 "$log.time")
    cpu=$(awk "BEGIN {printf \"%.2f\", $user + $sys}")
}

repo_bytes() { du -sb "$1" | cut -f1; }
count_objects() { find "$1" -type f ! -name '.tmp-*' | wc -l; }
lifeboat_bitmaps() {
    qemu-img info -U --output=json "$img" | python3 -c 'import json,sys
d=json.load(sys.stdin).get("format-specific",{}).get("data",{})
print(" ".join(b["name"] for b in d.get("bitmaps",[]) if b["name"].startswith("lifeboat-")))'
}

# backup_lifeboat RUN LABEL: one timed Lifeboat backup of the image, cold cache.
backup_lifeboat() {
    local run=$1 label=$2 before objs_before
    before=$(repo_bytes "$lb_repo"); objs_before=$(count_objects "$lb_repo")
    drop_caches
    record lifeboat "$run" load "$(cut -d' ' -f1 /proc/loadavg)"
    record lifeboat "$run" cache "$cache_state"
    timed "lifeboat-$label" "$lifeboat" -r "$lb_repo" --json backup --vm bench --disk disk "$img"
    record lifeboat "$run" secs "$wall"
    record lifeboat "$run" rss_kib "$rss"
    record lifeboat "$run" inblock_bytes "$((inblocks * 512))"
    record lifeboat "$run" cpu_secs "$cpu"
    record lifeboat "$run" repo_growth "$(($(repo_bytes "$lb_repo") - before))"
    record lifeboat "$run" objects "$(($(count_objects "$lb_repo") - objs_before))"
    record lifeboat "$run" report "$(tr -d '\n' <"$logs/lifeboat-$label.out")"
    local bitmaps; bitmaps=$(lifeboat_bitmaps)
    record lifeboat "$run" bitmaps "$bitmaps"
    local mode reason
    read -r mode reason < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))
print(r.get("mode"), r.get("mode_reason"))' "$logs/lifeboat-$label.out")
    record lifeboat "$run" mode "$mode"
    echo "  lifeboat: ${wall} s, mode $mode ($reason)"
    if [[ $run == 0 && $mode != scan ]]; then
        echo "!!! warning: the first Lifeboat backup reported mode '$mode', expected 'scan'" >&2
    fi
    if [[ $run != 0 && $mode != incremental ]]; then
        echo >&2
        echo "!!! NOT INCREMENTAL: Lifeboat backup #$((run + 1)) of the image ran in mode '$mode': $reason" >&2
        echo "!!! its numbers are a full read, not changed-block tracking" >&2
        echo >&2
    fi
    if [[ $(wc -w <<<"$bitmaps") != 1 ]]; then
        echo "!!! warning: expected one lifeboat-* bitmap in the image after the backup, found: '${bitmaps}'" >&2
    fi
}

# backup_restic RUN LABEL: one timed restic backup of the .qcow2 file, cold cache.
backup_restic() {
    local run=$1 label=$2 before objs_before
    before=$(repo_bytes "$rs_repo"); objs_before=$(count_objects "$rs_repo")
    drop_caches
    record restic "$run" load "$(cut -d' ' -f1 /proc/loadavg)"
    record restic "$run" cache "$cache_state"
    timed "restic-$label" "${rs[@]}" backup --json --host bench "$img"
    record restic "$run" secs "$wall"
    record restic "$run" rss_kib "$rss"
    record restic "$run" inblock_bytes "$((inblocks * 512))"
    record restic "$run" cpu_secs "$cpu"
    record restic "$run" repo_growth "$(($(repo_bytes "$rs_repo") - before))"
    record restic "$run" objects "$(($(count_objects "$rs_repo") - objs_before))"
    record restic "$run" report "$(grep '"message_type":"summary"' "$logs/restic-$label.out" | tail -1)"
    echo "  restic: ${wall} s"
}

# churn RUN: writes CHURN % of the virtual disk as WRITE_SIZE writes of fresh random
# bytes at distinct, seeded, aligned offsets scattered uniformly over the whole disk
# (so some land in previously unallocated areas); records where they landed.
churn() {
    local run=$1 dir=$workdir/churn
    rm -rf "$dir"; mkdir -p "$dir"
    qemu-img map -U --output=json "$img" >"$dir/map.json"
    python3 - "$dir" "$disk_size" "$churn" "$write_size" "$seed" "$run" <<'EOF' >"$dir/summary"
import bisect, json, random, sys
d, size, pct, wsize, seed, run = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
def parse_size(s):
    t = s.strip().lower().replace("ib", "").rstrip("b")
    u = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(float(t[:-1]) * u[t[-1]]) if t and t[-1] in u else int(t)
w = parse_size(wsize)
slots = size // w
n = max(1, min(slots, round(size * pct / 100 / w)))
rng = random.Random(seed * 1_000_003 + run * 7919 + 11)
offsets = [s * w for s in rng.sample(range(slots), n)]
# Allocation before the churn: qemu-img map "data" extents.
data = [(e["start"], e["start"] + e["length"]) for e in json.load(open(d + "/map.json")) if e.get("data")]
starts = [s for s, _ in data]
def allocated(off):  # any byte of [off, off+w) allocated before?
    i = bisect.bisect_right(starts, off + w - 1) - 1
    return i >= 0 and data[i][1] > off
unalloc = sum(1 for o in offsets if not allocated(o))
with open(d + "/commands", "w") as f:
    for i, off in enumerate(offsets):
        src = "%s/w%05d" % (d, i)
        with open(src, "wb") as g:
            g.write(rng.randbytes(w))
        f.write("write -q -s %s %d %d\n" % (src, off, w))
print(n, n * w, unalloc)
EOF
    local nwrites bytes unalloc
    read -r nwrites bytes unalloc <"$dir/summary"
    local cmds=() line t0 t1
    while IFS= read -r line; do cmds+=(-c "$line"); done <"$dir/commands"
    t0=$(date +%s.%N)
    # Batches keep the command line short; each qemu-io opens and flushes the image once.
    local i
    for ((i = 0; i < ${#cmds[@]}; i += 1024)); do
        qemu-io -f qcow2 "${cmds[@]:i:1024}" "$img" >>"$logs/churn-$run.log" 2>&1 \
            || { echo "!!! qemu-io failed (see $logs/churn-$run.log)" >&2; exit 1; }
    done
    sync "$img"
    t1=$(date +%s.%N)
    rm -rf "$dir"
    record churn "$run" writes "$nwrites"
    record churn "$run" bytes "$bytes"
    record churn "$run" unallocated_writes "$unalloc"
    echo "  churn: $nwrites writes of $write_size ($(awk "BEGIN {printf \"%.1f MiB, %.2f %%\", $bytes/2^20, 100*$bytes/$disk_size}") of the disk; $unalloc into previously unallocated areas) in $(awk "BEGIN {printf \"%.1f\", $t1 - $t0}") s"
}

# verify RUN: Lifeboat's latest snapshot must restore to exactly the image's contents.
verify() {
    local run=$1 ref=$workdir/reference.raw target=$workdir/restored.img
    rm -f "$ref" "$target" "$target.lifeboat-partial"
    qemu-img convert -U -f qcow2 -O raw "$img" "$ref"
    drop_caches
    timed "lifeboat-restore-$run" "$lifeboat" -r "$lb_repo" --json restore latest --vm bench --disk disk "$target"
    record lifeboat "$run" restore_secs "$wall"
    if ! cmp --silent "$ref" "$target"; then
        echo >&2
        echo "!!! CORRECTNESS FAILURE: Lifeboat's latest snapshot (after run $run) differs from the image" >&2
        cmp "$ref" "$target" 2>&1 | head -3 >&2 || true
        echo "!!! kept for inspection: $ref $target $img" >&2
        exit 1
    fi
    echo "  verify: Lifeboat's latest snapshot restores to the image's exact contents (restore ${wall} s)"
    rm -f "$ref" "$target"
}

# --- first backups -------------------------------------------------------------------------
"$lifeboat" -r "$lb_repo" --json init ${chunk_avg:+--chunk-avg "$chunk_avg"} \
    ${fixed_chunks:+--fixed-chunks "$fixed_chunks"} >"$logs/lifeboat-init.out"
lb_chunker=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); c=j["chunker"]
if j.get("fixed_chunk_size"): print("fixed %d KiB" % (j["fixed_chunk_size"] >> 10))
else: print("min %d / avg %d / max %d KiB" % (c["min"] >> 10, c["avg"] >> 10, c["max"] >> 10))' "$logs/lifeboat-init.out")
echo "lifeboat chunker: $lb_chunker"
machine="$machine; lifeboat chunks $lb_chunker"
"${rs[@]}" init >"$logs/restic-init.out"
echo "first backups (run 0) ..."
backup_lifeboat 0 first
backup_restic 0 first

# --- churn + second backups ------------------------------------------------------------------
for ((run = 1; run <= runs; run++)); do
    echo "run $run/$runs:"
    churn "$run"
    # Alternate the order so neither tool always goes first.
    if ((run % 2 == 1)); then order=(lifeboat restic); else order=(restic lifeboat); fi
    for tool in "${order[@]}"; do "backup_$tool" "$run" "second-$run"; done
    verify "$run"
done

# --- the table -------------------------------------------------------------------------------
status=0
python3 - "$results" "$disk_size" "$machine" "$img" "$runs" "$churn" "$write_size" <<'EOF' || status=$?
import json, statistics, sys
from collections import defaultdict

path, disk_size, machine, img, runs, churn, wsize = sys.argv[1:8]
disk_size, runs = int(disk_size), int(runs)
v = defaultdict(lambda: defaultdict(dict))  # v[tool][run][key]
for line in open(path):
    tool, run, key, value = line.rstrip("\n").split("\t", 3)
    v[tool][int(run)][key] = value
GiB, MiB = 2**30, 2**20
R = range(1, runs + 1)
lbr = {r: json.loads(v["lifeboat"][r]["report"]) for r in [0, *R]}
rsr = {}
for r in [0, *R]:
    try:
        rsr[r] = json.loads(v["restic"][r]["report"])
    except Exception:
        rsr[r] = {}

def f(tool, r, key):
    return float(v[tool][r][key])
def med(xs):
    return statistics.median(xs)

lb_secs = [f("lifeboat", r, "secs") for r in R]
rs_secs = [f("restic", r, "secs") for r in R]
speedups = [b / a for a, b in zip(lb_secs, rs_secs)]
read = [lbr[r]["bytes_read"] for r in R]
dirty = [lbr[r].get("bytes_dirty") or 0 for r in R]
modes = [lbr[r]["mode"] for r in R]
incremental = all(m == "incremental" for m in modes)
speedup = med(rs_secs) / med(lb_secs)
read_pct = 100 * med(read) / disk_size

print()
print("machine: " + machine)
print("disk: %s, %.2f GiB virtual; churn %s %% per run in %s writes; %d run(s)%s; page cache before each backup: %s"
      % (img, disk_size / GiB, churn, wsize, runs, ", medians" if runs > 1 else "",
         ",".join(sorted({v[t][r]["cache"] for t in ("lifeboat", "restic") for r in [0, *R]}))))
print("load average (1 min) at the timed second backups: lifeboat %s; restic %s"
      % (" ".join(v["lifeboat"][r]["load"] for r in R), " ".join(v["restic"][r]["load"] for r in R)))
print("churn: %s writes per run, %s of them into previously unallocated areas"
      % (" / ".join(v["churn"][r]["writes"] for r in R), " / ".join(v["churn"][r]["unallocated_writes"] for r in R)))
print()
if not incremental:
    print("!!! NOT INCREMENTAL: Lifeboat's second backups ran in mode(s) %s: %s"
          % (", ".join(modes), "; ".join(sorted({lbr[r]["mode_reason"] for r in R}))))
    print("!!! the goals below are judged on full reads, not on changed-block tracking")
    print()

rows = []
def row(label, lb, rs, note="", goal="", met=None):
    rows.append((label, lb, rs, note, goal, met))
row("first backup, wall s", "%.2f" % f("lifeboat", 0, "secs"), "%.2f" % f("restic", 0, "secs"),
    "%s; %.2fx" % (lbr[0]["mode"], f("restic", 0, "secs") / f("lifeboat", 0, "secs")))
row("second backup, wall s", "%.2f" % med(lb_secs), "%.2f" % med(rs_secs),
    "mode %s" % "/".join(sorted(set(modes))))
row("speedup (restic / Lifeboat)", "%.1fx" % speedup, "", "", ">= 20x", speedup >= 20)
row("bytes read, MiB", "%.1f" % (med(read) / MiB),
    "%.1f" % (med([rsr[r].get("total_bytes_processed", 0) for r in R]) / MiB),
    "LB: report bytes_read; restic: bytes processed")
row("  % of the virtual disk", "%.2f %%" % read_pct,
    "%.1f %%" % (100 * med([rsr[r].get("total_bytes_processed", 0) for r in R]) / disk_size),
    "", "<= 2 %", read_pct <= 2)
row("bytes dirty (CBT), MiB", "%.1f" % (med(dirty) / MiB), "",
    "%.2f %% of disk; read/dirty %s" % (100 * med(dirty) / disk_size,
                                         "%.1fx" % (med(read) / med(dirty)) if med(dirty) else "n/a"))
row("block-device reads (GNU time %I), MiB", "%.1f" % (med([f("lifeboat", r, "inblock_bytes") for r in R]) / MiB),
    "%.1f" % (med([f("restic", r, "inblock_bytes") for r in R]) / MiB), "incl. binary, catalog, qcow2 metadata")
row("repository growth (du -sb), MiB", "%.1f" % (med([f("lifeboat", r, "repo_growth") for r in R]) / MiB),
    "%.1f" % (med([f("restic", r, "repo_growth") for r in R]) / MiB))
row("objects written", "%d" % med([f("lifeboat", r, "objects") for r in R]),
    "%d" % med([f("restic", r, "objects") for r in R]))
row("peak RSS, MiB", "%.0f" % (med([f("lifeboat", r, "rss_kib") for r in R]) / 1024),
    "%.0f" % (med([f("restic", r, "rss_kib") for r in R]) / 1024))
row("CPU seconds (user+sys)", "%.2f" % med([f("lifeboat", r, "cpu_secs") for r in R]),
    "%.2f" % med([f("restic", r, "cpu_secs") for r in R]))
w = (38, 12, 12, 9)
print("%-*s %*s %*s  %-*s %-3s  %s" % (w[0], "second backup (after churn)", w[1], "Lifeboat", w[2], "restic", w[3], "goal", "met", ""))
for label, a, b, note, goal, met in rows:
    mark = "" if met is None else ("yes" if met else "NO")
    print("%-*s %*s %*s  %-*s %-3s  %s" % (w[0], label, w[1], a, w[2], b, w[3], goal, mark, note))
print()
if runs > 1:
    print("per run: Lifeboat s %s; restic s %s; speedup %s; LB read %% %s"
          % (" ".join("%.2f" % x for x in lb_secs), " ".join("%.2f" % x for x in rs_secs),
             " ".join("%.1f" % x for x in speedups), " ".join("%.2f" % (100 * x / disk_size) for x in read)))
last = lbr[runs]
print("lifeboat report (run %d): mode %s (%s); dirty %.1f MiB, read %.1f MiB, chunks %d (%d new), new %.1f MiB, stored %.1f MiB, packs %d, %.2f s"
      % (runs, last["mode"], last["mode_reason"], (last.get("bytes_dirty") or 0) / MiB, last["bytes_read"] / MiB,
         last["chunks"], last["new_chunks"], last["new_bytes"] / MiB, last["stored_bytes"] / MiB, last["packs"],
         last["duration_secs"]))
s = rsr[runs]
if s:
    print("restic summary (run %d): processed %.1f MiB, data_blobs %d, data_added %.1f MiB, total_duration %.2f s"
          % (runs, s.get("total_bytes_processed", 0) / MiB, s.get("data_blobs", 0), s.get("data_added", 0) / MiB,
             s.get("total_duration", 0)))
print("Lifeboat restore after each run identical to the image: yes (%s s)"
      % " ".join(v["lifeboat"][r]["restore_secs"] for r in R))
goals = [r for r in rows if r[5] is not None]
print("goals met: %d of %d%s" % (sum(1 for r in goals if r[5]), len(goals),
      "" if all(r[5] for r in goals) else " (missed: " + "; ".join(r[0].strip() for r in goals if not r[5]) + ")"))
json.dump({"machine": machine, "disk_size": disk_size, "runs": runs, "churn_percent": float(churn),
           "write_size": wsize, "lifeboat_secs": lb_secs, "restic_secs": rs_secs, "speedups": speedups,
           "lifeboat_reports": lbr, "restic_summaries": rsr, "modes": modes},
          open(path.replace(".tsv", ".json"), "w"), indent=1)
sys.exit(0 if incremental else 3)
EOF

if [[ $keep != 1 ]]; then rm -rf "$img" "$lb_repo" "$rs_repo" "$LIFEBOAT_CACHE_DIR" "$restic_cache"; fi
exit "$status"
