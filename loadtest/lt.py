#!/usr/bin/env python3
"""Helper for loadtest/run: /proc sampling, wrk/oha parsing, result tables.

Standard library only. Subcommands:
  cpu PID...                 utime stime (clock ticks) summed over PIDs and all their descendants
  sysstat                    busy ticks of every CPU plus total: "cpu0 cpu1 ... total"
  record --out F k=v ...     parse a wrk or oha output file and append one JSON line to F
                             (to F-rejected.jsonl and exit 3 if reject_noisy=PCT is exceeded)
  median-rps F TARGET SCEN   median req/s of TARGET in scenario SCEN (empty if none)
  table F SCEN               markdown table for scenario SCEN
"""
import json
import os
import re
import statistics
import sys

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- /proc

def _stat(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm may contain spaces/parentheses: split after the last ')'
    rest = data[data.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); ppid = field 4; utime = 14; stime = 15
    return int(rest[1]), int(rest[11]), int(rest[12])


def proc_tree_cpu(roots):
    parents = {}
    stats = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _stat(name)
        if st is None:
            continue
        pid = int(name)
        parents[pid] = st[0]
        stats[pid] = st
    wanted = set()
    for pid in stats:
        p = pid
        seen = 0
        while p and seen < 64:
            if p in roots:
                wanted.add(pid)
                break
            p = parents.get(p, 0)
            seen += 1
    utime = sum(stats[p][1] for p in wanted)
    stime = sum(stats[p][2] for p in wanted)
    return utime, stime


def sysstat():
    """busy:all ticks per CPU, then the same for the whole machine (last)."""
    out = []
    total = None
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            parts = line.split()
            vals = [int(x) for x in parts[1:]]
            # user nice system idle iowait irq softirq steal (guest* are already inside user/nice)
            busy = vals[0] + vals[1] + vals[2] + vals[5] + vals[6]
            every = sum(vals[:8])
            if parts[0] == "cpu":
                total = f"{busy}:{every}"
            else:
                out.append(f"{busy}:{every}")
    return out + [total]


# ---------------------------------------------------------------- parsing

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _dur_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        return None
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(path):
    out = {"requests": None, "rps": None, "p50_ms": None, "p99_ms": None,
           "errors": 0, "non2xx": 0, "socket_errors": 0, "seconds": None}
    with open(path, errors="replace") as f:
        text = f.read()
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms"), ("90", "p90_ms")):
        m = re.search(r"^\s+%s(?:\.0+)?%%\s+(\S+)" % pct, text, re.M)
        if m:
            out[key] = _dur_ms(m.group(1))
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h)", text, re.M)
    if m:
        out["requests"] = int(m.group(1))
        out["seconds"] = float(m.group(2)) * _UNITS[m.group(3)] / 1e3
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["socket_errors"] = sum(int(x) for x in m.groups())
        out["socket_detail"] = "connect %s read %s write %s timeout %s" % m.groups()
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["non2xx"] = int(m.group(1))
    out["errors"] = out["socket_errors"] + out["non2xx"]
    return out


def parse_oha(path):
    with open(path, errors="replace") as f:
        text = f.read()
    # oha prints JSON on stdout; be tolerant of leading noise
    start = text.find("{")
    data = json.loads(text[start:])
    summ = data.get("summary", {})
    lat = data.get("latencyPercentiles", {})
    codes = data.get("statusCodeDistribution", {}) or {}
    errs = data.get("errorDistribution", {}) or {}
    ok = sum(v for k, v in codes.items() if str(k).startswith(("2", "3")))
    bad = sum(v for k, v in codes.items() if not str(k).startswith(("2", "3")))
    # requests cut off by -z's deadline are not failures of the target
    aborted = sum(v for k, v in errs.items() if "deadline" in k)
    nerr = sum(errs.values()) - aborted
    total = summ.get("total")  # seconds
    out = {
        "requests": ok + bad,
        "rps": summ.get("requestsPerSec"),
        "p50_ms": lat.get("p50") * 1e3 if lat.get("p50") is not None else None,
        "p90_ms": lat.get("p90") * 1e3 if lat.get("p90") is not None else None,
        "p99_ms": lat.get("p99") * 1e3 if lat.get("p99") is not None else None,
        "non2xx": bad,
        "socket_errors": nerr,
        "errors": bad + nerr,
        "seconds": total,
        "success_rate": summ.get("successRate"),
        "aborted_at_deadline": aborted,
    }
    if errs:
        out["error_detail"] = errs
    return out


# ---------------------------------------------------------------- record

