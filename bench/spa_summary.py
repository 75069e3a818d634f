#!/usr/bin/env python3
"""Summary of a bench/spa.sh raw output file: tables, ratios and met/SHORT
against the targets of DESIGN.md ("Performance targets", SPA).

Usage: python3 bench/spa_summary.py bench/results/spa-<date>.txt

Reads only the RESULT lines (and the "---- rate" / "==== X." markers that
say which server a `send` line belongs to), so it can be re-run on any raw
file.
"""

import json
import re
import sys

NATIVE_VALID_TARGET = 100_000
GARBAGE_TARGET = 1_000_000
FWKNOP_RATIO_TARGET = 5.0
PINHOLES_TARGET = 20_000
KNOCK_P50_TARGET_MS = 20.0


def status(ok):
    return "met" if ok else "SHORT"


def read(path):
    rows, context = [], {}
    for line in open(path, errors="replace"):
        m = re.match(r"---- rate (\d+)/s: (fwknopd -t|spabench udp-fwknop)", line)
        if m:
            context = {"rate": int(m.group(1)), "server": "fwknopd" if "fwknopd" in m.group(2) else "udp-fwknop"}
        elif line.startswith("==== D."):
            context = {"server": "full"}
        elif line.startswith("==== "):
            context = {}
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            if r["bench"] == "send":
                r.update(context)
            rows.append(r)
    return rows


