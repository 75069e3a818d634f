#!/usr/bin/env bash
# Proxy benchmark: the Umbra gateway (mTLS + per-request authorization)
# against nginx as an mTLS reverse proxy (ssl_verify_client on) and nginx
# with auth_request to a trivial auth endpoint, on the same machine, the same
# upstream and the same load, release build. See bench/RESULTS.md.
#
# Usage, from the repository root:   bench/proxy.sh
#
# Environment (all optional):
#   BENCH_ROUNDS        rounds of (a) (b) (c), back to back (default 2); odd
#                       rounds run a b c, even rounds c b a
#   BENCH_CONNECTIONS   keep-alive connections of the load (default 64)
#   BENCH_DURATION      measured seconds per proxy and round (default 20)
#   BENCH_WARMUP        warm-up seconds before each, not counted (default 2)
#   BENCH_CONNECT_COUNT new connections measured one at a time (default 500)
#   BENCH_IDLE          idle authorized connections held (default 10000)
#   BENCH_IDLE_SOURCES  source addresses they come from, 127.0.1.1... (default 50)
#   BENCH_HOLD          seconds they are held (default 20)
#   BENCH_NOFILE        file descriptor limit set for every process (default: the
#                       hard limit, or 200000 if unlimited; at least BENCH_IDLE + 1000)
#   BENCH_BUILD         head (default): build exactly the commit (git archive of HEAD
#                       into a temp dir), leaving uncommitted edits out;
#                       worktree: build the working tree as is (target/release)
#   BENCH_QUIET_WAIT    up to how many seconds to wait, before each phase, until the
#                       machine's other processes are idle (< 0.05 cores over 3 s;
#                       default 900; a warning if not)
#   BENCH_MAX_OTHERS    a timed phase during which other processes used more than
#                       this many cores (default 0.05) is run again ...
#   BENCH_RETRIES       ... up to this many more times (default 3); every attempt
#                       is in the raw output, the last one counts
#   BENCH_PERF          1: also profile the gateway with `perf record` during one
#                       extra, untimed load phase and print the top symbols
#   BENCH_OUT           raw output file (default bench/results/proxy-<UTC date>.txt;
#                       a -<time> suffix is added if it exists)
#
# Needs: a Rust toolchain, nginx (Debian: apt-get install nginx; only the
# binary is used, with its own config in a temp dir), openssl, oathtool, curl,
# python3. Exits non-zero if anything fails, including a single error in a
# timed phase.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${BENCH_ROUNDS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
DURATION=${BENCH_DURATION:-20}
WARMUP=${BENCH_WARMUP:-2}
CONNECT_COUNT=${BENCH_CONNECT_COUNT:-500}
IDLE=${BENCH_IDLE:-10000}
IDLE_SOURCES=${BENCH_IDLE_SOURCES:-50}
HOLD=${BENCH_HOLD:-20}
BENCH_IDLE_MIN=$((IDLE + 1000))
HARD_NOFILE=$(ulimit -Hn)
BUILD=${BENCH_BUILD:-head}
QUIET_WAIT=${BENCH_QUIET_WAIT:-900}
MAX_OTHERS=${BENCH_MAX_OTHERS:-0.05}
RETRIES=${BENCH_RETRIES:-3}
PERF=${BENCH_PERF:-0}
NOFILE=${BENCH_NOFILE:-$([[ $HARD_NOFILE == unlimited ]] && echo 200000 || echo "$HARD_NOFILE")}

for tool in nginx openssl oathtool curl python3; do
    command -v "$tool" >/dev/null || { echo "bench/proxy.sh needs $tool" >&2; exit 1; }
done
# 10,000 connections need 10,000 descriptors on each side (nginx and the
# gateway also hold upstream connections).
if [[ $HARD_NOFILE != unlimited && $HARD_NOFILE -lt $NOFILE ]]; then
    ulimit -Hn "$NOFILE" 2>/dev/null || {
        echo "cannot raise the hard limit of open files ($HARD_NOFILE) to $NOFILE; set BENCH_NOFILE" >&2
        exit 1
    }
fi
ulimit -n "$NOFILE"
if ((NOFILE < BENCH_IDLE_MIN)); then
    echo "ulimit -n $NOFILE is too low for $IDLE idle connections" >&2
    exit 1
fi

