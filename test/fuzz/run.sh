#!/usr/bin/env bash
# Builds the libFuzzer targets (preset fuzz, clang) and runs each for a while.
#   test/fuzz/run.sh [seconds-per-target] [target...]   # default 600 s, every target
#   SG_FUZZ_JOBS=2 test/fuzz/run.sh 600                  # two targets at a time
# Seeds are copied from test/fuzz/corpus/<target>/ into a scratch directory (the new
# corpus stays out of the repository; SG_FUZZ_KEEP=1 keeps the scratch directory).
# Fails if any target finds a crash, leak, timeout or out-of-memory input, and prints its path.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-600}"
shift || true
jobs="${SG_FUZZ_JOBS:-1}"
all_targets=(fuzz_config fuzz_discord_gateway fuzz_envelope fuzz_history fuzz_llm_response fuzz_matrix_sync fuzz_mcp fuzz_resp fuzz_rest_body fuzz_sse fuzz_tools)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true
cmake --preset fuzz >/dev/null
flock /tmp/sg-build.lock cmake --build --preset fuzz

# Longest input and dictionary per target.
declare -A max_len=([fuzz_config]=2048 [fuzz_discord_gateway]=4096 [fuzz_envelope]=4096 [fuzz_history]=4096 [fuzz_llm_response]=8192 [fuzz_matrix_sync]=4096 [fuzz_mcp]=4096
                    [fuzz_resp]=4096 [fuzz_rest_body]=4096 [fuzz_sse]=2048 [fuzz_tools]=2048)
declare -A dict=([fuzz_config]=config.dict [fuzz_history]=json.dict [fuzz_llm_response]=json.dict [fuzz_matrix_sync]=json.dict [fuzz_mcp]=json.dict
                 [fuzz_resp]=resp.dict [fuzz_rest_body]=json.dict [fuzz_tools]=json.dict)

scratch="$(mktemp -d "${TMPDIR:-/tmp}/sg-fuzz.XXXXXX")"
[ -n "${SG_FUZZ_KEEP:-}" ] || trap 'rm -rf "$scratch"' EXIT
# A crash must abort (so libFuzzer saves the input); leaks are checked at exit of each run.
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

run_target() {
  local t="$1" dir="$scratch/$1"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  cp -r "test/fuzz/corpus/$t/." "$dir/corpus/" 2>/dev/null || true
  local args=("$dir/corpus" -max_total_time="$seconds" -max_len="${max_len[$t]:-4096}" -timeout=10
              -rss_limit_mb=2048 -artifact_prefix="$dir/artifacts/" -print_final_stats=1)
  [ -z "${dict[$t]:-}" ] || args+=(-dict="test/fuzz/${dict[$t]}")
  build/fuzz/test/fuzz/"$t" "${args[@]}" >"$dir/log" 2>&1 && echo 0 >"$dir/status" || echo $? >"$dir/status"
}

summary() {
  local t="$1" dir="$scratch/$1"
  # The last status line: "#N DONE cov: C ft: F corp: K/S ... exec/s: E ...".
  local last
  last="$(grep -E '^#[0-9]+' "$dir/log" | tail -1 || true)"
  printf '%-18s %s\n' "$t" "${last:-no status line}"
  local found
  found="$(find "$dir/artifacts" -type f ! -name 'slow-unit-*' | sort)"
  if [ "$(cat "$dir/status")" != 0 ] || [ -n "$found" ]; then
    echo "FAILED: $t (exit $(cat "$dir/status")); log: $dir/log" >&2
    grep -E 'ERROR|SUMMARY|property failed|runtime error' "$dir/log" | head -5 >&2 || true
    for f in $found; do echo "  input: $f" >&2; done
    return 1
  fi
}

running=0
for t in "${targets[@]}"; do
  run_target "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait

failed=0
for t in "${targets[@]}"; do summary "$t" || failed=1; done
if [ "$failed" -ne 0 ]; then
  trap - EXIT  # keep the crashing inputs
  echo "fuzzing found problems; inputs and logs are under $scratch" >&2
  exit 1
fi
