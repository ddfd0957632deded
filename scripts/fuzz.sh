#!/usr/bin/env bash
# Fuzzes sluice's request and response head parsers, the chunked decoder and config validation with
# cargo-fuzz (libFuzzer, AddressSanitizer, debug assertions on).
#
#   scripts/fuzz.sh [TARGET|all] [SECONDS]      each target SECONDS long (default: all, 600)
#
# Targets: request_head response_head chunked config (fuzz/fuzz_targets/). New inputs go to the
# git-ignored fuzz/corpus/TARGET/; the committed seeds in fuzz/seeds/TARGET/ are read, never written.
# Environment: FUZZ_JOBS=N runs N processes per target (libFuzzer -fork; default 1), FUZZ_CPUS=LIST
# pins them with taskset (e.g. 0), FUZZ_RSS_MB caps memory (default 2048).
# Uses the nightly toolchain when rustup has one, else stable with RUSTC_BOOTSTRAP=1; installs
# cargo-fuzz when missing. Prints per target the run time, executions and coverage; exits non-zero
# when a target crashed (panic, sanitizer report, leak, timeout, out of memory), after printing the
# stack trace and the input (kept in fuzz/artifacts/TARGET/).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

all=(request_head response_head chunked config)
which=${1:-all}
secs=${2:-600}
jobs=${FUZZ_JOBS:-1}
rss=${FUZZ_RSS_MB:-2048}
case $which in
  all) targets=("${all[@]}") ;;
  request_head | response_head | chunked | config) targets=("$which") ;;
  *) echo "usage: $0 [${all[*]// /|}|all] [SECONDS]" >&2; exit 2 ;;
esac
if ! [[ $secs =~ ^[0-9]+$ && $secs -gt 0 && $jobs =~ ^[0-9]+$ && $jobs -gt 0 ]]; then
  echo "SECONDS and FUZZ_JOBS must be positive integers" >&2
  exit 2
fi

if command -v rustup >/dev/null 2>&1 && rustup run nightly rustc --version >/dev/null 2>&1; then
  cargo=(cargo +nightly)
else
  # cargo-fuzz passes -Z flags (sanitizer, coverage passes); stable accepts them with this.
  export RUSTC_BOOTSTRAP=1
  cargo=(cargo)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
pin=()
if [ -n "${FUZZ_CPUS:-}" ]; then
  pin=(taskset -c "$FUZZ_CPUS")
fi

echo "fuzz: building with $("${cargo[@]}" --version)${RUSTC_BOOTSTRAP:+ (RUSTC_BOOTSTRAP=1)}"
"${pin[@]}" "${cargo[@]}" fuzz build -a

mkdir -p fuzz/logs
crashed=0
for t in "${targets[@]}"; do
  case $t in
    config) dict=config.dict max_len=16384 ;;
    chunked) dict=http.dict max_len=24576 ;; # room to pass the 16 KiB trailer limit
    *) dict=http.dict max_len=16384 ;;
  esac
  corpus=$root/fuzz/corpus/$t
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  log=$root/fuzz/logs/$t.log
  flags=(-max_total_time="$secs" -rss_limit_mb="$rss" -timeout=10 -max_len="$max_len"
    -dict="$root/fuzz/dicts/$dict" -print_final_stats=1)
  if [ "$jobs" -gt 1 ]; then
    flags+=(-fork="$jobs")
  fi
  start=$(date +%s)
  rc=0
  "${pin[@]}" "${cargo[@]}" fuzz run -a "$t" "$corpus" "$root/fuzz/seeds/$t" -- "${flags[@]}" >"$log" 2>&1 || rc=$?
  took=$(($(date +%s) - start))

  # libFuzzer's status lines: "#N <event> cov: C ft: F corp: K/S ..." (fork mode: "#N: cov: ...").
  last=$(grep -E '^#[0-9]+:?[[:space:]]' "$log" | grep ' cov: ' | tail -n 1 || true)
  execs=$(grep -oE '^stat::number_of_executed_units: [0-9]+' "$log" | tail -n 1 | awk '{print $2}' || true)
  if [ -z "$execs" ]; then
    execs=$(printf '%s\n' "$last" | grep -oE '^#[0-9]+' | tr -d '#' || true)
  fi
  cov=$(printf '%s\n' "$last" | grep -oE 'cov: [0-9]+' || true)
  ft=$(printf '%s\n' "$last" | grep -oE 'ft: [0-9]+' || true)
  corp=$(printf '%s\n' "$last" | grep -oE 'corp: [0-9]+(/[0-9]+[a-zA-Z]*)?' || true)
  files=$(find "$corpus" -type f | wc -l)
  if [ "$rc" = 0 ]; then
    verdict=ok
  else
    verdict="CRASHED (exit $rc)"
    crashed=$((crashed + 1))
  fi
  echo "fuzz $t: ${took} s, ${execs:-?} execs, ${cov:-cov: ?} ${ft:-ft: ?}, ${corp:-corp: ?}, corpus dir $files files, $verdict"
  if [ "$rc" != 0 ]; then
    # The panic or sanitizer report with its stack, through libFuzzer's "Base64:" of the input.
    report=$(awk '/panicked at|ERROR: |^==[0-9]+==/ {p = 1} p {print} /^Base64: / && p {exit}' "$log" | head -n 150 || true)
    echo "---- $log ----"
    if [ -n "$report" ]; then printf '%s\n' "$report"; else tail -n 40 "$log"; fi
    for a in $(grep -oE 'Test unit written to [^ ]+' "$log" | awk '{print $5}' | sort -u); do
      echo "input: $a ($(wc -c <"$a") bytes); replay: ${cargo[*]} fuzz run -a $t $a"
    done
  fi
done
echo "fuzz: ${#targets[@]} targets, $crashed crashed (logs in fuzz/logs/)"
[ "$crashed" = 0 ]
