#!/usr/bin/env bash
# Runs both fuzz targets for SECONDS each (default 600), one after the other,
# starting from the committed seed corpora. Needs a nightly toolchain and
# cargo-fuzz (cargo install cargo-fuzz).
#   wal-format/fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
for target in pgoutput segment; do
    echo "== fuzzing $target for $seconds s" >&2
    cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1
done
