//! The admin endpoints of usage (behind the admin token, like every admin endpoint):
//!
//! - `GET /usage?consumer=&from=&to=&group_by=&format=`: ledger rows of a range, grouped by any of
//!   `day`, `consumer`, `route`, `status` (comma-separated; default `day,route,status`), as JSON, CSV
//!   (`format=csv`, header line first) or JSON lines (`format=jsonl`).
//! - `GET /usage/top?by=requests|bytes|errors&period=day|month|ID&limit=`: the top consumers and routes
//!   of a period.
//! - `POST /billing/push?period=ID`: queue a billing push of a period; `GET /billing`: its state.
//!
//! Each read flushes the ledger first, so an answer includes everything received until then.

use super::billing::{Billing, PushError};
use super::calendar::{self, Instant};
use super::ledger::{GroupBy, LedgerRow, Query};
use super::SharedLedger;
use crate::control::webhook::unix_now;
use crate::usage::class_label;
use serde_json::{json, Value};

/// A response: status, content type, body (as the admin listener sends it).
pub type Reply = (u16, &'static str, String);

fn json_reply(status: u16, v: Value) -> Reply {
    (status, "application/json", v.to_string())
}

fn error(status: u16, msg: &str) -> Reply {
    json_reply(status, json!({ "error": msg, "status": status }))
}

/// Most rows one `/usage` answer carries; a longer range is refused with a hint to narrow it.
pub const MAX_ROWS: usize = super::ledger::QUERY_ROWS;
/// Default and largest `limit` of `/usage/top`.
const TOP_DEFAULT: usize = 10;
const TOP_MAX: usize = 1000;

/// The parameters of a query (the target after `?`), percent-decoded (invalid escapes make the
/// value absent).
fn params(q: &[u8]) -> Vec<(String, String)> {
    let decode = |v: &[u8]| {
        let mut buf = vec![0u8; v.len()];
        let n = crate::policy::api_key::percent_decode(v, &mut buf)?;
        buf.truncate(n);
        String::from_utf8(buf).ok()
    };
    q.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = match p.iter().position(|&b| b == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &b""[..]),
            };
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

fn param<'a>(ps: &'a [(String, String)], key: &str) -> Option<&'a str> {
    ps.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Routes `/usage...` and `/billing...`; None for any other path. `path` is the request path
/// without its query, `query` the query without `?` (empty when there is none), as `RequestHead`
/// keeps them.
pub fn handle(
    ledger: Option<&SharedLedger>,
    billing: Option<&Billing>,
    method: &[u8],
    path: &[u8],
    query: &[u8],
) -> Option<Reply> {
    let known = matches!(
        path,
        b"/usage" | b"/usage/top" | b"/billing" | b"/billing/push"
    );
    if !known {
        return None;
    }
    let Some(ledger) = ledger else {
        return Some(error(
            404,
            "no usage ledger: configure [usage] (and [state] path)",
        ));
    };
    let ps = params(query);
    Some(match (method, path) {
        (b"GET", b"/usage") => usage(ledger, &ps),
        (b"GET", b"/usage/top") => top(ledger, &ps),
        (b"POST", b"/billing/push") => push(billing, &ps),
        (b"GET", b"/billing") => billing_status(billing),
        _ => error(405, "method not allowed"),
    })
}

/// Flushes, then runs `q`: the answer includes everything received until now.
fn read(ledger: &SharedLedger, q: &Query) -> Result<Vec<LedgerRow>, Reply> {
    super::flush(ledger, "usage flush before an admin read failed");
    ledger.borrow().query(q).map_err(|e| {
        tracing::warn!(error = %e, "usage query failed");
        error(500, "the usage ledger could not be read")
    })
}

fn group_by(v: Option<&str>) -> Result<GroupBy, String> {
    let Some(v) = v else {
        return Ok(GroupBy {
            day: true,
            consumer: false,
            route: true,
            status: true,
        });
    };
    let mut g = GroupBy::default();
    for part in v.split([',', '|']).filter(|p| !p.is_empty()) {
        match part {
            "day" => g.day = true,
            "consumer" => g.consumer = true,
            "route" => g.route = true,
            "status" => g.status = true,
            other => {
                return Err(format!(
                    "group_by: expected day, consumer, route or status, got {other:?}"
                ))
            }
        }
    }
    Ok(g)
}

/// The JSON object of one row, with only the grouped fields.
fn row_json(r: &LedgerRow) -> Value {
    let mut o = serde_json::Map::new();
    if let Some(d) = r.day {
        o.insert("day".into(), json!(calendar::day_label(d)));
    }
    if let Some(c) = &r.consumer {
        o.insert("consumer".into(), json!(c));
    }
    if let Some(rt) = &r.route {
        o.insert("route".into(), json!(rt));
    }
    if let Some(c) = r.class {
        o.insert("status".into(), json!(class_label(c)));
    }
    o.insert("requests".into(), json!(r.counts.requests));
    o.insert("limited".into(), json!(r.counts.limited));
    o.insert("bytes_in".into(), json!(r.counts.bytes_in));
    o.insert("bytes_out".into(), json!(r.counts.bytes_out));
    Value::Object(o)
}

