#!/usr/bin/env bash
# README command (2): sets up the machine (tools/setup.sh) and runs every test through Bazel,
# offline. Extra arguments go to `bazel test` (e.g. a single target).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
source tools/env.sh
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(//...)
log=$(mktemp)
set +e
bazel test "${targets[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -cE '^//\S+\s+(\(cached\) )?PASSED' "$log" || true)
failed=$(grep -cE '^//\S+\s+(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD)' "$log" || true)
rm -f "$log"
echo "bazel: $passed passed, $failed failed"
exit "$status"
