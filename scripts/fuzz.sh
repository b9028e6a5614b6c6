#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for FUZZ_SECONDS (default 60) each, from its committed seeds
# (fuzz/seeds/<target>); a crash fails the run and prints the input that caused it.
#
# cargo-fuzz needs a compiler that takes -Z flags (sanitizers, coverage). The project's pinned
# toolchain does with RUSTC_BOOTSTRAP=1, so no nightly has to be downloaded (this machine
# cannot reach the toolchain server); the same release compiles the fuzz targets and the code.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${FUZZ_SECONDS:-60}
targets=${*:-signaling_message join_token node_config tenant_validation audit_verify syslog_frame engine}

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz@0.13.2
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build --release
failed=()
for target in $targets; do
  work=$(mktemp -d)
  echo "== fuzzing $target for ${seconds}s"
  if ! cargo fuzz run --release "$target" "$work" "seeds/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 2>"$work.log"; then
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' -A3 "$work.log" | head -n 40
    for crash in artifacts/"$target"/*; do
      [[ -f $crash ]] && echo "input ($crash), base64: $(base64 -w0 "$crash")"
    done
    failed+=("$target")
  else
    grep -E '^stat::number_of_executed_units|^Done' "$work.log" || true
  fi
  rm -rf "$work" "$work.log"
done
if ((${#failed[@]})); then
  echo "fuzzing found crashes in: ${failed[*]} (reproduce: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <input>)"
  exit 1
fi
echo "fuzzing: every target ran ${seconds}s without a crash"