def record(args):
    out_path = None
    kv = {}
    i = 0
    while i < len(args):
        if args[i] == "--out":
            out_path = args[i + 1]
            i += 2
            continue
        k, _, v = args[i].partition("=")
        kv[k] = v
        i += 1
    tool = kv.pop("tool")
    path = kv.pop("file")
    res = parse_wrk(path) if tool == "wrk" else parse_oha(path)
    rec = {"tool": tool, "file": os.path.basename(path)}
    for k in ("target", "scenario"):
        rec[k] = kv.get(k)
    rec["round"] = int(kv.get("round", 0))
    if kv.get("rate"):
        rec["rate"] = int(kv["rate"])
    rec.update(res)
    wall = float(kv["wall"])
    rec["wall"] = wall

    def pair(name):
        v = kv.get(name, "").split()
        return (int(v[0]), int(v[1])) if len(v) == 2 else None

    pb, pa = pair("proxy_before"), pair("proxy_after")
    if pb and pa:
        u = (pa[0] - pb[0]) / CLK_TCK
        s = (pa[1] - pb[1]) / CLK_TCK
        rec["proxy_user_s"] = u
        rec["proxy_sys_s"] = s
        rec["proxy_user_pct"] = 100 * u / wall
        rec["proxy_sys_pct"] = 100 * s / wall
        cpu = u + s
        rec["req_per_cpu_s"] = (rec["requests"] / cpu) if cpu > 0 and rec["requests"] else None
        rec["cpu_us_per_req"] = (1e6 * cpu / rec["requests"]) if rec["requests"] else None
    bb, ba = pair("backend_before"), pair("backend_after")
    if bb and ba:
        rec["backend_cpu_pct"] = 100 * ((ba[0] - bb[0]) + (ba[1] - bb[1])) / CLK_TCK / wall
    # machine-wide busy time not explained by proxy + backend + load generator
    sb, sa = kv.get("sys_before", "").split(), kv.get("sys_after", "").split()
    if sb and sa:
        def delta(i):
            b0, e0 = (int(x) for x in sb[i].split(":"))
            b1, e1 = (int(x) for x in sa[i].split(":"))
            return b1 - b0, e1 - e0
        ncpu = len(sa) - 1
        busy, every = delta(-1)
        span = every / ncpu / CLK_TCK if every else wall  # seconds covered by the two samples
        ours = rec.get("proxy_user_s", 0) + rec.get("proxy_sys_s", 0)
        if bb and ba:
            ours += ((ba[0] - bb[0]) + (ba[1] - bb[1])) / CLK_TCK
        ours += float(kv.get("loadgen_cpu", 0) or 0)
        rec["machine_busy_pct"] = 100 * busy / CLK_TCK / span
        rec["foreign_cpu_pct"] = max(0.0, 100 * (busy / CLK_TCK - ours) / span)
        rec["cpu_busy_pct"] = [round(100 * b / e, 1) if e else None for b, e in (delta(i) for i in range(ncpu))]
    if kv.get("loadgen_cpu"):
        rec["loadgen_cpu_pct"] = 100 * float(kv["loadgen_cpu"]) / wall
    limit = kv.get("reject_noisy")
    rejected = bool(limit) and float(limit) > 0 and rec.get("foreign_cpu_pct", 0) > float(limit)
    if rejected:
        out_path = out_path.replace(".jsonl", "") + "-rejected.jsonl"
    with open(out_path, "a") as f:
        f.write(json.dumps(rec) + "\n")
    brief = "  %-8s r%d %s: %s req/s, p50 %s, p99 %s, errors %d" % (
        rec["target"], rec["round"], rec["scenario"], _fmt_num(rec["rps"]),
        _fmt_ms(rec["p50_ms"]), _fmt_ms(rec["p99_ms"]), rec["errors"])
    if "proxy_user_pct" in rec:
        brief += ", proxy CPU %.0f%%/%.0f%%" % (rec["proxy_user_pct"], rec["proxy_sys_pct"])
    if rec.get("foreign_cpu_pct", 0) > 5:
        brief += ", WARNING: %.0f%% CPU used by other processes" % rec["foreign_cpu_pct"]
    if rejected:
        brief += f" -> rejected (over {limit}%), run again"
    print(brief)
    return 3 if rejected else 0


# ---------------------------------------------------------------- tables

def load(path, scenario):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                r = json.loads(line)
                if r.get("scenario") == scenario:
                    rows.append(r)
    return rows


def _median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def _fmt_num(v):
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}"


def _fmt_ms(v):
    if v is None:
        return "-"
    if v < 1:
        return f"{v * 1e3:.0f}µs"
    if v < 100:
        return f"{v:.2f}ms"
    return f"{v:.0f}ms"


