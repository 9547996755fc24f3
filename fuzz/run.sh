#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each for SECONDS (default 60),
# printing how many executions ran clean. Needs the nightly toolchain and
# cargo-fuzz (`rustup toolchain install nightly`, `cargo install cargo-fuzz`).
#
#   fuzz/run.sh            # 60 s per target
#   fuzz/run.sh 600 bundle # one target, ten minutes
#
# A crash stops the run and leaves the input under fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vigil-fuzz-target}"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  # Start from the checked-in examples (and keep what the fuzzer finds).
  [ -d "seeds/$t" ] && cp -n seeds/$t/* "corpus/$t/" 2>/dev/null || true
  cargo +nightly fuzz build -O "$t"
  log="$(mktemp)"
  # -rss_limit_mb bounds memory; a decoder that grows without bound fails.
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 2>"$log" || {
    tail -40 "$log"; echo "FAILED: $t"; exit 1; }
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
  echo "$t: $execs executions in ${secs} s, no crash"
  rm -f "$log"
done
