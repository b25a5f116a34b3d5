#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 20), one after the other, on stable Rust.
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]
#
# New inputs go to fuzz/target/corpus/<target> (kept between runs, never committed); fuzz/corpus/<target>
# holds the committed seeds. A crash, panic, timeout or out-of-memory input is saved in
# fuzz/artifacts/<target>/ and makes the script exit non-zero after the remaining targets have run.
# See fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
shift || true
if ! command -v cargo-fuzz >/dev/null; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 2
fi
# Stable Rust: no sanitizer (which needs -Z flags). libFuzzer's coverage instrumentation works on stable.
build=(-s "${FUZZ_SANITIZER:-none}")
# FUZZ_CODEGEN_UNITS=16 lets the build spread over more cores, for about 20% fewer runs a second than
# cargo-fuzz's default of 1.
if [ -n "${FUZZ_CODEGEN_UNITS:-}" ]; then
    build+=(--codegen-units "$FUZZ_CODEGEN_UNITS")
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build "${build[@]}"

failed=()
mkdir -p fuzz/target/logs
for target in "${targets[@]}"; do
    mkdir -p "fuzz/target/corpus/$target" "fuzz/artifacts/$target"
    log="fuzz/target/logs/$target.log"
    status=0
    cargo fuzz run "${build[@]}" "$target" "fuzz/target/corpus/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -dict=fuzz/sluice.dict \
        -artifact_prefix="fuzz/artifacts/$target/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1 || true)
    if [ "$status" -eq 0 ]; then
        echo "fuzz $target: ${runs:-?} runs in ${seconds}s, ${cov:-no coverage line}, no crash"
    else
        echo "fuzz $target: FAILED (exit $status) after ${runs:-?} runs; input saved in fuzz/artifacts/$target/"
        grep -E -A20 'panicked at|ERROR: libFuzzer' "$log" | head -40 || tail -40 "$log"
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]}" >&2
    exit 1
fi