def _pct(v):
    return "-" if v is None else f"{v:.0f}%"


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def summarize(rows):
    by = {}
    for r in rows:
        by.setdefault(r["target"], []).append(r)
    order = [t for t in ("sluice", "nginx", "haproxy", "direct") if t in by]
    order += [t for t in by if t not in order]
    summ = {}
    for t in order:
        rs = by[t]
        summ[t] = {
            "runs": len(rs),
            "rps": _median([r["rps"] for r in rs]),
            "rps_min": min((r["rps"] or 0) for r in rs),
            "rps_max": max((r["rps"] or 0) for r in rs),
            "p50": _median([r["p50_ms"] for r in rs]),
            "p99": _median([r["p99_ms"] for r in rs]),
            "errors": sum(r["errors"] for r in rs),
            "user": _median([r.get("proxy_user_pct") for r in rs]),
            "sys": _median([r.get("proxy_sys_pct") for r in rs]),
            "rpc": _median([r.get("req_per_cpu_s") for r in rs]),
            "uspr": _median([r.get("cpu_us_per_req") for r in rs]),
            "foreign": max((r.get("foreign_cpu_pct") or 0) for r in rs),
            "backend": _median([r.get("backend_cpu_pct") for r in rs]),
            "loadgen": _median([r.get("loadgen_cpu_pct") for r in rs]),
            "cpus": [_median([(r.get("cpu_busy_pct") or [None] * (i + 1))[i] for r in rs])
                     for i in range(max(len(r.get("cpu_busy_pct") or []) for r in rs))],
        }
    return order, summ


def table(path, scenario):
    rows = load(path, scenario)
    if not rows:
        print(f"(no runs for scenario {scenario})")
        return
    order, s = summarize(rows)
    fixed = scenario == "fixed"
    ng, hp = s.get("nginx", {}), s.get("haproxy", {})
    hdr = ["target", "req/s (median)", "p50", "p99", "errors", "proxy CPU% user/sys",
           "req per proxy CPU-s"]
    if fixed:
        hdr.append("proxy CPU-µs per req")
    hdr += ["vs nginx (req/s)", "vs nginx (req/CPU-s)", "vs haproxy (req/s)", "vs haproxy (req/CPU-s)"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(hdr) - 1)) + "|")
    for t in order:
        x = s[t]
        cpu = "-" if x["user"] is None else f"{x['user']:.0f} / {x['sys']:.0f}"
        cells = [t, _fmt_num(x["rps"]) + (f" ({x['runs']} runs)" if x["runs"] != 1 else ""),
                 _fmt_ms(x["p50"]), _fmt_ms(x["p99"]), str(x["errors"]), cpu, _fmt_num(x["rpc"])]
        if fixed:
            cells.append("-" if x["uspr"] is None else f"{x['uspr']:.1f}")
        cells += [_ratio(x["rps"], ng.get("rps")), _ratio(x["rpc"], ng.get("rpc")),
                  _ratio(x["rps"], hp.get("rps")), _ratio(x["rpc"], hp.get("rpc"))]
        print("| " + " | ".join(cells) + " |")
    spread = ", ".join(f"{t} {_fmt_num(s[t]['rps_min'])}–{_fmt_num(s[t]['rps_max'])}" for t in order)
    print(f"\nreq/s range over runs: {spread}")
    print("\nCPU use (medians, % of one CPU): " + "; ".join(
        f"{t}: load generator {_pct(s[t]['loadgen'])}, backend {_pct(s[t]['backend'])}, "
        + ", ".join(f"cpu{i} busy {_pct(v)}" for i, v in enumerate(s[t]["cpus"])) for t in order))
    slow = [f"{t} ({_fmt_num(min(r['rps'] or 0 for r in rows if r['target'] == t))} req/s)" for t in order
            if any(r.get("rate") and (r["rps"] or 0) < 0.97 * r["rate"] for r in rows if r["target"] == t)]
    if slow:
        print(f"WARNING: the fixed rate ({rows[0].get('rate')} req/s) was not held by: " + ", ".join(slow) +
              " — the target, the backend or the load generator is saturated at that rate; try a lower --rate.")
    noisy = [f"{t} (up to {s[t]['foreign']:.0f}%)" for t in order if s[t]["foreign"] > 5]
    if noisy:
        print("WARNING: other processes used CPU during: " + ", ".join(noisy) +
              " — numbers are disturbed; rerun on a quiet machine.")


def median_rps(path, target, scenario):
    rows = [r for r in load(path, scenario) if r["target"] == target]
    m = _median([r["rps"] for r in rows])
    print("" if m is None else f"{m:.0f}")


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "cpu":
        u, s = proc_tree_cpu({int(a) for a in args})
        print(u, s)
    elif cmd == "sysstat":
        print(" ".join(str(x) for x in sysstat()))
    elif cmd == "record":
        return record(args)
    elif cmd == "median-rps":
        median_rps(*args)
    elif cmd == "table":
        table(*args)
    elif cmd == "parse":
        tool, path = args
        print(json.dumps(parse_wrk(path) if tool == "wrk" else parse_oha(path), indent=1))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
