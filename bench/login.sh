#!/usr/bin/env bash
# Controller login benchmark: logins per second and p50/p99 latency of
# POST /api/v1/auth/login (mTLS + password + TOTP/recovery code) on SQLite
# and PostgreSQL, release build. See bench/RESULTS.md.
#
# Usage, from the repository root:   bench/login.sh
#
# Environment (all optional):
#   BENCH_BACKENDS   "sqlite postgres" (default) or one of them
#   BENCH_DURATION   seconds of the timed phase per backend (default 30)
#   BENCH_WORKERS    concurrent login workers (default 2 x nproc)
#   BENCH_USERS      users/devices to create (default auto: enough one-time
#                    credentials for 1.5x the rate argon2 allows on this machine)
#   BENCH_OUT        raw output file (default bench/results/login-<UTC date>.txt;
#                    a -<time> suffix is added if it exists)
#   BENCH_ARGON2_MEMORY_KIB / BENCH_ARGON2_ITERATIONS / BENCH_ARGON2_PARALLELISM
#                    argon2id cost (default 19456 / 2 / 1, the controller's defaults)
#   BENCH_QUIET_WAIT up to how many seconds to wait, before each timed phase,
#                    for the machine to be idle (default 600; a warning if not)
#   PGHOST           PostgreSQL socket directory (default /var/run/postgresql)
#
# Needs: a Rust toolchain, python3 with `cryptography` (installed into
# bench/.venv when missing), and for PostgreSQL a running local server on
# its socket where the current user may create databases. Exits non-zero if
# anything fails, including a single non-200 login.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

BACKENDS=${BENCH_BACKENDS:-sqlite postgres}
DURATION=${BENCH_DURATION:-30}
NPROC=$(nproc)
WORKERS=${BENCH_WORKERS:-$((2 * NPROC))}
USERS=${BENCH_USERS:-auto}
ARGON2_M=${BENCH_ARGON2_MEMORY_KIB:-19456}
ARGON2_T=${BENCH_ARGON2_ITERATIONS:-2}
ARGON2_P=${BENCH_ARGON2_PARALLELISM:-1}
PGHOST=${PGHOST:-/var/run/postgresql}
export PGHOST
QUIET_WAIT=${BENCH_QUIET_WAIT:-600}
# Per-source-IP login bucket: every login comes from 127.0.0.1, so it is
# raised far above what the benchmark can reach (defaults: 30/min, burst 10).
RATE_PER_MINUTE=100000000
BURST=100000000

mkdir -p bench/results
DATE=$(date -u +%Y-%m-%d)
OUT=${BENCH_OUT:-bench/results/login-$DATE.txt}
if [[ -z ${BENCH_OUT:-} && -e $OUT ]]; then
    OUT=bench/results/login-$DATE-$(date -u +%H%M%S).txt
fi

