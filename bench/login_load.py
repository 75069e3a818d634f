#!/usr/bin/env python3
"""Load generator for the controller login benchmark (driven by bench/login.sh).

Everything goes through the controller's real HTTPS API, as a client would:

1. exchange the bootstrap credential for an admin token;
2. per user: create it (POST /api/v1/admin/users: generated password and TOTP
   secret), issue an enrollment token, enroll one device from a fresh P-256
   CSR with a healthy posture (POST /api/v1/enroll), fetch its ten recovery
   codes (POST /api/v1/admin/users/{name}/recovery-codes);
3. calibration: a few logins one at a time (unloaded latency);
4. timed phase: W threads log in for D seconds (POST /api/v1/auth/login over
   mTLS with the user's device certificate), each login a new TLS
   connection and a new request, with a TOTP code or a recovery code, never
   one that was used before.

Users are partitioned among the workers, so no two logins of one user are
ever in flight together: TOTP steps are consumed in order and no login fails
(a failure would count toward the lockout and raise the risk score).

The output is plain text for the raw results file; the last line is
`RESULT {json}` for login.sh's summary table.
"""

import argparse
import base64
import concurrent.futures
import hashlib
import hmac
import http.client
import json
import math
import os
import re
import ssl
import struct
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TOTP_STEP = 30
RECOVERY_CODES_PER_USER = 10  # what POST …/recovery-codes returns


def log(msg=""):
    print(msg, flush=True)


# ---------------------------------------------------------------- TOTP ------


