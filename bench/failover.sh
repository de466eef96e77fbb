#!/usr/bin/env bash
# Failover benchmark: the RTO and downtime of a planned failover of a VMS-VM plan, the
# RTO of an unplanned one (from warm standby and from the replica), and what failback
# moves back over the link, next to what rsync's delta transfer of the same disk
# images moves (what an operator would script instead).
#
# Builds VMS small Linux guests (scripts/make-test-guest.sh), each disk padded with
# DATA of random bytes, backs them up into a primary repository, replicates to a
# secondary with a warm standby. Then:
#   1. runs the guests on the "primary" (plain QEMU, as the primary cluster would),
#      each writes a note to its disk;
#   2. planned failover: `failover prepare` for each VM (ACPI shutdown + final
#      backup), `replicate`, `failover PLAN --planned`; prints the RTO Lifeboat
#      measured (command → last VM healthy) and the downtime (first shutdown → last
#      VM healthy on the secondary);
#   3. each failed-over guest writes a second note, and CHANGE random bytes are written
#      into each failover disk at 128 MiB (by the VM's QEMU, HMP qemu-io, into the
#      padding the guest never reads: a stand-in for guest writes of that size); `failback PLAN --to primary`;
#      prints the pack bytes sent home against the disks' size, and what
#      `rsync --ignore-times --no-whole-file --inplace` would send to bring the primary's images
#      up to date (its "Literal data" plus matched-block overhead);
#   4. unplanned failovers of the same VMs from the standby and from the replica
#      (standby = false: every disk restored first), each aborted afterwards.
# Guests boot under TCG when /dev/kvm is not usable for them (see bench/RESULTS.md).
#
# Exit status: 0 done, 1 a command failed, 2 usage/setup error. See bench/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

vms=3
data=256MiB
change=32MiB
workdir=$here/work/failover
lifeboat=$root/target/release/lifeboat

usage() {
    cat <<EOF
usage: $0 [options]
  --vms N             VMs in the plan, one boot group (default $vms)
  --data SIZE         random data appended to each guest disk (default $data)
  --change SIZE       data changed on each disk while failed over (default $change)
  --workdir DIR       scratch directory, removed first (default $workdir)
  --lifeboat PATH     binary to measure (default $lifeboat; cargo build --release)
EOF
    exit 2
}
while [ $# -gt 0 ]; do
    case $1 in
        --vms) vms=$2; shift 2 ;;
        --data) data=$2; shift 2 ;;
        --change) change=$2; shift 2 ;;
        --workdir) workdir=$2; shift 2 ;;
        --lifeboat) lifeboat=$2; shift 2 ;;
        *) usage ;;
    esac
done
lifeboat=$(realpath "$lifeboat")
[ -x "$lifeboat" ] || { echo "no $lifeboat: cargo build --release, or pass --lifeboat" >&2; exit 2; }
command -v rsync >/dev/null || { echo "rsync not found: apt-get install rsync" >&2; exit 2; }
bytes=$(numfmt --from=iec "${data%iB}")
change_mib=$(( $(numfmt --from=iec "${change%iB}") / 1048576 ))
[ $((change_mib + 128)) -le $((bytes / 1048576 + 64)) ] || { echo "--change must fit in --data after 64 MiB" >&2; exit 2; }

rm -rf "$workdir"
mkdir -p "$workdir"
cd "$workdir"
export LIFEBOAT_PASSWORD=bench LIFEBOAT_CACHE_DIR=$workdir/cache
echo bench > pass
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
now() { date +%s.%N; }
note() { # port word
    for _ in $(seq 1 240); do
        if out=$(curl -sf --max-time 5 "http://127.0.0.1:$1/cgi-bin/note?$2"); then echo "$out"; return 0; fi
        sleep 0.5
    done
    echo "guest on port $1 does not answer" >&2; return 1
}

"$lifeboat" -r primary init -q
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
    "$lifeboat" -r primary backup -q --vm "$vm" --disk root --definition "$vm.json" "$vm.img"
done
"$lifeboat" -r secondary init -q --replica-of primary
"$lifeboat" -r secondary replicate -q --from primary
"$lifeboat" -r secondary standby sync -q --dir "$workdir/standby"

