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

/// Writes what arrived once per `flush_interval` of the snapshot in force.
pub async fn flusher(ledger: SharedLedger, snapshot: Rc<RefCell<Arc<crate::snapshot::Snapshot>>>) {
    loop {
        let every = snapshot
            .borrow()
            .config
            .usage
            .as_ref()
            .map_or(std::time::Duration::from_secs(1), |u| u.flush_interval);
        monoio::time::sleep(every).await;
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
