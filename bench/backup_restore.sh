#!/usr/bin/env bash
# Backup/restore benchmark: Lifeboat vs restic on the same generated VM disk.
#
# Backs up and restores one deterministic sparse raw disk image (mixed random,
# compressible and zero data; see gen_disk.py) with both tools, local-directory
# repositories on the same filesystem, and prints for both: backup and restore
# throughput, peak RSS, stored bytes, PUT requests (objects written) and the ratios,
# plus whether each goal of the issue is met. Restored disks are compared byte for
# byte with the original; the script exits nonzero only if a restore is wrong (or a
# tool fails outright). See bench/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

size=3GiB
seed=1
runs=1
workdir=$here/work
lifeboat=$root/target/release/lifeboat
restic=$(command -v restic || echo /usr/bin/restic)
keep=0
cold_restore=0
profile=""

usage() {
    cat <<EOF
usage: $0 [options]
  --size SIZE        disk size (default $size; e.g. 2GiB, 4GiB, 512MiB)
  --seed N           generator seed (default $seed)
  --runs N           repeat each measurement N times, report the median (default $runs)
  --workdir DIR      where images, repositories and restores go (default bench/work)
  --lifeboat PATH    lifeboat binary (default target/release/lifeboat)
  --restic PATH      restic binary (default: restic on PATH)
  --cold-restore     delete both tools' local caches between backup and restore
  --perf DIR         also record 'perf record -g' profiles of Lifeboat's backup and
                     restore into DIR (slower; timings of that run are not comparable);
                     give it the symbolised build: cargo build --profile profiling and
                     --lifeboat target/profiling/lifeboat
  --keep             keep repositories and restored images afterwards
EOF
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --size) size=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --workdir) workdir=$2; shift 2 ;;
        --lifeboat) lifeboat=$2; shift 2 ;;
        --restic) restic=$2; shift 2 ;;
        --cold-restore) cold_restore=1; shift ;;
        --perf) profile=$2; shift 2 ;;
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
if [[ -n $profile ]]; then
    command -v perf >/dev/null || die "--perf needs perf (apt-get install linux-perf)"
    mkdir -p "$profile"; profile=$(cd "$profile" && pwd)
fi

mkdir -p "$workdir"
workdir=$(cd "$workdir" && pwd)
img=$workdir/disk-$size-seed$seed.img
results=$workdir/results.tsv
: >"$results"

export LIFEBOAT_PASSWORD=lifeboat-bench-passphrase
export RESTIC_PASSWORD=restic-bench-passphrase
export LIFEBOAT_CACHE_DIR=$workdir/lifeboat-cache
restic_cache=$workdir/restic-cache

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$results"; }

# --- the disk --------------------------------------------------------------------
if [[ ! -f $img || ! -f $img.json ]]; then
    echo "generating $img ..."
    python3 "$here/gen_disk.py" "$img" --size "$size" --seed "$seed" --json >"$img.json.tmp"
    mv "$img.json.tmp" "$img.json"
fi
disk_size=$(stat -c %s "$img")
echo "disk: $img ($(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); b=d['bytes']; G=2**30
print('%.2f GiB: random %.2f, text %.2f, binary %.2f, metadata %.2f, written zeros %.2f, holes %.2f GiB' % (d['size']/G, b['random']/G, b['text']/G, b['binary']/G, b['metadata']/G, b['zeros']/G, b['hole']/G))" "$img.json"))"

# --- machine summary ---------------------------------------------------------------
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
lb_version=$("$lifeboat" --version 2>/dev/null | head -1)
lb_commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    lb_commit="$lb_commit+dirty"
fi
# The binary need not be built from this tree: say which file it is and when it was built.
lb_commit="binary $lifeboat of $(date -u -r "$lifeboat" '+%Y-%m-%d %H:%M UTC'); tree $lb_commit"
restic_version=$("$restic" version | awk '{print $2}')
machine="$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores ($cpu), $mem RAM, $(uname -sr);\
 fs $(df -T "$workdir" | awk 'NR==2 {print $2}'); $lb_version ($lb_commit); restic $restic_version;\
 load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "machine: $machine"

