//! Checks a policy cannot make on the worker's thread of control without waiting: the pipeline awaits
//! them here (the worker's event loop serves other requests meanwhile) and hands the verdict back to
//! the policy, which runs again and decides. A password hash goes to the hashing pool.

use crate::http1::head::RequestHead;
use crate::pipeline::ctx::Ctx;
use crate::policy::{hasher, Deferred, Verdict};
use crate::worker::Worker;

/// Runs one deferred check.
pub async fn run(_w: &Worker, _head: &RequestHead, _ctx: &Ctx, d: Deferred) -> Verdict {
    match d {
        Deferred::Hash { cred, job } => Verdict::Hash(cred, hasher::verify(job).await),
    }
}
