//! Usage on the control thread: the ledger in the state database (`ledger`, UTC buckets from
//! `calendar`), the per-consumer figures since start (`live`), the admin endpoints that read them
//! (`api`), and the billing push of closed periods (`billing`). Workers only count (`crate::usage`);
//! everything here runs off the request path.

pub mod api;
pub mod billing;
pub mod calendar;
pub mod ledger;
pub mod live;

pub use ledger::{Ledger, LedgerError, PeriodTotals, PeriodUse};

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

/// The ledger as the control thread shares it between its tasks (never borrowed across an await).
pub type SharedLedger = Rc<RefCell<Ledger>>;

/// How long a flush waits for the workers' usage (a busy worker answers between two requests).
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Writes what arrived once per `flush_interval` of the snapshot in force.
///
/// Before each flush the workers are asked for what they counted since their last once-a-second
/// report, and the flush waits for their answers (at most `ANSWER_WAIT`): so what a `kill -9` loses is
/// what the last `flush_interval` served, not that plus a report interval.
pub async fn flusher(
    ledger: SharedLedger,
    snapshot: Rc<RefCell<Arc<crate::snapshot::Snapshot>>>,
    links: Rc<super::Broadcast>,
    answers: Rc<std::cell::Cell<(u64, u64)>>,
) {
    let mut seq = 0u64;
    loop {
        let every = snapshot
            .borrow()
            .config
            .usage
            .as_ref()
            .map_or(std::time::Duration::from_secs(1), |u| u.flush_interval);
        monoio::time::sleep(every).await;
        // Numbered, so only this flush's answers count (not the quota watch's, nor a late one).
        seq += 1;
        answers.set((seq, 0));
        for w in 0..links.len() {
            links.to(w, crate::msg::ToWorker::ReportUsage(seq));
        }
        let deadline = std::time::Instant::now() + ANSWER_WAIT;
        while answers.get().1 < links.len() as u64 && std::time::Instant::now() < deadline {
            monoio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        flush(&ledger, "usage flush failed; will retry");
    }
}

/// Flushes now, logging a failure (what was not written stays in memory for the next try).
pub fn flush(ledger: &SharedLedger, what: &'static str) -> usize {
    let now = super::webhook::unix_now();
    match ledger.borrow_mut().flush(now) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "{what}");
            0
        }
    }
}
