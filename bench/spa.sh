#!/usr/bin/env bash
# SPA benchmark: umbra-spa's verifiers (native and fwknop mode), umbra-firewall's
# nftables pinholes and knock -> pinhole -> mTLS -> first byte at a dark gateway,
# side by side with fwknopd (Debian fwknop-server) on the same machine and, where
# it applies, the same packets. Release builds. Method and figures:
# bench/RESULTS.md, section "SPA".
#
# Usage, from anywhere, as root (network namespaces, nft, iptables):  bench/spa.sh
#
# Phases (every figure is a RESULT line in the raw output):
#  A. native Verifier in-process, one thread: distinct valid packets/s (a fresh
#     verifier, so an empty replay cache, per pass), then garbage dropped/s of
#     five kinds, each checked to be refused for the reason it is named after.
#  B. FwknopVerifier in-process, one thread, on distinct valid fwknop packets
#     (AES-256-CBC + HMAC-SHA256, as the stock client sends) and on garbage.
#  C. verify-only over UDP, the same packet file to both servers, one after the
#     other, at each offered rate of BENCH_FWKNOP_RATES: fwknopd -t (test mode:
#     HMAC, decrypt, decode, age and access checks, no firewall, no replay-cache
#     write; UDP-server mode; two log lines per packet to stderr, a pipe) and
#     `spabench udp-fwknop` (FwknopVerifier behind a blocking UDP socket, one
#     thread, no log). Server in one namespace, sender in another, over a veth
#     pair, default socket buffers. Counted: accepted packets, the server's CPU
#     time (/proc/PID/task/*/schedstat, ns), the namespace's Udp RcvbufErrors.
#     accepted / CPU-second is the per-core verify rate of each server.
#  D. fwknopd's full path: no -t, iptables backend, BENCH_FULL_PACKETS packets at
#     once, each with its own allow-IP (so a new rule each).
#  E. new nftables pinholes/s through umbra-firewall's NftPinholes in a
#     namespace: BENCH_PINHOLES single-pinhole open calls, BENCH_PINHOLE_INFLIGHT
#     at a time (the batcher coalesces them), then BENCH_PINHOLES_SERIAL one at a
#     time (the latency of one open).
#  F. knock -> pinhole -> mTLS -> first byte: `umbra dev` (dark gateway,
#     userspace pinholes) in a namespace, the demo user logged in with
#     `umbra agent login`, then `spabench knock-connect` once per pause of
#     BENCH_KNOCK_PAUSES (ms between knock and connect; 10 is umbra-agent's).
#
# Environment (all optional):
#   BENCH_PHASES          phases to run (default "A B C D E F")
#   BENCH_PASSES          passes of each in-process measurement (default 5; the
#                         median is reported, every pass is in the raw output)
#   BENCH_NATIVE_PACKETS  distinct valid native packets per pass (default 200000)
#   BENCH_NATIVE_DEVICES  enrolled devices, one source address each (default 1000)
#   BENCH_GARBAGE         garbage packets per kind and pass in A (default 5000000;
#                         the kind that reaches the AEAD uses a tenth; B uses half,
#                         and a tenth of that for the kind that reaches the HMAC)
#   BENCH_FWKNOP_PACKETS  distinct fwknop packets for B and per rate in C (default 60000)
#   BENCH_FWKNOP_RATES    offered UDP rates for C (default "20000 40000 80000 160000 320000";
#                         0 = as fast as the sender can, which mostly fills the
#                         socket buffer: not useful for a rate)
#   BENCH_FULL_PACKETS    packets for D (default 150: under the ~165 datagrams the
#                         default socket buffer holds, so none is dropped)
#   BENCH_PINHOLES        pinholes for E, concurrent (default 100000)
#   BENCH_PINHOLE_INFLIGHT  concurrent open calls (default 1024)
#   BENCH_PINHOLES_SERIAL pinholes for E, one call at a time (default 2000)
#   BENCH_KNOCK_SAMPLES   samples per pause in F (default 500, after 10 warm-up)
#   BENCH_KNOCK_PAUSES    pauses in F, ms (default "0 10")
#   BENCH_KNOCK_INTERVAL_MS  idle time between samples in F (default 20)
#   BENCH_BUILD           commit (default): build umbra and spabench against
#                         `git archive HEAD` (other people's uncommitted edits stay
#                         out; spabench's own sources come from the working tree);
#                         worktree: build the working tree as it is
#   BENCH_UMBRA_BIN       use this umbra binary for F instead of building one
#   CARGO_TARGET_DIR      where to build (default: target/ of the tree built)
#   BENCH_QUIET_WAIT      up to how many seconds to wait, before each measurement,
#                         until the machine is idle (< BENCH_MAX_OTHERS cores busy
#                         over 3 s; default 600; a warning if it never is)
#   BENCH_MAX_OTHERS      (default 0.10)
#   BENCH_OUT             raw output file (default bench/results/spa-<UTC date>.txt;
#                         a -<time> suffix is added if it exists)
#
# Needs: root, Linux with network namespaces, a Rust toolchain, git, python3, and
# the Debian packages iproute2, fwknop-server, fwknop-client, iptables, nftables
# (installed with apt-get if a command is missing).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

