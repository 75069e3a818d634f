#!/usr/bin/env bash
# Policy benchmark: Umbra's policy engine (Rego on regorus, native rules)
# side by side with OPA's own Go engine, in one process, on the same
# policies, data and inputs, release build. See bench/RESULTS.md, section
# "Policy", and bench/policybench/src/main.rs for what one sample is.
#
# Usage, from the repository root:   bench/policy.sh
#
# OPA's engine is the c-shared library libopabridge.so from the PyPI wheel
# opa-golib-python-bindings, fetched with pip (cached in bench/.cache/opa).
#
# Environment (all optional):
#   BENCH_SAMPLES      timed calls per engine, case and pass (default 20000;
#                      native rules take 5x as many)
#   BENCH_PASSES       passes; the summary takes the median (default 5)
#   BENCH_QUIET_WAIT   up to how many seconds to wait first until the machine
#                      is idle (< 0.2 cores busy over 3 s; default 600)
#   BENCH_OUT          raw output file (default bench/results/policy-<UTC date>.txt;
#                      a -<time> suffix is added if it exists)
#
# Needs: a Rust toolchain, python3 with pip, unzip. Exits non-zero if
# anything fails, including the two engines disagreeing on an answer.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
SAMPLES=${BENCH_SAMPLES:-20000}
PASSES=${BENCH_PASSES:-5}
QUIET_WAIT=${BENCH_QUIET_WAIT:-600}
DAY=$(date -u +%Y-%m-%d)
OUT=${BENCH_OUT:-bench/results/policy-$DAY.txt}
if [[ -e $OUT && -z ${BENCH_OUT:-} ]]; then
    OUT=bench/results/policy-$DAY-$(date -u +%H%M%S).txt
fi
mkdir -p bench/results

for tool in cargo python3 unzip; do
    command -v "$tool" >/dev/null || { echo "policy.sh: $tool is needed" >&2; exit 1; }
done

# OPA's engine, as the issue prescribes fetching it.
CACHE=bench/.cache/opa
LIB=$(find "$CACHE" -name libopabridge.so 2>/dev/null | head -n1 || true)
if [[ -z $LIB ]]; then
    mkdir -p "$CACHE"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.14 \
        --dest "$CACHE" opa-golib-python-bindings
    unzip -q -o "$CACHE"/opa_golib_python_bindings-*.whl -d "$CACHE/wheel"
    LIB=$(find "$CACHE" -name libopabridge.so | head -n1)
fi
WHEEL=$(basename "$(ls "$CACHE"/opa_golib_python_bindings-*.whl)")

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/bench-policy}
cargo build --release --quiet --manifest-path bench/policybench/Cargo.toml
BIN=$CARGO_TARGET_DIR/release/policybench

# Busy cores over 3 s, from /proc/stat.
busy() {
    read -r _ u n s i w q sq st _ < /proc/stat
    local b1=$((u + n + s + q + sq + st)) t1=$((u + n + s + i + w + q + sq + st))
    sleep 3
    read -r _ u n s i w q sq st _ < /proc/stat
    local b2=$((u + n + s + q + sq + st)) t2=$((u + n + s + i + w + q + sq + st))
    python3 -c "print(round(($b2 - $b1) / max(1, $t2 - $t1) * $(nproc), 2))"
}
quiet() {
    local start=$SECONDS cores
    while :; do
        cores=$(busy)
        if python3 -c "import sys; sys.exit(0 if $cores < 0.2 else 1)"; then
            echo "machine idle: $cores cores busy"
            return
        fi
        if (( SECONDS - start > QUIET_WAIT )); then
            echo "WARNING: machine still busy after ${QUIET_WAIT}s ($cores cores); measuring anyway"
            return
        fi
        sleep 2
    done
}

{
    echo "# bench/policy.sh"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse HEAD)$(git diff --quiet -- crates/policy policies bench/policybench || echo ' (with uncommitted changes in crates/policy, policies or bench/policybench)')"
    echo "command: BENCH_SAMPLES=$SAMPLES BENCH_PASSES=$PASSES bench/policy.sh"
    echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
    echo "OPA engine: $LIB (from $WHEEL)"
    echo
    quiet
    "$BIN" "$LIB" policies "$SAMPLES" "$PASSES"
} 2>&1 | tee "$OUT"
echo
echo "raw output: $OUT"
