#!/usr/bin/env bash
# scripts/fuzz.sh — coverage-guided fuzzing of pgward's parsers (docs/fuzzing.md).
#
#   scripts/fuzz.sh [--seconds N] [--runs N] [--no-build] [TARGET...]
#
# Builds every target with `cargo fuzz build -s none -a` (libFuzzer + SanitizerCoverage, no
# sanitizer runtime, debug assertions and overflow checks on), then runs the given targets
# (default: all) one after another, each until N runs or N seconds, whichever comes first.
# Seeds are read from fuzz/seeds/<target> (checked in); what libFuzzer learns grows into
# fuzz/corpus/<target> and crashes land in fuzz/artifacts/<target> (both gitignored). Prints
# one line per target: executions, coverage (libFuzzer's cov/ft), seconds, crash files.
# Exits 1 if any target crashed. Each fuzzer runs with a 2 MiB stack, a tokio worker's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TARGETS=(frontend_frames backend_frames startup normalize analyze cache_plan rules config)
seconds=60
runs=0
build=1
chosen=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n 2,13p "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) chosen+=("$1"); shift ;;
    esac
done
[[ ${#chosen[@]} -eq 0 ]] && chosen=("${TARGETS[@]}")
for t in "${chosen[@]}"; do
    [[ " ${TARGETS[*]} " == *" $t "* ]] || { echo "fuzz.sh: no target $t (have: ${TARGETS[*]})" >&2; exit 2; }
done

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz from crates.io" >&2
    cargo install --locked cargo-fuzz
fi
# cargo-fuzz passes nightly-only flags (-Zsanitizer etc.) only for sanitizers; with `-s none`
# stable works, and RUSTC_BOOTSTRAP lets the same command work on toolchains where it does not.
export RUSTC_BOOTSTRAP=1
# The binaries are run from fuzz/target below, so build them there even when the caller's
# environment points CARGO_TARGET_DIR elsewhere (it did once, and a stale fuzzer ran).
export CARGO_TARGET_DIR="$PWD/fuzz/target"
if [[ $build -eq 1 ]]; then
    (cd fuzz && cargo fuzz build -s none -a)
fi

host=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=fuzz/target/$host/release
crashed=0
printf '%-16s %12s %8s %8s %8s %8s\n' target executions cov ft seconds crashes
for t in "${chosen[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log="fuzz/artifacts/$t/last-run.log"
    before=$(find "fuzz/artifacts/$t" -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' | wc -l)
    # Rules and config files are a few KiB (rules.toml is 4); frames and SQL need less.
    max_len=4096
    [[ $t == rules || $t == config ]] && max_len=16384
    start=$(date +%s)
    set +e
    (
        ulimit -s 2048
        exec "$bin_dir/$t" "fuzz/corpus/$t" "fuzz/seeds/$t" \
            -runs="$runs" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
            -max_len="$max_len" -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/"
    ) >"$log" 2>&1
    rc=$?
    set -e
    elapsed=$(($(date +%s) - start))
    after=$(find "fuzz/artifacts/$t" -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' | wc -l)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    new=$((after - before))
    printf '%-16s %12s %8s %8s %8s %8s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$elapsed" "$new"
    if [[ $rc -ne 0 || $new -gt 0 ]]; then
        crashed=1
        echo "  $t: exit $rc; see $log" >&2
    fi
done
exit $crashed