# --- helpers -----------------------------------------------------------------------
cache_state=warm
drop_caches() {
    sync
    if (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
        cache_state=cold
    else
        # Cannot drop: make it equally warm for both tools instead.
        cache_state=warm
        cat "$@" >/dev/null 2>&1 || true
    fi
}

# timed NAME CMD...: runs CMD under GNU time; output in $workdir/logs/NAME.*
timed() {
    local name=$1; shift
    local log=$workdir/logs/$name
    if ! /usr/bin/time -f '%e %M %U %S' -o "$log.time" "$@" >"$log.out" 2>"$log.err"; then
        echo "FAILED: $*" >&2
        tail -n 20 "$log.err" >&2
        exit 1
    fi
    read -r wall rss user sys <"$log.time"
}

# Objects in a repository, ignoring temporaries; also a per-directory breakdown.
count_objects() { find "$1" -type f ! -name '.tmp-*' | wc -l; }
breakdown() {
    find "$1" -type f ! -name '.tmp-*' -printf '%P\n' | awk -F/ '{n[$1]++} END {for (d in n) printf "%s=%d ", d, n[d]}'
}

perf_prefix() {  # perf_prefix NAME: sets $pp to a command prefix for profiling runs
    pp=()
    if [[ -n $profile ]]; then
        pp=(perf record -F 499 -g -o "$profile/$1.perf.data" --)
    fi
}
add() { awk "BEGIN {printf \"%.2f\", $1 + $2}"; }

verify_same() {  # verify_same TOOL RESTORED
    if ! cmp --silent "$img" "$2"; then
        echo >&2
        echo "!!! CORRECTNESS FAILURE: $1 restored a disk that differs from the original" >&2
        cmp "$img" "$2" 2>&1 | head -3 >&2 || true
        echo "!!! kept for inspection: $2" >&2
        exit 1
    fi
}

mkdir -p "$workdir/logs"

bench_lifeboat() {
    local run=$1 repo=$workdir/lifeboat-repo target=$workdir/lifeboat-restored.img
    rm -rf "$repo" "$LIFEBOAT_CACHE_DIR" "$target" "$target.lifeboat-partial"
    "$lifeboat" -r "$repo" --json init >"$workdir/logs/lifeboat-init.out"
    local objs_init; objs_init=$(count_objects "$repo")

    drop_caches "$img"
    record lifeboat "$run" load_backup "$(cut -d' ' -f1 /proc/loadavg)"
    perf_prefix lifeboat-backup
    timed "lifeboat-backup-$run" "${pp[@]}" "$lifeboat" -r "$repo" --json \
        backup --vm bench --disk disk "$img"
    record lifeboat "$run" backup_secs "$wall"
    record lifeboat "$run" backup_rss_kib "$rss"
    record lifeboat "$run" backup_cpu_secs "$(add "$user" "$sys")"
    record lifeboat "$run" cache "$cache_state"
    local objs; objs=$(count_objects "$repo")
    record lifeboat "$run" objects_total "$objs"
    record lifeboat "$run" objects_backup "$((objs - objs_init))"
    record lifeboat "$run" objects_breakdown "$(breakdown "$repo")"
    record lifeboat "$run" stored_bytes "$(du -sb "$repo" | cut -f1)"
    record lifeboat "$run" report "$(tr -d '\n' <"$workdir/logs/lifeboat-backup-$run.out")"

    if [[ $cold_restore == 1 ]]; then rm -rf "$LIFEBOAT_CACHE_DIR"; fi
    drop_caches "$repo"
    record lifeboat "$run" load_restore "$(cut -d' ' -f1 /proc/loadavg)"
    perf_prefix lifeboat-restore
    timed "lifeboat-restore-$run" "${pp[@]}" "$lifeboat" -r "$repo" --json \
        restore latest --vm bench --disk disk "$target"
    local restore_wall=$wall
    record lifeboat "$run" restore_secs "$wall"
    record lifeboat "$run" restore_rss_kib "$rss"
    record lifeboat "$run" restore_cpu_secs "$(add "$user" "$sys")"
    timed "lifeboat-fsync-$run" sync "$target"
    record lifeboat "$run" restore_durable_secs "$(add "$restore_wall" "$wall")"
    verify_same Lifeboat "$target"
    rm -f "$target"
    if [[ $keep != 1 ]]; then rm -rf "$repo" "$LIFEBOAT_CACHE_DIR"; fi
}

bench_restic() {
    local run=$1 repo=$workdir/restic-repo target=$workdir/restic-restore
    rm -rf "$repo" "$restic_cache" "$target"
    local r=("$restic" -r "$repo" --cache-dir "$restic_cache")
    "${r[@]}" init >"$workdir/logs/restic-init.out"
    local objs_init; objs_init=$(count_objects "$repo")

    drop_caches "$img"
    record restic "$run" load_backup "$(cut -d' ' -f1 /proc/loadavg)"
    timed "restic-backup-$run" "${r[@]}" backup --json --host bench "$img"
    record restic "$run" backup_secs "$wall"
    record restic "$run" backup_rss_kib "$rss"
    record restic "$run" backup_cpu_secs "$(add "$user" "$sys")"
    record restic "$run" cache "$cache_state"
    local objs; objs=$(count_objects "$repo")
    record restic "$run" objects_total "$objs"
    record restic "$run" objects_backup "$((objs - objs_init))"
    record restic "$run" objects_breakdown "$(breakdown "$repo")"
    record restic "$run" stored_bytes "$(du -sb "$repo" | cut -f1)"
    record restic "$run" report "$(grep '"message_type":"summary"' "$workdir/logs/restic-backup-$run.out" | tail -1)"

    if [[ $cold_restore == 1 ]]; then rm -rf "$restic_cache"; fi
    drop_caches "$repo"
    record restic "$run" load_restore "$(cut -d' ' -f1 /proc/loadavg)"
    timed "restic-restore-$run" "${r[@]}" restore latest --target "$target"
    local restore_wall=$wall
    record restic "$run" restore_secs "$wall"
    record restic "$run" restore_rss_kib "$rss"
    record restic "$run" restore_cpu_secs "$(add "$user" "$sys")"
    local restored=$target$img
    [[ -f $restored ]] || { echo "!!! restic restored no file at $restored" >&2; exit 1; }
    timed "restic-fsync-$run" sync "$restored"
    record restic "$run" restore_durable_secs "$(add "$restore_wall" "$wall")"
    verify_same restic "$restored"
    rm -rf "$target"
    if [[ $keep != 1 ]]; then rm -rf "$repo" "$restic_cache"; fi
}

# --- the runs ------------------------------------------------------------------------
for ((run = 1; run <= runs; run++)); do
    # Alternate the order so neither tool always runs first.
    if ((run % 2 == 1)); then order=(lifeboat restic); else order=(restic lifeboat); fi
    for tool in "${order[@]}"; do
        echo "run $run/$runs: $tool backup + restore ..."
        "bench_$tool" "$run"
    done
done

# --- the table -----------------------------------------------------------------------
python3 - "$results" "$disk_size" "$machine" "$img" "$runs" <<'EOF'
import json, statistics, sys
from collections import defaultdict

path, disk_size, machine, img, runs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
vals = defaultdict(lambda: defaultdict(list))
for line in open(path):
    tool, run, key, value = line.rstrip("\n").split("\t", 3)
    vals[tool][key].append(value)

def med(tool, key):
    return statistics.median(float(v) for v in vals[tool][key])

GiB, MiB = 2**30, 2**20
t = {}
for tool in ("lifeboat", "restic"):
    t[tool] = {
        "backup_mibs": disk_size / MiB / med(tool, "backup_secs"),
        "restore_mibs": disk_size / MiB / med(tool, "restore_secs"),
        "restore_durable_mibs": disk_size / MiB / med(tool, "restore_durable_secs"),
        "backup_secs": med(tool, "backup_secs"),
        "restore_secs": med(tool, "restore_secs"),
        "restore_durable_secs": med(tool, "restore_durable_secs"),
        "backup_rss_mib": med(tool, "backup_rss_kib") / 1024,
        "restore_rss_mib": med(tool, "restore_rss_kib") / 1024,
        "backup_cpu_secs": med(tool, "backup_cpu_secs"),
        "restore_cpu_secs": med(tool, "restore_cpu_secs"),
        "stored_bytes": med(tool, "stored_bytes"),
        "puts": med(tool, "objects_backup"),
        "objects_total": med(tool, "objects_total"),
        "puts_per_gib": med(tool, "objects_backup") / (disk_size / GiB),
    }
lb, rs = t["lifeboat"], t["restic"]

rows = []  # (label, lifeboat, restic, ratio text, goal text, met)
def faster(key, label, goal=None, fmt="%.1f"):
    r = lb[key] / rs[key]
    met = None if goal is None else r >= goal
    rows.append((label, fmt % lb[key], fmt % rs[key], "%.2fx (LB/restic)" % r,
                 "" if goal is None else ">= %gx" % goal, met))
def smaller(key, label, fmt, goal=True):
    r = rs[key] / lb[key] if lb[key] else float("inf")
    met = (lb[key] <= rs[key]) if goal else None
    rows.append((label, fmt(lb[key]), fmt(rs[key]), "%.2fx less (restic/LB)" % r,
                 "<= restic" if goal else "", met))

faster("backup_mibs", "backup throughput, MiB/s of disk", 3)
faster("restore_mibs", "restore throughput, MiB/s of disk", 2)
faster("restore_durable_mibs", "  restore incl. fsync of the disk", None)
smaller("backup_rss_mib", "peak RSS backup, MiB", lambda v: "%.0f" % v)
smaller("restore_rss_mib", "peak RSS restore, MiB", lambda v: "%.0f" % v)
smaller("stored_bytes", "stored bytes (du -sb repo), MiB", lambda v: "%.1f" % (v / MiB))
smaller("puts", "PUTs by the backup (objects)", lambda v: "%d" % v, goal=False)
smaller("puts_per_gib", "PUTs per GiB of disk", lambda v: "%.1f" % v)
smaller("backup_cpu_secs", "CPU seconds, backup (user+sys)", lambda v: "%.1f" % v, goal=False)
smaller("restore_cpu_secs", "CPU seconds, restore (user+sys)", lambda v: "%.1f" % v, goal=False)

print()
print("machine: " + machine)
print("disk: %s, %.2f GiB; %d run(s), medians; page cache before each step: %s"
      % (img, disk_size / GiB, runs, ",".join(sorted(set(vals["lifeboat"]["cache"] + vals["restic"]["cache"])))))
print("load average (1 min) at the timed steps: lifeboat %s, restic %s" % (
    " ".join(vals["lifeboat"]["load_backup"] + vals["lifeboat"]["load_restore"]),
    " ".join(vals["restic"]["load_backup"] + vals["restic"]["load_restore"])))
print()
w = (36, 12, 12, 26, 11)
print("%-*s %*s %*s  %-*s %-*s %s" % (w[0], "", w[1], "Lifeboat", w[2], "restic", w[3], "ratio", w[4], "goal", "met"))
for label, a, b, ratio, goal, met in rows:
    mark = "" if met is None else ("yes" if met else "NO")
    print("%-*s %*s %*s  %-*s %-*s %s" % (w[0], label, w[1], a, w[2], b, w[3], ratio, w[4], goal, mark))
if runs > 1:
    def per_run(key):
        a = [float(v) for v in vals["lifeboat"][key]]
        b = [float(v) for v in vals["restic"][key]]
        return " ".join("%.2f" % (y / x) for x, y in zip(a, b))
    print("per-run throughput ratios (LB/restic): backup %s; restore %s"
          % (per_run("backup_secs"), per_run("restore_secs")))
print()
print("wall seconds: backup LB %.2f / restic %.2f; restore LB %.2f / restic %.2f (with fsync %.2f / %.2f)" % (
    lb["backup_secs"], rs["backup_secs"], lb["restore_secs"], rs["restore_secs"],
    lb["restore_durable_secs"], rs["restore_durable_secs"]))
print("objects after backup (incl. init's): LB %d [%s], restic %d [%s]" % (
    lb["objects_total"], vals["lifeboat"]["objects_breakdown"][-1].strip(),
    rs["objects_total"], vals["restic"]["objects_breakdown"][-1].strip()))
try:
    rep = json.loads(vals["lifeboat"]["report"][-1])
    print("lifeboat report: bytes_read %.2f GiB, zero_bytes %.2f GiB, chunks %d, new_bytes %.2f GiB, stored %.1f MiB, packs %d, %.2f s"
          % (rep["bytes_read"] / GiB, rep["zero_bytes"] / GiB, rep["chunks"], rep["new_bytes"] / GiB,
             rep["stored_bytes"] / MiB, rep["packs"], rep["duration_secs"]))
except Exception as e:
    print("lifeboat report: unreadable (%s)" % e)
try:
    rep = json.loads(vals["restic"]["report"][-1])
    print("restic summary: data_blobs %d, data_added %.1f MiB, total_duration %.2f s"
          % (rep["data_blobs"], rep["data_added"] / MiB, rep["total_duration"]))
except Exception as e:
    print("restic summary: unreadable (%s)" % e)
goals = [r for r in rows if r[5] is not None]
met = sum(1 for r in goals if r[5])
print("goals met: %d of %d%s" % (met, len(goals), "" if met == len(goals) else
      " (missed: " + "; ".join(r[0].strip() for r in goals if not r[5]) + ")"))
print("restored disks identical to the original: Lifeboat yes, restic yes")
json.dump({"machine": machine, "disk_size": disk_size, "runs": runs, "results": t},
          open(path.replace(".tsv", ".json"), "w"), indent=1)
EOF