config() { # file repository-url overlay-dir state-dir
    local checks=""
    for i in $(seq 1 "$vms"); do
        checks+="[[plan.vm]]
name = \"vm$i\"
timeout = \"5m\"
health = { console = \"LIFEBOAT-GUEST-UP\", tcp = 80 }
"
    done
    plan() { # name standby
        cat <<TOML
[[plan]]
name = "$1"
repository = "dr"
standby = $2
rto = "5m"
overlay_dir = "$3"
[plan.network_map]
"prod-lan" = "prod"
[[plan.boot_group]]
vms = [$(IFS=,; echo "${names[*]}")]
$checks
TOML
    }
    cat > "$1" <<TOML
[daemon]
state_dir = "$4"
[[repository]]
name = "dr"
url = "$2"
password_file = "$workdir/pass"
standby_dir = "$workdir/standby"
standby_keep = 2
standby_schedule = "0 * * * *"
[[repository]]
name = "primary"
url = "$workdir/primary"
password_file = "$workdir/pass"
[[network]]
name = "prod"
kind = "user"
TOML
    { plan erp true "$3"; plan erp-replica false "$3"; } >> "$1"
}
config secondary.toml "$workdir/secondary" "$workdir/overlays" "$workdir/state"
config primary.toml "$workdir/primary" "$workdir/primary-overlays" "$workdir/primary-state"

# 1. Production on the primary.
for i in $(seq 1 "$vms"); do
    port=$((18100 + i))
    qemu-system-x86_64 -display none -m 256 -no-reboot \
        -drive "file=vm$i.img,if=virtio,format=raw" \
        -nic "user,model=e1000,hostfwd=tcp:127.0.0.1:$port-:80" \
        -serial "file:vm$i.console" -qmp "unix:$workdir/vm$i.qmp,server=on,wait=off" &
    pids+=($!)
done
for i in $(seq 1 "$vms"); do note $((18100 + i)) first > /dev/null; done
for i in $(seq 1 "$vms"); do cp --sparse=always "vm$i.img" "vm$i.before-failover.img"; done

# 2. Planned failover.
down=$(now)
prepares=()
for i in $(seq 1 "$vms"); do
    "$lifeboat" -r primary failover prepare -q --vm "vm$i" --qmp "$workdir/vm$i.qmp" --disk "root=vm$i.img" &
    prepares+=($!)
done
for p in "${prepares[@]}"; do wait "$p"; done
prepared=$(now)
"$lifeboat" -r secondary replicate -q --from primary
replicated=$(now)
"$lifeboat" failover erp --planned --config secondary.toml --json > planned.json
up=$(now)
python3 - planned.json "$down" "$prepared" "$replicated" "$up" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
d, p, r, u = map(float, sys.argv[2:6])
print(f"planned failover of {len(s['vms'])} VMs: prepare (shutdown + final backup) {p - d:.1f} s, "
      f"replicate {r - p:.1f} s, failover RTO {s['rto_secs']:.1f} s; downtime {u - d:.1f} s")
PY

# 3. Failback.
ports=$(python3 -c "import json; print(' '.join(v['running']['forwards'][0][1].split(':')[1] for v in json.load(open('planned.json'))['vms']))")
for p in $ports; do note "$p" second > /dev/null; done
# Written by each VM's own QEMU (HMP qemu-io over its QMP socket): the failover disk
# may be a qcow2 overlay, which a second writer would corrupt.
python3 - planned.json "$change_mib" <<'PY'
import json, os, socket, sys
state, mib = json.load(open(sys.argv[1])), int(sys.argv[2])
for vm in state["vms"]:
    q = socket.socket(socket.AF_UNIX)
    q.connect(vm["running"]["qmp"])
    f = q.makefile("rw")
    f.readline()
    def cmd(name, args=None):
        f.write(json.dumps({"execute": name, **({"arguments": args} if args else {})}) + "\n")
        f.flush()
        while True:
            r = json.loads(f.readline())
            if "return" in r or "error" in r:
                said = r.get("return") if isinstance(r.get("return"), str) else ""
                if "error" in r or any(w in said.lower() for w in ("error", "failed", "invalid")):
                    sys.exit(f"{vm['vm']}: {name}: {r}")
                return r
    cmd("qmp_capabilities")
    for i, _ in enumerate(vm["disks"]):
        src = f"change-{vm['vm']}-{i}.bin"
        with open(src, "wb") as out:
            out.write(os.urandom(mib << 20))
        cmd("human-monitor-command",
            {"command-line": f'qemu-io disk{i} "write -s {os.path.abspath(src)} 128M {mib}M"'})
        cmd("human-monitor-command", {"command-line": f'qemu-io disk{i} "flush"'})
    q.close()
PY
"$lifeboat" failback erp --to primary --config secondary.toml --json > failback.json
rsync_bytes=0
for i in $(seq 1 "$vms"); do
    # What rsync's delta transfer sends to bring the primary's old image to the new one.
    "$lifeboat" -r secondary restore -q latest --vm "vm$i" --disk root "vm$i.after.img"
    cp --sparse=always "vm$i.before-failover.img" "vm$i.rsync-target.img"
    sent=$(rsync --ignore-times --no-whole-file --inplace --stats "vm$i.after.img" "vm$i.rsync-target.img" | awk '/Total bytes sent/ {gsub(",","",$4); print $4}')
    rsync_bytes=$((rsync_bytes + sent))
done
python3 - failback.json "$rsync_bytes" "$((change_mib * 1048576 * vms))" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rs, changed = int(sys.argv[2]), int(sys.argv[3])
print(f"failback: {r['bytes_sent']} bytes sent home for {changed} bytes changed on "
      f"{r['disk_bytes']} bytes of disks (sent/changed {r['bytes_sent'] / changed:.3f}); "
      f"rsync delta would send {rs} bytes (lifeboat/rsync {r['bytes_sent'] / rs:.3f}); "
      f"VMs down {r['downtime_secs']:.1f} s")
PY
"$lifeboat" failover erp --planned --config primary.toml --json > home.json
python3 -c "import json; s=json.load(open('home.json')); print(f\"planned failover home: RTO {s['rto_secs']:.1f} s\")"
"$lifeboat" failover abort erp --discard --shutdown-timeout 5s --config primary.toml -q

# 4. Unplanned failovers: from the standby, and restored from the replica.
"$lifeboat" -r secondary standby sync -q --dir "$workdir/standby"
for p in erp erp-replica; do
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    "$lifeboat" failover "$p" --config secondary.toml --json > "unplanned-$p.json"
    python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(f\"unplanned failover ({sys.argv[2]}): RTO {s['rto_secs']:.1f} s, disks via {s['vms'][0]['disks'][0]['from']}\")" "unplanned-$p.json" "$p"
    "$lifeboat" failover abort "$p" --discard --shutdown-timeout 5s --config secondary.toml -q
done
