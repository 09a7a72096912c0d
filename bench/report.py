#!/usr/bin/env python3
"""bench/report.py — turn the raw output of bench/run.sh into CSV summaries, tables and charts.

  report.py cache CACHE_CSV [MD_OUT]
      median TPS per target over the rounds and its ratio to direct.
  report.py incident RUNS_CSV OUT_DIR [MD_OUT]
      checkout latency and success per phase, recommendation success and latency, per
      configuration; writes OUT_DIR/incident-checkout.csv, incident-p99.csv (p99 per second),
      incident-reco.csv and incident.svg.
  report.py times PGLOAD_JSON
      one line for bench/run.sh: the checkout's measured start, the flood's start and end (unix
      seconds) and a short summary of the run.

Tables go to stdout (and are appended to MD_OUT when given). Standard library only.
"""

import csv
import json
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chart  # noqa: E402

ORDER = ["direct", "pgward-norules", "pgward-rules"]
# bench/run.sh --smoke sets BENCH_SMOKE=1: the numbers of a smoke run are not judged
SMOKE = os.environ.get("BENCH_SMOKE") == "1"
LABEL = {
    "direct": "direct",
    "pgward-norules": "pgward, no rules",
    "pgward-rules": "pgward + rules.toml",
}


def pct(sorted_vals, p):
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_vals:
        return None
    k = max(1, math.ceil(p / 100.0 * len(sorted_vals)))
    return sorted_vals[k - 1]


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def f(v, d=1):
    if v is None:
        return "-"
    return f"{v:.{d}f}"


def order_key(name):
    return ORDER.index(name) if name in ORDER else len(ORDER)


class Out:
    def __init__(self, md_path):
        self.md = open(md_path, "a") if md_path else None

    def __call__(self, line=""):
        print(line)
        if self.md:
            self.md.write(line + "\n")


# ------------------------------------------------------------------------------------- cache
def cache(csv_path, md_path=None):
    rows = list(csv.DictReader(open(csv_path, newline="")))
    by = {}
    for r in rows:
        by.setdefault(r["target"], []).append(r)
    out = Out(md_path)
    targets = sorted(by, key=order_key)
    tps = {t: med([float(r["tps"]) for r in by[t] if r["tps"]]) for t in targets}
    base = tps.get("direct")
    first = rows[0] if rows else {}
    out(f"### Hot reads: the recommendation query ({first.get('run_ts', '')})")
    out()
    out(
        f"pgbench -n -f bench/reco.sql (product ids zipfian, s=1.1), -c {first.get('clients', '?')} "
        f"-j {first.get('jobs', '?')}, -T {first.get('duration_s', '?')} per run, "
        f"{len(rows) // max(1, len(targets))} round(s) interleaved; medians."
    )
    out()
    out("| configuration | TPS (median) | TPS per round | latency ms (median) | ÷ direct | aborted clients |")
    out("|---|---:|---|---:|---:|---:|")
    for t in targets:
        rs = by[t]
        per_round = " / ".join(f(float(r["tps"]), 0) if r["tps"] else "-" for r in rs)
        lat = med([float(r["latency_ms"]) for r in rs if r["latency_ms"]])
        aborted = sum(int(r["aborted_clients"] or 0) for r in rs)
        ratio = f"{tps[t] / base:.1f}×" if base and tps[t] is not None else "-"
        out(f"| {LABEL.get(t, t)} | {f(tps[t], 0)} | {per_round} | {f(lat, 2)} | {ratio} | {aborted} |")
    if SMOKE:
        out()
        out("Target pgward + rules ≥ 50× direct: not judged on a smoke run.")
    elif base and tps.get("pgward-rules") is not None:
        ratio = tps["pgward-rules"] / base
        out()
        out(f"Target pgward + rules ≥ 50× direct: {ratio:.1f}× — {'met' if ratio >= 50 else 'missed'}.")
    out()
    svg = os.path.splitext(csv_path)[0] + ".svg"
    with open(svg, "w") as fh:
        fh.write(
            chart.bar_chart(
                ["recommendation query"],
                targets,
                {("recommendation query", t): tps[t] for t in targets if tps[t] is not None},
                "Hot reads: recommendation query TPS (median)",
                "transactions per second",
            )
        )


