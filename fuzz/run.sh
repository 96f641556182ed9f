#!/usr/bin/env bash
# Runs every cargo fuzz target for SECONDS (default 20) from the committed
# corpus (fuzz/corpus/TARGET, read only; new inputs go to a temporary
# directory), with libFuzzer's default checks and a 4 GiB memory cap. Fails
# on the first crash, hang or leak; libFuzzer leaves the input that did it
# in fuzz/artifacts/TARGET/.
#
#   bash fuzz/run.sh          # 20 s each (what CI runs)
#   bash fuzz/run.sh 600      # longer
#   FUZZ_SEED=1 bash fuzz/run.sh   # the same mutations every time (CI)
#
# Needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${1:-20}"
TARGETS=(spec_file schedule command snapshot)

cargo +nightly fuzz build -s none
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in "${TARGETS[@]}"; do
  mkdir -p "$scratch/$target"
  log="$scratch/$target.log"
  if ! cargo +nightly fuzz run -s none "$target" "$scratch/$target" "corpus/$target" -- \
      -max_total_time="$SECONDS_EACH" -rss_limit_mb=4096 -timeout=10 ${FUZZ_SEED:+-seed="$FUZZ_SEED"} >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  printf '%-10s %s\n' "$target" "$(grep -E '^Done ' "$log" | tail -n 1)"
done
