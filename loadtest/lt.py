#!/usr/bin/env python3
"""Helper for loadtest/run: /proc sampling, wrk/oha parsing, result tables.

Standard library only. Subcommands:
  cpu PID...                 utime stime (clock ticks) summed over PIDs and all their descendants
  sysstat                    busy ticks of every CPU plus total: "cpu0 cpu1 ... total"
  record --out F k=v ...     parse a wrk or oha output file and append one JSON line to F
                             (to F-rejected.jsonl and exit 3 if reject_noisy=PCT is exceeded)
  median-rps F TARGET SCEN   median req/s of TARGET in scenario SCEN (empty if none)
  table F SCEN               markdown table for scenario SCEN
  rss-run --pids P[,P] --out F k=v... -- CMD...
                             run CMD, sampling the summed VmRSS of P and its descendants every
                             100 ms; append baseline/peak/growth (and VmHWM) as one JSON line to F
  idle --pids P[,P] --port N --conns C --out F k=v...
                             open C keep-alive connections to 127.0.0.1:N, one GET each, keep them
                             idle; append the RSS growth of P's tree (KiB per connection) to F
  sink PORT                  HTTP/1.1 origin that reads each request body to the end and discards
                             it, then answers 200 "received N" (the upload side of bigbody)
  gen-routes --base F --out F --port N --hosts H --per-host R --gen K
                             sluice config F with its routes replaced by H x R routes over H hosts
                             (the last one answers "gen-K" itself: the reload probe)
  reload-probe --pid P --log F --port N --host H --path P --expect B --out F k=v...
                             SIGHUP P, poll until the probe route answers B; append the time that
                             took and the `config reloaded ... elapsed=` of the new log line to F
  table-bigbody F | table-idle F | table-reload F ROUTES_RUNS | table-auth F
                             markdown tables for the extra scenarios
  hs256-token --key-file F --sub S [--iss I] [--aud A] [--ttl SECONDS]
                             an HS256 JWT signed with the secret in F (auth scenario, jwt variant)
  ctx PID...                 voluntary and involuntary context switches, summed over every thread
                             (/proc/P/task/T/status) of PIDs and their descendants: "vol invol"
  net                        the machine's TCP counters the counts scenario uses (the ones `nstat -az`
                             shows, read from /proc/net/snmp and /proc/net/netstat): "Name=N,..."
  table-counts F             markdown table for the counts scenario (per request: syscalls, io_uring
                             SQEs/CQEs, TCP segments, context switches, CPU)
Tables with both `sluice` and `base` (loadtest/run --baseline) get a line with the ratios sluice/base.
"""
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

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


def parse_tlsload(path):
    """loadtest/tlsload's JSON: connections (each one handshake and one GET) as requests."""
    with open(path, errors="replace") as f:
        text = f.read()
    data = json.loads(text[text.find("{"):])
    errs = data.get("error_detail") or {}
    out = {
        "requests": data["connections"],
        "rps": data["per_sec"],
        "p50_ms": data.get("p50_ms"),
        "p90_ms": data.get("p90_ms"),
        "p99_ms": data.get("p99_ms"),
        "non2xx": (errs.get("status") or {}).get("count", 0),
        "socket_errors": data["errors"] - (errs.get("status") or {}).get("count", 0),
        "errors": data["errors"],
        "seconds": data.get("seconds"),
        "full": data.get("full"),
        "full_hrr": data.get("full_hrr"),
        "resumed": data.get("resumed"),
        "mode": data.get("mode"),
        "threads": data.get("conns"),
        "tls_version": data.get("tls_version"),
        "negotiated": data.get("negotiated"),
    }
    if errs:
        out["error_detail"] = errs
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
    res = {"wrk": parse_wrk, "oha": parse_oha, "tlsload": parse_tlsload}[tool](path)
    rec = {"tool": tool, "file": os.path.basename(path)}
    for k in ("target", "scenario"):
        rec[k] = kv.get(k)
    for k in ("binary", "variant", "path", "cert"):  # auth: which sluice, which route; tls_*: certificate
        if kv.get(k):
            rec[k] = kv[k]
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
    if kv.get("perf") or kv.get("net_before") or kv.get("ctx_before"):
        counts_fields(rec, kv)
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
    if tool == "tlsload":
        brief += ", full %s / resumed %s" % (rec.get("full"), rec.get("resumed"))
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


BASE_TOLERANCE_PCT = 3  # what the sluice/base line calls "within"


def _rel(a, b):
    """'1.012 (+1.2%)' for a/b, or '-'."""
    if a is None or b is None or b == 0:
        return "-", None
    d = 100 * (a / b - 1)
    return f"{a / b:.3f} ({'+' if d >= 0 else '−'}{abs(d):.1f}%)", d


def base_line(rows, s, pairs=(("rps", "req/s", "rps", 1), ("rpc", "req per CPU-s", "req_per_cpu_s", 1),
                              ("p50", "p50", "p50_ms", -1), ("p99", "p99", "p99_ms", -1)), label=""):
    """sluice vs base (loadtest/run --baseline): ratios of the medians, and the range of the ratios
    of the two runs of each round (they ran in the same round, minutes apart at most)."""
    if "sluice" not in s or "base" not in s:
        return
    a, b = s["sluice"], s["base"]
    cells, within, better, worse = [], [], [], []
    for key, name, _, sign in pairs:  # sign 1: more is better (req/s); -1: less is better (latency)
        text, d = _rel(a.get(key), b.get(key))
        cells.append(f"{name} {text}")
        if d is not None:
            (within if abs(d) <= BASE_TOLERANCE_PCT else better if d * sign > 0 else worse).append(name)
    verdict = []
    if within:
        verdict.append(f"within ±{BASE_TOLERANCE_PCT}%: {', '.join(within)}")
    if worse:
        verdict.append(f"sluice WORSE by more than {BASE_TOLERANCE_PCT}%: {', '.join(worse)}")
    if better:
        verdict.append(f"sluice better by more than {BASE_TOLERANCE_PCT}%: {', '.join(better)}")
    noisy = max(a.get("foreign") or 0, b.get("foreign") or 0) > 5
    print(f"\n**sluice / base{label}** (medians, {a['runs']} vs {b['runs']} runs): " + ", ".join(cells)
          + (" — " + "; ".join(verdict) if verdict else "")
          + (" (DISTURBED by other processes, see the warning below)" if noisy else ""))
    by_round = {}
    for r in rows:
        if r["target"] in ("sluice", "base"):
            by_round.setdefault(r["round"], {})[r["target"]] = r
    ranges = []
    paired = sum(1 for x in by_round.values() if len(x) == 2)
    for key, name, field, _ in pairs if paired >= 2 else ():
        rs = [x["sluice"][field] / x["base"][field] for x in by_round.values()
              if len(x) == 2 and x["sluice"].get(field) and x["base"].get(field)]
        if rs:
            ranges.append(f"{name} {min(rs):.3f}–{max(rs):.3f}")
    if ranges:
        print(f"sluice / base{label} per round ({paired} rounds, paired runs): " + ", ".join(ranges)
              + " (ratio > 1: sluice has more req/s or req per CPU-s, or a longer latency)")


def summarize(rows):
    by = {}
    for r in rows:
        by.setdefault(r["target"], []).append(r)
    order = [t for t in ("sluice", "base", "nginx", "haproxy", "direct") if t in by]
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