def totp_code(secret_b32, step):
    """RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8), casefold=True)
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    value = (struct.unpack(">I", mac[off : off + 4])[0] & 0x7FFFFFFF) % 1_000_000
    return f"{value:06d}"


# ---------------------------------------------------------------- HTTP ------


class Api:
    def __init__(self, host, port, ca_file):
        self.host, self.port = host, port
        self.ctx = ssl.create_default_context(cafile=ca_file)

    def call(self, method, path, body=None, token=None, ctx=None, expect=(200,)):
        conn = http.client.HTTPSConnection(self.host, self.port, context=ctx or self.ctx, timeout=120)
        try:
            headers = {"Connection": "close"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            if token:
                headers["Authorization"] = f"Bearer {token}"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        if resp.status not in expect:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {raw[:500]!r}")
        return json.loads(raw) if raw else None


def wait_ready(host, port, pid, timeout=120):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only to poll /readyz before ca.pem is read
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid and not os.path.exists(f"/proc/{pid}"):
            raise RuntimeError("the controller exited before it was ready")
        try:
            conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"controller not ready after {timeout} s")


# ---------------------------------------------------------------- users -----


class User:
    def __init__(self, name):
        self.name = name
        self.password = None
        self.totp_secret = None
        self.recovery = []
        self.last_step = None  # last TOTP step this user consumed
        self.ctx = None  # client SSL context with the device certificate

    def next_credential(self, now):
        """("totp", code, step), ("recovery", code, None), or None.

        A TOTP code is accepted within ±1 step and each step once, in
        increasing order (the store keeps the last step). Only the current
        and the next step are used: both stay valid at the server for at
        least 30 s whatever the clock phase, so a code never expires in
        flight. Recovery codes fill in while no step is free.
        """
        cur = int(now) // TOTP_STEP
        step = cur if self.last_step is None or self.last_step < cur else self.last_step + 1
        if step <= cur + 1:
            return ("totp", totp_code(self.totp_secret, step), step)
        if self.recovery:
            return ("recovery", self.recovery[-1], None)
        return None

    def spend(self, cred):
        kind, code, step = cred
        if kind == "totp":
            self.last_step = step
        else:
            assert self.recovery[-1] == code
            self.recovery.pop()


def make_user(api, admin, host, port, ca_file, keydir, name, timings=None):
    u = User(name)
    t0 = time.perf_counter()
    r = api.call("POST", "/api/v1/admin/users", {"name": name, "groups": ["bench"]}, token=admin)
    if timings is not None:
        timings.append(time.perf_counter() - t0)
    u.password, u.totp_secret = r["password"], r["totp"]["secret"]
    tok = api.call("POST", "/api/v1/admin/enrollment-tokens", {"user": name}, token=admin)["token"]
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    posture = {
        "device_id": f"{name}-laptop",
        "hostname": f"{name}-laptop",
        "os_version": "Debian 12",
        "patch_level": datetime.now(timezone.utc).strftime("%Y-%m"),
        "antivirus_status": True,
        "firewall_enabled": True,
        "disk_encryption": True,
        "last_scan": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    enr = api.call(
        "POST",
        "/api/v1/enroll",
        {"token": tok, "csr_pem": csr.public_bytes(serialization.Encoding.PEM).decode(), "posture": posture},
    )
    if enr["status"] != "approved":
        raise RuntimeError(f"{name}: device status {enr['status']}")
    key_path = os.path.join(keydir, f"{name}.key")
    crt_path = os.path.join(keydir, f"{name}.crt")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    with open(crt_path, "w") as f:
        f.write(enr["certificate_pem"])
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.load_cert_chain(crt_path, key_path)
    u.ctx = ctx
    codes = api.call("POST", f"/api/v1/admin/users/{name}/recovery-codes", token=admin)["codes"]
    if len(codes) != RECOVERY_CODES_PER_USER:
        raise RuntimeError(f"{name}: {len(codes)} recovery codes")
    u.recovery = list(codes)
    return u


# ---------------------------------------------------------------- login -----


def login_once(host, port, user, cred):
    """One login on a new TLS connection. Returns a sample dict."""
    kind, code, _ = cred
    body = {"user": user.name, "password": user.password, kind if kind == "totp" else "recovery_code": code}
    data = json.dumps(body).encode()
    t0 = time.perf_counter()
    status, err = None, None
    t1 = t2 = None
    try:
        conn = http.client.HTTPSConnection(host, port, context=user.ctx, timeout=120)
        try:
            conn.connect()  # TCP + TLS 1.3 handshake with the device certificate
            t1 = time.perf_counter()
            conn.request(
                "POST",
                "/api/v1/auth/login",
                body=data,
                headers={"Content-Type": "application/json", "Connection": "close"},
            )
            resp = conn.getresponse()
            raw = resp.read()
            t2 = time.perf_counter()
            status = resp.status
            if status == 200:
                if json.loads(raw).get("user") != user.name:
                    status, err = "bad_body", raw[:200]
            else:
                err = raw[:300]
        finally:
            conn.close()
    except Exception as e:  # counted, reported, and fails the run
        status, err = f"exception:{type(e).__name__}", str(e)[:300]
    t3 = time.perf_counter()
    return {
        "t0": t0,
        "end": t3,
        "handshake": (t1 - t0) if t1 else None,
        "request": (t2 - t1) if t2 else None,
        "total": t3 - t0,
        "status": status,
        "kind": kind,
        "err": err,
    }


def pct(sorted_vals, p):
    """Nearest-rank percentile."""
    if not sorted_vals:
        return float("nan")
    k = max(1, math.ceil(p / 100 * len(sorted_vals)))
    return sorted_vals[k - 1]


def stats_ms(vals):
    s = sorted(v * 1000 for v in vals if v is not None)
    if not s:
        return {}
    # Rounded once, here, so the text and the RESULT line agree.
    return {
        "n": len(s),
        "mean": round(sum(s) / len(s), 2),
        "p50": round(pct(s, 50), 2),
        "p90": round(pct(s, 90), 2),
        "p99": round(pct(s, 99), 2),
        "max": round(s[-1], 2),
    }


def fmt_stats(st):
    if not st:
        return "n/a"
    return "mean {mean:.1f}  p50 {p50:.1f}  p90 {p90:.1f}  p99 {p99:.1f}  max {max:.1f} ms (n={n})".format(**st)


def proc_cpu(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu():
    """(busy, total, steal) jiffies over all CPUs.

    user nice system idle iowait irq softirq steal (guest time is already
    counted in user and nice).
    """
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:9]]
    idle = vals[3] + vals[4]  # idle + iowait
    return sum(vals) - idle, sum(vals), vals[7]


def postgres_cpu():
    """utime + stime of every process named postgres, in seconds."""
    total = 0.0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            total += proc_cpu(int(d))
        except (OSError, ValueError, IndexError):
            pass
    return total


def wait_quiet(max_wait, threshold=0.10, window=2.0):
    """Waits until the machine is idle (busy < threshold of all CPUs over
    `window` seconds), at most `max_wait` seconds. Returns the last busy
    fraction. The controller is idle at this point, so anything busy is
    another process that would distort the measurement."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = machine_cpu()
        time.sleep(window)
        b1 = machine_cpu()
        busy = (b1[0] - b0[0]) / max(1, b1[1] - b0[1])
        if busy < threshold or time.monotonic() >= deadline:
            return busy


