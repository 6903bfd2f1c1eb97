#!/usr/bin/env bash
# `make fuzz`: runs every cargo-fuzz target for $1 seconds (default 60), starting from the
# seed corpus in fuzz/seeds (real AWS-signed messages, sample events). cargo-fuzz needs
# nightly-only compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
# A crash leaves its input under fuzz/artifacts/<target>/ and fails the run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_PER_TARGET=${1:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
  mkdir -p "fuzz/corpus/$target"
  echo "== fuzz $target for ${SECONDS_PER_TARGET}s"
  log=fuzz/$target.log
  status=0
  cargo fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY)' "$log" || true
  if ((status != 0)); then
    tail -40 "$log" >&2
    echo "fuzz $target failed (exit $status); inputs under fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
