//! Per-worker usage: what each consumer did on each route, by status class, counted at the end of
//! every request (`pipeline::record::finish`) and shipped to the control thread with the once-a-second
//! statistics report (`StatsDelta::usage`), where the ledger (`control::usage`) keeps it.
//!
//! Owned by one generation of one worker, like the other counters; never shared, never locked. Once a
//! (consumer, route, status class) key has a cell, counting a request allocates nothing: consumers are
//! looked up by `&str` (`Arc<str>: Borrow<str>`), cells by `(route, class)`, and a key idle for
//! `IDLE_REPORTS` reports is let go. Requests without a consumer are counted under `ANONYMOUS` without
//! hashing a name. At most `MAX_CONSUMERS` named consumers are held per generation per worker (JWT
//! identities can be anything a token issuer signs); requests of consumers past that are counted under
//! `OTHER` until keys are let go.

use std::collections::HashMap;
use std::sync::Arc;

/// The consumer name of requests that authenticated as no one (a route without `auth`, or one that
/// refused the request before a consumer was known). Not a valid configured consumer name.
pub const ANONYMOUS: &str = "(anonymous)";
/// Where requests of consumers past `MAX_CONSUMERS` are counted.
pub const OTHER: &str = "(other)";
/// The route name of requests that matched no route (as in the route counters).
pub const NO_ROUTE: &str = "(none)";
/// Distinct named consumers one worker holds cells for, per generation.
pub const MAX_CONSUMERS: usize = 4096;
/// Reports (seconds) a consumer's cells are kept without traffic before they are let go.
pub const IDLE_REPORTS: u8 = 60;

/// Counts of one (consumer, route, status class).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts {
    pub requests: u64,
    /// Of those, let through by the route's policies (what quotas count).
    pub admitted: u64,
    /// Of those, refused 429 by sluice itself (rate limits and quotas; an upstream's 429 is not).
    pub limited: u64,
    /// Bytes received from the client (head and body).
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
    /// Sum of request latencies, µs.
    pub latency_us: u64,
}

impl UsageCounts {
    /// Adds `o`.
    pub fn add(&mut self, o: &UsageCounts) {
        self.requests += o.requests;
        self.admitted += o.admitted;
        self.limited += o.limited;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.latency_us += o.latency_us;
    }
}

/// Status class of a response: 0 = none sent, 1..=5 = 1xx..5xx (as `Counters::status` indexes).
pub fn status_class(status: u16) -> u8 {
    (status / 100).min(5) as u8
}

/// Label of a status class: "2xx", or "none" for 0.
pub fn class_label(class: u8) -> &'static str {
    ["none", "1xx", "2xx", "3xx", "4xx", "5xx"][class.min(5) as usize]
}

/// The class a label names.
pub fn class_from_label(s: &str) -> Option<u8> {
    (0..6u8).find(|&c| class_label(c) == s)
}

/// Whether a status class counts as an error in usage figures: 5xx, or no response at all.
pub fn is_error_class(class: u8) -> bool {
    class == 0 || class == 5
}

/// Route index of requests that matched no route.
const UNROUTED: u32 = u32::MAX;

#[derive(Debug, Default)]
struct Cells {
    by_key: HashMap<(u32, u8), UsageCounts, ahash::RandomState>,
    /// Reports in a row without traffic.
    idle: u8,
}

impl Cells {
    fn count(&mut self, route: u32, class: u8, c: &UsageCounts) {
        self.by_key.entry((route, class)).or_default().add(c);
    }

    /// Moves non-zero cells into `out`; returns whether there were any.
    fn drain(&mut self, consumer: &Arc<str>, routes: &[Arc<str>], out: &mut Vec<UsageRow>) -> bool {
        let mut any = false;
        for (&(route, class), c) in self.by_key.iter_mut() {
            if c.requests == 0 {
                continue;
            }
            let route = match routes.get(route as usize) {
                Some(r) => r.clone(),
                None => Arc::from(NO_ROUTE),
            };
            out.push(UsageRow {
                consumer: consumer.clone(),
                route,
                class,
                counts: std::mem::take(c),
            });
            any = true;
        }
        if any {
            self.idle = 0;
        } else {
            self.idle = self.idle.saturating_add(1);
        }
        any
    }
}

/// One worker's usage in one generation since the last report.
#[derive(Debug)]
pub struct UsageTable {
    anonymous: Cells,
    named: HashMap<Arc<str>, Cells, ahash::RandomState>,
    other: Cells,
    anonymous_name: Arc<str>,
    other_name: Arc<str>,
}

impl Default for UsageTable {
    fn default() -> Self {
        UsageTable {
            anonymous: Cells::default(),
            named: HashMap::default(),
            other: Cells::default(),
            anonymous_name: Arc::from(ANONYMOUS),
            other_name: Arc::from(OTHER),
        }
    }
}

