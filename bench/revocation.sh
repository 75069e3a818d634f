#!/usr/bin/env bash
# Revocation benchmark (issue 8): from sending the revoke request to the
# client seeing its live connection closed, over BENCH_SESSIONS sessions
# spread across two gateways, release build. Target: p99 < 100 ms
# (DESIGN.md). See bench/RESULTS.md, section "Revocation".
#
# Usage, from the repository root:   bench/revocation.sh
#
# One controller (SQLite) and two gateways, as separate `umbra` processes on
# loopback, each gateway routing a TCP echo service (`tcp` route). Every user
# is created through the admin API (with its own generated password and TOTP
# secret), enrolls one device with its own key and CSR, logs in with the
# password and a TOTP code computed from its secret, and opens one live TCP
# tunnel through gateway 1 or 2 in turn (bench/revobench, which uses the
# umbra-agent library for enrollment, login and tunnels). No test-only
# endpoint is used. Then, one session at a time: t0, `POST
# /api/v1/admin/sessions/{id}/revoke` on a warm keep-alive HTTP/1.1
# connection with the admin token, t1 when the tunnel reads its end.
# A second phase does the same through `POST /api/v1/admin/users/NAME/suspend`.
#
# Environment (all optional):
#   BENCH_SESSIONS          sessions ended by session revocation (default 1000)
#   BENCH_SUSPEND_SESSIONS  more sessions, ended by suspending their user
#                           (default 1000; 0 to skip)
#   BENCH_WORKERS           sessions set up in parallel (default 4)
#   BENCH_TIMEOUT_MS        a tunnel still open this long after its revoke
#                           request is a failure (default 5000)
#   BENCH_PAUSE_MS          idle time between two revocations (default 20)
#   BENCH_BUILD             commit (default): build umbra from `git archive HEAD`
#                           (other people's uncommitted edits stay out; the
#                           bench/revobench sources come from the working tree);
#                           worktree: build the working tree as it is
#   BENCH_UMBRA_BIN         use this umbra binary instead of building one
#   CARGO_TARGET_DIR        where to build (default: $TMPDIR/umbra-bench-revocation-build/target
#                           in commit mode, target/ in worktree mode)
#   BENCH_QUIET_WAIT        up to how many seconds to wait, before each timed
#                           phase, until the machine's other processes use less
#                           than BENCH_MAX_OTHERS cores over 3 s (default 900);
#                           a WARNING in the output if they never do
#   BENCH_MAX_OTHERS        (default 0.05)
#   BENCH_RESULTS_MD        1: write the run into bench/RESULTS.md (the block
#                           between the revocation.sh markers); 0: do not;
#                           default: 1 when BENCH_SESSIONS >= 1000
#   BENCH_OUT               raw output file (default bench/results/revocation-<UTC date>.txt;
#                           a -<time> suffix is added if it exists)
#
# Needs: a Rust toolchain, git, curl, python3. Exits non-zero if anything
# fails, including a single tunnel not closed within BENCH_TIMEOUT_MS.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

SESSIONS=${BENCH_SESSIONS:-1000}
SUSPEND=${BENCH_SUSPEND_SESSIONS:-1000}
WORKERS=${BENCH_WORKERS:-4}
TIMEOUT_MS=${BENCH_TIMEOUT_MS:-5000}
PAUSE_MS=${BENCH_PAUSE_MS:-20}
BUILD=${BENCH_BUILD:-commit}
UMBRA_BIN=${BENCH_UMBRA_BIN:-}
QUIET_WAIT=${BENCH_QUIET_WAIT:-900}
MAX_OTHERS=${BENCH_MAX_OTHERS:-0.05}
RESULTS_MD=${BENCH_RESULTS_MD:-$((SESSIONS >= 1000 ? 1 : 0))}
TOTAL=$((SESSIONS + SUSPEND))

[[ $BUILD == commit || $BUILD == worktree ]] || { echo "BENCH_BUILD is commit or worktree" >&2; exit 1; }
((SESSIONS >= 1)) || { echo "BENCH_SESSIONS must be at least 1" >&2; exit 1; }
for tool in cargo git rustc curl python3; do
    command -v "$tool" >/dev/null || { echo "bench/revocation.sh needs $tool" >&2; exit 1; }