/// RFC 4180 field: quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv(g: GroupBy, rows: &[LedgerRow]) -> String {
    let mut cols: Vec<&str> = Vec::new();
    for (on, name) in [
        (g.day, "day"),
        (g.consumer, "consumer"),
        (g.route, "route"),
        (g.status, "status"),
    ] {
        if on {
            cols.push(name);
        }
    }
    cols.extend(["requests", "limited", "bytes_in", "bytes_out"]);
    let mut out = cols.join(",");
    out.push_str("\r\n");
    for r in rows {
        let mut fields: Vec<String> = Vec::new();
        if let Some(d) = r.day {
            fields.push(calendar::day_label(d));
        }
        if let Some(c) = &r.consumer {
            fields.push(csv_field(c));
        }
        if let Some(rt) = &r.route {
            fields.push(csv_field(rt));
        }
        if let Some(c) = r.class {
            fields.push(class_label(c).into());
        }
        for n in [
            r.counts.requests,
            r.counts.limited,
            r.counts.bytes_in,
            r.counts.bytes_out,
        ] {
            fields.push(n.to_string());
        }
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

fn usage(ledger: &SharedLedger, ps: &[(String, String)]) -> Reply {
    let now = unix_now();
    let instant = |key: &str, dflt: Instant| {
        match param(ps, key) {
        None => Ok(dflt),
        Some(v) => calendar::parse_instant(v).ok_or_else(|| {
            format!("{key}: expected an RFC 3339 date (2026-12-03) or time (2026-12-03T10:00:00Z), got {v:?}")
        }),
    }
    };
    let today = Instant::Date(calendar::day_of(now));
    let (from, to) = match (instant("from", today), instant("to", today)) {
        (Ok(f), Ok(t)) => (f.as_from(), t.as_to()),
        (Err(e), _) | (_, Err(e)) => return error(400, &e),
    };
    if to <= from {
        return error(400, "to must be after from");
    }
    let mut g = match group_by(param(ps, "group_by")) {
        Ok(g) => g,
        Err(e) => return error(400, &e),
    };
    let consumer = param(ps, "consumer").map(str::to_string);
    if consumer.is_none() && param(ps, "group_by").is_none() {
        g.consumer = true;
    }
    let format = param(ps, "format").unwrap_or("json");
    if !matches!(format, "json" | "csv" | "jsonl") {
        return error(400, "format: expected json, csv or jsonl");
    }
    let q = Query {
        consumer: consumer.clone(),
        from,
        to,
        group: g,
    };
    let rows = match read(ledger, &q) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if rows.len() > MAX_ROWS {
        return error(
            413,
            "too many rows: narrow the range or group by fewer fields",
        );
    }
    match format {
        "csv" => (200, "text/csv; charset=utf-8", csv(g, &rows)),
        "jsonl" => {
            let mut out = String::new();
            for r in &rows {
                out.push_str(&row_json(r).to_string());
                out.push('\n');
            }
            (200, "application/x-ndjson", out)
        }
        _ => {
            let mut total = crate::usage::UsageCounts::default();
            for r in &rows {
                total.add(&r.counts);
            }
            json_reply(
                200,
                json!({
                    "consumer": consumer,
                    "from": calendar::time_label(from),
                    "to": calendar::time_label(to),
                    "total": {
                        "requests": total.requests,
                        "limited": total.limited,
                        "bytes_in": total.bytes_in,
                        "bytes_out": total.bytes_out,
                    },
                    "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
                }),
            )
        }
    }
}

/// Ranks rows (grouped by one name and status class) by `by`; returns the top `limit` names.
fn rank(
    rows: &[LedgerRow],
    name: fn(&LedgerRow) -> Option<&String>,
    by: &str,
    limit: usize,
) -> Vec<Value> {
    let mut sums: std::collections::BTreeMap<&str, (u64, u64, u64, u64)> = Default::default();
    for r in rows {
        let Some(n) = name(r) else { continue };
        let e = sums.entry(n.as_str()).or_default();
        e.0 += r.counts.requests;
        e.1 += r.counts.bytes_in + r.counts.bytes_out;
        if crate::usage::is_error_class(r.class.unwrap_or(0)) {
            e.2 += r.counts.requests;
        }
        e.3 += r.counts.limited;
    }
    let mut list: Vec<(&str, (u64, u64, u64, u64))> = sums.into_iter().collect();
    let key = |v: &(u64, u64, u64, u64)| match by {
        "bytes" => v.1,
        "errors" => v.2,
        _ => v.0,
    };
    list.sort_by(|a, b| key(&b.1).cmp(&key(&a.1)).then_with(|| a.0.cmp(b.0)));
    list.into_iter()
        .take(limit)
        .map(|(n, v)| json!({ "name": n, "requests": v.0, "bytes": v.1, "errors": v.2, "limited": v.3 }))
        .collect()
}

fn top(ledger: &SharedLedger, ps: &[(String, String)]) -> Reply {
    use crate::config::usage::BillingPeriod;
    let now = unix_now();
    let by = param(ps, "by").unwrap_or("requests");
    if !matches!(by, "requests" | "bytes" | "errors") {
        return error(400, "by: expected requests, bytes or errors");
    }
    let limit = match param(ps, "limit").map(str::parse::<usize>) {
        None => TOP_DEFAULT,
        Some(Ok(n)) if (1..=TOP_MAX).contains(&n) => n,
        Some(_) => return error(400, "limit: expected 1..=1000"),
    };
    let period = match param(ps, "period").unwrap_or("day") {
        "day" => super::billing::Period::containing(BillingPeriod::Day, now),
        "month" => super::billing::Period::containing(BillingPeriod::Month, now),
        id => match super::billing::Period::parse(BillingPeriod::Day, id)
            .or_else(|| super::billing::Period::parse(BillingPeriod::Month, id))
        {
            Some(p) => p,
            None => {
                return error(
                    400,
                    "period: expected day, month, a date (2026-12-03) or a month (2026-12)",
                )
            }
        },
    };
    let (from, to) = period.bounds();
    let q = Query {
        consumer: None,
        from,
        to,
        group: GroupBy {
            day: false,
            consumer: true,
            route: true,
            status: true,
        },
    };
    let rows = match read(ledger, &q) {
        Ok(r) => r,
        Err(r) => return r,
    };
    json_reply(
        200,
        json!({
            "by": by,
            "period": period.id(),
            "from": calendar::time_label(from),
            "to": calendar::time_label(to),
            "consumers": rank(&rows, |r| r.consumer.as_ref(), by, limit),
            "routes": rank(&rows, |r| r.route.as_ref(), by, limit),
        }),
    )
}

fn push(billing: Option<&Billing>, ps: &[(String, String)]) -> Reply {
    let Some(b) = billing else {
        return error(404, "no billing push configured");
    };
    let Some(id) = param(ps, "period") else {
        return error(
            400,
            "period: required (2026-12-03, or 2026-12 for monthly billing)",
        );
    };
    match b.request(id, unix_now()) {
        Ok(q) => json_reply(
            202,
            json!({ "period": q.period, "final": q.final_, "state": "queued" }),
        ),
        Err(e) => {
            let status = match &e {
                PushError::NoWebhook => 404,
                PushError::BadPeriod(..) | PushError::Future(_) => 400,
                PushError::Acknowledged(_) => 409,
                PushError::Ledger(_) => 500,
            };
            error(status, &e.to_string())
        }
    }
}

fn billing_status(billing: Option<&Billing>) -> Reply {
    let Some(b) = billing else {
        return error(404, "no billing push configured");
    };
    let hook = b.webhook();
    let s = b.status.borrow().clone();
    json_reply(
        200,
        json!({
            "url": hook.as_ref().map(|h| h.hook.url.clone()),
            "period": hook.as_ref().map(|h| h.period.as_str()),
            "sending": s.sending.as_ref().map(|(id, tries)| json!({ "batch_id": id, "tries": tries })),
            "last_error": s.last_error,
            "last_acked": s.last_acked.as_ref().map(|(id, at)| json!({ "batch_id": id, "at": at })),
            "acked_total": s.acked,
            "failed_tries_total": s.failed_tries,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_decode() {
        let ps = params(b"consumer=al%40ice&from=2026-12-01&group_by=route,status&x");
        assert_eq!(param(&ps, "consumer"), Some("al@ice"));
        assert_eq!(param(&ps, "group_by"), Some("route,status"));
        assert_eq!(param(&ps, "x"), Some(""));
        assert!(group_by(Some("route|day")).unwrap().day);
        assert!(group_by(Some("colour")).is_err());
    }

    #[test]
    fn csv_quotes() {
        let g = GroupBy {
            route: true,
            ..Default::default()
        };
        let rows = [LedgerRow {
            route: Some("a,\"b\"".into()),
            counts: crate::usage::UsageCounts {
                requests: 2,
                ..Default::default()
            },
            ..Default::default()
        }];
        assert_eq!(
            csv(g, &rows),
            "route,requests,limited,bytes_in,bytes_out\r\n\"a,\"\"b\"\"\",2,0,0,0\r\n"
        );
    }
}
