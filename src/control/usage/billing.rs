//! The billing push: each closed UTC day or month (`billing_webhook.period`) is posted to
//! `billing_webhook` as JSON, in batches of at most `MAX_ROWS` rows, each signed
//! (`X-Sluice-Signature: sha256=<hex HMAC-SHA256 of the body>`) and keyed (`Idempotency-Key`, also the
//! body's `batch_id`). A batch is retried with backoff until a 2xx acknowledges it; the
//! acknowledgement is committed to the ledger, so a closed period is never sent again, even across
//! restarts. `POST /billing/push?period=` queues one period now: a closed one (unless acknowledged),
//! or the open one, marked `"final": false` and not recorded.
//!
//! One task on the control thread, one batch in flight at a time; the ledger is borrowed only between
//! awaits, so flushes and the admin API go on while a receiver is slow or down.

use super::calendar;
use super::ledger::{BatchAck, Grain, LedgerRow};
use super::SharedLedger;
use crate::config::usage::{BillingPeriod, BillingWebhook};
use crate::control::webhook::{instance, try_post, unix_now, FIRST_BACKOFF};
use crate::snapshot::Snapshot;
use hmac::{Hmac, Mac};
use serde_json::json;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Rows per batch.
pub const MAX_ROWS: usize = 1000;
/// Longest wait between two tries of a batch.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Tries of a push of the open period (it is a preview: a later one supersedes it).
pub const OPEN_PERIOD_TRIES: u32 = 5;
/// How often the task looks for a newly closed period or a queued push.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// One period of the configured length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub kind: BillingPeriod,
    /// Day number or month index.
    pub bucket: i64,
}

impl Period {
    /// The period holding `unix`.
    pub fn containing(kind: BillingPeriod, unix: u64) -> Period {
        let day = calendar::day_of(unix);
        let bucket = match kind {
            BillingPeriod::Day => day,
            BillingPeriod::Month => calendar::month_of_day(day),
        };
        Period { kind, bucket }
    }

    /// Parses an id: `2026-12-03` for days, `2026-12` for months.
    pub fn parse(kind: BillingPeriod, id: &str) -> Option<Period> {
        let bucket = match kind {
            BillingPeriod::Day => calendar::parse_date(id)?,
            BillingPeriod::Month => calendar::parse_month(id)?,
        };
        Some(Period { kind, bucket })
    }

    /// `2026-12-03` or `2026-12`.
    pub fn id(&self) -> String {
        match self.kind {
            BillingPeriod::Day => calendar::day_label(self.bucket),
            BillingPeriod::Month => calendar::month_label(self.bucket),
        }
    }

    fn grain(&self) -> Grain {
        match self.kind {
            BillingPeriod::Day => Grain::Day,
            BillingPeriod::Month => Grain::Month,
        }
    }

    /// Unix seconds where the period starts and ends (exclusive).
    pub fn bounds(&self) -> (u64, u64) {
        let (a, b) = match self.kind {
            BillingPeriod::Day => (self.bucket, self.bucket + 1),
            BillingPeriod::Month => (
                calendar::month_start_day(self.bucket),
                calendar::month_start_day(self.bucket + 1),
            ),
        };
        (
            a.max(0) as u64 * calendar::DAY_SECS,
            b.max(0) as u64 * calendar::DAY_SECS,
        )
    }
}

/// One signed request body.
#[derive(Debug, Clone)]
pub struct Batch {
    pub period: String,
    pub batch: u32,
    pub batches: u32,
    pub batch_id: String,
    pub body: String,
    pub final_: bool,
}