done
# Every tunnel is a socket in the tool, one in a gateway towards the client,
# one towards the echo service and one in the echo service.
NOFILE=$((TOTAL * 2 + 1024))
if (( $(ulimit -n) < NOFILE )); then
    ulimit -n "$NOFILE" 2>/dev/null || { echo "cannot raise ulimit -n to $NOFILE" >&2; exit 1; }
fi

mkdir -p bench/results
DATE=$(date -u +%Y-%m-%d)
OUT=${BENCH_OUT:-bench/results/revocation-$DATE.txt}
if [[ -z ${BENCH_OUT:-} && -e $OUT ]]; then
    OUT=bench/results/revocation-$DATE-$(date -u +%H%M%S).txt
fi

# ---- cleanup: our processes by PID, our temp dir ------------------------------------
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

# ---- build ---------------------------------------------------------------------------
COMMIT=$(git rev-parse HEAD)
cargo_build() { # DIR ARGS...: cargo build --release --locked in DIR (offline if the registry is unreachable)
    local dir=$1; shift
    (cd "$dir" && { nice -n 10 cargo build --release --locked "$@" >&2 \
        || nice -n 10 cargo build --release --locked --offline "$@" >&2; })
}
if [[ $BUILD == commit ]]; then
    # Exactly the commit's crates. The directory is named after what the
    # build reads (crates/, Cargo.toml, Cargo.lock), so a commit that only
    # touches bench/ or docs reuses the previous build.
    BUILD_DIR=${TMPDIR:-/tmp}/umbra-bench-revocation-build
    KEY=$(git rev-parse "$COMMIT:crates" "$COMMIT:Cargo.toml" "$COMMIT:Cargo.lock" | sha256sum | cut -c1-12)
    SRC=$BUILD_DIR/src-$KEY
    if [[ ! -d $SRC ]]; then
        rm -rf "$SRC.tmp" && mkdir -p "$SRC.tmp"
        git archive "$COMMIT" | tar -x -C "$SRC.tmp"
        mv "$SRC.tmp" "$SRC"
    fi
    rm -rf "$SRC/bench/revobench" && mkdir -p "$SRC/bench/revobench"
    # -p keeps the times, so an unchanged tool is not rebuilt.
    cp -rp bench/revobench/Cargo.toml bench/revobench/Cargo.lock bench/revobench/src "$SRC/bench/revobench/"
    BUILT_FROM="crates/ of commit $COMMIT exactly (git archive into $SRC); bench/revobench from the working tree"
    TARGET=${CARGO_TARGET_DIR:-$BUILD_DIR/target}
else
    SRC=$ROOT
    BUILT_FROM="the working tree as it is"
    TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
fi
if [[ -z $UMBRA_BIN ]]; then
    echo "building: cargo build --release -p umbra (CARGO_TARGET_DIR=$TARGET)" >&2
    CARGO_TARGET_DIR=$TARGET cargo_build "$SRC" -p umbra
    UMBRA_BIN=$TARGET/release/umbra
    UMBRA_FROM="cargo build --release -p umbra, $BUILT_FROM"
else
    UMBRA_FROM="given (BENCH_UMBRA_BIN), built $(date -u -r "$UMBRA_BIN" +%Y-%m-%dT%H:%M:%SZ); NOT necessarily commit $COMMIT"
fi
echo "building: bench/revobench (cargo build --release, CARGO_TARGET_DIR=$TARGET)" >&2
CARGO_TARGET_DIR=$TARGET cargo_build "$SRC/bench/revobench"
TOOL=$TARGET/release/revobench

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for() { # SECONDS CMD...: retry CMD every 0.2 s
    local n=$(($1 * 5)); shift
    for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    "$@"
}

