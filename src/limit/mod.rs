//! Rate limits and quotas, exact across workers without a lock: each worker holds, per limit and
//! key, tokens it may spend on its own (`shard`), and the control thread keeps the pool they come
//! from (`pool`). A worker that runs low asks for a lease; one that has none answers from what it
//! holds and never waits for the pool (a quota is the exception: its first request on a worker, and
//! those once leases run out, wait for the pool's answer, because only the pool knows whether the
//! quota has requests left).
//!
//! The conservation rule that makes it exact: for every key, the pool's level plus what each worker
//! holds (as far as the pool knows) never exceeds the bucket's capacity, and the level rises only
//! with the rate. A worker that never asked about a key holds an implicit share of it (the capacity
//! divided among the workers), so a new key's first requests pass on every worker at once without a
//! message; a worker that forgets a key (evicted, or idle) hands back what it holds above that share,
//! or owes what it spent of it.

pub mod key;
pub mod local;
pub mod period;
pub mod pool;
pub mod shard;

/// A worker's message about one key of one limit: what it holds now, what it hands back, what it
/// asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// Which bucket.
    pub limit: Bucket,
    pub key: Box<[u8]>,
    /// The worker's entry for the key; a grant for another epoch is handed back.
    pub epoch: u32,
    /// Tokens the worker holds after this message (its implicit share when it forgot the key).
    pub holding: u64,
    /// Tokens handed back to the pool; negative: spent from the implicit share of a forgotten key.
    pub given: i64,
    /// Tokens wanted (0: none, only a report).
    pub want: u64,
    /// Tokens spent since the last message about this key (lease sizing, metrics).
    pub used: u64,
    /// A quota's count (the consumer's own, from its plan and override); 0 for a rate limit, whose
    /// pool knows its shape from the config.
    pub capacity: u64,
}

/// The pool's answer to an `Ask` that wanted tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub limit: Bucket,
    pub key: Box<[u8]>,
    pub epoch: u32,
    pub tokens: u64,
    /// A quota with nothing left: refused without asking until this Unix second.
    pub exhausted_until: Option<u64>,
    /// What the pool has left after this grant (what the worker shows as remaining, beside its
    /// own holding).
    pub left: u64,
}

/// Which limit a message is about: a limit by its index in the config, with a digest of its
/// definition so a reload that changed it starts a fresh pool instead of mixing two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LimitId {
    pub index: u32,
    pub digest: u64,
}

/// What a message's key is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// A rate limit.
    Rate(LimitId),
    /// A consumer's quota of requests per period (the key is the consumer's name); its count rides
    /// in `Ask::capacity`, as it is the consumer's own (plan and override).
    Quota(crate::config::limits::Period),
    /// A consumer's quota of bytes (in plus out) per period, as `Quota`. A request reserves its
    /// estimated size and settles the difference once it is over.
    QuotaBytes(crate::config::limits::Period),
}

/// The ids of a config's limits, in `Config::limits` order.
pub fn ids(limits: &[crate::config::limits::Limit]) -> Vec<LimitId> {
    use std::hash::{Hash, Hasher};
    limits
        .iter()
        .enumerate()
        .map(|(i, l)| {
            // Fixed keys: the control thread and every worker must reach the same digest.
            let mut h = std::hash::DefaultHasher::new();
            (&l.name, l.count, l.window_secs, l.burst, l.max_keys).hash(&mut h);
            format!("{:?}", l.key).hash(&mut h);
            LimitId {
                index: i as u32,
                digest: h.finish(),
            }
        })
        .collect()
}