/// The batches of `period` over `rows` (by consumer, route, class). The batch id is a digest of the
/// instance, period, batch number and rows, so retrying or restarting sends the same id for the same
/// content; an open period's push adds the time it was built (its content changes).
pub fn batches(
    period: Period,
    rows: &[LedgerRow],
    final_: bool,
    instance: &str,
    now_unix: u64,
) -> Vec<Batch> {
    let id = period.id();
    let (from, to) = period.bounds();
    let chunks: Vec<&[LedgerRow]> = if rows.is_empty() {
        vec![&[]]
    } else {
        rows.chunks(MAX_ROWS).collect()
    };
    let n = chunks.len() as u32;
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let rows: Vec<serde_json::Value> = chunk
                .iter()
                .map(|r| {
                    json!({
                        "consumer": r.consumer,
                        "route": r.route,
                        "status": crate::usage::class_label(r.class.unwrap_or(0)),
                        "requests": r.counts.requests,
                        "limited": r.counts.limited,
                        "bytes_in": r.counts.bytes_in,
                        "bytes_out": r.counts.bytes_out,
                    })
                })
                .collect();
            let rows_text = serde_json::Value::Array(rows.clone()).to_string();
            let mut d = <sha2::Sha256 as sha2::Digest>::new();
            let built = if final_ { 0 } else { now_unix };
            for part in [
                instance,
                &id,
                &i.to_string(),
                &built.to_string(),
                &rows_text,
            ] {
                sha2::Digest::update(&mut d, part.as_bytes());
                sha2::Digest::update(&mut d, [0u8]);
            }
            let digest = crate::hex::encode(&sha2::Digest::finalize(d));
            let batch_id = format!("{id}-{i}-{}", &digest[..24]);
            let body = json!({
                "batch_id": batch_id,
                "period": id,
                "period_type": period.kind.as_str(),
                "final": final_,
                "from": calendar::time_label(from),
                "to": calendar::time_label(to),
                "instance": instance,
                "batch": i,
                "batches": n,
                "rows": rows,
            })
            .to_string();
            Batch {
                period: id.clone(),
                batch: i as u32,
                batches: n,
                batch_id,
                body,
                final_,
            }
        })
        .collect()
}

/// `sha256=<hex HMAC-SHA256 of body keyed with secret>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length (RFC 2104 §3), so this cannot fail.
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!(
        "sha256={}",
        crate::hex::encode(&mac.finalize().into_bytes())
    )
}

/// Where the push stands, for `GET /billing`.
#[derive(Debug, Clone, Default)]
pub struct BillingStatus {
    /// The batch being sent, if any: (batch id, tries so far).
    pub sending: Option<(String, u32)>,
    pub last_error: Option<String>,
    /// The last acknowledged batch id and when.
    pub last_acked: Option<(String, u64)>,
    /// Batches acknowledged since start.
    pub acked: u64,
    /// Failed tries since start.
    pub failed_tries: u64,
}

/// A push an operator asked for.
#[derive(Debug, Clone, Copy)]
struct Manual {
    period: Period,
}

/// The billing push's state on the control thread.
pub struct Billing {
    ledger: SharedLedger,
    snapshot: Rc<RefCell<Arc<Snapshot>>>,
    queued: RefCell<VecDeque<Manual>>,
    pub status: RefCell<BillingStatus>,
    instance: String,
    /// Closed periods before this bucket are all acknowledged (a cache of the ledger's answer).
    done_before: RefCell<Option<(BillingPeriod, i64)>>,
}

/// Why a push request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("no [usage] billing_webhook is configured")]
    NoWebhook,
    #[error("expected a {0} id like {1}")]
    BadPeriod(&'static str, &'static str),
    #[error("period {0} has not started")]
    Future(String),
    #[error("period {0} was already acknowledged; it is never sent again")]
    Acknowledged(String),
    #[error("{0}")]
    Ledger(String),
}

/// What a queued push will send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub period: String,
    pub final_: bool,
}

impl Billing {
    pub fn new(ledger: SharedLedger, snapshot: Rc<RefCell<Arc<Snapshot>>>) -> Rc<Billing> {
        Rc::new(Billing {
            ledger,
            snapshot,
            queued: RefCell::new(VecDeque::new()),
            status: RefCell::new(BillingStatus::default()),
            instance: instance(),
            done_before: RefCell::new(None),
        })
    }

    /// The webhook in force.
    pub fn webhook(&self) -> Option<BillingWebhook> {
        self.snapshot
            .borrow()
            .config
            .usage
            .as_ref()
            .and_then(|u| u.billing.clone())
    }

    /// Queues a push of period `id` (`POST /billing/push?period=`).
    pub fn request(&self, id: &str, now_unix: u64) -> Result<Queued, PushError> {
        let hook = self.webhook().ok_or(PushError::NoWebhook)?;
        let period = Period::parse(hook.period, id).ok_or(match hook.period {
            BillingPeriod::Day => PushError::BadPeriod("day", "2026-12-03"),
            BillingPeriod::Month => PushError::BadPeriod("month", "2026-12"),
        })?;
        let open = Period::containing(hook.period, now_unix);
        if period.bucket > open.bucket {
            return Err(PushError::Future(period.id()));
        }
        let final_ = period.bucket < open.bucket;
        if final_
            && self
                .ledger
                .borrow()
                .period_acked(&period.id())
                .map_err(|e| PushError::Ledger(e.to_string()))?
        {
            return Err(PushError::Acknowledged(period.id()));
        }
        self.queued.borrow_mut().push_back(Manual { period });
        Ok(Queued {
            period: period.id(),
            final_,
        })
    }

