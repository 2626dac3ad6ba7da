"""Print a short summary of one oha JSON result and check it.

usage: summarize.py RESULT.json [--expect 200,201] [--max-error-pct 0.0]
Exit status 1 when the share of responses with an unexpected status, plus
transport errors (requests cut off by the -z deadline excluded), is above
--max-error-pct.
"""
import argparse
import json
import sys

ap = argparse.ArgumentParser()
ap.add_argument("result")
ap.add_argument("--expect", default="200")
ap.add_argument("--max-error-pct", type=float, default=0.0)
ap.add_argument("--label", default="")
a = ap.parse_args()

d = json.load(open(a.result))
s = d["summary"]
codes = {str(k): v for k, v in (d.get("statusCodeDistribution") or {}).items()}
errors = {k: v for k, v in (d.get("errorDistribution") or {}).items() if "deadline" not in k}
expected = set(a.expect.split(","))
ok = sum(v for k, v in codes.items() if k in expected)
unexpected = sum(v for k, v in codes.items() if k not in expected)
failed = unexpected + sum(errors.values())
total = ok + failed
secs = s.get("total") or 0
lp = d.get("latencyPercentiles") or {}


def ms(k):
    v = lp.get(k)
    return "n/a" if v is None else "%.3f ms" % (v * 1000)


print(f"== {a.label or a.result}")
print(f"  requests: {total} in {secs:.1f} s = {ok / secs if secs else 0:.0f} ok req/s")
print(f"  status:   {dict(sorted(codes.items()))}")
if errors:
    print(f"  errors:   {errors}")
print(f"  latency:  p50 {ms('p50')}  p90 {ms('p90')}  p99 {ms('p99')}  p99.9 {ms('p99.9')}  max {s.get('slowest', 0) * 1000:.3f} ms")
pct = 100.0 * failed / total if total else 100.0
if total == 0 or pct > a.max_error_pct:
    print(f"  FAIL: {failed} of {total} requests failed ({pct:.3f}% > {a.max_error_pct}%)")
    sys.exit(1)
print(f"  ok: {pct:.3f}% failed (limit {a.max_error_pct}%)")
