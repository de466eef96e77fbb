#!/usr/bin/env bash
# Drill benchmark: the RTO of a drill of a 3-VM plan from warm standby, and the same
# plan from the replica repository without standby (restore + boot), side by side.
#
# Builds VMS small Linux guests (scripts/make-test-guest.sh: Debian kernel, busybox
# initramfs; each prints a marker on its serial console and serves TCP 80), pads each
# disk with DATA of random bytes after its filesystem (so a restore has real data to
# move; the guest never reads it), backs them up, replicates to a second repository,
# keeps a warm standby of it, and runs `lifeboat drill` on two plans that differ only
# in `standby = true|false` (without standby the VMs boot on overlays backed by the
# snapshots served over NBD from the replica: instant recovery). Prints per drill:
# the RTO (command to last VM healthy), Lifeboat's own overhead (overlays, exports,
# starts, stop, clean-up) and the wall time; then, for comparison, the time a full
# `lifeboat restore` of the same disks takes before any VM could start.
#
# Goals (issue 11): the standby drill all healthy in under 60 s under TCG on this
# machine, Lifeboat's overhead under 2 s.
#
# Exit status: 0 done (goals met or not), 1 a command failed or a VM did not boot,
# 2 usage/setup error. See bench/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

vms=3
data=256MiB
workdir=$here/work/drill
lifeboat=$root/target/release/lifeboat

usage() {
    cat <<EOF
usage: $0 [options]
  --vms N             VMs in the plan, all in one boot group (default $vms)
  --data SIZE         random data appended to each guest disk (default $data)
  --workdir DIR       scratch directory, removed first (default $workdir)
  --lifeboat PATH     binary to measure (default $lifeboat; build with
                      cargo build --release)
EOF
    exit 2
}
while [ $# -gt 0 ]; do
    case $1 in
        --vms) vms=$2; shift 2 ;;
        --data) data=$2; shift 2 ;;
        --workdir) workdir=$2; shift 2 ;;
        --lifeboat) lifeboat=$2; shift 2 ;;
        *) usage ;;
    esac
done
lifeboat=$(realpath "$lifeboat")
[ -x "$lifeboat" ] || { echo "no $lifeboat: cargo build --release, or pass --lifeboat" >&2; exit 2; }
bytes=$(numfmt --from=iec "${data%iB}")

rm -rf "$workdir"
mkdir -p "$workdir"
cd "$workdir"
export LIFEBOAT_PASSWORD=bench LIFEBOAT_CACHE_DIR=$workdir/cache
echo bench > pass

"$lifeboat" -r "$workdir/primary" init -q
names=()
for i in $(seq 1 "$vms"); do
    vm=vm$i
    names+=("\"$vm\"")
    "$root/scripts/make-test-guest.sh" "$vm.img"
    head -c "$bytes" /dev/urandom >> "$vm.img"
    cat > "$vm.json" <<JSON
{"source":"config","cpus":1,"memory_mib":256,"disks":[{"name":"root"}],
 "nics":[{"network":"prod-lan","model":"e1000"}]}
JSON
    "$lifeboat" -r "$workdir/primary" backup -q --vm "$vm" --disk root --definition "$vm.json" "$vm.img"
done
"$lifeboat" -r "$workdir/secondary" init -q --replica-of "$workdir/primary"
"$lifeboat" -r "$workdir/secondary" replicate -q --from "$workdir/primary"
"$lifeboat" -r "$workdir/secondary" standby sync -q --dir "$workdir/standby"

plan() { # name standby
    local checks=""
    for i in $(seq 1 "$vms"); do
        checks+="[[plan.vm]]
name = \"vm$i\"
timeout = \"5m\"
health = { console = \"LIFEBOAT-GUEST-UP\", tcp = 80 }
"
    done
    cat <<TOML
[[plan]]
name = "$1"
repository = "dr"
standby = $2
rto = "60s"
overlay_dir = "$workdir/overlays"
[plan.test_network_map]
"prod-lan" = "drill-net"
[[plan.boot_group]]
vms = [$(IFS=,; echo "${names[*]}")]
$checks
TOML
}
{
    cat <<TOML
[daemon]
state_dir = "$workdir/state"
[[repository]]
name = "dr"
url = "$workdir/secondary"
password_file = "$workdir/pass"
standby_dir = "$workdir/standby"
standby_keep = 2
standby_schedule = "0 * * * *"
[[network]]
name = "drill-net"
kind = "user"
isolated = true
TOML
    plan from-standby true
    plan from-replica false
} > lifeboat.toml

printf '%-14s %8s %10s %10s %8s\n' plan "RTO s" "overhead s" "wall s" verdict
status=0
for p in from-standby from-replica; do
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    start=$(date +%s.%N)
    "$lifeboat" drill "$p" --config lifeboat.toml --json > "$p.json" || true
    end=$(date +%s.%N)
    python3 - "$p.json" "$p" "$start" "$end" <<'PY' || status=1
import json, sys
r = json.load(open(sys.argv[1]))["report"]
wall = float(sys.argv[4]) - float(sys.argv[3])
rto = r["rto_secs"]
rto = "-" if rto is None else f"{rto:.1f}"
print(f'{sys.argv[2]:<14} {rto:>8} {r["prepare_secs"] + r["cleanup_secs"]:>10.2f} '
      f'{wall:>10.1f} {r["verdict"]:>8}')
sys.exit(0 if r["verdict"] == "PASSED" else 1)
PY
done
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
start=$(date +%s.%N)
for i in $(seq 1 "$vms"); do
    "$lifeboat" -r "$workdir/secondary" restore -q latest --vm "vm$i" --disk root "restored-vm$i.raw"
done
end=$(date +%s.%N)
python3 -c "import sys; print(f'full restore of the {sys.argv[1]} disks before a boot could start: {float(sys.argv[3]) - float(sys.argv[2]):.1f} s')" "$vms" "$start" "$end"
exit $status