PHASES=" ${BENCH_PHASES:-A B C D E F} "
PASSES=${BENCH_PASSES:-5}
NATIVE_PACKETS=${BENCH_NATIVE_PACKETS:-200000}
NATIVE_DEVICES=${BENCH_NATIVE_DEVICES:-1000}
GARBAGE=${BENCH_GARBAGE:-5000000}
FWKNOP_PACKETS=${BENCH_FWKNOP_PACKETS:-60000}
FWKNOP_RATES=${BENCH_FWKNOP_RATES:-20000 40000 80000 160000 320000}
FULL_PACKETS=${BENCH_FULL_PACKETS:-150}
PINHOLES=${BENCH_PINHOLES:-100000}
PINHOLE_INFLIGHT=${BENCH_PINHOLE_INFLIGHT:-1024}
PINHOLES_SERIAL=${BENCH_PINHOLES_SERIAL:-2000}
KNOCK_SAMPLES=${BENCH_KNOCK_SAMPLES:-500}
KNOCK_PAUSES=${BENCH_KNOCK_PAUSES:-0 10}
BUILD=${BENCH_BUILD:-commit}
UMBRA_BIN=${BENCH_UMBRA_BIN:-}
QUIET_WAIT=${BENCH_QUIET_WAIT:-600}
MAX_OTHERS=${BENCH_MAX_OTHERS:-0.10}
phase() { [[ $PHASES == *" $1 "* ]]; }

[[ $(id -u) == 0 ]] || { echo "bench/spa.sh needs root (network namespaces, nft, iptables)" >&2; exit 1; }
[[ $BUILD == commit || $BUILD == worktree ]] || { echo "BENCH_BUILD is commit or worktree" >&2; exit 1; }

# ---- what it needs --------------------------------------------------------------
MISSING=()
for pair in ip:iproute2 fwknopd:fwknop-server fwknop:fwknop-client iptables:iptables nft:nftables python3:python3; do
    command -v "${pair%%:*}" >/dev/null || MISSING+=("${pair#*:}")
