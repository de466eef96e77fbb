#!/usr/bin/env bash
# Compares the wall time of `.ci/run` for two commits under the same load: clones each
# into a scratch directory and runs both CIs at the same time. Use it when a change
# must not make CI slower (machines are shared and noisy: only a same-run pair says
# anything). Needs about 2 x 6 GiB of disk and an otherwise idle machine.
#
#   scripts/ci_time_pair.sh BEFORE AFTER [SCRATCH]      # e.g. 64af39e main
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 BEFORE AFTER [SCRATCH]" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
scratch=${3:-$(mktemp -d)}
mkdir -p "$scratch"
run() {
    local commit=$1 dir=$scratch/ci-$1 t0
    rm -rf "$dir"
    git clone -q "$repo" "$dir" && git -C "$dir" checkout -q "$commit"
    t0=$(date +%s)
    if (cd "$dir" && ./.ci/run) >"$scratch/ci-$commit.log" 2>&1; then rc=0; else rc=$?; fi
    echo "$commit rc=$rc secs=$(( $(date +%s) - t0 ))" | tee -a "$scratch/result"
}
run "$1" & run "$2" & wait
echo "logs and result in $scratch"