QUIET_PCT = 10  # what quiet_line calls a quiet run: other processes under this % of a CPU


def quiet_line(rows, label, unit="req"):
    """On a shared machine: the medians over the runs that other processes left alone (under
    QUIET_PCT of a CPU), per target, beside nginx's."""
    by = {}
    for r in rows:
        if (r.get("foreign_cpu_pct") or 0) < QUIET_PCT:
            by.setdefault(r["target"], []).append(r)
    if not by or all(len(v) == len([r for r in rows if r["target"] == t]) for t, v in by.items()) and \
            len(by) == len({r["target"] for r in rows}):
        return  # every run was quiet (or none): the table says it all
    ng = by.get("nginx", [])
    ng_rps, ng_rpc = _median([r["rps"] for r in ng]), _median([r.get("req_per_cpu_s") for r in ng])
    parts = []
    for t in [t for t in ("sluice", "base", "nginx") if t in by] + sorted(t for t in by if t not in ("sluice", "base", "nginx")):
        rps, rpc = _median([r["rps"] for r in by[t]]), _median([r.get("req_per_cpu_s") for r in by[t]])
        parts.append(f"{t} {_fmt_num(rps)} {unit}/s, {_fmt_num(rpc)} per proxy CPU-s ({len(by[t])} runs"
                     + (f"; vs nginx {_ratio(rps, ng_rps)} and {_ratio(rpc, ng_rpc)}" if t != "nginx" and ng else "") + ")")
    print(f"\nQuiet runs only{label} (other processes under {QUIET_PCT}% of a CPU): " + "; ".join(parts))


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
    base_line(rows, s)
    quiet_line(rows, "")
    if scenario == "tls_keepalive" and ng:
        for t in (t for t in order if t != "nginx"):
            x = s[t]
            ok = lambda k: "?" if not (x.get(k) and ng.get(k)) else ("ok" if x[k] >= ng[k] else "BELOW")
            print(f"\nGoal (the issue): {t} ≥ nginx in keep-alive HTTPS req/s: {ok('rps')}, "
                  f"in req per proxy CPU-s: {ok('rpc')}")
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


# ---------------------------------------------------------------- memory (bigbody, idle)

def tree_pids(roots):
    """roots and all their descendants, from /proc."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(name)
            if st is not None:
                parents[int(name)] = st[0]
    out = set()
    for pid in parents:
        p, seen = pid, 0
        while p and seen < 64:
            if p in roots:
                out.add(pid)
                break
            p = parents.get(p, 0)
            seen += 1
    return out


def rss_kib(pids):
    """(sum of VmRSS, sum of VmHWM) in KiB over pids (processes that vanished count 0)."""
    rss = hwm = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except OSError:
            pass
    return rss, hwm


def _opts(args, names):
    """--name value pairs (names listed), then k=v labels, then optional -- CMD."""
    opts, labels, cmd = {}, {}, []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            cmd = args[i + 1:]
            break
        if a.startswith("--") and a[2:] in names:
            opts[a[2:]] = args[i + 1]
            i += 2
            continue
        k, eq, v = a.partition("=")
        if not eq:
            raise SystemExit(f"lt.py: unexpected argument {a!r}")
        labels[k] = v
        i += 1
    return opts, labels, cmd


def _append(path, rec):
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def rss_run(args):
    opts, labels, cmd = _opts(args, {"pids", "out", "interval", "expect"})
    roots = {int(p) for p in opts["pids"].split(",") if p}
    interval = float(opts.get("interval", 0.1))
    pids = tree_pids(roots)
    base_rss, base_hwm = rss_kib(pids)
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def stop(signum, _frame):
        child.terminate()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # read the child's (small) output on threads so a full pipe never blocks it
    outs = {}
    readers = [threading.Thread(target=lambda k, f: outs.__setitem__(k, f.read()), args=(k, f))
               for k, f in (("out", child.stdout), ("err", child.stderr))]
    for t in readers:
        t.start()
    t0 = time.monotonic()
    peak, samples = base_rss, 0
    while child.poll() is None:
        time.sleep(interval)
        r, _ = rss_kib(pids)
        peak = max(peak, r)
        samples += 1
    secs = time.monotonic() - t0
    for t in readers:
        t.join()
    end_rss, end_hwm = rss_kib(pids)
    peak = max(peak, end_rss)
    rec = dict(labels)
    rec.update({
        "rc": child.returncode, "seconds": secs, "samples": samples,
        "rss_before_kib": base_rss, "rss_peak_kib": peak, "rss_after_kib": end_rss,
        "rss_growth_kib": peak - base_rss,
        "hwm_before_kib": base_hwm, "hwm_after_kib": end_hwm, "hwm_growth_kib": end_hwm - base_hwm,
        "out": " ".join(outs.get("out", b"").decode(errors="replace").split()),
        "err": outs.get("err", b"").decode(errors="replace").strip()[-500:],
    })
    if "expect" in opts:
        rec["ok"] = "1" if child.returncode == 0 and re.search(opts["expect"], rec["out"]) else "0"
    _append(opts["out"], rec)
    print("  %-8s r%s %s %s: %.1fs, RSS %.1f -> peak %.1f MiB (+%.1f MiB), VmHWM +%.1f MiB, rc %d, %s" % (
        rec.get("target"), rec.get("round"), rec.get("scenario"), rec.get("dir", ""), secs,
        base_rss / 1024, peak / 1024, (peak - base_rss) / 1024, (end_hwm - base_hwm) / 1024,
        child.returncode, rec["out"]))
    return 0 if child.returncode == 0 else 1


def idle(args):
    import asyncio
    import resource
    opts, labels, _ = _opts(args, {"pids", "port", "conns", "out", "host", "settle", "tls"})
    roots = {int(p) for p in opts["pids"].split(",") if p}
    port, conns = int(opts["port"]), int(opts["conns"])
    settle = float(opts.get("settle", 2))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = conns + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < want:
        raise SystemExit(f"lt.py idle: needs {want} file descriptors, the limit is {soft} (hard {hard})")
    host = opts.get("host", "127.0.0.1")
    req = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: lt-idle\r\n\r\n".encode()
    pids = tree_pids(roots)
    # --tls NAME (tls_idle): TLS with SNI NAME, full handshakes (no session is reused), the
    # certificate not verified (loadtest/run checked it with curl); ALPN http/1.1 as tlsload sends
    ctx, sni, negotiated = None, opts.get("tls"), set()
    if sni:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])

    async def one(sem):
        async with sem:
            r, w = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=sni if ctx else None), 10)
            if ctx:
                so = w.get_extra_info("ssl_object")
                negotiated.add(f"{so.version()} {so.cipher()[0]}")
            w.write(req)
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            status = int(head.split(b" ", 2)[1])
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if not m:
                raise RuntimeError("response without content-length")
            await asyncio.wait_for(r.readexactly(int(m.group(1))), 10)
            if status != 200:
                raise RuntimeError(f"status {status}")
            return r, w

    async def main():
        time.sleep(settle)
        before = rss_kib(pids)[0]
        t0 = time.monotonic()
        sem = asyncio.Semaphore(256)
        res = await asyncio.gather(*(one(sem) for _ in range(conns)), return_exceptions=True)
        open_secs = time.monotonic() - t0
        ok = [x for x in res if not isinstance(x, BaseException)]
        errs = [x for x in res if isinstance(x, BaseException)]
        await asyncio.sleep(settle)
        after = rss_kib(pids)[0]
        # still open? a closed connection reads EOF at once
        alive = sum(1 for r, _ in ok if not r.at_eof())
        for _, w in ok:
            w.close()
        await asyncio.sleep(settle)
        closed = rss_kib(pids)[0]
        return before, after, closed, len(ok), alive, errs, open_secs

    before, after, closed, opened, alive, errs, open_secs = asyncio.run(main())
    rec = dict(labels)
    rec.update({
        "conns": conns, "opened": opened, "alive": alive, "errors": len(errs),
        "error_sample": repr(errs[0]) if errs else None, "open_seconds": open_secs,
        "rss_before_kib": before, "rss_idle_kib": after, "rss_closed_kib": closed,
        "growth_kib": after - before, "kib_per_conn": (after - before) / opened if opened else None,
    })
    if ctx:
        rec["tls"] = ", ".join(sorted(negotiated))
    _append(opts["out"], rec)
    print("  %-8s r%s idle: %d/%d open (%d alive after %.0fs), RSS %.1f -> %.1f MiB: %.2f KiB/conn; after close %.1f MiB%s" % (
        rec.get("target"), rec.get("round"), opened, conns, alive, settle, before / 1024, after / 1024,
        rec["kib_per_conn"] or 0, closed / 1024, f"; {len(errs)} errors, e.g. {errs[0]!r}" if errs else ""))
    return 0 if not errs else 1


def sink(args):
    """Upload sink: reads each request's body to the end (Content-Length or chunked), discards it."""
    port = int(args[0])
    srv = socket.create_server(("127.0.0.1", port), backlog=1024, reuse_port=False)

    def serve(c):
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        pending = b""
        try:
            while True:
                while b"\r\n\r\n" not in pending:
                    d = c.recv(65536)
                    if not d:
                        return
                    pending += d
                head, _, pending = pending.partition(b"\r\n\r\n")
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                chunked = re.search(rb"(?im)^transfer-encoding:\s*chunked", head) is not None
                got = 0
                if m:
                    need = int(m.group(1))
                    take = min(need, len(pending))
                    got, pending = take, pending[take:]
                    while got < need:
                        n = c.recv_into(view, min(len(buf), need - got))
                        if n == 0:
                            return
                        got += n
                elif chunked:
                    while True:
                        while b"\r\n" not in pending:
                            d = c.recv(65536)
                            if not d:
                                return
                            pending += d
                        line, _, pending = pending.partition(b"\r\n")
                        size = int(line.split(b";")[0], 16)
                        need = size + 2  # data + CRLF
                        take = min(need, len(pending))
                        left, pending = need - take, pending[take:]
                        while left > 0:
                            n = c.recv_into(view, min(len(buf), left))
                            if n == 0:
                                return
                            left -= n
                        got += size
                        if size == 0:
                            break  # (no trailers expected)
                body = b"received %d\n" % got
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        finally:
            c.close()

    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