# ---- header (raw output from here on) ------------------------------------------------
exec > >(tee "$OUT") 2>&1
COMMAND="bench/revocation.sh  (BENCH_SESSIONS=$SESSIONS BENCH_SUSPEND_SESSIONS=$SUSPEND BENCH_WORKERS=$WORKERS BENCH_TIMEOUT_MS=$TIMEOUT_MS BENCH_PAUSE_MS=$PAUSE_MS BENCH_BUILD=$BUILD BENCH_QUIET_WAIT=$QUIET_WAIT BENCH_MAX_OTHERS=$MAX_OTHERS)"
echo "# Umbra revocation benchmark (bench/revocation.sh)"
echo "date        : $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit      : $COMMIT"
DIRTY=$(git status --porcelain --untracked-files=no | wc -l)
echo "worktree    : $([[ $DIRTY -eq 0 ]] && echo clean || echo "$DIRTY tracked file(s) modified:") $(git status --porcelain --untracked-files=no | awk '{print $2}' | tr '\n' ' ')"
echo "revobench   : $(git diff --quiet HEAD -- bench/revobench && git ls-files --error-unmatch bench/revobench/src/main.rs >/dev/null 2>&1 && echo "as committed at $COMMIT" || echo "WITH CHANGES NOT COMMITTED at $COMMIT")"
echo "command     : $COMMAND"
echo "umbra       : $UMBRA_BIN: $UMBRA_FROM; $("$UMBRA_BIN" --version 2>/dev/null || echo '?')"
echo "tool        : bench/revobench, cargo build --release (lto thin, codegen-units 4, as the workspace); $TOOL"
echo "rustc       : $(rustc --version)"
echo "machine     : nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), $(grep -q hypervisor /proc/cpuinfo && echo 'virtual machine (hypervisor flag)' || echo 'no hypervisor flag')"
echo "kernel      : $(uname -sr)"
echo "ulimit -n   : $(ulimit -n) (every process started here)"
echo

TMP=$(mktemp -d "${TMPDIR:-/tmp}/umbra-bench-revocation.XXXXXX")
mkdir -p "$TMP/ctl" "$TMP/gw1" "$TMP/gw2" "$TMP/agents"

# ---- the echo services, one per gateway --------------------------------------------------
ECHO_PIDS=()
for g in 1 2; do
    port=$(free_port)
    "$TOOL" echo --listen "127.0.0.1:$port" > "$TMP/echo$g.log" 2>&1 &
    ECHO_PIDS+=($!)
    PIDS+=($!)
    declare "ECHO${g}_PORT=$port"
done

# ---- controller ------------------------------------------------------------------------
CTL_PORT=$(free_port)
head -c32 /dev/urandom | base64 > "$TMP/ctl/kek"
chmod 600 "$TMP/ctl/kek"
# Every login and enrollment comes from 127.0.0.1: the per-address limit of
# 30 a minute (burst 10) would refuse most of them. The limiter still runs.
cat > "$TMP/ctl/controller.toml" <<TOML
listen = "127.0.0.1:$CTL_PORT"
data_dir = "$TMP/ctl/data"
trust_domain = "bench.local"
server_names = ["127.0.0.1"]
kek_file = "$TMP/ctl/kek"

[auth]
login_rate_per_minute = 100000000
login_burst = 100000000
TOML
"$UMBRA_BIN" controller --config "$TMP/ctl/controller.toml" > "$TMP/controller.log" 2>&1 &
CTL_PID=$!
PIDS+=("$CTL_PID")
CTL_URL=https://127.0.0.1:$CTL_PORT
wait_for 30 curl -skf "$CTL_URL/readyz"
curl -skf "$CTL_URL/api/v1/ca" > "$TMP/ctl/ca.pem" # loopback, from the process just started
export UMBRA_CONTROLLER=$CTL_URL UMBRA_CA_CERT=$TMP/ctl/ca.pem
UMBRA_ADMIN_TOKEN=$("$UMBRA_BIN" admin bootstrap --token-file "$TMP/ctl/data/bootstrap-admin-token")
export UMBRA_ADMIN_TOKEN
(umask 077 && printf '%s\n' "$UMBRA_ADMIN_TOKEN" > "$TMP/admin-token")
echo "controller  : umbra controller on 127.0.0.1:$CTL_PORT (pid $CTL_PID), SQLite, defaults (argon2id m=19456 KiB t=2 p=1) except [auth] login_rate_per_minute = login_burst = 100000000; UMBRA_LOG unset (info, to a file)"

