#!/usr/bin/env bash
# The long corruption run: ROUNDS seeded rounds (default 20) of every object kind x
# {bit flip, truncation, deletion} against copies of a real repository (tests/corruption.rs),
# then a summary of corruptions tried and detected. Any undetected corruption, any
# restore that is neither byte-identical nor a clean refusal, fails the run.
#
# Usage: scripts/corruption.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-20}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
status=0
LIFEBOAT_CORRUPTION_ROUNDS=$rounds cargo test --quiet --test corruption -- --nocapture \
    >"$log" 2>&1 || status=$?
echo "== corruption run: $rounds round(s) per object kind and damage, $(( $(date +%s) - start )) s"
grep -oE 'corruption: [A-Za-z]+ [A-Za-z]+ tried [0-9]+ detected [0-9]+' "$log" | sort | awk '
    { printf "%-9s %-9s tried %4d  detected %4d\n", $2, $3, $5, $7; tried += $5; found += $7 }
    END { printf "total              tried %4d  detected %4d\n", tried, found }'
if [ "$status" != 0 ]; then
    grep -E "panicked|seed [0-9]+:" "$log" | tail -n 20 >&2
    echo "corruption run FAILED (exit $status)" >&2
fi
exit $status
