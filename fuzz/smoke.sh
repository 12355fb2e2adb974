#!/usr/bin/env bash
# CI smoke run of the fuzz targets (issue 7): builds every target (nightly,
# AddressSanitizer, debug assertions), then runs each over its committed
# seeds plus a short exploration. Exits non-zero on any crash, leak,
# timeout or failed invariant; the reproducer is in fuzz/artifacts/<target>/.
#
#   FUZZ_SMOKE_RUNS   inputs per target after the seeds (default 20000)
#   FUZZ_SMOKE_SECS   time cap per target, seconds (default 10)
#   FUZZ_SMOKE_JOBS   build jobs (CARGO_BUILD_JOBS; default: cargo's)
#
# Long campaigns: docs/reliability.md ("Fuzzing").
set -euo pipefail
cd "$(dirname "$0")"
runs=${FUZZ_SMOKE_RUNS:-20000}
secs=${FUZZ_SMOKE_SECS:-10}

# nightly with AddressSanitizer when there is one; otherwise the stable
# toolchain with RUSTC_BOOTSTRAP=1 (libFuzzer's -Z flags) and no sanitizer:
# Rust's own checks (bounds, overflow, debug assertions) still turn every
# out-of-bounds access or broken invariant into a crash.
if cargo +nightly --version >/dev/null 2>&1; then
    tc=(+nightly)
    san=()
else
    echo "fuzz/smoke.sh: no nightly toolchain: stable with RUSTC_BOOTSTRAP=1, no sanitizer" >&2
    tc=()
    san=(-s none)
    export RUSTC_BOOTSTRAP=1
fi
if ! cargo "${tc[@]}" fuzz --version >/dev/null 2>&1; then
    echo "fuzz/smoke.sh: cargo-fuzz is missing; install it with: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

if [ -n "${FUZZ_SMOKE_JOBS:-}" ]; then export CARGO_BUILD_JOBS=$FUZZ_SMOKE_JOBS; fi
start=$(date +%s)
cargo "${tc[@]}" fuzz build -a "${san[@]}"
echo "fuzz/smoke.sh: built in $(( $(date +%s) - start )) s"

failed=()
for t in $(cargo "${tc[@]}" fuzz list); do
    if [ ! -d "corpus/$t" ]; then
        echo "fuzz/smoke.sh: no seeds in fuzz/corpus/$t" >&2
        failed+=("$t (no seeds)")
        continue
    fi
    # New inputs go to a scratch directory, not to the committed seeds.
    scratch=$(mktemp -d)
    log="$scratch.log"
    echo "=== $t"
    set +e
    cargo "${tc[@]}" fuzz run -a "${san[@]}" "$t" "$scratch" "corpus/$t" -- \
        -runs="$runs" -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    grep -E '^(Done|#[0-9]+ +DONE)|stat::number_of_executed_units|INFO: seed corpus' "$log" || true
    if [ "$rc" -ne 0 ]; then
        tail -n 60 "$log"
        failed+=("$t")
    fi
    rm -f "$log"
    rm -rf "$scratch"
done
echo "fuzz/smoke.sh: total $(( $(date +%s) - start )) s"
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz/smoke.sh: FAILED: ${failed[*]} (reproducers in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz/smoke.sh: all targets ran clean"
