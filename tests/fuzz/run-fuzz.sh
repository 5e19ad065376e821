#!/usr/bin/env bash
# Runs the libFuzzer targets of tests/fuzz (docs/fuzzing.md) and prints one summary line per target.
#
#   run-fuzz.sh BUILD_FUZZ --test [TARGET...]      the fixed budget of `tools/ccdocker-dev test`: each
#                                                  target replays its committed corpus (the seeds and
#                                                  every crash kept as a regression case), then makes
#                                                  a fixed number of new inputs from seed 1, into a
#                                                  scratch corpus, so that a run does not depend on
#                                                  the machine's speed or on earlier runs
#   run-fuzz.sh BUILD_FUZZ SECONDS [TARGET...]     a longer run, SECONDS per target, growing the work
#                                                  corpus in BUILD_FUZZ/corpus/TARGET across runs
#
# The committed corpus tests/fuzz/corpus/TARGET is only read. A crash leaves its input in
# BUILD_FUZZ/artifacts/ and makes the exit status 1; fix it, then copy the input into the committed
# corpus as a regression case.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_FUZZ=$1
MODE=$2
shift 2

# New inputs per target under --test: about 5 to 10 s each on this project's 2-core machine; the
# channel target, a socket and an event loop per input, is the slow one.
declare -A TEST_RUNS=(
    [fuzz-channel]=3000
    [fuzz-channel-events]=50000
    [fuzz-websocket]=20000
    [fuzz-config]=20000
    [fuzz-mcp]=30000
    [fuzz-session-config]=50000
    [fuzz-httpd-body]=50000
    [fuzz-egress-head]=100000
)

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for d in "$SRC"/tests/fuzz/corpus/*/; do
        targets+=("$(basename "$d")")
    done
fi

rc=0
mkdir -p "$BUILD_FUZZ/artifacts" "$BUILD_FUZZ/logs"
for t in "${targets[@]}"; do
    t=fuzz-${t#fuzz-}
    bin=$BUILD_FUZZ/tests/fuzz/$t
    seeds=$SRC/tests/fuzz/corpus/$t
    if [ ! -x "$bin" ] || [ ! -d "$seeds" ]; then
        echo "fuzz: $t: no such target (see tests/fuzz/meson.build)"
        rc=1
        continue
    fi
    log=$BUILD_FUZZ/logs/$t.log
    if [ "$MODE" = --test ]; then
        work=$(mktemp -d)
        budget=(-runs="${TEST_RUNS[$t]:-20000}" -seed=1)
    else
        work=$BUILD_FUZZ/corpus/$t
        mkdir -p "$work"
        budget=(-max_total_time="$MODE")
    fi
    frc=0
    "$bin" "${budget[@]}" -artifact_prefix="$BUILD_FUZZ/artifacts/$t-" -print_final_stats=1 \
        "$work" "$seeds" >"$log" 2>&1 || frc=$?
    [ "$MODE" = --test ] && rm -rf "$work"
    # "#12345	DONE   cov: 279 ft: 827 corp: 104/38Kb ..." is libFuzzer's last status line.
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
    if [ "$frc" -eq 0 ] && [ -n "$done_line" ]; then
        read -r runs cov ft corp < <(sed -E 's/^#([0-9]+).*cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+).*/\1 \2 \3 \4/' \
            <<<"$done_line")
        echo "fuzz: $t: ok, $runs runs, coverage $cov edges, $ft features, corpus $corp inputs"
    else
        artifact=$(grep -oE "Test unit written to [^ ]+" "$log" | tail -1 | sed 's/Test unit written to //' || true)
        echo "fuzz: $t: FAILED (exit $frc)${artifact:+, input in $artifact}; log in $log:"
        grep -E 'ERROR|SUMMARY|runtime error|==[0-9]+==' "$log" | head -5 | sed 's/^/fuzz:   /'
        rc=1
    fi
done
exit "$rc"