impl UsageTable {
    /// Counts one finished request. Allocates only for a consumer or a (route, class) not yet held.
    /// A `known` consumer (configured or runtime, so bounded by the consumer tables) is always held
    /// by name: its quota and its bill need its own figures.
    pub fn record(
        &mut self,
        consumer: Option<&str>,
        known: bool,
        route: Option<u32>,
        status: u16,
        c: &UsageCounts,
    ) {
        let cells = match consumer {
            None => &mut self.anonymous,
            Some(name) => {
                if self.named.contains_key(name) {
                    // Present: looked up again for the borrow (a second hash, no allocation).
                    match self.named.get_mut(name) {
                        Some(cells) => cells,
                        None => &mut self.other,
                    }
                } else if known || self.named.len() < MAX_CONSUMERS {
                    self.named.entry(Arc::from(name)).or_default()
                } else {
                    &mut self.other
                }
            }
        };
        cells.count(route.unwrap_or(UNROUTED), status_class(status), c);
    }

    /// Moves everything counted into `out`, naming routes by `routes`; lets go of consumers idle for
    /// `IDLE_REPORTS` reports.
    pub fn drain_into(&mut self, routes: &[Arc<str>], out: &mut Vec<UsageRow>) {
        self.anonymous.drain(&self.anonymous_name, routes, out);
        self.other.drain(&self.other_name, routes, out);
        self.named.retain(|name, cells| {
            cells.drain(name, routes, out);
            cells.idle < IDLE_REPORTS
        });
    }

    /// Named consumers held.
    pub fn consumers(&self) -> usize {
        self.named.len()
    }
}

/// One (consumer, route, status class) of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub consumer: Arc<str>,
    pub route: Arc<str>,
    /// 0 = no response, 1..=5 = 1xx..5xx.
    pub class: u8,
    pub counts: UsageCounts,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes_in: u64, bytes_out: u64) -> UsageCounts {
        UsageCounts {
            requests: 1,
            admitted: 1,
            limited: 0,
            bytes_in,
            bytes_out,
            latency_us: 10,
        }
    }

    #[test]
    fn counts_by_consumer_route_and_class() {
        let mut t = UsageTable::default();
        let routes: Vec<Arc<str>> = vec![Arc::from("api"), Arc::from("web")];
        t.record(Some("alice"), false, Some(0), 200, &one(10, 100));
        t.record(Some("alice"), false, Some(0), 201, &one(5, 50));
        t.record(Some("alice"), false, Some(1), 503, &one(1, 2));
        t.record(None, false, None, 404, &one(3, 4));
        let mut out = Vec::new();
        t.drain_into(&routes, &mut out);
        out.sort_by(|a, b| (&a.consumer, &a.route, a.class).cmp(&(&b.consumer, &b.route, b.class)));
        assert_eq!(out.len(), 3);
        assert_eq!(
            (&*out[0].consumer, &*out[0].route, out[0].class),
            (ANONYMOUS, NO_ROUTE, 4)
        );
        assert_eq!(
            (&*out[1].consumer, &*out[1].route, out[1].class),
            ("alice", "api", 2)
        );
        assert_eq!(out[1].counts.requests, 2);
        assert_eq!(out[1].counts.bytes_in, 15);
        assert_eq!(out[1].counts.bytes_out, 150);
        assert_eq!(out[1].counts.latency_us, 20);
        assert_eq!((&*out[2].route, out[2].class), ("web", 5));
        let mut again = Vec::new();
        t.drain_into(&routes, &mut again);
        assert!(again.is_empty(), "a drained table reports nothing");
        assert_eq!(t.consumers(), 1, "an idle consumer is kept for a while");
    }

    #[test]
    fn idle_consumers_are_let_go_and_the_bound_holds() {
        let mut t = UsageTable::default();
        let routes: Vec<Arc<str>> = vec![Arc::from("api")];
        for i in 0..MAX_CONSUMERS + 10 {
            t.record(Some(&format!("c{i}")), false, Some(0), 200, &one(1, 1));
        }
        assert_eq!(t.consumers(), MAX_CONSUMERS);
        // A configured consumer gets its own cells past the bound.
        t.record(Some("configured"), true, Some(0), 200, &one(1, 1));
        assert_eq!(t.consumers(), MAX_CONSUMERS + 1);
        let mut out = Vec::new();
        t.drain_into(&routes, &mut out);
        let other: Vec<_> = out.iter().filter(|r| &*r.consumer == OTHER).collect();
        assert_eq!(other.len(), 1);
        assert_eq!(
            other[0].counts.requests, 10,
            "past the bound, counted as other"
        );
        let total: u64 = out.iter().map(|r| r.counts.requests).sum();
        assert_eq!(total, MAX_CONSUMERS as u64 + 11, "nothing is lost");
        for _ in 0..IDLE_REPORTS {
            t.drain_into(&routes, &mut Vec::new());
        }
        assert_eq!(t.consumers(), 0);
    }

    #[test]
    fn class_labels_round_trip() {
        for c in 0..6 {
            assert_eq!(class_from_label(class_label(c)), Some(c));
        }
        assert_eq!(status_class(429), 4);
        assert_eq!(status_class(0), 0);
        assert_eq!(status_class(999), 5);
    }
}