mkdir -p bench/results
DATE=$(date -u +%Y-%m-%d)
OUT=${BENCH_OUT:-bench/results/proxy-$DATE.txt}
if [[ -z ${BENCH_OUT:-} && -e $OUT ]]; then
    OUT=bench/results/proxy-$DATE-$(date -u +%H%M%S).txt
fi

# ---- cleanup ---------------------------------------------------------------
PIDS=()
TMP=
cleanup() {
    local pid
    for pid in "${PIDS[@]:-}"; do
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        if [[ -n $pid ]]; then wait "$pid" 2>/dev/null || true; fi
    done
    if [[ -n $TMP && -d $TMP ]]; then rm -rf -- "$TMP" || true; fi
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop() { # PID: TERM, wait up to 15 s, KILL
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# ---- build -----------------------------------------------------------------
COMMIT=$(git rev-parse HEAD)
if [[ $BUILD == worktree ]]; then
    # The working tree as it is, like bench/login.sh.
    echo "building: cargo build --release -p umbra (working tree)" >&2
    cargo build --release -p umbra >&2
    BIN=$ROOT/target/release/umbra
    BUILT_FROM="working tree, target/release/umbra"
else
    # Exactly the commit: other people's uncommitted edits stay out.
    BUILD_DIR=${TMPDIR:-/tmp}/umbra-bench-proxy-build
    SRC=$BUILD_DIR/src-$COMMIT
    if [[ ! -d $SRC ]]; then
        rm -rf "$SRC.tmp" && mkdir -p "$SRC.tmp"
        git archive "$COMMIT" | tar -x -C "$SRC.tmp"
        mv "$SRC.tmp" "$SRC"
    fi
    echo "building: cargo build --release -p umbra (git archive $COMMIT, CARGO_TARGET_DIR=$BUILD_DIR/target)" >&2
    (cd "$SRC" && CARGO_TARGET_DIR=$BUILD_DIR/target cargo build --release --locked -p umbra >&2)
    BIN=$BUILD_DIR/target/release/umbra
    BUILT_FROM="commit $COMMIT exactly (git archive into $SRC), $BIN"
fi
echo "building: bench/loadgen (cargo build --release)" >&2
(cd bench/loadgen && { cargo build --release --locked >&2 2>/dev/null || cargo build --release --locked --offline >&2; })
LOADGEN=$ROOT/bench/loadgen/target/release/loadgen

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for() { # SECONDS CMD...: retry CMD every 0.2 s
    local n=$(($1 * 5)); shift
    for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    "$@"
}
rss_kib() { # PID...: summed VmRSS in KiB
    local pid total=0
    for pid in "$@"; do
        total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")))
    done
    echo "$total"
}
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
nginx_pids() { echo "$NGINX_PID" $(pgrep -P "$NGINX_PID" | tr '\n' ' '); }
csv() { echo "$*" | tr ' ' ','; }

# ---- header (raw output from here on) ----------------------------------------
exec > >(tee "$OUT") 2>&1
echo "# Umbra gateway vs nginx proxy benchmark"
echo "date        : $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit      : $COMMIT"
DIRTY=$(git status --porcelain --untracked-files=no | wc -l)
echo "worktree    : $([[ $DIRTY -eq 0 ]] && echo clean || echo "$DIRTY tracked file(s) modified:") $(git status --porcelain --untracked-files=no | awk '{print $2}' | tr '\n' ' ')"
echo "built from  : $BUILT_FROM"
echo "command     : bench/proxy.sh  (BENCH_BUILD=$BUILD BENCH_ROUNDS=$ROUNDS BENCH_CONNECTIONS=$CONNECTIONS BENCH_DURATION=$DURATION BENCH_WARMUP=$WARMUP BENCH_CONNECT_COUNT=$CONNECT_COUNT BENCH_IDLE=$IDLE BENCH_IDLE_SOURCES=$IDLE_SOURCES BENCH_HOLD=$HOLD BENCH_NOFILE=$NOFILE)"
echo "binary      : cargo build --release -p umbra, $($BIN --version 2>/dev/null || echo '?')"
echo "loadgen     : bench/loadgen (cargo build --release; tokio + hyper 1 + tokio-rustls, aws-lc-rs)"
echo "rustc       : $(rustc --version)"
echo "nginx       : $(nginx -v 2>&1 | sed 's/^nginx version: //') (Debian package $(dpkg-query -W -f='${Version}' nginx 2>/dev/null || echo '?')), $(openssl version)"
echo "machine     : nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo)"
echo "cpu         : $(awk -F': ' '/^cpu family/ {f=$2} /^model\t/ {m=$2} /^flags/ {h=($2 ~ /hypervisor/) ? ", virtual machine (hypervisor flag)" : ""} END {print "family " f " model " m h}' /proc/cpuinfo)"
echo "kernel      : $(uname -sr)"
echo "ulimit -n   : $(ulimit -n) (every process started here)"
echo "load        : $CONNECTIONS keep-alive connections, closed loop (one request in flight each), ${WARMUP} s warm-up + ${DURATION} s measured, GET / with Host and Authorization: Bearer <session token> (sent to all three)"
echo

TMP=$(mktemp -d "${TMPDIR:-/tmp}/umbra-bench-proxy.XXXXXX")
mkdir -p "$TMP/ctl" "$TMP/agent-home" "$TMP/gw" "$TMP/nginx" "$TMP/pki"

# ---- the upstream ------------------------------------------------------------
UP_PORT=$(free_port)
"$LOADGEN" upstream --listen "127.0.0.1:$UP_PORT" --body-bytes 64 > "$TMP/upstream.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
wait_for 10 curl -sf "http://127.0.0.1:$UP_PORT/__stats"
up_stats() { curl -sf "http://127.0.0.1:$UP_PORT/__stats"; }
echo "upstream    : bench/loadgen upstream on 127.0.0.1:$UP_PORT (hyper, HTTP/1.1, 200 with a 64-byte body; /auth: 204 when an Authorization header is present, else 401)"

# ---- controller, user, device, gateway: through the real API and CLI ---------
CTL_PORT=$(free_port)
head -c32 /dev/urandom | base64 > "$TMP/ctl/kek"
chmod 600 "$TMP/ctl/kek"
cat > "$TMP/ctl/controller.toml" <<TOML
listen = "127.0.0.1:$CTL_PORT"
data_dir = "$TMP/ctl/data"
trust_domain = "bench.local"
server_names = ["127.0.0.1"]
kek_file = "$TMP/ctl/kek"

# The load moves gigabytes in one session, which threat detection would
# rightly call exfiltration (> 100 MB) and answer by suspending the user
# mid-run. Detection stays on (its cost is part of what is measured).
[detection]
transfer_bytes = 1000000000000
TOML
"$BIN" controller --config "$TMP/ctl/controller.toml" > "$TMP/controller.log" 2>&1 &
CTL_PID=$!
PIDS+=("$CTL_PID")
CTL_URL=https://127.0.0.1:$CTL_PORT
wait_for 30 curl -skf "$CTL_URL/readyz"
curl -skf "$CTL_URL/api/v1/ca" > "$TMP/ctl/ca.pem" # loopback, from the process just started
export UMBRA_CONTROLLER=$CTL_URL UMBRA_CA_CERT=$TMP/ctl/ca.pem
UMBRA_ADMIN_TOKEN=$("$BIN" admin bootstrap --token-file "$TMP/ctl/data/bootstrap-admin-token")
export UMBRA_ADMIN_TOKEN
PASSWORD=$(head -c18 /dev/urandom | base64)
TOTP_SECRET=$(printf '%s' "$PASSWORD" | "$BIN" admin user add demo --password-stdin --json \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["totp"]["secret"])')
ENROLL=$("$BIN" admin token enroll --user demo --json \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
AGENT=$TMP/agent-home/agent
"$BIN" agent --dir "$AGENT" enroll --controller "$CTL_URL" --token "$ENROLL" > /dev/null
"$BIN" admin gateway add bench --san 127.0.0.1 > "$TMP/gw/token" 2>/dev/null
"$BIN" admin service set bench --user demo > /dev/null
GW_PORT=$(free_port)
write_gateway_config() { # extra TOML lines
    cat > "$TMP/gw/gateway.toml" <<TOML
controller_url = "$CTL_URL"
listen = "127.0.0.1:$GW_PORT"
state_dir = "$TMP/gw/state"
enrollment_token_file = "$TMP/gw/token"
$1
[[routes]]
service = "bench"
upstream = "http://127.0.0.1:$UP_PORT"
TOML
}
write_gateway_config ""
GW_PID=
start_gateway() {
    "$BIN" gateway --config "$TMP/gw/gateway.toml" >> "$TMP/gateway.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
}
start_gateway
# Log in as the user, with the device: password + TOTP, like a person would.
printf '%s' "$PASSWORD" | "$BIN" agent --dir "$AGENT" login --user demo --password-stdin \
    --totp "$(oathtool --totp -b "$TOTP_SECRET")" > /dev/null
python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["token"])' "$AGENT/session.json" > "$TMP/token"
echo "controller  : umbra controller on 127.0.0.1:$CTL_PORT (SQLite, defaults except [detection] transfer_bytes = 1e12; pid $CTL_PID)"
echo "gateway     : umbra gateway on 127.0.0.1:$GW_PORT, enrolled with 'umbra admin gateway add bench --san 127.0.0.1', route bench -> 127.0.0.1:$UP_PORT, 'umbra admin service set bench --user demo'; [limits] defaults; UMBRA_LOG unset (info: one 'access' log line per request, to a file)"
echo "session     : user demo, 'umbra agent login --user demo --password-stdin --totp <oathtool>', token from session.json ($(wc -c < "$TMP/token") bytes)"

# ---- nginx: a throwaway server certificate, the Umbra CA for clients ----------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench-throwaway-ca -keyout "$TMP/pki/ca.key" -out "$TMP/pki/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$TMP/pki/server.key" -out "$TMP/pki/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > "$TMP/pki/ext"
openssl x509 -req -in "$TMP/pki/server.csr" -CA "$TMP/pki/ca.pem" -CAkey "$TMP/pki/ca.key" \
    -CAcreateserial -days 2 -extfile "$TMP/pki/ext" -out "$TMP/pki/server.crt" 2>/dev/null
NA_PORT=$(free_port)
NB_PORT=$(free_port)
N=$TMP/nginx
mkdir -p "$N/logs" "$N/tmp"
TLS_COMMON="
        ssl_certificate $TMP/pki/server.crt;
        ssl_certificate_key $TMP/pki/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_client_certificate $TMP/ctl/ca.pem;
        ssl_verify_client on;
        ssl_verify_depth 2;
        keepalive_requests 100000000;
        keepalive_timeout 300s;"
PROXY_COMMON="
            proxy_pass http://upstream_app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;"
# Workers run as this user (as root, nginx would switch them to nobody,
# who cannot reach the temp dir).
NGINX_USER=
if [[ $(id -u) -eq 0 ]]; then NGINX_USER="user $(id -un) $(id -gn);"; fi
cat > "$N/nginx.conf" <<NGINX
$NGINX_USER
worker_processes auto;
worker_rlimit_nofile $NOFILE;
pid $N/nginx.pid;
error_log $N/logs/error.log warn;
events {
    worker_connections 50000;
}
http {
    access_log $N/logs/access.log;
    client_body_temp_path $N/tmp/body;
    proxy_temp_path $N/tmp/proxy;
    fastcgi_temp_path $N/tmp/fastcgi;
    uwsgi_temp_path $N/tmp/uwsgi;
    scgi_temp_path $N/tmp/scgi;
    upstream upstream_app {
        server 127.0.0.1:$UP_PORT;
        keepalive 128;
    }
    upstream upstream_auth {
        server 127.0.0.1:$UP_PORT;
        keepalive 128;
    }
    # (a) mTLS reverse proxy.
    server {
        listen 127.0.0.1:$NA_PORT ssl;$TLS_COMMON
        location / {$PROXY_COMMON
        }
    }
    # (b) the same, plus auth_request to a trivial endpoint.
    server {
        listen 127.0.0.1:$NB_PORT ssl;$TLS_COMMON
        location / {
            auth_request /_auth;$PROXY_COMMON
        }
        location = /_auth {
            internal;
            proxy_pass http://upstream_auth/auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
NGINX
nginx -t -q -p "$N" -c "$N/nginx.conf"
nginx -p "$N" -c "$N/nginx.conf" -g 'daemon off;' > "$N/logs/stderr.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
echo "nginx       : $(nproc) workers (worker_processes auto), one config with two servers: (a) 127.0.0.1:$NA_PORT ssl_verify_client on; (b) 127.0.0.1:$NB_PORT the same + auth_request -> upstream /auth; keep-alive upstream pools (keepalive 128, HTTP/1.1), keepalive_requests 100000000, access_log on (to a file). Server certificate: throwaway P-256 CA; client CA: the Umbra CA"
echo

# ---- targets -------------------------------------------------------------------
COMMON=(--ca "$TMP/ctl/ca.pem" --ca "$TMP/pki/ca.pem" --cert "$AGENT/device.crt" --key "$AGENT/device.key"
        --server-name 127.0.0.1 --host bench)
target() { # a|b|c -> loadgen target arguments
    case $1 in
        a) echo "--label a --addr 127.0.0.1:$NA_PORT" ;;
        b) echo "--label b --addr 127.0.0.1:$NB_PORT" ;;
        c) echo "--label c --addr 127.0.0.1:$GW_PORT" ;;
    esac
}
declare -A NAME=([a]="(a) nginx mTLS" [b]="(b) nginx mTLS + auth_request" [c]="(c) Umbra gateway")
gateway_ready() {
    "$LOADGEN" connect $(target c) "${COMMON[@]}" --token-file "$TMP/token" --count 1 --warmup-count 0 | grep -q '"errors":0'
}
wait_for 60 gateway_ready

echo "==== sanity: who lets what through ===="
sanity() { # label expect args...
    local label=$1 expect=$2; shift 2
    local r
    r=$("$LOADGEN" connect "$@" "${COMMON[@]}" --count 3 --warmup-count 0 --expect "$expect" | grep '^RESULT')
    if [[ $r == *'"errors":0'* ]]; then
        echo "ok   $label: HTTP $expect"
    else
        echo "FAIL $label: expected HTTP $expect: $r"
        return 1
    fi
}
for p in a b c; do sanity "${NAME[$p]} with the session token" 200 $(target $p) --token-file "$TMP/token"; done
sanity "${NAME[a]} without a token (no authorization in (a))" 200 $(target a)
sanity "${NAME[b]} without a token" 401 $(target b)
sanity "${NAME[c]} without a token" 401 $(target c)
echo

RUNS=$TMP/results.jsonl
: > "$RUNS"
FAILED=0
quiet() { "$LOADGEN" quiet --max-cores 0.05 --timeout "$QUIET_WAIT"; }
run_load() { # round proxy
    local r=$1 p=$2 attempt
    for attempt in $(seq 0 "$RETRIES"); do
        run_load_once "$r" "$p" "$attempt"
        python3 -c 'import json, sys; r = json.loads(open(sys.argv[1]).read().splitlines()[-1]); sys.exit(0 if r["others_cores"] <= float(sys.argv[2]) else 1)' "$RUNS" "$MAX_OTHERS" && return 0
        if ((attempt < RETRIES)); then
            echo "!!!! other processes used more than $MAX_OTHERS cores during this phase: it is run again"
            sed -i '$d' "$RUNS"
        else
            echo "!!!! other processes used more than $MAX_OTHERS cores during this phase, $((RETRIES + 1)) times: kept, marked"
        fi
    done
}
run_load_once() { # round proxy attempt
    local r=$1 p=$2 attempt=$3 watch=() before after out
    case $p in
        a|b) watch=(--watch "nginx=$(csv $(nginx_pids))") ;;
        c) watch=(--watch "gateway=$GW_PID" --watch "controller=$CTL_PID") ;;
    esac
    watch+=(--watch "upstream=$UP_PID")
    echo "---- round $r: ${NAME[$p]}$( ((attempt)) && echo ", attempt $((attempt + 1))") ----"
    quiet
    before=$(up_stats)
    out=$("$LOADGEN" load $(target "$p") "${COMMON[@]}" --token-file "$TMP/token" \
        --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" "${watch[@]}")
    after=$(up_stats)
    echo "$out"
    echo "upstream counters before: $before"
    echo "upstream counters after : $after"
    if [[ $p == c ]]; then echo "gateway RSS after: $(rss_kib "$GW_PID") KiB (VmHWM $(hwm_kib "$GW_PID") KiB)"; fi
    echo "$out" | grep '^RESULT ' | sed "s/^RESULT //" \
        | python3 -c 'import json, sys; r = json.load(sys.stdin); r["round"] = int(sys.argv[1]); r["proxy"] = sys.argv[2]; r["attempt"] = int(sys.argv[3]) + 1; print(json.dumps(r))' "$r" "$p" "$attempt" >> "$RUNS"
    if ! echo "$out" | grep -q '"errors":0,'; then echo "!!!! errors in ${NAME[$p]}"; FAILED=1; fi
    echo
}
run_connect() { # round proxy [kx]
    local r=$1 p=$2 kx=${3:-x25519} out
    echo "---- round $r: ${NAME[$p]}, new connections (kx $kx) ----"
    quiet
    out=$("$LOADGEN" connect $(target "$p") "${COMMON[@]}" --token-file "$TMP/token" --kx "$kx" \
        --count "$CONNECT_COUNT" --warmup-count 20)
    echo "$out"
    echo "$out" | grep '^RESULT ' | sed "s/^RESULT //" \
        | python3 -c 'import json, sys; r = json.load(sys.stdin); r["round"] = int(sys.argv[1]); r["proxy"] = sys.argv[2]; r["kx"] = sys.argv[3]; print(json.dumps(r))' "$r" "$p" "$kx" >> "$RUNS"
    if ! echo "$out" | grep -q '"errors":0,'; then echo "!!!! failures in ${NAME[$p]}"; FAILED=1; fi
    echo
}

echo "==== timed phases ===="
for r in $(seq "$ROUNDS"); do
    if ((r % 2)); then order="a b c"; else order="c b a"; fi
    for p in $order; do run_load "$r" "$p"; done
    for p in $order; do run_connect "$r" "$p"; done
    run_connect "$r" c pq
done

if [[ $PERF == 1 ]]; then
    echo "==== profile of the gateway: perf record -F 999 -g during an extra, untimed (c) load phase ===="
    quiet
    perf record -F 999 -g -o "$TMP/perf.data" -p "$GW_PID" -- sleep "$((DURATION + WARMUP))" > /dev/null 2>&1 &
    PERF_PID=$!
    "$LOADGEN" load $(target c) "${COMMON[@]}" --token-file "$TMP/token" \
        --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" | grep -E '^(requests|latency)'
    wait "$PERF_PID" || true
    perf report -i "$TMP/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null > "$TMP/perf.txt" || true
    echo "-- top symbols, self time (perf report --no-children --sort dso,symbol) --"
    { grep -E '^ +[0-9.]+%' "$TMP/perf.txt" || true; } | head -25 | cut -c1-140 | sed 's/ *$//'
    echo "-- self time by area (symbol name patterns) --"
    python3 - "$TMP/perf.txt" <<'PY'
import re, sys
areas = [
    ("P-256 / ECDSA (aws-lc)", r"nistz256|p256|ecp_|ec_GFp|ec_point|ecdsa|bn_|BN_|ec_scalar|ec_simple"),
    ("other crypto (AES-GCM, SHA)", r"aes|gcm|ghash|sha256|sha512|SHA|chacha|poly1305"),
    ("malloc / free / memcpy", r"malloc|free|memmove|memcpy|memset|realloc|_int_"),
    ("tracing (log lines)", r"tracing"),
    ("hyper / hyper-util / http", r"hyper|http::|httparse|h2::"),
    ("rustls", r"rustls"),
    ("tokio / futures", r"tokio|futures|mio::|parking_lot"),
    ("serde / json / base64", r"serde|json|base64"),
    ("umbra crates", r"umbra_"),
    ("Rust std / core / alloc", r"^(std|core|alloc)::|^<(std|core|alloc)::"),
]
tot = {}
total = 0.0
for line in open(sys.argv[1]):
    m = re.match(r"\s+([0-9.]+)%\s+(.*)", line)
    if not m:
        continue
    pct, rest = float(m.group(1)), m.group(2)
    total += pct
    d = re.match(r"(\S+)\s+\[(.)\]\s+(.*)", rest)
    dso, kind, sym = d.groups() if d else ("?", "?", rest)
    if kind == "k":
        tot["kernel"] = tot.get("kernel", 0) + pct
        continue
    for name, pat in areas:
        if re.search(pat, sym):
            tot[name] = tot.get(name, 0) + pct
            break
    else:
        tot["other (" + dso + ")"] = tot.get("other (" + dso + ")", 0) + pct
for name, v in sorted(tot.items(), key=lambda x: -x[1]):
    print(f"{v:6.1f}%  {name}")
print(f"{total:6.1f}%  total")
PY
    echo
fi

# ---- idle connections ------------------------------------------------------------
run_hold() { # label proxy rss-pids-fn hold-args...
    local label=$1 p=$2 pidsfn=$3; shift 3
    local log=$TMP/hold-$label.log rss0 rss pid
    rss0=$(rss_kib $($pidsfn))
    echo "---- idle connections: $label ----"
    quiet
    echo "RSS before: $rss0 KiB"
    "$LOADGEN" hold $(target "$p") "${COMMON[@]}" --token-file "$TMP/token" "$@" > "$log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do grep -q '^HELD' "$log" && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    sleep 5
    rss=$(rss_kib $($pidsfn))
    local held
    held=$(sed -n 's/^HELD open=\([0-9]*\).*/\1/p' "$log")
    echo "RSS 5 s after every connection was set up: $rss KiB; $(grep '^t=' "$log" | tail -1) at that moment; $(( (rss - rss0) * 1024 / (${held:-0} > 0 ? held : 1) )) bytes over the RSS before per connection open at HELD ($held)"
    if [[ $p == c ]]; then
        echo "gateway: VmHWM $(hwm_kib "$GW_PID") KiB, $(awk '/^Threads:/ {print $2}' "/proc/$GW_PID/status") threads, $(ls "/proc/$GW_PID/fd" | wc -l) open descriptors"
    fi
    wait "$pid" || { echo "!!!! hold failed"; FAILED=1; }
    cat "$log"
    grep '^RESULT ' "$log" | sed 's/^RESULT //' | python3 -c 'import json, sys; r = json.load(sys.stdin); r["proxy"] = sys.argv[1]; r["hold_label"] = sys.argv[2]; r["rss_before_kib"] = int(sys.argv[3]); r["rss_kib"] = int(sys.argv[4]); print(json.dumps(r))' "$p" "$label" "$rss0" "$rss" >> "$RUNS"
    echo
}
gw_pid() { echo "$GW_PID"; }
restart_gateway() { # extra TOML
    stop "$GW_PID"
    write_gateway_config "$1"
    start_gateway
    wait_for 60 gateway_ready
    sleep 2
}
echo "==== idle authorized connections: $IDLE, from $IDLE_SOURCES source addresses ===="
echo "(each: TCP + TLS with the device certificate, one authorized GET /, then idle; RSS is VmRSS of /proc/PID/status)"
echo
# The gateway as configured above. Its [limits] close a keep-alive connection
# that sends no request for header_timeout_seconds (default 10).
restart_gateway ""
run_hold "gateway-default-limits" c gw_pid --connections "$IDLE" --sources "$IDLE_SOURCES" --hold "$HOLD"
# The same with the idle limit at its maximum (300 s), so the connections stay.
restart_gateway "[limits]
header_timeout_seconds = 300"
echo "gateway config now has: [limits] header_timeout_seconds = 300"
run_hold "gateway-header-timeout-300" c gw_pid --connections "$IDLE" --sources "$IDLE_SOURCES" --hold "$HOLD"
# One source address: max_connections_per_source (default 256).
run_hold "gateway-one-source" c gw_pid --connections 1000 --sources 0 --hold 3
# nginx (a), for comparison: master + workers.
run_hold "nginx-a" a nginx_pids --connections "$IDLE" --sources "$IDLE_SOURCES" --hold "$HOLD"

# ---- checks ------------------------------------------------------------------------
stop "$GW_PID"
echo "==== logs ===="
for f in gateway controller; do
    echo "$f log: $(wc -l < "$TMP/$f.log") lines, $(grep -cE ' (WARN|ERROR) ' "$TMP/$f.log" || true) WARN/ERROR; by message:"
    grep -E ' (WARN|ERROR) ' "$TMP/$f.log" | sed -E 's/^[^ ]+ +//; s/(request_id|addr|pending|error)=[^ ]*//g' | cut -c1-160 | sort | uniq -c | sort -rn | head -10 || true
done
echo "gateway 'access' log lines (allowed): $(grep -c ' access ' "$TMP/gateway.log" || true)"
echo "audit records stored by the controller: $(sqlite3 "$TMP/ctl/data/umbra.db" "select action || ' ' || outcome || ' ' || count(*) from audit_log group by action, outcome" 2>/dev/null | tr '\n' ';' || echo '?')"
echo "nginx error log: $(wc -l < "$N/logs/error.log") lines; access log: $(wc -l < "$N/logs/access.log") lines"
grep -v '\[notice\]' "$N/logs/error.log" | cut -c1-200 | sort | uniq -c | sort -rn | head -5 || true
echo

echo "==== summary ===="
python3 - "$RUNS" "$MAX_OTHERS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
load = [r for r in rows if r["mode"] == "load"]
conn = [r for r in rows if r["mode"] == "connect"]
hold = [r for r in rows if r["mode"] == "hold"]
name = {"a": "(a) nginx mTLS", "b": "(b) nginx mTLS + auth_request", "c": "(c) Umbra gateway"}
med = statistics.median
print("Each run (load):")
print("| round | proxy | req/s | p50 ms | p90 ms | p99 ms | errors | proxy CPU cores | upstream | loadgen | other processes | machine busy |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in load:
    c = r["cpu_cores"]
    proxy = c.get("nginx", 0) + c.get("gateway", 0)
    extra = f" (+ controller {c['controller']:.2f})" if "controller" in c else ""
    l = r["latency_ms"]
    print(f"| {r['round']} | {name[r['proxy']]} | {r['rps']:.0f} | {l['p50']:.2f} | {l['p90']:.2f} | {l['p99']:.2f} | {r['errors']} | {proxy:.2f}{extra} | {c['upstream']:.2f} | {c['loadgen']:.2f} | {r['others_cores']:.2f}{' (!)' if r['others_cores'] > float(sys.argv[2]) else ''} | {r['machine_busy']:.0%} |")
print()
print("Median over rounds:")
print("| proxy | req/s | p50 ms | p99 ms | errors | connection setup p50 ms (x25519) |")
print("|---|---:|---:|---:|---:|---:|")
m = {}
for p in "abc":
    rs = [r for r in load if r["proxy"] == p]
    cs = [r for r in conn if r["proxy"] == p and r["kx"] == "x25519"]
    m[p] = dict(rps=med(r["rps"] for r in rs), p50=med(r["latency_ms"]["p50"] for r in rs),
                p99=med(r["latency_ms"]["p99"] for r in rs), err=sum(r["errors"] for r in rs),
                setup=med(r["first_byte_ms"]["p50"] for r in cs))
    print(f"| {name[p]} | {m[p]['rps']:.0f} | {m[p]['p50']:.2f} | {m[p]['p99']:.2f} | {m[p]['err']} | {m[p]['setup']:.2f} |")
pq = [r["first_byte_ms"]["p50"] for r in conn if r["proxy"] == "c" and r["kx"] == "pq"]
if pq:
    print(f"| (c) with X25519MLKEM768 (as the agent) | | | | | {med(pq):.2f} |")
print()
ca, cb = m["c"]["rps"] / m["a"]["rps"], m["c"]["rps"] / m["b"]["rps"]
print(f"(c)/(a) req/s: {ca:.2f} (target >= 1.0: {'met' if ca >= 1.0 else 'SHORT'})")
print(f"(c)/(b) req/s: {cb:.2f} (target >= 1.5: {'met' if cb >= 1.5 else 'SHORT'})")
print(f"p99 (c) {m['c']['p99']:.2f} ms vs (a) {m['a']['p99']:.2f} ms (target: no worse: {'met' if m['c']['p99'] <= m['a']['p99'] else 'SHORT'})")
print("per-round ratios (c)/(a), (c)/(b):", ", ".join(
    "%.2f, %.2f" % tuple(
        [r for r in load if r["round"] == k and r["proxy"] == "c"][0]["rps"] /
        [r for r in load if r["round"] == k and r["proxy"] == q][0]["rps"] for q in "ab")
    for k in sorted({r["round"] for r in load})))
print()
print("Idle connections:")
for r in hold:
    print(f"- {r['hold_label']}: {r['connections']} asked from {r['sources'] or 1} source address(es): "
          f"set up in {r['setup_seconds']:.1f} s, failed {r['failed']} {r['failures'] or ''}, "
          f"open at the end of {len(r['timeline'])} s: {r['open_at_end']} (closed by the server: {r['closed_by_peer']}); "
          f"RSS {r['rss_before_kib'] / 1024:.1f} MiB before, {r['rss_kib'] / 1024:.1f} MiB held")
PY
echo "raw output: $OUT"
exit "$FAILED"
