#!/usr/bin/env bash
# Fuzzes every decoder of repository objects (fuzz/fuzz_targets/*) with cargo-fuzz
# (libFuzzer) for SECONDS_PER_TARGET seconds each (default 60), then prints the number
# of executions per target. Any crash stops the script with libFuzzer's reproducer
# (fuzz/artifacts/<target>/crash-*); replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none <target> <file>
#
# Toolchain: stable Rust. cargo fuzz passes -Z flags to rustc, which stable accepts
# with RUSTC_BOOTSTRAP=1. The default sanitizer is none (FUZZ_SANITIZER=address turns
# AddressSanitizer on; the code is free of `unsafe`, so ASan mostly costs speed).
# Allocation bombs are caught by libFuzzer itself: -malloc_limit_mb fails any single
# allocation above 256 MiB and -rss_limit_mb the whole process above 512 MiB.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(pack_header index manifest keyslot config)
fi
sanitizer=${FUZZ_SANITIZER:-none}

if ! command -v cargo-fuzz >/dev/null; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1

echo "== cargo fuzz build (sanitizer: $sanitizer)"
cargo fuzz build --sanitizer "$sanitizer"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
status=0
for t in "${targets[@]}"; do
    # New inputs go to the (untracked) working corpus; the committed seeds are read only.
    mkdir -p "fuzz/corpus/$t"
    if ! cargo fuzz run --sanitizer "$sanitizer" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=512 -malloc_limit_mb=256 \
        -max_len=65536 -print_final_stats=1 >"$logs/$t.log" 2>&1; then
        echo "FUZZ FAILURE in $t:" >&2
        grep -E "panicked|ERROR|SUMMARY|Test unit written|malloc|rss" "$logs/$t.log" >&2 || tail -n 30 "$logs/$t.log" >&2
        status=1
        continue
    fi
    execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$logs/$t.log")
    rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$logs/$t.log")
    peak=$(awk '/stat::peak_rss_mb/ {print $2}' "$logs/$t.log")
    printf '%-12s %12s executions in %ss (%s/s), peak RSS %s MB, no crash\n' "$t" "$execs" "$secs" "$rate" "$peak"
done
exit $status