def main(path):
    rows = read(path)
    verdicts = []  # (target, measured, verdict)

    def one(bench, **kw):
        return next((r for r in rows if r["bench"] == bench and all(r.get(k) == v for k, v in kw.items())), None)

    def rate(r):
        # Per second of the measuring thread's CPU time: a per-core rate even
        # when other work preempts the thread (then the wall rate is lower).
        return r.get("per_cpu_sec_median") or r["per_sec_median"]

    def preempted(r):
        return r["per_sec_median"] < 0.9 * rate(r)

    # ---- A. native
    native = [r for r in rows if r["bench"] == "native"]
    if native:
        print("A. native Verifier, in-process, one thread (medians of the passes; every pass in the raw output):")
        print("| packets | per CPU-second | per second, wall | refused as | target |")
        print("|---|---:|---:|---|---|")
        for r in native:
            kind = r["what"]
            refused = ", ".join(f"{k} {v}" for k, v in r.get("refused_as", {}).items()) or "(all accepted)"
            goal, name = (NATIVE_VALID_TARGET, "native valid packets verified/s, one core >= 100,000") \
                if kind == "valid" else (GARBAGE_TARGET, f"native garbage dropped/s >= 1,000,000: {kind[8:]}")
            ok = rate(r) >= goal
            verdicts.append((name, f"{rate(r):,.0f}/s ({rate(r) / goal:.2f}x)", status(ok)))
            label = f"{kind} ({r['bytes']} B, {r['devices']} devices)" if kind == "valid" else kind
            print(f"| {label} | {rate(r):,.0f} | {r['per_sec_median']:,.0f}{' (*)' if preempted(r) else ''} | "
                  f"{refused} | >= {goal:,}/s: {status(ok)} |")
        print()

    # ---- B. fwknop in-process
    fw = [r for r in rows if r["bench"] == "fwknop"]
    fwv = one("fwknop", what="valid")
    if fw:
        print("B. FwknopVerifier, in-process, one thread (medians of the passes):")
        print("| packets | per CPU-second | per second, wall | refused as |")
        print("|---|---:|---:|---|")
        for r in fw:
            refused = ", ".join(f"{k} {v}" for k, v in r.get("refused_as", {}).items()) or "(all accepted)"
            print(f"| {r['what']} | {rate(r):,.0f} | {r['per_sec_median']:,.0f}{' (*)' if preempted(r) else ''} | {refused} |")
        print()
    if any(preempted(r) for r in native + fw):
        print("(*) the wall-clock rate is more than 10% below the CPU-time rate: the thread was preempted, the machine was")
        print("    not idle. The CPU-time rate is the per-core figure; check the 'quiet' lines of the raw output.")
        print()

    # ---- C. UDP, the same packets
    servers = [r for r in rows if r["bench"] == "udp_server"]
    sends = {(r.get("server"), r.get("rate")): r for r in rows if r["bench"] == "send"}
    best = {}
    if servers:
        print("C. the same packets over UDP, one server at a time (per CPU-s = accepted / the server's CPU seconds;")
        print("   busy = server CPU seconds / send duration; drops = Udp RcvbufErrors in the server's namespace):")
        print("| offered /s | server | sent /s | accepted | of sent | CPU s | per CPU-s | busy | drops |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in servers:
            s = sends.get((r["server"], r["rate"]), {"sent": 0, "seconds": 0, "offered_per_sec": 0})
            per_cpu = r["accepted"] / r["cpu_s"] if r["cpu_s"] > 0 else 0
            busy = r["cpu_s"] / s["seconds"] if s["seconds"] > 0 else 0
            r["per_cpu"], r["busy"] = per_cpu, busy
            if per_cpu > best.get(r["server"], {"per_cpu": 0})["per_cpu"]:
                best[r["server"]] = r
            print(f"| {r['rate'] or 'max'} | {r['server']} | {s['offered_per_sec']:,.0f} | {r['accepted']:,} | "
                  f"{r['accepted'] / s['sent'] if s['sent'] else 0:.0%} | {r['cpu_s']:.3f} | {per_cpu:,.0f} | "
                  f"{busy:.2f} | {r['rcvbuf_errors']:,} |")
        print()
        # Highest offered rate each server kept up with: everything accepted, nothing dropped.
        for name in ("fwknopd", "udp-fwknop"):
            kept = [r["rate"] for r in servers if r["server"] == name and r["rcvbuf_errors"] == 0
                    and r["accepted"] == sends.get((name, r["rate"]), {}).get("sent", -1)]
            print(f"   {name}: highest offered rate with every packet accepted and none dropped: "
                  f"{max(kept) if kept else 'none'}/s")
        print()
    fd, uf = best.get("fwknopd"), best.get("udp-fwknop")
    if fd and uf:
        ratio = uf["per_cpu"] / fd["per_cpu"]
        sat = lambda r: "saturated" if r["rcvbuf_errors"] > 0 else "NOT saturated"
        verdicts.append(("fwknop mode >= 5x fwknopd verify-only: over UDP, same packets, accepted per server CPU-second "
                         "(best offered rate of each)",
                         f"{uf['per_cpu']:,.0f} vs {fd['per_cpu']:,.0f} (at {uf['rate']}/s, {sat(uf)} / {fd['rate']}/s, "
                         f"{sat(fd)}): {ratio:.2f}x", status(ratio >= FWKNOP_RATIO_TARGET)))
        if fwv:
            r2 = rate(fwv) / fd["per_cpu"]
            verdicts.append(("  (for reference) FwknopVerifier in-process vs fwknopd -t, both per CPU-second",
                             f"{rate(fwv):,.0f} vs {fd['per_cpu']:,.0f}: {r2:.2f}x",
                             "(in-process has no socket; see the UDP line)"))

    # ---- D. fwknopd full path
    full = one("fwknopd_full")
    count = one("count", label="full")
    full_rate = 0
    if full and count:
        full_rate = (count["matched"] - 1) / count["first_to_last_s"] if count["first_to_last_s"] > 0 else 0
        print(f"D. fwknopd full path: {count['matched']} of {full['packets']} rules added "
              f"({full['rules_in_chain']} in FWKNOP_INPUT afterwards), {full_rate:,.1f} rules/s "
              f"(first to last 'Added access rule'), fwknopd CPU {full['cpu_s']:.3f} s, drops {full['rcvbuf_errors']}")
        print()

    # ---- E. pinholes
    ph = [r for r in rows if r["bench"] == "pinholes"]
    if ph:
        print("E. new nftables pinholes through NftPinholes:")
        print("| open() calls | at once | seconds | pinholes /s | in kernel | open() p50 / p99 ms |")
        print("|---:|---:|---:|---:|---:|---|")
        for r in ph:
            lat = r["open_call_ms"]
            print(f"| {r['total']:,} | {r['in_flight']} | {r['seconds']:.2f} | {r['per_sec']:,.0f} | {r['in_kernel']:,} | "
                  f"{lat['p50']} / {lat['p99']} |")
        print()
        conc = max((r for r in ph if r["in_flight"] > 1), key=lambda r: r["total"], default=None)
        if conc:
            vs = f"; fwknopd full path {full_rate:,.1f}/s: {conc['per_sec'] / full_rate:,.0f}x" if full_rate else ""
            verdicts.append(("new nftables pinholes/s >= 20,000",
                             f"{conc['per_sec']:,.0f}/s ({conc['per_sec'] / PINHOLES_TARGET:.2f}x){vs}",
                             status(conc["per_sec"] >= PINHOLES_TARGET)))

    # ---- F. knock -> first byte
    kn = [r for r in rows if r["bench"] == "knock_first_byte"]
    if kn:
        print("F. knock -> pinhole -> mTLS -> first byte (umbra dev, userspace pinholes, loopback), ms:")
        print("| pause after knock | samples ok | first byte p50 | p90 | p99 | max | TLS done p50 | connect attempts | TLS |")
        print("|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for r in kn:
            fb, tl = r["first_byte_ms"], r["tls_done_ms"]
            att = ", ".join(f"{k}: {v}" for k, v in r["connect_attempts"].items())
            tls = f"{r['tls'].get('version')} {r['tls'].get('kx')}" if r.get("tls") else ""
            print(f"| {r['pause_ms']} ms | {r['ok']}/{r['samples']} | {fb['p50']} | {fb['p90']} | {fb['p99']} | {fb['max']} | "
                  f"{tl['p50']} | {att} | {tls} |")
            note = " (no pause: the client retries until the pinhole is there)" if r["pause_ms"] == 0 else \
                f" ({r['pause_ms']} ms pause after the knock, as umbra-agent waits)"
            verdicts.append((f"knock -> pinhole -> mTLS -> first byte p50 < 20 ms{note}",
                             f"{fb['p50']} ms", status(fb["p50"] < KNOCK_P50_TARGET_MS)))
        print()

    print("Targets (DESIGN.md, Performance targets: SPA):")
    print("| target | measured | verdict |")
    print("|---|---|---|")
    for t, m, v in verdicts:
        print(f"| {t} | {m} | {v} |")
    if not kn:
        print("| knock -> pinhole -> mTLS -> first byte p50 < 20 ms | not measured (phase F not run) | - |")


if __name__ == "__main__":
    main(sys.argv[1])