# ---------------------------------------------------------------- main ------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--data-dir", required=True, help="the controller's data_dir (ca.pem, bootstrap-admin-token)")
    ap.add_argument("--workdir", required=True, help="where device keys and certificates go")
    ap.add_argument("--backend", required=True)
    ap.add_argument("--server-pid", type=int, required=True)
    ap.add_argument("--users", default="auto", help="number of users/devices, or auto")
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of the timed phase")
    ap.add_argument("--calibration", type=int, default=10, help="sequential logins before the timed phase")
    ap.add_argument("--setup-threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--argon2-cost", help="the bench/argon2-cost binary, to time argon2id alone")
    ap.add_argument("--argon2", default="19456,2,1", help="m_kib,t,p (for --argon2-cost)")
    ap.add_argument("--quiet-wait", type=float, default=600, help="max seconds to wait for an idle machine")
    ap.add_argument("--sqlite-db", help="read the PHC strings back from this SQLite file")
    ap.add_argument("--pg-db", help="read the PHC strings back from this PostgreSQL database (psql)")
    a = ap.parse_args()

    host, port = a.host, a.port
    ncpu = os.cpu_count() or 1
    wait_ready(host, port, a.server_pid)
    ca_file = os.path.join(a.data_dir, "ca.pem")
    api = Api(host, port, ca_file)
    with open(os.path.join(a.data_dir, "bootstrap-admin-token")) as f:
        bootstrap = f.read().strip()
    admin = api.call("POST", "/api/v1/admin/bootstrap", token=bootstrap)["token"]

    # ---- setup: users, devices, recovery codes (through the API) ----------
    t_setup = time.perf_counter()
    create_times = []
    users = []
    # A few users one at a time: the unloaded cost of POST /admin/users, which
    # is dominated by one argon2id hash. It also sizes N when N is auto.
    for i in range(3):
        users.append(make_user(api, admin, host, port, ca_file, a.workdir, f"bench{i:05d}", create_times))
    create_ms = sorted(t * 1000 for t in create_times)
    if a.users == "auto":
        # Enough credentials for 1.5x the rate the argon2 work allows.
        est_rate = ncpu / (create_ms[len(create_ms) // 2] / 1000)
        per_user = RECOVERY_CODES_PER_USER + 2 + int(a.duration // TOTP_STEP)
        n_users = max(a.workers * 4, math.ceil(1.5 * est_rate * a.duration / per_user))
    else:
        n_users = int(a.users)
    n_users = max(n_users, a.workers, 3)
    with concurrent.futures.ThreadPoolExecutor(a.setup_threads) as ex:
        futs = [
            ex.submit(make_user, api, admin, host, port, ca_file, a.workdir, f"bench{i:05d}")
            for i in range(len(users), n_users)
        ]
        users += [f.result() for f in futs]
    setup_s = time.perf_counter() - t_setup

    log(f"backend            : {a.backend}")
    log(f"users (N)          : {n_users}  (one device each; {RECOVERY_CODES_PER_USER} recovery codes each)")
    log(f"workers (W)        : {a.workers}  (threads; users partitioned among them)")
    log(f"timed phase        : {a.duration:.0f} s")
    log(f"setup              : {setup_s:.1f} s  (create user + enrollment token + enroll + recovery codes, "
        f"{a.setup_threads} threads)")
    log(f"POST /admin/users  : {', '.join(f'{t:.1f}' for t in create_ms)} ms  (sequential, unloaded; "
        "one argon2id hash each)")

    # ---- an idle machine, then argon2id alone -------------------------------
    argon2_alone = None
    busy = wait_quiet(a.quiet_wait)
    log(f"machine before run : {100 * busy:.0f}% busy"
        + ("  (WARNING: not idle after waiting; other processes are using the CPUs)" if busy >= 0.10 else ""))
    if a.argon2_cost:
        out = subprocess.run(
            [a.argon2_cost, *a.argon2.split(","), "40"], check=True, capture_output=True, text=True
        ).stdout.strip()
        log(out)
        m = re.search(r"median ([0-9.]+) ms.*?([0-9.]+) verifications/s", out)
        if m:
            argon2_alone = {"verify_ms_1thread": float(m.group(1)), "verifications_per_s_all_cpus": float(m.group(2))}

    # ---- calibration: sequential logins, unloaded --------------------------
    calib = []
    for i in range(a.calibration):
        u = users[i % len(users)]
        cred = u.next_credential(time.time())
        u.spend(cred)
        calib.append(login_once(host, port, u, cred))
    bad = [s for s in calib if s["status"] != 200]
    if bad:
        log(f"calibration login failed: {bad[0]['status']} {bad[0]['err']!r}")
        sys.exit(1)
    log(f"unloaded login     : request {fmt_stats(stats_ms(s['request'] for s in calib))}")
    log(f"                     handshake {fmt_stats(stats_ms(s['handshake'] for s in calib))}")

    # ---- timed phase -------------------------------------------------------
    parts = [users[w :: a.workers] for w in range(a.workers)]
    samples = [[] for _ in range(a.workers)]
    exhausted = [False] * a.workers
    barrier = threading.Barrier(a.workers + 1)
    start_box = {}

    def worker(w):
        mine, out = parts[w], samples[w]
        barrier.wait()
        end = start_box["start"] + a.duration
        idx = 0
        while time.perf_counter() < end:
            cred = None
            for _ in range(len(mine)):
                u = mine[idx % len(mine)]
                idx += 1
                cred = u.next_credential(time.time())
                if cred:
                    break
            if cred is None:
                exhausted[w] = True
                return
            u.spend(cred)
            out.append(login_once(host, port, u, cred))

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(a.workers)]
    for t in threads:
        t.start()
    srv0, mach0, cli0, pg0 = proc_cpu(a.server_pid), machine_cpu(), time.process_time(), postgres_cpu()
    start_box["start"] = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    stop = time.perf_counter()
    srv1, mach1, cli1, pg1 = proc_cpu(a.server_pid), machine_cpu(), time.process_time(), postgres_cpu()

    all_s = [s for part in samples for s in part]
    start = start_box["start"]
    wall = max((s["end"] for s in all_s), default=stop) - start
    ok = [s for s in all_s if s["status"] == 200]
    errors = {}
    for s in all_s:
        if s["status"] != 200:
            errors[str(s["status"])] = errors.get(str(s["status"]), 0) + 1
    rate = len(ok) / wall if wall > 0 else 0.0
    req, tot, hs = stats_ms(s["request"] for s in ok), stats_ms(s["total"] for s in ok), stats_ms(
        s["handshake"] for s in ok
    )
    kinds = {k: sum(1 for s in ok if s["kind"] == k) for k in ("totp", "recovery")}
    srv_cpu = srv1 - srv0
    ticks = os.sysconf("SC_CLK_TCK")
    mach_total = max(1, mach1[1] - mach0[1])
    mach_busy = (mach1[0] - mach0[0]) / mach_total
    steal = (mach1[2] - mach0[2]) / mach_total
    elapsed = stop - start_box["start"]
    cli_cpu = cli1 - cli0
    pg_cpu = pg1 - pg0
    # Busy CPU time on the machine not used by the controller, PostgreSQL or
    # this load generator: other processes, kernel threads, steal.
    other = (mach1[0] - mach0[0]) / ticks - srv_cpu - cli_cpu - pg_cpu
    other_cores = other / max(elapsed, 1e-9)

    with open(f"/proc/{a.server_pid}/status") as f:
        hwm = next((ln.split()[1] for ln in f if ln.startswith("VmHWM:")), "0")
    rss_mib = int(hwm) / 1024

    # Server-side check: the sessions the controller opened.
    sessions = api.call("GET", "/api/v1/admin/sessions", token=admin)["items"]

    log()
    log(f"---- {a.backend}: timed phase ----")
    log(f"logins             : {len(all_s)} attempted, {len(ok)} ok (totp {kinds['totp']}, "
        f"recovery {kinds['recovery']}), errors {sum(errors.values())} {errors if errors else ''}")
    log(f"wall time          : {wall:.2f} s")
    log(f"logins/s           : {rate:.1f}")
    log(f"latency, request   : {fmt_stats(req)}   (POST /auth/login on an established TLS connection)")
    log(f"latency, total     : {fmt_stats(tot)}   (TCP + TLS handshake + request)")
    log(f"latency, handshake : {fmt_stats(hs)}")
    for k in ("totp", "recovery"):
        log(f"request, {k:<9} : {fmt_stats(stats_ms(s['request'] for s in ok if s['kind'] == k))}")
    log(f"controller CPU     : {srv_cpu:.2f} s = {srv_cpu / max(wall, 1e-9):.2f} cores, "
        f"{1000 * srv_cpu / max(1, len(ok)):.1f} ms per login")
    log(f"controller memory  : peak RSS {rss_mib:.0f} MiB")
    log(f"load generator CPU : {cli_cpu:.2f} s = {cli_cpu / max(wall, 1e-9):.2f} cores")
    if pg_cpu > 0:
        log(f"PostgreSQL CPU     : {pg_cpu:.2f} s = {pg_cpu / max(wall, 1e-9):.2f} cores, "
            f"{1000 * pg_cpu / max(1, len(ok)):.1f} ms per login")
    log(f"machine CPU busy   : {100 * mach_busy:.0f}% of {ncpu} CPUs (steal {100 * steal:.1f}%); "
        f"other processes {other_cores:.2f} cores"
        + ("  (WARNING: something else was using the CPUs)" if other_cores > 0.15 else ""))
    log(f"credentials ran out: {sum(exhausted)} of {a.workers} workers"
        + ("  (WARNING: concurrency fell before the end; raise BENCH_USERS)" if any(exhausted) else ""))
    live = sum(1 for s in sessions if s["user"].startswith("bench"))
    log(f"sessions (server)  : {live} live bench sessions; expected {len(ok) + len(calib)}")
    if errors:
        for s in all_s:
            if s["status"] != 200:
                log(f"first error        : {s['status']} {s['err']!r}")
                break

    # The argon2 parameters the controller actually used, from the stored
    # PHC strings ($argon2id$v=19$m=…,t=…,p=…$salt$hash), read back from
    # the database after the run.
    phc = None
    if a.sqlite_db:
        import sqlite3

        con = sqlite3.connect(f"file:{a.sqlite_db}?mode=ro", uri=True)
        rows = con.execute("SELECT password_hash FROM users").fetchall()
        con.close()
        phc = sorted({"$".join(r[0].split("$")[:4]) for r in rows})
    elif a.pg_db:
        out = subprocess.run(
            ["psql", "-d", a.pg_db, "-h", "/var/run/postgresql", "-At", "-c", "SELECT password_hash FROM users"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        phc = sorted({"$".join(r.split("$")[:4]) for r in out.split()})
    if phc is not None:
        log(f"argon2 (stored PHC): {', '.join(phc)}  ({n_users} users)")

    result = {
        "backend": a.backend,
        "users": n_users,
        "workers": a.workers,
        "duration": a.duration,
        "ok": len(ok),
        "attempted": len(all_s),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "totp": kinds["totp"],
        "recovery": kinds["recovery"],
        "wall_s": round(wall, 3),
        "logins_per_s": round(rate, 2),
        "request_ms": {k: round(v, 2) for k, v in req.items()},
        "total_ms": {k: round(v, 2) for k, v in tot.items()},
        "handshake_ms": {k: round(v, 2) for k, v in hs.items()},
        "unloaded_request_ms": {k: round(v, 2) for k, v in stats_ms(s["request"] for s in calib).items()},
        "create_user_ms": [round(t, 2) for t in create_ms],
        "controller_cpu_ms_per_login": round(1000 * srv_cpu / max(1, len(ok)), 2),
        "controller_cores": round(srv_cpu / max(wall, 1e-9), 2),
        "machine_busy": round(mach_busy, 3),
        "client_cores": round(cli_cpu / max(wall, 1e-9), 2),
        "postgres_cores": round(pg_cpu / max(wall, 1e-9), 2),
        "postgres_cpu_ms_per_login": round(1000 * pg_cpu / max(1, len(ok)), 2),
        "other_cores": round(other_cores, 2),
        "steal": round(steal, 3),
        "controller_peak_rss_mib": round(rss_mib),
        "exhausted_workers": sum(exhausted),
        "phc": phc,
        "argon2_alone": argon2_alone,
        "idle_before": round(busy, 3),
    }
    log("RESULT " + json.dumps(result, sort_keys=True))
    sys.exit(0 if not errors and len(ok) > 0 and live == len(ok) + len(calib) else 1)


if __name__ == "__main__":
    main()
