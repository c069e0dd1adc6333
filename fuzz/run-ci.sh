#!/usr/bin/env bash
# Bounded fuzz run: builds every target in fuzz/ and runs each for FUZZ_SECONDS seconds
# (default 25; six targets, so about four minutes with the build). Exits non-zero on any
# crash, leak or timeout, leaving the reproducer in fuzz/artifacts/<target>/.
#
#   fuzz/run-ci.sh                         # CI: 25 s per target
#   FUZZ_SECONDS=600 fuzz/run-ci.sh        # a longer run; the summary gives the figures
#   fuzz/run-ci.sh ring_consumer           # only the named targets
#
# cargo-fuzz is installed into $XWAY_TOOLS_DIR (default target/tools) if it is missing. The
# sanitizer flags it passes are unstable rustc options: RUSTC_BOOTSTRAP=1 allows them on the
# stable toolchain (no nightly needed). Replay a crash with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz -O -a <target> fuzz/artifacts/<target>/crash-*
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-25}
tools=${XWAY_TOOLS_DIR:-$PWD/target/tools}
export PATH="$tools/bin:$PATH"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run-ci.sh: installing cargo-fuzz into $tools"
  cargo install --locked cargo-fuzz --root "$tools"
fi
nice -n 10 cargo fuzz build --fuzz-dir fuzz -O -a
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
mkdir -p fuzz/logs
failed=0
summary=()
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  mkdir -p "$corpus"
  if [ -d "fuzz/seeds/$t" ]; then cp -n "fuzz/seeds/$t"/* "$corpus"/ 2>/dev/null || true; fi
  log=fuzz/logs/$t.log
  start=$(date +%s)
  set +e
  nice -n 10 cargo fuzz run --fuzz-dir fuzz -O -a "$t" "$corpus" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  took=$(( $(date +%s) - start ))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo "?")
  crashes=$(ls "fuzz/artifacts/$t" 2>/dev/null | wc -l)
  if [ $rc -ne 0 ]; then
    failed=1
    echo "=== fuzz target $t FAILED (exit $rc); last lines of $log:"
    tail -40 "$log"
  fi
  summary+=("$(printf '%-18s %6ss %12s execs  cov %5s  corpus %5s  exit %s  artifacts %s' \
    "$t" "$took" "$execs" "$cov" "$(ls "$corpus" | wc -l)" "$rc" "$crashes")")
done
echo "=== fuzz summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
exit $failed
