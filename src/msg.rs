//! The messages between threads: what the main and control threads tell a worker, and what a worker
//! (or the main thread) tells the control thread. Workers and the control thread both depend on this
//! module and never on each other.

use crate::link::Link;
use crate::snapshot::Snapshot;
use crate::upstream::{AdminMode, EndpointAddr};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Messages to a worker.
#[derive(Debug)]
pub enum ToWorker {
    /// A new config snapshot: used for requests that start after it arrives.
    Snapshot(Box<Snapshot>),
    /// Active health verdict for an endpoint.
    Health {
        /// Snapshot generation the verdict is for.
        generation: u64,
        upstream: usize,
        addr: SocketAddr,
        /// Up or down.
        healthy: bool,
    },
    /// A new endpoint list after DNS re-resolution.
    Endpoints {
        /// Snapshot generation.
        generation: u64,
        upstream: usize,
        /// The resolved endpoints.
        list: Vec<EndpointAddr>,
    },
    /// An operator's runtime change to one endpoint (admin API).
    EndpointAdmin {
        upstream: Arc<str>,
        addr: SocketAddr,
        /// New mode, if changed.
        mode: Option<AdminMode>,
        /// New weight, if changed.
        weight: Option<u32>,
    },
    /// Keys the control side fetched for a JWT verifier (by name); replaces that verifier's keys. The
    /// set carries the URL it came from, so a verifier whose source changed in a reload ignores it.
    JwtKeys {
        verifier: Arc<str>,
        keys: Arc<crate::policy::jwt::KeySet>,
    },
    /// The whole runtime consumer table (consumers created through the admin API), built on the
    /// control thread after each committed change; replaces the worker's runtime table.
    Consumers(Box<crate::policy::consumers::ConsumerSet>),
    /// The limit pools' answers: grants for asks, and keys whose tokens the pool needs back.
    Limits {
        grants: Vec<crate::limit::Grant>,
        recalls: Vec<(crate::limit::Bucket, Box<[u8]>)>,
    },
    /// Send the usage counted since the last report now (`ToControl::Usage`, echoing the number):
    /// the ledger is about to flush.
    ReportUsage(u64),
    /// Stop accepting, finish in-flight requests within the grace period, exit.
    Drain(Duration),
}

/// How other threads reach a worker.
pub type WorkerLink = Link<ToWorker>;

/// Messages to the control thread.
#[derive(Debug)]
pub enum ToControl {
    /// A new snapshot: restart checks for it.
    Snapshot(Arc<Snapshot>),
    /// A worker's statistics for the last interval.
    Stats(Box<crate::metrics::StatsDelta>),
    /// A worker met a token whose `kid` no loaded key has: refresh that verifier's keys early
    /// (rate-limited by the fetch thread).
    JwtUnknownKid {
        verifier: Arc<str>,
    },
    /// The key-fetch thread's view of every JWT verifier, for `GET /auth` and `/metrics`.
    AuthStatus(Vec<VerifierStatus>),
    /// A worker's call to a token introspection endpoint ended (one per call; a cache hit sends
    /// nothing), for `GET /auth` and `/metrics`.
    Introspected {
        verifier: Arc<str>,
        call: IntrospectionCall,
    },
    /// A worker's usage rows, answering `ToWorker::ReportUsage` (its number).
    Usage(u64, Vec<crate::usage::UsageRow>),
    /// A worker's asks and hand-backs for the limit pools.
    Limits {
        worker: usize,
        asks: Vec<crate::limit::Ask>,
    },
    /// The ACME thread's view of every certificate it keeps, after each check, order or reload.
    Acme(Vec<AcmeStatus>),
    Stop,
}

/// One name's certificate as `GET /acme`, `/metrics` and the `acme_failures` alert see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcmeStatus {
    /// The DNS name.
    pub name: Arc<str>,
    /// "valid", "renewing" (an order is due), "failing" (the last order failed) or "missing".
    pub state: &'static str,
    /// The stored certificate's `notAfter` (Unix seconds).
    pub not_after: Option<i64>,
    /// The stored certificate's serial, lowercase hex.
    pub serial: Option<String>,
    /// The stored certificate's issuer.
    pub issuer: Option<String>,
    /// Orders that ended with a certificate, since start.
    pub orders_ok: u64,
    /// Orders that failed, since start.
    pub orders_failed: u64,
    /// Orders failed since the last success (0 while fine).
    pub consecutive_failures: u32,
    /// Why the last order failed.
    pub last_error: Option<String>,
    /// When an order last failed (Unix seconds).
    pub last_error_at: Option<u64>,
    /// When a certificate was last written (Unix seconds).
    pub last_issued_at: Option<u64>,
    /// When the name is looked at next (Unix seconds).
    pub next_check_at: u64,
    /// The wait before the next retry after a failure, ms (0 while fine).
    pub retry_in_ms: u64,
}

/// One verifier as `GET /auth` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifierStatus {
    /// `[auth.NAME]`.
    pub name: Arc<str>,
    /// The auth type ("jwt").
    pub kind: &'static str,
    /// `discovery`, `jwks`, `jwks_file` or `key_file`.
    pub source: &'static str,
    /// The URL or path.
    pub location: String,
    /// The `jwks_uri` the discovery document named (discovery only).
    pub jwks_uri: Option<String>,
    /// Kids of the keys loaded (keys without a kid are counted in `keys` only).
    pub kids: Vec<String>,
    /// Keys loaded.
    pub keys: usize,
    /// Unix seconds of the last successful load.
    pub last_refresh: Option<u64>,
    /// Unix seconds of the last failed fetch, and what failed.
    pub last_error_at: Option<u64>,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// Failed fetches since start.
    pub failures: u64,
    /// Successful fetches (or file loads) since start.
    pub refreshes: u64,
}

/// How one call to an introspection endpoint ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntrospectionCall {
    /// The token is active.
    Active,
    /// The token is not active.
    Inactive,
    /// No usable answer, and why.
    Failed(String),
}
