#!/usr/bin/env bash
# The full test suite: unit tests and the netns integration tests (as root).
# Usage: sudo ./netns-tests/run-all.sh
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    # Keep PATH so cargo from ~/.cargo/bin is found under sudo.
    exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME,CARGO_TARGET_DIR env "PATH=$PATH" "$0" "$@"
fi

cd "$(dirname "$0")/.."
./netns-tests/deps.sh
# Every fuzz target over its seeds plus a short exploration (issue 7);
# long campaigns: docs/reliability.md.
./fuzz/smoke.sh
exec cargo test --release -- --test-threads=2