done
if ((${#MISSING[@]})); then
    command -v apt-get >/dev/null || { echo "bench/spa.sh needs the packages: ${MISSING[*]}" >&2; exit 1; }
    echo "installing: apt-get install -y ${MISSING[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${MISSING[@]}" >&2
fi
for tool in cargo git rustc; do
    command -v "$tool" >/dev/null || { echo "bench/spa.sh needs $tool" >&2; exit 1; }
done

mkdir -p bench/results
DATE=$(date -u +%Y-%m-%d)
OUT=${BENCH_OUT:-bench/results/spa-$DATE.txt}
if [[ -z ${BENCH_OUT:-} && -e $OUT ]]; then
    OUT=bench/results/spa-$DATE-$(date -u +%H%M%S).txt
fi

# ---- cleanup: our processes by PID, our namespaces by name --------------------------
ID=$$
NS_S=umbra-spab-s-$ID   # servers: fwknopd / udp-fwknop, 10.213.77.1
NS_C=umbra-spab-c-$ID   # sender, 10.213.77.2
NS_P=umbra-spab-p-$ID   # NftPinholes
NS_F=umbra-spab-f-$ID   # umbra dev + knock-connect, loopback only
VETH_S=uspb${ID}s
VETH_C=uspb${ID}c
SRV_IP=10.213.77.1
CLI_IP=10.213.77.2
PIDS=()
TMP=
cleanup() {
    local pid ns
    for pid in "${PIDS[@]:-}"; do
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        if [[ -n $pid ]]; then wait "$pid" 2>/dev/null || true; fi
    done
    for ns in "$NS_S" "$NS_C" "$NS_P" "$NS_F"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    if [[ -n $TMP && -d $TMP ]]; then rm -rf -- "$TMP" || true; fi
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop() { # PID: TERM, wait up to 10 s, KILL
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# ---- build ---------------------------------------------------------------------------
COMMIT=$(git rev-parse HEAD)
cargo_build() { # DIR ARGS...: cargo build --release --locked in DIR (offline if the registry is unreachable)
    local dir=$1; shift
    (cd "$dir" && { nice -n 10 cargo build --release --locked "$@" >&2 \
        || nice -n 10 cargo build --release --locked --offline "$@" >&2; })
}
if [[ $BUILD == commit ]]; then
    # Exactly the commit's crates; spabench's own sources from the working tree.
    BUILD_DIR=${TMPDIR:-/tmp}/umbra-bench-spa-build
    SRC=$BUILD_DIR/src-$COMMIT
    if [[ ! -d $SRC ]]; then
        rm -rf "$SRC.tmp" && mkdir -p "$SRC.tmp"
        git archive "$COMMIT" | tar -x -C "$SRC.tmp"
        mv "$SRC.tmp" "$SRC"
    fi
    rm -rf "$SRC/bench/spabench" && mkdir -p "$SRC/bench/spabench"
    cp -r bench/spabench/Cargo.toml bench/spabench/Cargo.lock bench/spabench/src "$SRC/bench/spabench/"
    BUILT_FROM="crates/ of commit $COMMIT exactly (git archive into $SRC); bench/spabench from the working tree"
else
    SRC=$ROOT
    BUILT_FROM="the working tree as it is"
fi
TARGET=${CARGO_TARGET_DIR:-$SRC/target}
echo "building: bench/spabench (cargo build --release, CARGO_TARGET_DIR=$TARGET)" >&2
CARGO_TARGET_DIR=$TARGET cargo_build "$SRC/bench/spabench"
B=$TARGET/release/spabench
if phase F && [[ -z $UMBRA_BIN ]]; then
    echo "building: cargo build --release -p umbra (CARGO_TARGET_DIR=$TARGET)" >&2
    CARGO_TARGET_DIR=$TARGET cargo_build "$SRC" -p umbra
    UMBRA_BIN=$TARGET/release/umbra
    UMBRA_FROM="cargo build --release -p umbra, $BUILT_FROM"
elif phase F; then
    UMBRA_FROM="given (BENCH_UMBRA_BIN), built $(date -u -r "$UMBRA_BIN" +%Y-%m-%dT%H:%M:%SZ); NOT necessarily commit $COMMIT"
fi

# ---- machine load helpers ---------------------------------------------------------------
busy_jiffies() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
CLK_TCK=$(getconf CLK_TCK)
busy_cores() { # SECONDS: cores busy on the whole machine over that time
    local a b
    a=$(busy_jiffies); sleep "$1"; b=$(busy_jiffies)
    python3 -c "print(f'{($b - $a) / $CLK_TCK / $1:.2f}')"
}
quiet() { # [MAX_SECONDS]: wait until the machine is idle, bounded
    local waited=0 c limit=${1:-$QUIET_WAIT}
    while :; do
        c=$(busy_cores 3)
        if python3 -c "import sys; sys.exit(0 if $c < $MAX_OTHERS else 1)"; then
            echo "quiet       : machine busy $c cores over 3 s (after ${waited} s of waiting); loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
            return 0
        fi
        waited=$((waited + 3))
        if ((waited >= limit)); then
            echo "!!!! machine still busy ($c cores over 3 s) after ${limit} s: measuring anyway; loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
            return 0
        fi
    done
}
short_quiet() { quiet "$((QUIET_WAIT < 45 ? QUIET_WAIT : 45))"; }
PHASE_J0=0
PHASE_T0=0
phase_begin() { PHASE_J0=$(busy_jiffies); PHASE_T0=$(date +%s.%N); }
phase_end() { # label: machine CPU over the phase (the benchmark's own processes included)
    local j1 t1
    j1=$(busy_jiffies); t1=$(date +%s.%N)
    python3 -c "print(f'machine     : $1: {($j1 - $PHASE_J0) / $CLK_TCK / ($t1 - $PHASE_T0):.2f} cores busy on average over {$t1 - $PHASE_T0:.1f} s (all processes, this benchmark included)')"
}
cpu_ns() { # PID: CPU time of all its threads, ns
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%d\n", s}'
}
settle() { # PID: wait until it has used < 1 ms of CPU over 0.2 s (queue drained), at most 30 s
    local a b
    a=$(cpu_ns "$1")
    for _ in $(seq 150); do
        sleep 0.2
        b=$(cpu_ns "$1")
        ((b - a < 1000000)) && return 0
        a=$b
    done
    echo "!!!! process $1 still busy after 30 s"
}
rcvbuf_errors() { ip netns exec "$NS_S" awk '/^Udp: [0-9]/ {print $6}' /proc/net/snmp; }

# ---- header -----------------------------------------------------------------------------
exec > >(tee "$OUT") 2>&1
echo "# Umbra SPA benchmark (bench/spa.sh)"
echo "date        : $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit      : $COMMIT (HEAD when the build started)"
DIRTY=$(git status --porcelain --untracked-files=no | wc -l)
echo "worktree    : $([[ $DIRTY -eq 0 ]] && echo clean || echo "$DIRTY tracked file(s) modified:") $(git status --porcelain --untracked-files=no | awk '{print $2}' | tr '\n' ' ')"
echo "built from  : $BUILT_FROM (BENCH_BUILD=$BUILD)"
if [[ $BUILD == worktree ]]; then
    echo "measured    : crates/spa and crates/firewall $(git diff --quiet HEAD -- crates/spa crates/firewall && echo "unmodified at $COMMIT" || echo "WITH UNCOMMITTED CHANGES (git diff HEAD -- crates/spa crates/firewall)")"
fi
echo "command     : bench/spa.sh  (BENCH_PHASES=\"${PHASES# }\" BENCH_PASSES=$PASSES BENCH_NATIVE_PACKETS=$NATIVE_PACKETS BENCH_NATIVE_DEVICES=$NATIVE_DEVICES BENCH_GARBAGE=$GARBAGE BENCH_FWKNOP_PACKETS=$FWKNOP_PACKETS BENCH_FWKNOP_RATES=\"$FWKNOP_RATES\" BENCH_FULL_PACKETS=$FULL_PACKETS BENCH_PINHOLES=$PINHOLES BENCH_PINHOLE_INFLIGHT=$PINHOLE_INFLIGHT BENCH_PINHOLES_SERIAL=$PINHOLES_SERIAL BENCH_KNOCK_SAMPLES=$KNOCK_SAMPLES BENCH_KNOCK_PAUSES=\"$KNOCK_PAUSES\" BENCH_QUIET_WAIT=$QUIET_WAIT BENCH_MAX_OTHERS=$MAX_OTHERS)"
echo "tool        : bench/spabench, cargo build --release (lto thin, codegen-units 4, as the workspace); $B"
if phase F; then echo "umbra       : $UMBRA_BIN: $UMBRA_FROM"; fi
echo "rustc       : $(rustc --version)"
echo "fwknopd     : $(fwknopd --version 2>&1 | head -1) (Debian fwknop-server $(dpkg-query -W -f='${Version}' fwknop-server 2>/dev/null || echo '?')); $(iptables --version); $(nft --version)"
echo "machine     : nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), $(grep -q hypervisor /proc/cpuinfo && echo 'virtual machine (hypervisor flag)' || echo 'no hypervisor flag')"
echo "kernel      : $(uname -sr)"
echo "load        : loadavg at start $(cut -d' ' -f1-3 /proc/loadavg)"
echo

TMP=$(mktemp -d "${TMPDIR:-/tmp}/umbra-bench-spa.XXXXXX")
chmod 700 "$TMP"

# ---- A. native, in-process -------------------------------------------------------------------
if phase A; then
    echo "==== A. native Verifier, in-process, one thread ===="
    echo "(per pass: a fresh Verifier; keys in a HashMap<Uuid, GatewayKey> of $NATIVE_DEVICES devices; SystemTime::now() per packet;"
    echo " rate limiter consulted per packet with limits far above the load (it never refuses) except in flood_one_source; replay cache sized for the run)"
    quiet
    phase_begin
    "$B" native --packets "$NATIVE_PACKETS" --devices "$NATIVE_DEVICES" --passes "$PASSES" --garbage "$GARBAGE"
    phase_end "A"
    echo
fi

# ---- keys and stanza shared by B, C, D ------------------------------------------------------------
fwknop --key-gen --use-hmac > "$TMP/keys.txt"
KEY=$(awk '/^KEY_BASE64/ {print $2}' "$TMP/keys.txt")
HKEY=$(awk '/^HMAC_KEY_BASE64/ {print $2}' "$TMP/keys.txt")
# One stanza, read by both fwknopd and FwknopVerifier (parse_access_conf).
cat > "$TMP/access.conf" <<EOF
SOURCE                  10.213.77.0/30
OPEN_PORTS              tcp/22
REQUIRE_SOURCE_ADDRESS  Y
KEY_BASE64              $KEY
HMAC_KEY_BASE64         $HKEY
HMAC_DIGEST_TYPE        SHA256
FW_ACCESS_TIMEOUT       30
EOF
chmod 600 "$TMP/access.conf"
if phase B || phase C || phase D; then
    echo "keys        : fwknop --key-gen --use-hmac (32-byte AES key, 64-byte HMAC-SHA256 key), fresh for this run"
    echo "access.conf : SOURCE 10.213.77.0/30, OPEN_PORTS tcp/22, REQUIRE_SOURCE_ADDRESS Y, KEY_BASE64, HMAC_KEY_BASE64, HMAC_DIGEST_TYPE SHA256, FW_ACCESS_TIMEOUT 30 (the same file for fwknopd and FwknopVerifier)"
fi
gen() { # count out [allow-ip [allow-ip-count]]
    "$B" fwknop-gen --count "$1" --key-b64 "$KEY" --hmac-key-b64 "$HKEY" \
        --allow-ip "${3:-$CLI_IP}" --allow-ip-count "${4:-1}" --out "$2"
}

# ---- B. fwknop mode, in-process -------------------------------------------------------------------
if phase B; then
    echo
    echo "==== B. FwknopVerifier, in-process, one thread ===="
    quiet
    gen "$FWKNOP_PACKETS" "$TMP/fwknop-b.txt"
    phase_begin
    "$B" fwknop --file "$TMP/fwknop-b.txt" --access-conf "$TMP/access.conf" --source "$CLI_IP" \
        --passes "$PASSES" --garbage "$((GARBAGE / 2))"
    phase_end "B"
    echo
fi

# ---- namespaces for C and D ---------------------------------------------------------------------------
if phase C || phase D; then
    ip netns add "$NS_S"
    ip netns add "$NS_C"
    ip link add "$VETH_S" type veth peer name "$VETH_C"
    ip link set "$VETH_S" netns "$NS_S"
    ip link set "$VETH_C" netns "$NS_C"
    ip -n "$NS_S" addr add "$SRV_IP/30" dev "$VETH_S"
    ip -n "$NS_C" addr add "$CLI_IP/30" dev "$VETH_C"
    for ns in "$NS_S" "$NS_C"; do ip -n "$ns" link set lo up; done
    ip -n "$NS_S" link set "$VETH_S" up
    ip -n "$NS_C" link set "$VETH_C" up
    echo "namespaces  : $NS_S ($SRV_IP/30, servers) <-veth-> $NS_C ($CLI_IP/30, sender); net.core.rmem_default $(cat /proc/sys/net/core/rmem_default) (both servers keep the default socket buffer)"
fi

fwknopd_conf() { # file
    cat > "$1" <<EOF
PCAP_INTF                   $VETH_S;
ENABLE_UDP_SERVER           Y;
UDPSERV_PORT                62201;
ENABLE_SPA_PACKET_AGING     Y;
MAX_SPA_PACKET_AGE          120;
ENABLE_DIGEST_PERSISTENCE   Y;
FWKNOP_RUN_DIR              $TMP/run;
FWKNOP_PID_FILE             $TMP/run/fwknopd.pid;
DIGEST_FILE                 $TMP/run/digest.cache;
FIREWALL_EXE                $(command -v iptables);
EOF
    chmod 600 "$1"
}
FWKNOPD_PID=
start_fwknopd() { # label pattern extra-args...: fwknopd -f in NS_S, its log lines counted
    local label=$1 pattern=$2; shift 2
    rm -rf "$TMP/run" "$TMP/ready" && mkdir -p "$TMP/run"
    fwknopd_conf "$TMP/fwknopd.conf"
    # `ip netns exec` execs fwknopd: $! is fwknopd's own PID.
    ip netns exec "$NS_S" fwknopd -c "$TMP/fwknopd.conf" -a "$TMP/access.conf" -f "$@" \
        > >("$B" count --pattern="$pattern" --label "$label" --ready-pattern "Kicking off UDP server" \
                --ready-file "$TMP/ready" --copy "$TMP/fwknopd-$label.log" > "$TMP/count-$label.txt") 2>&1 &
    FWKNOPD_PID=$!
    PIDS+=("$FWKNOPD_PID")
    for _ in $(seq 100); do [[ -e $TMP/ready ]] && break; sleep 0.1; done
    [[ -e $TMP/ready ]] || { echo "fwknopd did not start"; cat "$TMP/fwknopd-$label.log" 2>/dev/null; exit 1; }
}
stop_fwknopd() { # label
    stop "$FWKNOPD_PID"
    for _ in $(seq 100); do grep -q '^RESULT' "$TMP/count-$1.txt" 2>/dev/null && break; sleep 0.1; done
    cat "$TMP/count-$1.txt"
}
server_result() { # name rate cpu_ns0 cpu_ns1 rcvbuf0 rcvbuf1 accepted
    echo "RESULT {\"bench\":\"udp_server\",\"server\":\"$1\",\"rate\":$2,\"cpu_s\":$(python3 -c "print(($4 - $3) / 1e9)"),\"rcvbuf_errors\":$(($6 - $5)),\"accepted\":$7}"
}

# ---- C. the same packets over UDP: fwknopd -t vs spabench udp-fwknop ------------------------------------
if phase C; then
    echo
    echo "==== C. verify-only over UDP, the same packets: fwknopd -t vs spabench udp-fwknop ===="
    echo "(fwknopd: -f -t, UDP-server mode, stderr to a pipe read by 'spabench count'; accepted = lines"
    echo " '--test mode enabled, skipping firewall manipulation.' (logged after HMAC, decrypt, decode, age and port checks);"
    echo " udp-fwknop: blocking recv_from + FwknopVerifier::verify, one thread, no log. $FWKNOP_PACKETS distinct packets per rate,"
    echo " made afresh per rate, the same file to both, sent by 'spabench send' from $NS_C. CPU: the server process's schedstat"
    echo " from just before the send until its queue is drained)"
    for rate in $FWKNOP_RATES; do
        echo "---- rate $rate/s: fwknopd -t ----"
        quiet
        # Packets are valid for 120 s (MAX_SPA_PACKET_AGE, and FwknopVerifier's
        # default): made after the wait, and the second wait is short.
        gen "$FWKNOP_PACKETS" "$TMP/fwknop-c.txt"
        start_fwknopd "t-$rate" "--test mode enabled" -t
        sleep 0.5
        e0=$(rcvbuf_errors); c0=$(cpu_ns "$FWKNOPD_PID")
        phase_begin
        ip netns exec "$NS_C" "$B" send --file "$TMP/fwknop-c.txt" --to "$SRV_IP:62201" --rate "$rate"
        settle "$FWKNOPD_PID"
        phase_end "C fwknopd -t rate $rate"
        c1=$(cpu_ns "$FWKNOPD_PID"); e1=$(rcvbuf_errors)
        stop_fwknopd "t-$rate"
        n=$(grep -c -- "--test mode enabled" "$TMP/fwknopd-t-$rate.log" || true)
        server_result fwknopd "$rate" "$c0" "$c1" "$e0" "$e1" "${n:-0}"
        grep -vE 'SPA Packet from IP|--test mode enabled' "$TMP/fwknopd-t-$rate.log" | sed -E 's/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -5 | sed 's/^/  fwknopd log (other lines): /'

        echo "---- rate $rate/s: spabench udp-fwknop (FwknopVerifier) ----"
        short_quiet
        rm -f "$TMP/ready"
        ip netns exec "$NS_S" "$B" udp-fwknop --listen "$SRV_IP:62201" --access-conf "$TMP/access.conf" \
            --idle 5 --max-wait 300 --ready-file "$TMP/ready" > "$TMP/udp-$rate.txt" &
        UPID=$!
        PIDS+=("$UPID")
        for _ in $(seq 100); do [[ -e $TMP/ready ]] && break; sleep 0.1; done
        e0=$(rcvbuf_errors); c0=$(cpu_ns "$UPID")
        phase_begin
        ip netns exec "$NS_C" "$B" send --file "$TMP/fwknop-c.txt" --to "$SRV_IP:62201" --rate "$rate"
        settle "$UPID"
        phase_end "C udp-fwknop rate $rate"
        c1=$(cpu_ns "$UPID"); e1=$(rcvbuf_errors)
        wait "$UPID" || true
        cat "$TMP/udp-$rate.txt"
        n=$(python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).read().split('RESULT ',1)[1])['accepted'])" "$TMP/udp-$rate.txt" 2>/dev/null || echo 0)
        server_result udp-fwknop "$rate" "$c0" "$c1" "$e0" "$e1" "$n"
        echo
    done
fi

# ---- D. fwknopd full path: iptables rules -------------------------------------------------------------------
if phase D; then
    echo "==== D. fwknopd full path (no -t): a new iptables rule per packet ===="
    ip netns exec "$NS_S" sh -c '
      iptables -A INPUT -i lo -j ACCEPT
      iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
      iptables -A INPUT -p udp --dport 62201 -j ACCEPT
      iptables -P INPUT DROP'
    echo "(namespace $NS_S: default-deny INPUT + udp/62201 accepted, as in FWKNOP.md; $FULL_PACKETS packets sent at once from $CLI_IP,"
    echo " allow-IPs 10.214.0.1.. one per packet, so each asks for a new rule; fwknopd's iptables backend and defaults;"
    echo " rate = added rules / time from the first to the last 'Added access rule' line as 'spabench count' read them)"
    quiet
    gen "$FULL_PACKETS" "$TMP/fwknop-d.txt" 10.214.0.1 "$FULL_PACKETS"
    start_fwknopd full "Added access rule"
    sleep 1
    e0=$(rcvbuf_errors); c0=$(cpu_ns "$FWKNOPD_PID")
    phase_begin
    ip netns exec "$NS_C" "$B" send --file "$TMP/fwknop-d.txt" --to "$SRV_IP:62201" --rate 0
    for _ in $(seq 600); do
        n=$(grep -c "Added access rule" "$TMP/fwknopd-full.log" 2>/dev/null || true)
        ((${n:-0} >= FULL_PACKETS)) && break
        sleep 0.1
    done
    settle "$FWKNOPD_PID"
    phase_end "D fwknopd full path"
    c1=$(cpu_ns "$FWKNOPD_PID"); e1=$(rcvbuf_errors)
    RULES=$(ip netns exec "$NS_S" iptables -S FWKNOP_INPUT 2>/dev/null | grep -c '^-A' || true)
    stop_fwknopd full
    echo "RESULT {\"bench\":\"fwknopd_full\",\"cpu_s\":$(python3 -c "print(($c1 - $c0) / 1e9)"),\"rcvbuf_errors\":$((e1 - e0)),\"rules_in_chain\":${RULES:-0},\"packets\":$FULL_PACKETS}"
    echo "  (fwknopd's CPU excludes the iptables processes it runs, one or more per rule)"
    grep -vE 'SPA Packet from IP|Added access rule' "$TMP/fwknopd-full.log" | sed -E 's/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -5 | sed 's/^/  fwknopd log (other lines): /'
    echo
fi

# ---- E. NftPinholes -------------------------------------------------------------------------------------------
if phase E; then
    echo "==== E. new nftables pinholes through NftPinholes (umbra-firewall), namespace $NS_P ===="
    echo "(table inet umbra in a fresh namespace; each pinhole its own open() call with one (source, tcp, 443) element,"
    echo " ttl 300 s, distinct sources; the kernel's element count checked at the end; open_call_ms = latency of one open())"
    ip netns add "$NS_P"
    quiet
    phase_begin
    "$B" pinholes --netns "$NS_P" --total "$PINHOLES" --in-flight "$PINHOLE_INFLIGHT"
    phase_end "E concurrent"
    ip netns del "$NS_P"; ip netns add "$NS_P"
    short_quiet
    phase_begin
    "$B" pinholes --netns "$NS_P" --total "$PINHOLES_SERIAL" --in-flight 1
    phase_end "E serial"
    ip netns del "$NS_P"
    echo
fi

# ---- F. knock -> pinhole -> mTLS -> first byte ------------------------------------------------------------------
if phase F; then
    echo "==== F. knock -> pinhole -> mTLS -> first byte: umbra dev's dark gateway (userspace pinholes), namespace $NS_F ===="
    echo "(per sample: a native knock for service demo from a fresh loopback source 127.x.y.z, the pause, a new TCP + TLS 1.3"
    echo " connection from that source with the device certificate (no resumption), GET / with the session token; time from"
    echo " before sealing the knock to the first response byte. A connection refused because the knock is not processed yet"
    echo " is retried after 1 ms (connect_attempts). Samples ${BENCH_KNOCK_INTERVAL_MS:-20} ms apart, one at a time)"
    ip netns add "$NS_F"
    ip -n "$NS_F" link set lo up
    mkdir -p "$TMP/dev"
    ip netns exec "$NS_F" "$UMBRA_BIN" dev --dir "$TMP/dev/state" --listen 127.0.0.1:0 --gateway-listen 127.0.0.1:0 \
        > "$TMP/dev/log" 2>&1 &
    DEV_PID=$!
    PIDS+=("$DEV_PID")
    for _ in $(seq 600); do [[ -s $TMP/dev/state/dev.json ]] && break; kill -0 "$DEV_PID" 2>/dev/null || break; sleep 0.2; done
    [[ -s $TMP/dev/state/dev.json ]] || { echo "umbra dev did not start"; tail -20 "$TMP/dev/log"; exit 1; }
    devjson() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$TMP/dev/state/dev.json" "$1"; }
    AGENT_DIR=$(devjson agent_dir)
    TOTP=$(python3 - "$(devjson totp_secret)" <<'PY'
import base64, hashlib, hmac, struct, sys, time
# RFC 6238 as the controller uses it: SHA-1, 6 digits, 30 s.
s = sys.argv[1].upper()
key = base64.b32decode(s + "=" * (-len(s) % 8))
mac = hmac.new(key, struct.pack(">Q", int(time.time()) // 30), hashlib.sha1).digest()
o = mac[-1] & 15
print("%06d" % ((struct.unpack(">I", mac[o:o + 4])[0] & 0x7FFFFFFF) % 1000000))
PY
)
    devjson password | ip netns exec "$NS_F" "$UMBRA_BIN" agent --dir "$AGENT_DIR" login --user "$(devjson user)" \
        --password-stdin --totp "$TOTP"
    echo "gateway     : $(devjson gateway_url), SPA port $(python3 -c "import json,sys; print(next(s.get('spa_port') for s in json.load(open(sys.argv[1]))['services'] if s['name'] == 'demo'))" "$AGENT_DIR/session.json")"
    base=1
    for pause in $KNOCK_PAUSES; do
        quiet
        phase_begin
        ip netns exec "$NS_F" "$B" knock-connect --agent-dir "$AGENT_DIR" --service demo --samples "$KNOCK_SAMPLES" \
            --warmup 10 --pause-ms "$pause" --interval-ms "${BENCH_KNOCK_INTERVAL_MS:-20}" \
            --source-base "127.$base.0.0" --label "pause-$pause"
        phase_end "F pause $pause ms"
        base=$((base + 1))
    done
    stop "$DEV_PID"
    sed 's/\x1b\[[0-9;]*m//g' "$TMP/dev/log" > "$TMP/dev/log.txt"
    echo "umbra dev   : log lines WARN $(grep -c ' WARN ' "$TMP/dev/log.txt" || true) (one expected: the bootstrap admin credential), ERROR $(grep -c ' ERROR ' "$TMP/dev/log.txt" || true)"
    grep -E ' (WARN|ERROR) ' "$TMP/dev/log.txt" | grep -v bootstrap | head -5 | cut -c1-300 | sed 's/^/  /' || true
    ip netns del "$NS_F"
    echo
fi

# ---- summary ------------------------------------------------------------------------------------------------------
echo "==== summary ===="
echo "load at end : loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
sleep 1 # tee has written every RESULT line
python3 "$ROOT/bench/spa_summary.py" "$OUT"
echo "raw output: $OUT"
