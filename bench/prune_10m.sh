#!/usr/bin/env bash
# Prune at scale: a synthetic repository with CHUNKS index entries (default 10
# million, in packs of 16), half of them used by snapshots. Measures the mark run
# (condemns the unused half, rewrites the index) and the sweep run (deletes the
# condemned packs) — wall time and peak RSS of each, from /usr/bin/time.
#
# There is no restic comparison here: restic cannot read this synthetic repository,
# and building a real 10-million-blob restic repository takes many hours on this
# machine. restic's own prune of large repositories is documented to need RAM in
# proportion to the index (the pain point this benchmark is about).
#
# Usage: bench/prune_10m.sh [CHUNKS]      (results: append to bench/RESULTS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
CHUNKS=${1:-10000000}
WORK=bench/work/prune
rm -rf "$WORK"; mkdir -p "$WORK"
export LIFEBOAT_PASSWORD=bench LIFEBOAT_REPO="$PWD/$WORK/repo" LIFEBOAT_CACHE_DIR="$PWD/$WORK/cache"
command -v /usr/bin/time >/dev/null || { echo "needs GNU time: apt-get install time" >&2; exit 1; }

cargo build --release -q -p lifeboat-store --example synth_repo
cargo build --release -q --bin lifeboat
BIN=target/release/lifeboat

echo "== generating $CHUNKS chunk entries"
/usr/bin/time -f "generate: %e s, %M KiB max RSS" \
  target/release/examples/synth_repo "$WORK" "$CHUNKS" 10 50
sleep 2

measure() { # label, args...
  local label=$1; shift
  /usr/bin/time -o "$WORK/time.txt" -f "%e %M" "$BIN" "$@" --json >"$WORK/$label.json" 2>"$WORK/$label.log"
  read -r secs kib <"$WORK/time.txt"
  printf '%-8s %8.1f s  %7.0f MiB max RSS\n' "$label" "$secs" "$((kib / 1024))"
}
echo "== first command on a fresh host: builds the catalog from the index"
measure sync snapshots
echo "== prune (mark): condemns the unused half"
measure mark prune --grace 1s
sed 's/^/   /' "$WORK/mark.log"
python3 -c "import json;r=json.load(open('$WORK/mark.json'));print('   condemned packs', r['mark']['condemned_packs'], 'live chunks', r['live_chunks'], 'index objects written', r['mark']['index_written'])"
sleep 2
echo "== prune (sweep): deletes them"
measure sweep prune --grace 1s
sed 's/^/   /' "$WORK/sweep.log"
python3 -c "import json;r=json.load(open('$WORK/sweep.json'));print('   deleted packs', r['sweep']['deleted_packs'])"
echo "== verify (structure) afterwards"
"$BIN" verify >/dev/null && echo "   verify: clean"