# ---- cleanup ---------------------------------------------------------------
TMPDIRS=()
PIDS=()
DBS=()
cleanup() {
    local pid db dir
    for pid in "${PIDS[@]:-}"; do
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        if [[ -n $pid ]]; then wait "$pid" 2>/dev/null || true; fi
    done
    for db in "${DBS[@]:-}"; do
        if [[ -n $db ]]; then dropdb --if-exists "$db" 2>/dev/null || true; fi
    done
    for dir in "${TMPDIRS[@]:-}"; do
        if [[ -n $dir && -d $dir ]]; then rm -rf -- "$dir" || true; fi
    done
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- python --------------------------------------------------------------
PY=python3
if ! $PY -c 'import cryptography' 2>/dev/null; then
    if [[ ! -x bench/.venv/bin/python ]]; then
        python3 -m venv bench/.venv
        bench/.venv/bin/pip install --quiet cryptography
    fi
    PY=$ROOT/bench/.venv/bin/python
fi

# ---- build -----------------------------------------------------------------
echo "building: cargo build --release -p umbra" >&2
cargo build --release -p umbra >&2
BIN=$ROOT/target/release/umbra
# argon2id alone, same crate and version as the controller (its own workspace).
echo "building: bench/argon2-cost (cargo build --release)" >&2
(cd bench/argon2-cost && { cargo build --release --locked >&2 2>/dev/null || cargo build --release --locked --offline >&2; })
ARGON2_COST=$ROOT/bench/argon2-cost/target/release/umbra-bench-argon2-cost

free_port() {
    $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---- header (raw output from here on) ----------------------------------------
exec > >(tee "$OUT") 2>&1
echo "# Umbra controller login benchmark"
echo "date        : $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit      : $(git rev-parse HEAD)"
DIRTY=$(git status --porcelain --untracked-files=no | wc -l)
echo "worktree    : $([[ $DIRTY -eq 0 ]] && echo clean || echo "$DIRTY tracked file(s) modified, built as is:") $(git status --porcelain --untracked-files=no | awk '{print $2}' | tr '\n' ' ')"
echo "command     : bench/login.sh  (BENCH_BACKENDS='$BACKENDS' BENCH_DURATION=$DURATION BENCH_WORKERS=$WORKERS BENCH_USERS=$USERS)"
echo "binary      : target/release/umbra (cargo build --release -p umbra), $($BIN --version 2>/dev/null || echo '?')"
echo "rustc       : $(rustc --version)"
echo "machine     : nproc $NPROC, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo)"
echo "cpu         : $(awk -F': ' '/^cpu family/ {f=$2} /^model\t/ {m=$2} /^flags/ {h=($2 ~ /hypervisor/) ? ", virtual machine (hypervisor flag)" : ""} END {print "family " f " model " m h}' /proc/cpuinfo)"
echo "kernel      : $(uname -sr)"
echo "filesystem  : $(df -T "${TMPDIR:-/tmp}" | awk 'NR==2 {print $2}') (${TMPDIR:-/tmp}, SQLite data_dir)"
echo "python      : $($PY --version 2>&1), cryptography $($PY -c 'import cryptography; print(cryptography.__version__)')"
if [[ " $BACKENDS " == *" postgres "* ]]; then
    echo "postgresql  : $(psql -d postgres -Atc 'show server_version' 2>/dev/null || echo unavailable), socket $PGHOST"
fi
echo "argon2id    : m=$ARGON2_M KiB, t=$ARGON2_T, p=$ARGON2_P  ([auth] argon2_memory_kib / argon2_iterations / argon2_parallelism)"
echo "rate limit  : [auth] login_rate_per_minute = $RATE_PER_MINUTE, login_burst = $BURST"
echo "controller  : UMBRA_LOG unset (info: one audit log line per login), stderr to a file"
echo

run_backend() {
    local backend=$1 dir port cfg pid db="" extra=() rc=0
    dir=$(mktemp -d "${TMPDIR:-/tmp}/umbra-bench-login.XXXXXX") || return 1
    TMPDIRS+=("$dir")
    mkdir -p "$dir/data" "$dir/devices" || return 1
    head -c32 /dev/urandom | base64 > "$dir/kek" || return 1
    chmod 600 "$dir/kek"
    port=$(free_port) || return 1
    cfg=$dir/controller.toml
    cat > "$cfg" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$dir/data"
trust_domain = "bench.local"
server_names = ["127.0.0.1"]
kek_file = "$dir/kek"

[auth]
login_rate_per_minute = $RATE_PER_MINUTE
login_burst = $BURST
argon2_memory_kib = $ARGON2_M
argon2_iterations = $ARGON2_T
argon2_parallelism = $ARGON2_P
TOML
    case $backend in
        sqlite)
            extra=(--sqlite-db "$dir/data/umbra.db")
            ;;
        postgres)
            db=umbra_bench_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
            createdb "$db" || return 1
            DBS+=("$db")
            cat >> "$cfg" <<TOML

[store]
backend = "postgres"
url = "postgres:///$db?host=$PGHOST&user=$(id -un)"
TOML
            extra=(--pg-db "$db")
            ;;
        *)
            echo "unknown backend: $backend" >&2
            return 1
            ;;
    esac
    echo "==== $backend ===="
    echo "controller config:"
    sed 's/^/    /' "$cfg"
    "$BIN" controller --config "$cfg" > "$dir/controller.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    $PY bench/login_load.py --port "$port" --data-dir "$dir/data" --workdir "$dir/devices" \
        --backend "$backend" --server-pid "$pid" --users "$USERS" --workers "$WORKERS" \
        --duration "$DURATION" --argon2-cost "$ARGON2_COST" --argon2 "$ARGON2_M,$ARGON2_T,$ARGON2_P" \
        --quiet-wait "$QUIET_WAIT" "${extra[@]}" | tee "$RUNDIR/$backend.out" || rc=$?
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local warn
    warn=$(grep -cE ' (WARN|ERROR) ' "$dir/controller.log" || true)
    echo "controller log: $(wc -l < "$dir/controller.log") lines, $warn WARN/ERROR"
    if [[ $warn -gt 0 || $rc -ne 0 ]]; then
        grep -E ' (WARN|ERROR) ' "$dir/controller.log" | head -20 || true
        if [[ $rc -ne 0 ]]; then tail -20 "$dir/controller.log"; fi
    fi
    if [[ -n $db ]]; then
        dropdb --if-exists "$db" || rc=1
    fi
    rm -rf -- "$dir"
    echo
    return "$rc"
}

RUNDIR=$(mktemp -d "${TMPDIR:-/tmp}/umbra-bench-run.XXXXXX")
TMPDIRS+=("$RUNDIR")
FAILED=0
for backend in $BACKENDS; do
    rc=0
    run_backend "$backend" || rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "!!!! $backend: FAILED (exit $rc)"
        FAILED=1
    fi
done

echo "==== summary ===="
for backend in $BACKENDS; do
    grep '^RESULT ' "$RUNDIR/$backend.out" 2>/dev/null | sed 's/^RESULT //' || true
done > "$RUNDIR/results.jsonl"
$PY - "$RUNDIR/results.jsonl" <<'PY'
import json, sys
print("| backend | logins/s | p50 ms | p99 ms | errors | N users | W workers | logins ok (totp + recovery) |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for line in open(sys.argv[1]):
    r = json.loads(line)
    q = r["request_ms"]
    print("| %s | %.1f | %.1f | %.1f | %d | %d | %d | %d (%d + %d) |" % (
        r["backend"], r["logins_per_s"], q["p50"], q["p99"], r["errors"], r["users"], r["workers"],
        r["ok"], r["totp"], r["recovery"]))
PY
echo "(p50/p99: POST /api/v1/auth/login on an established TLS connection; see the per-backend"
echo " sections above for the total including the TCP + TLS handshake)"
echo "raw output: $OUT"
exit "$FAILED"