# ---------------------------------------------------------------- routes (scale of config, reload)

def gen_routes(args):
    opts, _, _ = _opts(args, {"base", "out", "port", "hosts", "per-host", "gen"})
    with open(opts["base"]) as f:
        base = f.read()
    cut = base.find("\n[routes.")
    head = base if cut < 0 else base[:cut + 1]
    head = re.sub(r'(?m)^listen = "127\.0\.0\.1:\d+"', f'listen = "127.0.0.1:{opts["port"]}"', head, count=1)
    hosts, per = int(opts["hosts"]), int(opts["per-host"])
    out = [head]
    for h in range(hosts):
        for i in range(per):
            last = h == hosts - 1 and i == per - 1
            # a mix of the path shapes the router knows: prefix, parameter, exact
            path = (f"/r{i}/*", f"/r{i}/items/{{id}}", f"/r{i}/exact")[i % 3]
            out.append(f'[routes.h{h}_r{i}]\nhost = "h{h}.example.com"\npath = "{path}"\n')
            if last:
                out.append(f'respond = {{ status = 200, body = "gen-{opts["gen"]}" }}\n\n')
            else:
                out.append('upstream = "backend"\n\n')
    tmp = opts["out"] + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(out))
    os.replace(tmp, opts["out"])
    return 0