# ---------------------------------------------------------------------------------- incident
def read_checkout(log_csv):
    """Checkouts from pgload's per-request log (bench/run.sh --log): (arrival, latency_ms or
    None, status). Given up in the queue (timeout, dropped) is "skipped"; an SQL error, a lost
    connection or no answer by the end is "failed"."""
    txs = []
    with open(log_csv, newline="") as fh:
        for r in csv.DictReader(fh):
            if r["workload"] != "checkout":
                continue
            arrival = float(r["arrival"])
            if r["status"] == "ok":
                txs.append((arrival, int(r["latency_us"]) / 1000.0, "committed"))
            elif r["status"] in ("timeout", "dropped"):
                txs.append((arrival, None, "skipped"))
            else:
                txs.append((arrival, None, "failed"))
    return txs


def load_json(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def times(path):
    """bench/run.sh's line: checkout start, flood start, flood end, summary."""
    w = load_json(path)["workloads"]
    ck, fl = w["checkout"], w["reco-flood"]
    print(
        f"{ck['measure_start_unix']} {fl['measure_start_unix']} {fl['measure_end_unix']} "
        f"checkout ok {ck['ok']}/{ck['requests']}, p99 {ck['latency_us'].get('p99')} µs; "
        f"recommendations ok {fl['ok']}/{fl['requests']}, statuses {json.dumps(fl['by_status'])}"
    )


def incident(runs_csv, out_dir, md_path=None):
    runs = list(csv.DictReader(open(runs_csv, newline="")))
    out = Out(md_path)
    ck_rows, p99_rows, reco_rows = [], [], []
    for run in runs:
        cfg, rnd = run["config"], run["round"]
        start, fs, fe = float(run["start"]), float(run["flood_start"]), float(run["flood_end"])
        limit = float(run["latency_limit_ms"])
        txs = read_checkout(run["load_log"])
        load = load_json(run["load_json"])
        phases = {"calm": [], "incident": []}
        for t in txs:
            if start <= t[0] < fs:
                phases["calm"].append(t)
            elif fs <= t[0] < fe:
                phases["incident"].append(t)
        for ph, ts in phases.items():
            lats = sorted(t[1] for t in ts if t[1] is not None)
            ok = sum(1 for t in ts if t[1] is not None and t[1] <= limit)
            n = len(ts)
            ck_rows.append(
                {
                    "config": cfg,
                    "round": rnd,
                    "phase": ph,
                    "seconds": round((fs - start) if ph == "calm" else (fe - fs), 1),
                    "scheduled": n,
                    "committed": len(lats),
                    "within_limit": ok,
                    "skipped": sum(1 for t in ts if t[2] == "skipped"),
                    "failed": sum(1 for t in ts if t[2] == "failed"),
                    "success_pct": round(100.0 * ok / n, 3) if n else None,
                    "p50_ms": pct(lats, 50),
                    "p95_ms": pct(lats, 95),
                    "p99_ms": pct(lats, 99),
                    "max_ms": lats[-1] if lats else None,
                }
            )
        buckets = {}
        for t in txs:
            if t[1] is not None and start <= t[0] < fe:
                buckets.setdefault(int(t[0] - start), []).append(t[1])
        for sec in range(int(fe - start)):
            lats = sorted(buckets.get(sec, []))
            p99_rows.append(
                {
                    "config": cfg,
                    "round": rnd,
                    "second": sec,
                    "phase": "calm" if start + sec + 0.5 < fs else "incident",
                    "checkouts": len(lats),
                    "p99_ms": pct(lats, 99),
                    "flood_start_s": round(fs - start, 3),
                }
            )
        reco = load.get("workloads", {}).get("reco-flood", {})
        by = reco.get("by_status", {})
        lat = reco.get("latency_us", {})
        late = reco.get("late", {})

        def ms(k):
            return lat[k] / 1000.0 if k in lat else None

        reco_rows.append(
            {
                "config": cfg,
                "round": rnd,
                "requests": reco.get("requests") or 0,
                "answered": reco.get("ok", 0),
                "answered_pct": reco.get("answered_pct"),
                "errors": reco.get("sql_errors", 0) + reco.get("lost", 0) + reco.get("client_errors", 0),
                "timeouts": late.get("timeout", 0) + late.get("dropped", 0),
                "unanswered": reco.get("unanswered", 0),
                "errors_by_status": " ".join(f"{k}:{v}" for k, v in sorted(by.items()) if k != "ok"),
                "p50_ms": ms("p50"),
                "p95_ms": ms("p95"),
                "p99_ms": ms("p99"),
                "answered_per_s": reco.get("ok_per_s"),
                "pgload_cpu_s": load.get("cpu", {}).get("total_s"),
            }
        )

    def write(name, rows):
        path = os.path.join(out_dir, name)
        if not rows:
            return path
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if v is None else v) for k, v in r.items()})
        return path

    write("incident-checkout.csv", ck_rows)
    p99_csv = write("incident-p99.csv", p99_rows)
    write("incident-reco.csv", reco_rows)
    with open(os.path.join(out_dir, "incident.svg"), "w") as fh:
        fh.write(chart.incident_lines(p99_csv))

    first = runs[0] if runs else {}
    configs = sorted({r["config"] for r in runs}, key=order_key)
    nrounds = len({r["round"] for r in runs})
    out(f"### Incident replay ({first.get('run_ts', '')})")
    out()
    out(
        f"Checkout (bench/checkout.sql) at {first.get('checkout_rate', '?')}/s (Poisson arrivals), "
        f"{first.get('checkout_clients', '?')} connections; calm {first.get('calm_s', '?')} s, then the "
        f"incident {first.get('incident_s', '?')} s: a flood of the recommendation query at "
        f"{first.get('reco_rate', '?')}/s over {first.get('reco_clients', '?')} connections "
        f"(zipfian ids); both from one examples/pgload run. Latency from the scheduled arrival "
        f"(includes waiting for a connection); success = committed within "
        f"{first.get('latency_limit_ms', '?')} ms. Medians over {nrounds} round(s)."
    )
    out()
    out("| configuration | phase | checkouts | success % | p50 ms | p95 ms | p99 ms | p99 ÷ calm p99 | failed | given up |")
    out("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for cfg in configs:
        for ph in ("calm", "incident"):
            rs = [r for r in ck_rows if r["config"] == cfg and r["phase"] == ph]
            summary[cfg, ph] = {
                k: med([r[k] for r in rs]) for k in ("scheduled", "success_pct", "p50_ms", "p95_ms", "p99_ms", "failed", "skipped")
            }
        calm99 = summary[cfg, "calm"]["p99_ms"]
        for ph in ("calm", "incident"):
            s = summary[cfg, ph]
            ratio = f"{s['p99_ms'] / calm99:.1f}×" if calm99 and s["p99_ms"] is not None else "-"
            out(
                f"| {LABEL.get(cfg, cfg)} | {ph} | {f(s['scheduled'], 0)} | {f(s['success_pct'], 2)} | "
                f"{f(s['p50_ms'], 2)} | {f(s['p95_ms'], 2)} | {f(s['p99_ms'], 2)} | {ratio} | "
                f"{f(s['failed'], 0)} | {f(s['skipped'], 0)} |"
            )
    out()
    out("| configuration | recommendations | answered % | errors | gave up (queued > timeout) | unanswered at end | p50 ms | p95 ms | p99 ms | answered/s | statuses |")
    out("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for cfg in configs:
        rs = [r for r in reco_rows if r["config"] == cfg]
        m = {k: med([r[k] for r in rs]) for k in ("requests", "answered_pct", "errors", "timeouts", "unanswered", "p50_ms", "p95_ms", "p99_ms", "answered_per_s")}
        statuses = "; ".join(r["errors_by_status"] for r in rs if r["errors_by_status"]) or "-"
        out(
            f"| {LABEL.get(cfg, cfg)} | {f(m['requests'], 0)} | {f(m['answered_pct'], 2)} | {f(m['errors'], 0)} | "
            f"{f(m['timeouts'], 0)} | {f(m['unanswered'], 0)} | {f(m['p50_ms'], 1)} | {f(m['p95_ms'], 1)} | "
            f"{f(m['p99_ms'], 1)} | {f(m['answered_per_s'], 1)} | {statuses} |"
        )
    out()

    def ratio(cfg):
        c, i = summary.get((cfg, "calm"), {}).get("p99_ms"), summary.get((cfg, "incident"), {}).get("p99_ms")
        return i / c if c and i is not None else None

    lines = []
    r = ratio("pgward-rules")
    if r is not None:
        lines.append(f"with rules, incident p99 ÷ calm p99 = {r:.2f} (target ≤ 1.5: {'met' if r <= 1.5 else 'missed'})")
    r = ratio("direct")
    if r is not None:
        lines.append(f"direct, incident p99 ÷ calm p99 = {r:.1f} (target ≥ 10: {'met' if r >= 10 else 'missed'})")
    rs = [x for x in reco_rows if x["config"] == "pgward-rules"]
    a = med([x["answered_pct"] for x in rs])
    if a is not None:
        lines.append(f"with rules, recommendations answered = {a:.2f}% (target ≥ 99%: {'met' if a >= 99 else 'missed'})")
    if SMOKE:
        out("Targets: not judged on a smoke run.")
        out()
    elif lines:
        out("Targets: " + "; ".join(lines) + ".")
        out()


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "cache":
        cache(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    elif len(sys.argv) == 3 and sys.argv[1] == "times":
        times(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "incident":
        incident(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