    /// The oldest closed period not yet acknowledged, once everything of it is flushed.
    fn next_closed(&self, kind: BillingPeriod, now_unix: u64) -> Option<Period> {
        let open = Period::containing(kind, now_unix);
        let ledger = self.ledger.borrow();
        if let Some(m) = ledger.oldest_pending_minute() {
            if Period::containing(kind, m * 60).bucket < open.bucket {
                return None; // its last rows are not written yet
            }
        }
        let from = match *self.done_before.borrow() {
            Some((k, b)) if k == kind => b,
            _ => i64::MIN,
        };
        let periods = match ledger.periods_with_usage(open.grain(), open.bucket) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "billing: cannot list closed periods");
                return None;
            }
        };
        for bucket in periods.into_iter().filter(|b| *b >= from) {
            let p = Period { kind, bucket };
            match ledger.period_acked(&p.id()) {
                Ok(true) => continue,
                Ok(false) => {
                    *self.done_before.borrow_mut() = Some((kind, bucket));
                    return Some(p);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "billing: cannot read acknowledgements");
                    return None;
                }
            }
        }
        *self.done_before.borrow_mut() = Some((kind, open.bucket));
        None
    }

    /// Whether rows of `period` (or earlier) wait unwritten in the ledger.
    fn pending_in(&self, period: Period) -> bool {
        let end = period.bounds().1;
        self.ledger
            .borrow()
            .oldest_pending_minute()
            .is_some_and(|m| m * 60 < end)
    }

    /// Builds the batches of `period` still to send.
    fn build(&self, period: Period, final_: bool, now_unix: u64) -> Vec<Batch> {
        let ledger = self.ledger.borrow();
        let rows = match ledger.period_rows(period.grain(), period.bucket) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, period = %period.id(), "billing: cannot read the period");
                return Vec::new();
            }
        };
        let all = batches(period, &rows, final_, &self.instance, now_unix);
        let last = all
            .last()
            .map(|b| (b.period.clone(), b.batch, b.batches, b.batch_id.clone()));
        let todo: Vec<Batch> = all
            .into_iter()
            .filter(|b| !final_ || !ledger.batch_acked(&b.period, b.batch).unwrap_or(false))
            .collect();
        drop(ledger);
        if let (true, true, Some((p, batch, batches, id))) = (final_, todo.is_empty(), last) {
            // Every batch is acknowledged but the period is not recorded as done (its batch count
            // changed since, say): record it now, or it would hold every later period back.
            tracing::warn!(period = %p, "billing: every batch of the period was acknowledged; marking it done");
            let ack = BatchAck {
                period: &p,
                batch,
                batches,
                batch_id: &id,
            };
            if let Err(e) = self.ledger.borrow_mut().ack_batch(&ack, now_unix) {
                tracing::error!(error = %e, period = %p, "billing: cannot record the period");
            }
        }
        todo
    }

    /// Sends one batch until acknowledged (or, for an open period, `OPEN_PERIOD_TRIES` tries).
    async fn send(&self, b: &Batch) {
        let mut backoff = FIRST_BACKOFF;
        let mut tries = 0u32;
        loop {
            let Some(hook) = self.webhook() else {
                // Removed by a reload: wait for it to come back rather than drop the period.
                monoio::time::sleep(CHECK_EVERY * 4).await;
                continue;
            };
            tries += 1;
            self.status.borrow_mut().sending = Some((b.batch_id.clone(), tries));
            let sig = signature(hook.secret.expose().as_bytes(), b.body.as_bytes());
            let headers = [
                ("idempotency-key", b.batch_id.as_str()),
                ("x-sluice-signature", sig.as_str()),
            ];
            match try_post(&hook.hook, &headers, b.body.as_bytes()).await {
                Ok(()) => {
                    let now = unix_now();
                    if b.final_ {
                        let ack = BatchAck {
                            period: &b.period,
                            batch: b.batch,
                            batches: b.batches,
                            batch_id: &b.batch_id,
                        };
                        if let Err(e) = self.ledger.borrow_mut().ack_batch(&ack, now) {
                            // Acknowledged but not recorded: it will be sent again, with the same
                            // Idempotency-Key, so the receiver can drop the copy.
                            tracing::error!(error = %e, batch = %b.batch_id, "billing: cannot record an acknowledgement");
                        }
                    }
                    let mut s = self.status.borrow_mut();
                    s.sending = None;
                    s.last_error = None;
                    s.last_acked = Some((b.batch_id.clone(), now));
                    s.acked += 1;
                    tracing::info!(period = %b.period, batch = %b.batch_id, tries, "billing batch acknowledged");
                    return;
                }
                Err(e) => {
                    {
                        let mut s = self.status.borrow_mut();
                        s.last_error = Some(e.to_string());
                        s.failed_tries += 1;
                    }
                    tracing::warn!(url = %hook.hook.url, error = %e, batch = %b.batch_id, tries, "billing push failed; retrying");
                    if !b.final_ && tries >= OPEN_PERIOD_TRIES {
                        self.status.borrow_mut().sending = None;
                        return;
                    }
                }
            }
            monoio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// The push task: queued pushes first, then closed periods, oldest first.
pub async fn run(b: Rc<Billing>) {
    loop {
        monoio::time::sleep(CHECK_EVERY).await;
        let Some(hook) = b.webhook() else { continue };
        let now = unix_now();
        let manual = b.queued.borrow_mut().pop_front();
        let (period, final_) = match manual {
            Some(m) => {
                let open = Period::containing(m.period.kind, now);
                (m.period, m.period.bucket < open.bucket)
            }
            None => match b.next_closed(hook.period, now) {
                Some(p) => (p, true),
                None => continue,
            },
        };
        if final_
            && b.ledger
                .borrow()
                .period_acked(&period.id())
                .unwrap_or(false)
        {
            continue;
        }
        // What arrived so far goes into the push. A closed period is sent once, so it waits while any
        // of its rows is still unwritten (a failed flush; or asked for just after it closed): sent
        // short, it would never be completed.
        super::flush(
            &b.ledger,
            "usage flush before a billing push failed; will retry",
        );
        if final_ && b.pending_in(period) {
            if let Some(m) = manual {
                b.queued.borrow_mut().push_front(m);
            }
            continue;
        }
        for batch in b.build(period, final_, now) {
            b.send(&batch).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::UsageCounts;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // RFC 4231 §4.3: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn periods_and_batches() {
        let d = calendar::days_from_civil(2026, 12, 3);
        let p = Period::parse(BillingPeriod::Day, "2026-12-03").unwrap();
        assert_eq!(p.bucket, d);
        assert_eq!(p.bounds().1 - p.bounds().0, calendar::DAY_SECS);
        let m = Period::parse(BillingPeriod::Month, "2026-02").unwrap();
        assert_eq!(m.bounds().1 - m.bounds().0, 28 * calendar::DAY_SECS);
        assert_eq!(m.id(), "2026-02");
        let rows: Vec<LedgerRow> = (0..MAX_ROWS + 1)
            .map(|i| LedgerRow {
                consumer: Some(format!("c{i}")),
                route: Some("api".into()),
                class: Some(2),
                counts: UsageCounts {
                    requests: 1,
                    ..Default::default()
                },
                ..Default::default()
            })
            .collect();
        let a = batches(p, &rows, true, "host", 1);
        let b = batches(p, &rows, true, "host", 2);
        assert_eq!(a.len(), 2);
        assert_eq!(
            a[0].batch_id, b[0].batch_id,
            "a closed period's ids are stable"
        );
        assert_ne!(a[0].batch_id, a[1].batch_id);
        let v: serde_json::Value = serde_json::from_str(&a[1].body).unwrap();
        assert_eq!(v["batch_id"], a[1].batch_id.as_str());
        assert_eq!(v["period"], "2026-12-03");
        assert_eq!(v["final"], true);
        assert_eq!(v["rows"].as_array().unwrap().len(), 1);
        assert_eq!(v["from"], "2026-12-03T00:00:00Z");
        let open1 = batches(p, &rows, false, "host", 1);
        let open2 = batches(p, &rows, false, "host", 2);
        assert_ne!(open1[0].batch_id, open2[0].batch_id);
    }
}