# ---- gateways: enrolled with the CLI, a tcp route each, granted to the group --------------
GW_PIDS=()
for g in 1 2; do
    port=$(free_port)
    echo_port_var=ECHO${g}_PORT
    "$UMBRA_BIN" admin gateway add "gw$g" --san 127.0.0.1 > "$TMP/gw$g/token" 2>/dev/null
    # Up to TOTAL tunnels come from 127.0.0.1 (default limit: 256 per source).
    cat > "$TMP/gw$g/gateway.toml" <<TOML
controller_url = "$CTL_URL"
listen = "127.0.0.1:$port"
state_dir = "$TMP/gw$g/state"
enrollment_token_file = "$TMP/gw$g/token"

[limits]
max_connections_per_source = 1000000

[[routes]]
service = "echo-$g"
protocol = "tcp"
upstream = "tcp://127.0.0.1:${!echo_port_var}"
TOML
    "$UMBRA_BIN" gateway --config "$TMP/gw$g/gateway.toml" > "$TMP/gw$g.log" 2>&1 &
    GW_PIDS+=($!)
    PIDS+=($!)
    "$UMBRA_BIN" admin service set "echo-$g" --group bench > /dev/null
    echo "gateway $g   : umbra gateway gw$g on 127.0.0.1:$port (pid ${GW_PIDS[-1]}), 'umbra admin gateway add gw$g --san 127.0.0.1', route echo-$g (tcp) -> revobench echo on 127.0.0.1:${!echo_port_var}, 'umbra admin service set echo-$g --group bench'; [limits] max_connections_per_source = 1000000, other keys default; UMBRA_LOG unset"
done
gateways_registered() {
    "$UMBRA_BIN" admin gateway list --json | python3 -c '
import json, sys
gws = {g["name"]: g for g in json.load(sys.stdin)}
sys.exit(0 if all(gws.get(n, {}).get("url") for n in ("gw1", "gw2")) else 1)'
}
wait_for 60 gateways_registered
echo

# ---- the measurement ---------------------------------------------------------------------
RUN_OUT=$TMP/run.txt
set +e
"$TOOL" run --controller "$CTL_URL" --ca "$TMP/ctl/ca.pem" --admin-token-file "$TMP/admin-token" \
    --dir "$TMP/agents" --sessions "$SESSIONS" --suspend-sessions "$SUSPEND" \
    --services echo-1,echo-2 --group bench --workers "$WORKERS" \
    --timeout-ms "$TIMEOUT_MS" --pause-ms "$PAUSE_MS" \
    --quiet-wait "$QUIET_WAIT" --max-others "$MAX_OTHERS" \
    --watch "controller=$CTL_PID" --watch "gw1=${GW_PIDS[0]}" --watch "gw2=${GW_PIDS[1]}" \
    --watch "echo=${ECHO_PIDS[0]},${ECHO_PIDS[1]}" | tee "$RUN_OUT"
RC=${PIPESTATUS[0]}
set -e

# ---- checks --------------------------------------------------------------------------------
sleep 2 # the gateways upload their audit records in batches (within 1 s)
echo
echo "==== logs and audit ===="
for f in controller gw1 gw2; do
    echo "$f log: $(wc -l < "$TMP/$f.log") lines, $(grep -cE ' (WARN|ERROR) ' "$TMP/$f.log" || true) WARN/ERROR; by message:"
    { grep -E ' (WARN|ERROR) ' "$TMP/$f.log" || true; } | sed -E 's/^[^ ]+ +//; s/(request_id|addr|session|user|device|error)=[^ ]*//g' | cut -c1-160 | sort | uniq -c | sort -rn | head -5
done
if command -v sqlite3 >/dev/null; then
    echo "tunnel records stored by the controller (gateway.tunnel, by outcome and reason):"
    sqlite3 "$TMP/ctl/data/umbra.db" "select outcome, case when reason like '%tunnel opened' then 'tunnel opened' else reason end, sum(count) from audit_log where action = 'gateway.tunnel' group by 1, 2 order by 3 desc" 2>&1 | head -10 | sed 's/^/  /'
fi
echo

