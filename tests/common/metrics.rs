//! Reading sluice's Prometheus `/metrics` from the admin listener: one sample by its labels, or a
//! whole family summed (per-worker counters such as `{worker="N"}`). Workers report about once a
//! second, so callers poll these with `eventually`.

use std::net::SocketAddr;

use super::client::http_get;

/// The `/metrics` text of the admin listener at `admin`.
pub fn scrape(admin: SocketAddr) -> String {
    http_get(admin, "/metrics", &[]).body_str()
}

/// The samples of family `name` as (label text inside the braces, value); comments skipped.
fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(r) => {
                let end = r.find('}')?;
                (&r[..end], &r[end + 1..])
            }
            None if rest.starts_with(' ') => ("", rest),
            None => return None,
        };
        let value = rest.split_whitespace().next()?.parse().ok()?;
        Some((labels, value))
    })
}

/// The sample `name{labels}`, `labels` written as in the exposition (`worker="0"`; `""` for none).
pub fn metric_value(text: &str, name: &str, labels: &str) -> Option<f64> {
    samples(text, name)
        .find(|(l, _)| *l == labels)
        .map(|(_, v)| v)
}

/// The sum of every sample of family `name`, whatever its labels; None if it has none.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    samples(text, name)
        .map(|(_, v)| v)
        .fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
}
