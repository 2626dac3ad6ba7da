"""Render compare.sh's results.tsv as markdown tables with ratios.

usage: table.py results.tsv CONNS DURATION REPEATS RATE RATE_CONNS RATE_DURATION HOLD_CONNS
(compare.sh calls it; run it again on a saved OUT_DIR/results.tsv to re-render.)
"""
import csv
import sys

path, conns, dur, reps, rate, rconns, rdur, hold = sys.argv[1:9]
rows = list(csv.DictReader(open(path), delimiter="\t"))


def f(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


measured = [r for r in rows if f(r.get("rps_median"))]
pending = [r for r in rows if not f(r.get("rps_median"))]
direct = next((r for r in measured if r["proxy"] == "direct"), None)
nginx = {r["workers"]: r for r in measured if r["proxy"] == "nginx"}


def ratio(a, b):
    a, b = f(a), f(b)
    if a is None or b is None or b == 0:
        return "–"
    return "%.2f×" % (a / b)


def ng(r, k):
    n = nginx.get(r["workers"])
    return n[k] if n else None


def dash(v):
    return v if v not in (None, "") else "–"


def mb(v):
    return "%.1f" % (f(v) / 1024) if f(v) else "–"


print(f"**Throughput and latency.** {reps} interleaved rounds; in each, every target runs once. "
      f"req/s: oha, {conns} keep-alive connections for {dur}, median of the rounds. "
      f"Latency: oha -q {rate} over {rconns} connections for {rdur}, median of the rounds' percentiles; "
      "\"+p99\" is the p99 added over direct.")
print()
print("| target | workers | req/s | × direct | × nginx | p50 ms | p99 ms | p99.9 ms | +p99 ms over direct | p99 × nginx |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in measured:
    added = "–"
    if direct and r is not direct and f(r["p99_ms"]) is not None:
        added = "%+.3f" % (f(r["p99_ms"]) - f(direct["p99_ms"]))
    print(f"| {r['proxy']} | {r['workers']} | {r['rps_median']} | {ratio(r['rps_median'], direct and direct['rps_median'])} "
          f"| {ratio(r['rps_median'], ng(r, 'rps_median'))} | {float(r['p50_ms']):.3f} | {float(r['p99_ms']):.3f} "
          f"| {float(r['p999_ms']):.3f} | {added} | {ratio(r['p99_ms'], ng(r, 'p99_ms'))} |")
for r in pending:
    print(f"| {r['proxy']} | {r['workers']} | {r.get('rps_median') or 'pending'} | | | | | | | |")
print()
print(f"**Resources.** CPU: utime+stime of the proxy (all threads/processes) per request served, "
      f"at saturation (the throughput runs) and at {rate} req/s, over all rounds (10 µs/req = 1 CPU s per 100k requests). "
      f"Peak RSS: VmHWM (summed over nginx's master and workers) after the load runs (highest round), and "
      f"with {hold} client connections open (last round). Upstream conns: connections the two upstreams "
      "accepted from just before each warmup to the end of each throughput run (a fresh proxy each round, so "
      "this includes filling its pool), against the requests they served in that time; for direct, oha's "
      "own connections.")
print()
print(f"| target | workers | CPU µs/req (sat) | × nginx | CPU µs/req (@{rate}/s) | × nginx | peak RSS MB | peak RSS MB (+{hold} conns) | upstream conns / requests | errors |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in measured:
    reqs, upc = f(r["up_reqs"]), f(r["up_conns"])
    up = "%d / %d (%.3f%%)" % (upc, reqs, 100 * upc / reqs) if reqs else "–"
    hold_note = "" if r["hold_ok"] in ("", hold) else f" ({r['hold_ok']}/{hold} answered)"
    print(f"| {r['proxy']} | {r['workers']} | {dash(r['cpu_us_sat'])} | {ratio(r['cpu_us_sat'], ng(r, 'cpu_us_sat'))} "
          f"| {dash(r['cpu_us_rate'])} | {ratio(r['cpu_us_rate'], ng(r, 'cpu_us_rate'))} | {mb(r['rss_load_kb'])} "
          f"| {mb(r['rss_hold_kb'])}{hold_note} | {up} | {r['errors']} |")
machine = [r for r in measured if f(r.get("mach_busy_us"))]
if machine:
    print()
    print("**Where the machine's time went at saturation** (the throughput runs, all rounds). On a "
          "machine that oha, the upstreams and the proxy share, req/s is the machine's CPU time "
          "divided by what one request costs all of them, busy and idle: busy CPU per request from /proc/stat (all "
          "CPUs), split into the proxy, the two upstream nginx and the rest (oha, and anything else "
          "running); idle CPU per request (time no one was ready to run); machine-wide context "
          "switches per request.")
    print()
    print("| target | workers | busy µs/req | proxy | upstreams | rest (oha, other) | idle µs/req | context switches / req |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in machine:
        busy, up = f(r["mach_busy_us"]), f(r["up_us"])
        proxy = f(r["cpu_us_sat"]) or 0.0
        print(f"| {r['proxy']} | {r['workers']} | {busy:.1f} | {proxy:.1f} | {up:.1f} | {busy - proxy - up:.1f} "
              f"| {f(r['mach_idle_us']):.1f} | {f(r['ctxt_per_req']):.2f} |")
print()
print("Per-round req/s: " + "; ".join(f"{r['proxy']}-w{r['workers']}: {r['rps_runs']}" for r in measured))
print("Achieved fixed rate (req/s): " + "; ".join(f"{r['proxy']}-w{r['workers']}: {r['rate_achieved']}" for r in measured))