echo "==== summary ===="
MACHINE="nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), $(uname -sr), $(rustc --version | cut -d' ' -f1-2)"
python3 - "$RUN_OUT" "$OUT" "$COMMIT" "$COMMAND" "$RC" "$RESULTS_MD" bench/RESULTS.md "$DATE" "$MACHINE" <<'PY'
import json, sys
run_out, raw, commit, command, rc, results_md, md_path, date, machine = sys.argv[1:]
rows = [json.loads(l[7:]) for l in open(run_out) if l.startswith("RESULT ")]
text = open(run_out).read()
quiet_warnings = text.count("NOT QUIET")
setup = next((r for r in rows if r["phase"] == "setup"), None)
phases = [r for r in rows if r["phase"] != "setup"]
lines = []
if setup:
    ms = setup["ms"]
    lines.append(f"- Setup: {setup['sessions']} sessions (users, devices, logins, live tunnels) in "
                 f"{setup['seconds']:.0f} s with {setup['workers']} workers; per session p50: "
                 f"user {ms['create_user']['p50']:.0f} ms, enrollment token {ms['enrollment_token']['p50']:.0f} ms, "
                 f"enroll {ms['enroll']['p50']:.0f} ms, login {ms['login']['p50']:.0f} ms, "
                 f"tunnel + echo {ms['tunnel_open_and_echo']['p50']:.1f} ms. Tunnels per gateway: "
                 + ", ".join(f"{k}: {v}" for k, v in setup["tunnels_per_gateway"].items()) + ".")
table = ["| how | sessions | p50 ms | p90 ms | p99 ms | max ms | p99 < 100 ms | not closed in time | API response p50 / p99 ms | other processes (cores) |",
         "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
gw_table = ["| how | gateway | sessions | p50 ms | p99 ms | max ms |", "|---|---|---:|---:|---:|---:|"]
label = {"revoke-session": "`POST /api/v1/admin/sessions/{id}/revoke`",
         "suspend-user": "`POST /api/v1/admin/users/{name}/suspend`"}
for r in phases:
    c, resp = r["close_ms"], r["response_ms"]
    met = "met" if r["timeouts"] == 0 and r["errors"] == 0 and c["p99"] < 100 else "**SHORT**"
    table.append(f"| {label[r['phase']]} | {r['sessions']} | {c['p50']:.2f} | {c['p90']:.2f} | {c['p99']:.2f} | "
                 f"{c['max']:.2f} | {met} | {r['timeouts'] + r['errors']} | {resp['p50']:.2f} / {resp['p99']:.2f} | {r['others_cores']:.3f} |")
    for g, s in r["close_ms_by_gateway"].items():
        gw_table.append(f"| {r['phase']} | {g} | {s['n']} | {s['p50']:.2f} | {s['p99']:.2f} | {s['max']:.2f} |")
notes = []
for r in phases:
    notes.append(f"- {r['phase']}: {r['closed_before_response']} of {r['sessions']} tunnels were closed before the "
                 f"API response was read; ends seen by the client: {json.dumps(r['ends'])}; admin connections opened "
                 f"during the phase: {r['admin_reconnects']}; cores used over the phase: {json.dumps(r['cpu_cores'])}.")
if quiet_warnings:
    notes.append(f"- **The machine was not quiet** before {quiet_warnings} timed phase(s) (see the raw output): "
                 "repeat the run on an idle machine before taking these numbers as the run of record.")
if rc != "0":
    notes.append(f"- **The tool failed (exit {rc})**: see the raw output.")
summary = "\n".join(lines + ["", *table, "", *gw_table, "", *notes])
print(summary)
if results_md == "1":
    begin, end = "<!-- revocation.sh: begin -->", "<!-- revocation.sh: end -->"
    block = (f"{begin}\n### Latest run, {date} (written by the script)\n\n"
             f"- **Commit:** `{commit}`\n- **Command:** `{command}`\n"
             f"- **Machine:** {machine}\n"
             f"- **Raw output:** [{raw.split('/')[-1]}](results/{raw.split('/')[-1]})\n"
             f"- **Target:** p99 < 100 ms from the revoke request to the live connection closed.\n\n"
             f"{summary}\n{end}")
    md = open(md_path).read()
    if begin in md and end in md:
        md = md[:md.index(begin)] + block + md[md.index(end) + len(end):]
    else:
        md = md.rstrip("\n") + "\n\n## Revocation (`bench/revocation.sh`)\n\n" + block + "\n"
    open(md_path, "w").write(md)
    print(f"\n{md_path}: the Revocation section's latest run is updated")
PY
echo "raw output: $OUT"
exit "$RC"
