#!/usr/bin/env bash
# The long version of the reliability tests (CI runs a bounded one through test.sh):
# the fault matrix over many seeds and bigger disks, and kill -9 crash tests at many
# seeded points during backup, forget and prune. Prints faults injected by kind and crash
# points; docs/RELIABILITY.md records one run.
#
#   FAULT_SEEDS   seeds of the fault matrix              (default 6)
#   FAULT_MIB     MiB of data per disk in the matrix     (default 32)
#   FAULT_RATE    faulted requests per thousand          (default 50, i.e. 5 %)
#   CRASH_SEEDS   crash points per command               (default 17; 3 commands, 51 in all)
#   REPL_CRASH_SEEDS  kill -9 points during a replication (default 12)
#   REPL_FAULT_SEEDS  seeds of faulty links, both sides of a replication (default 6)
# Full output: target/reliability-{faults,crash,replication}.log.
set -euo pipefail
cd "$(dirname "$0")/.."

FAULT_SEEDS=${FAULT_SEEDS:-6}
FAULT_MIB=${FAULT_MIB:-32}
FAULT_RATE=${FAULT_RATE:-50}
CRASH_SEEDS=${CRASH_SEEDS:-17}
REPL_CRASH_SEEDS=${REPL_CRASH_SEEDS:-12}
REPL_FAULT_SEEDS=${REPL_FAULT_SEEDS:-6}

if ! python3 -c 'import moto.server, flask' 2>/dev/null; then
    echo "moto_server is missing: run scripts/test.sh once (it installs it), or pip install 'moto[server]>=5,<6'" >&2
    exit 1
fi

echo "== $(date -u +%Y-%m-%dT%H:%MZ) commit $(git rev-parse --short HEAD)"
echo "== fault matrix: $FAULT_SEEDS seeds, $FAULT_MIB MiB per disk, $FAULT_RATE/1000 of requests faulted"
LIFEBOAT_FAULT_SEEDS=$FAULT_SEEDS LIFEBOAT_FAULT_MIB=$FAULT_MIB LIFEBOAT_FAULT_RATE_PERMILLE=$FAULT_RATE \
    cargo test --test faults every_command -- --nocapture 2>&1 | tee target/reliability-faults.log |
    grep -E '^(seed|FAULT|commands|[0-9]+ requests|  [a-z0-9]|test result)'
echo "== crash tests: $CRASH_SEEDS seeded kill -9 points each for backup, forget and prune"
LIFEBOAT_CRASH_SEEDS=$CRASH_SEEDS cargo test --test crash -- --nocapture --test-threads 1 2>&1 | tee target/reliability-crash.log |
    grep -E '^(backup seed|forget seed|prune seed|CRASH|test result)'
echo "== replication: $REPL_CRASH_SEEDS seeded kill -9 points, $REPL_FAULT_SEEDS seeds of faulty links at $FAULT_RATE/1000"
LIFEBOAT_REPL_CRASH_SEEDS=$REPL_CRASH_SEEDS LIFEBOAT_REPL_FAULT_SEEDS=$REPL_FAULT_SEEDS \
    LIFEBOAT_REPL_FAULT_RATE_PERMILLE=$FAULT_RATE \
    cargo test --test replication_faults -- --nocapture 2>&1 | tee target/reliability-replication.log |
    grep -E '^(replicate seed|replicate fault seed|CRASH|destination link|source link|test result)'