def _get(port, host, path, timeout=2.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def _duration_ms(text):
    m = re.match(r"([0-9.]+)(ns|µs|us|ms|s)$", text)
    if not m:
        return None
    return float(m.group(1)) * {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def reload_probe(args):
    opts, labels, _ = _opts(args, {"pid", "log", "port", "host", "path", "expect", "out", "timeout"})
    pid, port = int(opts["pid"]), int(opts["port"])
    timeout = float(opts.get("timeout", 10))
    expect = opts["expect"].encode()

    def lines():
        with open(opts["log"], errors="replace") as f:
            return [l for l in f if "config reloaded" in l or "reload rejected" in l]
    n0 = len(lines())
    t0 = time.monotonic()
    os.kill(pid, signal.SIGHUP)
    applied_ms = None
    polls = 0
    while time.monotonic() - t0 < timeout:
        polls += 1
        try:
            _, body = _get(port, opts["host"], opts["path"])
            if body.strip() == expect:
                applied_ms = (time.monotonic() - t0) * 1e3
                break
        except OSError:
            pass
        time.sleep(0.001)
    logged_ms, line = None, None
    while time.monotonic() - t0 < timeout:
        new = lines()[n0:]
        if new:
            line = new[0].strip()
            m = re.search(r"elapsed=(\S+)", line)
            logged_ms = _duration_ms(m.group(1)) if m else None
            break
        time.sleep(0.01)
    rec = dict(labels)
    rec.update({"applied_ms": applied_ms, "logged_ms": logged_ms, "polls": polls,
                "rejected": bool(line and "reload rejected" in line), "log_line": line})
    _append(opts["out"], rec)
    print("  reload %s: logged elapsed %s, new config answering after %s (%d probes)%s" % (
        rec.get("n"), "-" if logged_ms is None else f"{logged_ms:.1f} ms",
        "-" if applied_ms is None else f"{applied_ms:.1f} ms", polls,
        " REJECTED" if rec["rejected"] else ""))
    return 0 if applied_ms is not None and not rec["rejected"] else 1


# ---------------------------------------------------------------- extra tables

def _load_extra(path, scenario):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    if r.get("scenario") == scenario:
                        rows.append(r)
    return rows


def _order(targets):
    order = [t for t in ("sluice", "base", "nginx", "haproxy") if t in targets]
    return order + sorted(t for t in targets if t not in order)


def table_bigbody(path):
    rows = _load_extra(path, "bigbody")
    if not rows:
        print("(no bigbody runs)")
        return
    print("| target | direction | runs | MiB/s (median) | RSS growth, sampled peak (MiB, max) "
          "| VmHWM growth (MiB, max) | ok |")
    print("|---|---|---:|---:|---:|---:|---|")
    for t in _order({r["target"] for r in rows}):
        for d in ("download", "upload"):
            rs = [r for r in rows if r["target"] == t and r.get("dir") == d]
            if not rs:
                continue
            mibs = _median([int(r["bytes"]) / 1048576 / r["seconds"] for r in rs if r.get("seconds")])
            ok = all(r.get("ok") == "1" for r in rs)
            print("| %s | %s | %d | %s | %.1f | %.1f | %s |" % (
                t, d, len(rs), _fmt_num(mibs), max(r["rss_growth_kib"] for r in rs) / 1024,
                max(r["hwm_growth_kib"] for r in rs) / 1024, "yes" if ok else "NO: " + "; ".join(
                    r["out"] for r in rs if r.get("ok") != "1")))
    if {"sluice", "base"} <= {r["target"] for r in rows}:
        parts = []
        for d in ("download", "upload"):
            def med(t, f):
                return _median([f(r) for r in rows if r["target"] == t and r.get("dir") == d and r.get("seconds")])
            mib = lambda r: int(r["bytes"]) / 1048576 / r["seconds"]
            grow = lambda r: r["rss_growth_kib"]
            parts.append(f"{d} MiB/s {_rel(med('sluice', mib), med('base', mib))[0]}, "
                         f"RSS growth {_rel(med('sluice', grow), med('base', grow))[0]}")
        print("\n**sluice / base** (medians): " + "; ".join(parts))
    print("\nRSS is summed over the proxy's process tree (nginx: master + worker), sampled every 100 ms "
          "during each transfer; growth = peak minus the value just before it. VmHWM growth is the rise "
          "of the kernel's own peak-RSS mark across the transfer (0 when an earlier peak was higher).")


def table_idle(path, scenario="idle"):
    rows = _load_extra(path, scenario)
    if not rows:
        print(f"(no {scenario} runs)")
        return
    by = {}
    for r in rows:
        by.setdefault(r["target"], []).append(r)
    med = {t: _median([r["kib_per_conn"] for r in rs]) for t, rs in by.items()}
    print("| target | runs | connections (open / alive) | RSS before (MiB) | RSS idle (MiB) "
          "| KiB per connection (median) | vs nginx | errors | RSS after close (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in _order(set(by)):
        rs = by[t]
        print("| %s | %d | %d / %d | %.1f | %.1f | %s | %s | %d | %.1f |" % (
            t, len(rs), min(r["opened"] for r in rs), min(r["alive"] for r in rs),
            _median([r["rss_before_kib"] for r in rs]) / 1024, _median([r["rss_idle_kib"] for r in rs]) / 1024,
            "-" if med[t] is None else f"{med[t]:.2f}", _ratio(med[t], med.get("nginx")),
            sum(r["errors"] for r in rs), _median([r["rss_closed_kib"] for r in rs]) / 1024))
    if "sluice" in med and "base" in med:
        print(f"\n**sluice / base** KiB per connection (medians): {_rel(med['sluice'], med['base'])[0]}")
    print("\nKiB per connection = (RSS with every connection open and idle − RSS before) / connections, "
          "after one request on each. RSS is user-space memory of the proxy's process tree; kernel "
          "socket buffers are not in it (the same for every target).")
    tls = sorted({r["tls"] for r in rows if r.get("tls")})
    if tls:
        print(f"TLS as negotiated (python ssl client, a full handshake per connection): {'; '.join(tls)}.")


TLS_CERT_DESC = {"ecdsa": "ECDSA P-256", "rsa": "RSA 2048"}


def _tls_metrics(path):
    """{(target, listener): [full, resumed, failures]} from a scrape_tls_counts file (missing: empty)."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            m = re.match(r'(\S+) sluice_tls_(handshakes|handshake_failures)_total\{([^}]*)\} (\d+)', line)
            if not m:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3)))
            slot = out.setdefault((m.group(1), labels.get("listener")), [0, 0, 0])
            if m.group(2) == "handshake_failures":
                slot[2] += int(m.group(4))
            else:
                slot[1 if labels.get("resumed") == "true" else 0] += int(m.group(4))
    return out


def tls_server_check(rawdir, scenario, certs):
    """sluice's sluice_tls_handshakes_total over the scenario beside the sum of every tlsload run
    (warm-ups and discarded runs included) against the same listener."""
    import glob
    before = _tls_metrics(os.path.join(rawdir, f"{scenario}-tls-metrics.before.txt"))
    after = _tls_metrics(os.path.join(rawdir, f"{scenario}-tls-metrics.after.txt"))
    lines = []
    for (t, listener), a in sorted(after.items()):
        c = (listener or "").replace("https_", "")
        if c not in certs:
            continue
        b = before.get((t, listener), [0, 0, 0])
        srv = [a[i] - b[i] for i in range(3)]
        cli = [0, 0, 0]
        for f in glob.glob(os.path.join(rawdir, f"r*-{scenario}-{t}-{c}*.json")):
            try:
                d = parse_tlsload(f)
            except (ValueError, KeyError):
                continue
            cli[0] += d.get("full") or 0
            cli[1] += d.get("resumed") or 0
            cli[2] += d.get("errors") or 0
        same = srv[0] == cli[0] and srv[1] == cli[1]
        lines.append(f"{t} {listener}: sluice counted {srv[0]} full / {srv[1]} resumed / {srv[2]} failed, "
                     f"tlsload {cli[0]} full / {cli[1]} resumed / {cli[2]} errors — "
                     + ("the same" if same else "DIFFERENT"))
    if lines:
        print("\nServer side (sluice_tls_handshakes_total and _failures_total from /metrics before and after the "
              "scenario, warm-ups included; tlsload summed over the same runs): " + "; ".join(lines))


def table_tls(path, scenario, rawdir=None):
    """tls_handshake / tls_resume: per certificate, each binary beside nginx with the same
    certificate; handshakes are tlsload connections (one handshake and one GET each)."""
    rows = load(path, scenario)
    if not rows:
        print(f"(no runs for scenario {scenario})")
        return
    resume = scenario == "tls_resume"
    certs = [c for c in ("ecdsa", "rsa") if any(r.get("cert") == c for r in rows)]
    hdr = ["target", "certificate", "handshakes/s (median)", "p50", "p99", "full / resumed", "errors",
           "proxy CPU% user/sys", "handshakes per proxy CPU-s", "vs nginx (hs/s)", "vs nginx (hs/CPU-s)",
           "per round vs nginx, hs/CPU-s (min–max)", "goal ≥ nginx"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join(["---", "---"] + ["---:"] * (len(hdr) - 3) + ["---"]) + "|")
    warnings, summ_all = [], {}
    for c in certs:
        crow = [dict(r, target=r.get("binary") or r["target"].rpartition("-")[0]) for r in rows if r.get("cert") == c]
        order, s = summarize(crow)
        summ_all[c] = (order, s)
        ng = s.get("nginx", {})
        ng_round = {r["round"]: r for r in crow if r["target"] == "nginx"}
        for t in order:
            x = s[t]
            mine = [r for r in crow if r["target"] == t]
            full = sum(r.get("full") or 0 for r in mine)
            res = sum(r.get("resumed") or 0 for r in mine)
            cpu = "-" if x["user"] is None else f"{x['user']:.0f} / {x['sys']:.0f}"
            rs = [r["req_per_cpu_s"] / ng_round[r["round"]]["req_per_cpu_s"] for r in mine
                  if t != "nginx" and r["round"] in ng_round and r.get("req_per_cpu_s")
                  and ng_round[r["round"]].get("req_per_cpu_s")]
            rng = "-" if not rs else (f"{rs[0]:.3f} (1 round)" if len(rs) == 1 else f"{min(rs):.3f}–{max(rs):.3f} ({len(rs)} rounds)")
            if t == "nginx":
                goal = "(reference)"
            elif x.get("rps") and ng.get("rps") and x.get("rpc") and ng.get("rpc"):
                goal = "hs/s " + ("ok" if x["rps"] >= ng["rps"] else "BELOW") + ", hs/CPU-s " + \
                    ("ok" if x["rpc"] >= ng["rpc"] else "BELOW")
            else:
                goal = "?"
            print("| " + " | ".join([
                t, TLS_CERT_DESC.get(c, c), _fmt_num(x["rps"]) + (f" ({x['runs']} runs)" if x["runs"] != 1 else ""),
                _fmt_ms(x["p50"]), _fmt_ms(x["p99"]), f"{full} / {res}", str(x["errors"]), cpu, _fmt_num(x["rpc"]),
                _ratio(x["rps"], ng.get("rps")), _ratio(x["rpc"], ng.get("rpc")), rng, goal]) + " |")
            # tlsload's counts are rustls' handshake_kind(): what the server accepted. In a resume
            # run each thread's first handshake is full (it has no session yet); all others should resume.
            later = full + res - sum(r.get("threads") or 0 for r in mine)
            if resume and later > 0 and res < 0.98 * later:
                warnings.append(f"{t} ({c}) resumed only {res} of the {later} handshakes after each thread's first: "
                                "its session resumption did not work for the rest, which were full handshakes")
            if not resume and res:
                warnings.append(f"{t} ({c}): {res} handshakes resumed in a full-handshake run")
        quiet_line(crow, f", {c}", unit="hs")
        base_line(crow, s, pairs=(("rps", "hs/s", "rps", 1), ("rpc", "hs per CPU-s", "req_per_cpu_s", 1),
                                  ("p50", "p50", "p50_ms", -1), ("p99", "p99", "p99_ms", -1)), label=f", {c}")
    neg = {}
    for r in rows:
        for n in r.get("negotiated") or []:
            key = (r.get("binary") or r["target"], r.get("cert"))
            neg.setdefault(key, set()).add(f"{n.get('protocol')} {n.get('suite')} {n.get('group')} "
                                           f"ALPN {n.get('alpn')}, certificate as served {n.get('cert_match')}")
    print(f"\nEach handshake is one tlsload connection: TCP connect, TLS handshake, GET / with Connection: close, "
          "the response read to the server's close; handshakes/s counts those that got 200. Full and resumed are "
          "counted by the client from rustls' handshake_kind(), i.e. whether the server accepted a session the client "
          + ("offered (each thread has its own session cache; its first handshake is full)." if resume else
             "offered (none here: no session cache, so no ticket or session id is ever offered).")
          + " p50/p99: the whole connection, connect to close. Goal (the issue): ≥ nginx in handshakes/s and per proxy CPU-s.")
    print("Negotiated: " + "; ".join(f"{b} {c}: {', '.join(sorted(v))}" for (b, c), v in sorted(neg.items())))
    for c, (order, s) in summ_all.items():
        print(f"\nCPU use, {c} (medians, % of one CPU): " + "; ".join(
            f"{t}: load generator {_pct(s[t]['loadgen'])}, backend {_pct(s[t]['backend'])}, "
            + ", ".join(f"cpu{i} busy {_pct(v)}" for i, v in enumerate(s[t]["cpus"])) for t in order))
    noisy = [f"{t}-{c} (up to {s[t]['foreign']:.0f}%)" for c, (order, s) in summ_all.items() for t in order
             if s[t]["foreign"] > 5]
    if noisy:
        warnings.append("other processes used CPU during: " + ", ".join(noisy) + " — numbers are disturbed")
    errs = [r for r in rows if r.get("error_detail")]
    if errs:
        warnings.append("errors, e.g. " + "; ".join(sorted({f"{r['target']}: {k} ({v.get('sample')})" for r in errs[:4]
                                                             for k, v in r["error_detail"].items()})))
    if rawdir:
        tls_server_check(rawdir, scenario, certs)
    for w in warnings:
        print("WARNING: " + w)


def table_reload(path, runs_path):
    rows = _load_extra(path, "reload")
    rs = load(runs_path, "routes")
    one = _median([r["rps"] for r in rs if r["target"] == "sluice"])
    many = _median([r["rps"] for r in rs if r["target"] == "sluice-10k"])
    one_c = _median([r.get("req_per_cpu_s") for r in rs if r["target"] == "sluice"])
    many_c = _median([r.get("req_per_cpu_s") for r in rs if r["target"] == "sluice-10k"])
    print(f"10,000 routes vs 1 route: req/s ratio {_ratio(many, one)}, req per CPU-s ratio {_ratio(many_c, one_c)} "
          "(target: req/s within 5%, i.e. ratio ≥ 0.95)")
    if not rows:
        print("\n(no reloads)")
        return
    print("\n| reload | `config reloaded` elapsed (log) | new config answering after SIGHUP | result |")
    print("|---:|---:|---:|---|")
    for r in rows:
        print("| %s | %s | %s | %s |" % (
            r.get("n"), _fmt_ms(r["logged_ms"]) if r["logged_ms"] is not None else "-",
            _fmt_ms(r["applied_ms"]) if r["applied_ms"] is not None else "-",
            "rejected" if r["rejected"] else ("ok" if r["applied_ms"] is not None else "not applied in time")))
    w = _load_extra(path, "reload-wrk")
    for x in w:
        print(f"\nwrk during the reloads ({x.get('wrk_cmd')}): {x.get('requests')} requests, "
              f"{_fmt_num(x.get('rps'))} req/s, non-2xx {x.get('non2xx')}, socket errors {x.get('socket_errors')}"
              + (f" ({x['socket_detail']})" if x.get("socket_detail") else "")
              + f", p99 {_fmt_ms(x.get('p99_ms'))}")


# ---------------------------------------------------------------- auth scenario

# variant -> what it sends and the target issue #11 (item 8) sets, as ratios to `open` (medians)
AUTH_ORDER = ("open", "api_key", "basic", "jwt", "metered")
AUTH_DESC = {"open": "/open/* (no auth)", "api_key": "/key/* api_key (X-API-Key)",
             "basic": "/basic/* basic (bcrypt cost 10, cached)",
             "jwt": "/jwt/* corp_jwt (HS256 Bearer, cached)",
             "metered": "/metered/* api_key + rate limit (never refuses) + usage ledger"}
AUTH_TARGETS = {"api_key": {"rps": 0.95, "rpc": 0.90},
                "jwt": {"rps": 0.90, "rpc": 0.90},    # "a cached JWT ≥ 0.9×": both figures
                "metered": {"rps": 0.90, "rpc": 0.90}}  # #12 item 8


def _auth_split(r):
    b, v = r.get("binary"), r.get("variant")
    if not b or not v:
        b, _, v = r["target"].rpartition("-")
    return b, v


def table_auth(path):
    """auth scenario: one sluice, routes without auth and with each method, measured in the same
    rounds; medians, ratios to `open` and the range of the per-round (paired) ratios."""
    rows = load(path, "auth")
    if not rows:
        print("(no runs for scenario auth)")
        return
    by = {}
    for r in rows:
        b, v = _auth_split(r)
        by.setdefault(b, {}).setdefault(v, []).append(r)
    binaries = [b for b in ("sluice", "base") if b in by] + sorted(b for b in by if b not in ("sluice", "base"))
    hdr = ["binary", "variant (route)", "req/s (median)", "p50", "p99", "errors", "proxy CPU% user/sys",
           "req per proxy CPU-s", "vs open (req/s)", "vs open (req/CPU-s)",
           "per round vs open, req/s (min–max)", "per round vs open, req/CPU-s (min–max)", "target"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join(["---", "---"] + ["---:"] * (len(hdr) - 3) + ["---"]) + "|")
    summ_by = {}
    for b in binaries:
        variants = [v for v in AUTH_ORDER if v in by[b]] + sorted(v for v in by[b] if v not in AUTH_ORDER)
        _, s = summarize([dict(r, target=v) for v in variants for r in by[b][v]])
        summ_by[b] = s
        o = s.get("open", {})
        open_by_round = {r["round"]: r for r in by[b].get("open", [])}
        for v in variants:
            x = s[v]
            cpu = "-" if x["user"] is None else f"{x['user']:.0f} / {x['sys']:.0f}"
            ranges = []
            for field in ("rps", "req_per_cpu_s"):
                rs = [r[field] / open_by_round[r["round"]][field] for r in by[b][v]
                      if r["round"] in open_by_round and r.get(field) and open_by_round[r["round"]].get(field)]
                if v == "open" or not rs:
                    ranges.append("-")
                elif len(rs) == 1:
                    ranges.append(f"{rs[0]:.3f} (1 round)")
                else:
                    ranges.append(f"{min(rs):.3f}–{max(rs):.3f} ({len(rs)} rounds)")
            goal = AUTH_TARGETS.get(v)
            if goal is None:
                verdict = "-" if v != "open" else "(reference)"
            else:
                parts = []
                for key, name in (("rps", "req/s"), ("rpc", "req/CPU-s")):
                    if key in goal:
                        ratio = (x[key] / o[key]) if x.get(key) and o.get(key) else None
                        ok = "?" if ratio is None else ("ok" if ratio >= goal[key] else "BELOW")
                        parts.append(f"{name} ≥ {goal[key]:.2f}: {ok}")
                verdict = ", ".join(parts)
            cells = [b, f"{v}: {AUTH_DESC.get(v, v)}", _fmt_num(x["rps"]) + (f" ({x['runs']} runs)" if x["runs"] != 1 else ""),
                     _fmt_ms(x["p50"]), _fmt_ms(x["p99"]), str(x["errors"]), cpu, _fmt_num(x["rpc"]),
                     _ratio(x["rps"], o.get("rps")) if v != "open" else "1", _ratio(x["rpc"], o.get("rpc")) if v != "open" else "1",
                     ranges[0], ranges[1], verdict]
            print("| " + " | ".join(cells) + " |")
    if "sluice" in by and "base" in by:
        for v in [v for v in AUTH_ORDER if v in by["sluice"] and v in by["base"]]:
            vrows = [dict(r, target=b) for b in ("sluice", "base") for r in by[b][v]]
            _, s = summarize(vrows)
            base_line(vrows, s, label=f", {v}")
    nrounds = len({r["round"] for r in rows})
    print(f"\nOne sluice process serves every variant (same listener, upstream and backend; only the route and "
          f"the credential differ); each round runs every variant once, order rotated. Ratios are to `open` of "
          f"the same binary: medians, and the range of the ratios of the runs of one round. "
          f"Targets (#11 item 8): api_key ≥ 0.95× open's req/s and ≥ 0.90× its req per CPU-s; a cached JWT ≥ 0.90×; "
          f"(#12 item 8) metered ≥ 0.90× both."
          + (f" Only {nrounds} round: the verdicts are not a measurement." if nrounds < 3 else ""))
    errs = [f"{b}-{v} ({summ_by[b][v]['errors']})" for b in binaries for v in summ_by[b] if summ_by[b][v]["errors"]]
    if errs:
        print("WARNING: errors (non-2xx or socket errors) in: " + ", ".join(errs) +
              " — a 401/503 means the credential was refused or the hash pool was full; see raw/ and run/sluice.log.")
    print("\nCPU use (medians, % of one CPU): " + "; ".join(
        f"{b}-{v}: load generator {_pct(x['loadgen'])}, backend {_pct(x['backend'])}, "
        + ", ".join(f"cpu{i} busy {_pct(c)}" for i, c in enumerate(x["cpus"]))
        for b in binaries for v, x in summ_by[b].items()))
    noisy = [f"{b}-{v} (up to {x['foreign']:.0f}%)" for b in binaries for v, x in summ_by[b].items() if x["foreign"] > 5]
    if noisy:
        print("WARNING: other processes used CPU during: " + ", ".join(noisy) +
              " — numbers are disturbed; rerun on a quiet machine.")


# ---------------------------------------------------------------- counts scenario

def ctx_switches(roots):
    """(voluntary, involuntary) context switches summed over every thread of roots' process trees."""
    vol = inv = 0
    for pid in tree_pids(roots):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            vol += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches:"):
                            inv += int(line.split()[1])
            except OSError:
                pass
    return vol, inv


# (file, table, counter): what the counts scenario takes from the kernel's SNMP counters
NET_COUNTERS = (("/proc/net/snmp", "Tcp", "OutSegs"), ("/proc/net/snmp", "Tcp", "InSegs"),
                ("/proc/net/snmp", "Tcp", "RetransSegs"), ("/proc/net/snmp", "Tcp", "OutRsts"),
                ("/proc/net/snmp", "Tcp", "ActiveOpens"), ("/proc/net/snmp", "Tcp", "PassiveOpens"),
                ("/proc/net/netstat", "TcpExt", "TCPOrigDataSent"), ("/proc/net/netstat", "TcpExt", "TCPPureAcks"),
                ("/proc/net/netstat", "TcpExt", "TCPHPAcks"), ("/proc/net/netstat", "TcpExt", "TCPHPHits"),
                ("/proc/net/netstat", "TcpExt", "DelayedACKs"), ("/proc/net/netstat", "TcpExt", "TCPDelivered"))


def net_counters():
    """{Table+Name: value} for NET_COUNTERS (e.g. TcpOutSegs, TcpExtTCPOrigDataSent), nstat's names."""
    tables = {}
    for path in sorted({p for p, _, _ in NET_COUNTERS}):
        with open(path) as f:
            lines = f.read().splitlines()
        # pairs of lines: "Tcp: Name Name ..." then "Tcp: 1 2 ..."
        for names, vals in zip(lines[0::2], lines[1::2]):
            t, _, rest = names.partition(":")
            tables[t] = dict(zip(rest.split(), (int(v) for v in vals.partition(":")[2].split())))
    return {t + n: tables.get(t, {}).get(n) for _, t, n in NET_COUNTERS}


def parse_perf_csv(path):
    """perf stat -x, --per-thread output: ({event: total}, {thread comm: {event: count}})."""
    total, threads = {}, {}
    with open(path, errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split(",")
            if len(parts) < 4 or not parts[0] or parts[0].startswith("#"):
                continue
            thread, value, event = parts[0], parts[1], parts[3]
            if not value.strip().isdigit():
                continue  # "<not counted>" / "<not supported>"
            comm = thread.rpartition("-")[0] or thread  # "sluice-w0-1234" -> "sluice-w0"
            total[event] = total.get(event, 0) + int(value)
            th = threads.setdefault(comm, {})
            th[event] = th.get(event, 0) + int(value)
    return total, threads


# syscall tracepoints grouped for the "by kind" table (syscalls:sys_enter_NAME)
SYSCALL_KINDS = (("io_uring_enter", ("io_uring_enter",)),
                 ("epoll_wait", ("epoll_wait", "epoll_pwait", "epoll_pwait2")),
                 ("read/recv", ("read", "readv", "recvfrom", "recvmsg")),
                 ("write/send", ("write", "writev", "sendto", "sendmsg", "sendfile64")),
                 # nginx makes one of each per proxied request (a one-off `perf trace -s` of its worker)
                 ("getsockopt", ("getsockopt",)), ("getpid", ("getpid",)))


def counts_fields(rec, kv):
    """Per-request counts for a counts-scenario record: perf events of the proxy, its context
    switches, and the machine's TCP segments, each divided by the requests oha completed."""
    n = rec.get("requests") or 0
    per = (lambda v: v / n if n and v is not None else None)
    if kv.get("perf"):
        total, threads = parse_perf_csv(kv["perf"])
        rec["perf"] = total
        rec["perf_threads"] = threads
        rec["syscalls_per_req"] = per(total.get("raw_syscalls:sys_enter"))
        rec["uring_enter_per_req"] = per(total.get("syscalls:sys_enter_io_uring_enter"))
        rec["sqe_per_req"] = per(total.get("io_uring:io_uring_submit_req"))
        rec["cqe_per_req"] = per(total.get("io_uring:io_uring_complete"))
        rec["perf_cs_per_req"] = per(total.get("context-switches"))
        kinds, named = {}, 0
        for kind, names in SYSCALL_KINDS:
            c = sum(total.get("syscalls:sys_enter_" + x, 0) for x in names)
            kinds[kind] = per(c)
            named += c
        if total.get("raw_syscalls:sys_enter") is not None:
            kinds["other"] = per(total["raw_syscalls:sys_enter"] - named)
        rec["syscall_kinds_per_req"] = kinds
        rec["thread_syscalls_per_req"] = {c: per(e.get("raw_syscalls:sys_enter")) for c, e in threads.items()}
    cb, ca = kv.get("ctx_before", "").split(), kv.get("ctx_after", "").split()
    if len(cb) == 2 and len(ca) == 2:
        rec["ctx_vol"] = int(ca[0]) - int(cb[0])
        rec["ctx_invol"] = int(ca[1]) - int(cb[1])
        rec["ctx_vol_per_req"] = per(rec["ctx_vol"])
        rec["ctx_invol_per_req"] = per(rec["ctx_invol"])
    nb, na = kv.get("net_before"), kv.get("net_after")
    if nb and na:
        b = dict((k, int(v)) for k, _, v in (x.partition("=") for x in nb.split(",")) if v.lstrip("-").isdigit())
        a = dict((k, int(v)) for k, _, v in (x.partition("=") for x in na.split(",")) if v.lstrip("-").isdigit())
        d = {k: a[k] - b[k] for k in a if k in b}
        rec["net"] = d
        out, data = d.get("TcpOutSegs"), d.get("TcpExtTCPOrigDataSent")
        rec["out_segs_per_req"] = per(out)
        rec["in_segs_per_req"] = per(d.get("TcpInSegs"))
        rec["data_segs_per_req"] = per(data)
        rec["nondata_segs_per_req"] = per(out - data) if out is not None and data is not None else None
        # received side, as the kernel classifies it: TCPPureAcks = ACKs without data on the slow path;
        # TCPHPAcks = ACKs on the fast path that advanced snd_una, with or without data (tcp_ack())
        rec["tcp_pure_acks_per_req"] = per(d.get("TcpExtTCPPureAcks"))
        rec["tcp_hp_acks_per_req"] = per(d.get("TcpExtTCPHPAcks"))
        rec["delayed_acks_per_req"] = per(d.get("TcpExtDelayedACKs"))
    if n and rec.get("proxy_user_s") is not None:
        rec["user_us_per_req"] = 1e6 * rec["proxy_user_s"] / n
        rec["sys_us_per_req"] = 1e6 * rec["proxy_sys_s"] / n


COUNTS_PATHS = ("plain", "api_key", "tls")
COUNTS_DESC = {"plain": "plain: GET /", "api_key": "api_key: GET /key/bench + X-API-Key",
               "tls": "tls: GET / over HTTPS (ECDSA, keep-alive)"}


def _counts_split(r):
    b, v = r.get("binary"), r.get("variant")
    if not b or not v:
        b, _, v = r["target"].rpartition("-")
    return b, v


def _fmt_per(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def table_counts(path):
    """counts scenario: per request, medians over rounds, per target and path."""
    rows = load(path, "counts")
    if not rows:
        print("(no runs for scenario counts)")
        return
    by = {}
    for r in rows:
        b, v = _counts_split(r)
        by.setdefault((b, v), []).append(r)
    binaries = [b for b in ("sluice", "base", "nginx", "direct") if any(k[0] == b for k in by)]
    binaries += sorted({k[0] for k in by} - set(binaries))
    keys = [(b, v) for v in COUNTS_PATHS for b in binaries if (b, v) in by]
    keys += sorted(k for k in by if k not in keys)
    med = lambda rs, f: _median([r.get(f) for r in rs])
    rate = rows[0].get("rate")
    hdr = ["path", "target", "runs", "req/s" + (f" (rate {rate:,})" if rate else ""), "syscalls/req",
           "io_uring_enter/req", "SQEs/req", "CQEs/req", "TCP segs out/req (machine)", "data segs/req",
           "pure ACK + ctl segs/req", "ctx switches/req vol / invol", "proxy CPU µs/req user", "proxy CPU µs/req sys"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join(["---", "---"] + ["---:"] * (len(hdr) - 2)) + "|")
    for k in keys:
        rs = by[k]
        b, v = k
        proxy = b != "direct"
        cells = [v, b, str(len(rs)), _fmt_num(med(rs, "rps")),
                 _fmt_per(med(rs, "syscalls_per_req")) if proxy else "-",
                 _fmt_per(med(rs, "uring_enter_per_req")) if proxy else "-",
                 _fmt_per(med(rs, "sqe_per_req")) if proxy else "-",
                 _fmt_per(med(rs, "cqe_per_req")) if proxy else "-",
                 _fmt_per(med(rs, "out_segs_per_req")), _fmt_per(med(rs, "data_segs_per_req")),
                 _fmt_per(med(rs, "nondata_segs_per_req")),
                 (f"{_fmt_per(med(rs, 'ctx_vol_per_req'), 3)} / {_fmt_per(med(rs, 'ctx_invol_per_req'), 3)}" if proxy else "-"),
                 _fmt_per(med(rs, "user_us_per_req"), 1) if proxy else "-",
                 _fmt_per(med(rs, "sys_us_per_req"), 1) if proxy else "-"]
        print("| " + " | ".join(cells) + " |")
    # syscalls by kind, and per thread
    kinds = [k for k, _ in SYSCALL_KINDS] + ["other"]
    print("\nSyscalls of the proxy per request by kind (medians; perf stat -e syscalls:sys_enter_NAME; other = "
          "raw_syscalls:sys_enter minus the named ones), perf's context-switches event (a cross-check of the /proc "
          "column), and more TCP counters of the whole machine:\n")
    print("| path | target | " + " | ".join(kinds) + " | perf context-switches/req | TCP in segs/req | TCPPureAcks/req | TCPHPAcks/req | DelayedACKs/req |")
    print("|---|---|" + "---:|" * (len(kinds) + 5))
    for k in keys:
        rs = by[k]
        b, v = k
        if b == "direct":
            kc = ["-"] * len(kinds)
            print(f"| {v} | {b} | " + " | ".join(kc) + f" | - | {_fmt_per(med(rs, 'in_segs_per_req'))} | "
                  f"{_fmt_per(med(rs, 'tcp_pure_acks_per_req'))} | {_fmt_per(med(rs, 'tcp_hp_acks_per_req'))} | "
                  f"{_fmt_per(med(rs, 'delayed_acks_per_req'), 3)} |")
            continue
        kc = [_fmt_per(_median([(r.get("syscall_kinds_per_req") or {}).get(x) for r in rs])) for x in kinds]
        print(f"| {v} | {b} | " + " | ".join(kc) + f" | {_fmt_per(med(rs, 'perf_cs_per_req'), 3)} | "
              f"{_fmt_per(med(rs, 'in_segs_per_req'))} | {_fmt_per(med(rs, 'tcp_pure_acks_per_req'))} | "
              f"{_fmt_per(med(rs, 'tcp_hp_acks_per_req'))} | {_fmt_per(med(rs, 'delayed_acks_per_req'), 3)} |")
    parts = []
    for k in keys:
        rs = by[k]
        comms = sorted({c for r in rs for c in (r.get("thread_syscalls_per_req") or {})})
        if not comms or k[0] == "direct":
            continue
        vals = [(c, _median([(r.get("thread_syscalls_per_req") or {}).get(c) for r in rs])) for c in comms]
        parts.append(f"{k[0]} {k[1]}: " + ", ".join(f"{c} {v:.2f}" for c, v in vals if v is not None))
    if parts:
        print("\nSyscalls per request by thread (comm): " + "; ".join(parts) + ".")
    # the same rate without perf attached: the fixed scenario of the same invocation
    fixed = [r for r in load(path, "fixed") if r.get("rate") == rate]
    if fixed:
        _, fs = summarize(fixed)
        cmp = []
        for b in binaries:
            if b in fs and (b, "plain") in by and fs[b].get("uspr") is not None:
                fr = [r for r in fixed if r["target"] == b]
                fu = _median([1e6 * r["proxy_user_s"] / r["requests"] for r in fr if r.get("requests")])
                fsys = _median([1e6 * r["proxy_sys_s"] / r["requests"] for r in fr if r.get("requests")])
                cu, csys = med(by[(b, "plain")], "user_us_per_req"), med(by[(b, "plain")], "sys_us_per_req")
                cmp.append(f"{b}: user {fu:.1f} / sys {fsys:.1f} µs/req without perf (fixed, {fs[b]['runs']} runs, "
                           f"{_fmt_num(fs[b]['rps'])} req/s) vs {_fmt_per(cu, 1)} / {_fmt_per(csys, 1)} with perf (counts plain)")
        if cmp:
            print("\nThe cost of counting (perf's tracepoints run in the proxy's syscalls and count as its sys time): "
                  + "; ".join(cmp) + ".")
    slow = [f"{b}-{v} ({_fmt_num(min(r['rps'] or 0 for r in rs))} req/s)" for (b, v), rs in by.items()
            if any(r.get("rate") and (r["rps"] or 0) < 0.97 * r["rate"] for r in rs)]
    if slow:
        print(f"\nWARNING: the rate ({rate} req/s) was not held by: " + ", ".join(slow) +
              " — per-request counts at a lower rate are not comparable (less batching); try a lower --rate.")
    errs = [f"{b}-{v} ({sum(r['errors'] for r in rs)})" for (b, v), rs in by.items() if any(r["errors"] for r in rs)]
    if errs:
        print("WARNING: errors (non-2xx or socket errors) in: " + ", ".join(errs) + "; see raw/.")
    noisy = [f"{b}-{v} (up to {max(r.get('foreign_cpu_pct') or 0 for r in rs):.0f}%)" for (b, v), rs in by.items()
             if max(r.get("foreign_cpu_pct") or 0 for r in rs) > 5]
    if noisy:
        print("WARNING: other processes used CPU during: " + ", ".join(noisy) +
              " — CPU and the machine-wide TCP counters are disturbed; rerun on a quiet machine.")
    print("\nCPU use (medians, % of one CPU): " + "; ".join(
        f"{b}-{v}: proxy {_pct((med(by[(b, v)], 'proxy_user_pct') or 0) + (med(by[(b, v)], 'proxy_sys_pct') or 0)) if b != 'direct' else '-'}, "
        f"load generator {_pct(med(by[(b, v)], 'loadgen_cpu_pct'))}, backend {_pct(med(by[(b, v)], 'backend_cpu_pct'))}"
        for b, v in keys))


def hs256_token(args):
    """hs256-token --key-file F --sub S [--iss I] [--aud A] [--ttl SECONDS]: a compact JWS (HS256) signed
    with the secret in F (whitespace trimmed, as sluice reads a key_file without a PEM block)."""
    import base64
    import hashlib
    import hmac
    opts, _, _ = _opts(args, {"key-file", "sub", "iss", "aud", "ttl"})
    with open(opts["key-file"], "rb") as f:
        secret = f.read().strip()

    def b64(d):
        return base64.urlsafe_b64encode(d).rstrip(b"=")
    now = int(time.time())
    claims = {"sub": opts["sub"], "iat": now, "exp": now + int(opts.get("ttl", 10 * 365 * 86400))}
    if opts.get("iss"):
        claims["iss"] = opts["iss"]
    if opts.get("aud"):
        claims["aud"] = opts["aud"]
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = b64(hmac.new(secret, head + b"." + body, hashlib.sha256).digest())
    print((head + b"." + body + b"." + sig).decode())
    return 0


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
    elif cmd == "rss-run":
        return rss_run(args)
    elif cmd == "idle":
        return idle(args)
    elif cmd == "sink":
        sink(args)
    elif cmd == "gen-routes":
        return gen_routes(args)
    elif cmd == "reload-probe":
        return reload_probe(args)
    elif cmd == "table-bigbody":
        table_bigbody(*args)
    elif cmd == "table-idle":
        table_idle(*args)
    elif cmd == "table-tls":
        table_tls(*args)
    elif cmd == "table-reload":
        table_reload(*args)
    elif cmd == "table-auth":
        table_auth(*args)
    elif cmd == "hs256-token":
        return hs256_token(args)
    elif cmd == "ctx":
        print(*ctx_switches({int(a) for a in args}))
    elif cmd == "net":
        print(",".join(f"{k}={v}" for k, v in net_counters().items()))
    elif cmd == "table-counts":
        table_counts(*args)
    elif cmd == "record-wrk":
        # record-wrk FILE OUT k=v...: parse a wrk output and append it with labels
        res = parse_wrk(args[0])
        _, labels, _ = _opts(args[2:], set())
        labels.update(res)
        _append(args[1], labels)
    elif cmd == "parse":
        tool, path = args
        print(json.dumps({"wrk": parse_wrk, "oha": parse_oha, "tlsload": parse_tlsload}[tool](path), indent=1))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
