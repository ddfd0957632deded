//! Password hashes verified off the workers. argon2 and bcrypt are slow on purpose (milliseconds to
//! tens of milliseconds each), and a worker that computed one would stall every connection it serves.
//! A small pool of `sluice-hash` threads does the work (`offload`); the worker awaits the answer on a
//! one-shot link (a wake-up byte on a socketpair), so its event loop keeps running meanwhile. Only a
//! cache miss comes here: a verified credential is remembered per worker (`AuthState`).

use super::offload::Pool;
use crate::config::consumer::HashKind;
use std::sync::OnceLock;

/// Verifications that may wait for a hashing thread; beyond this the request is answered 503 rather
/// than queued without bound (a flood of wrong passwords must not grow memory).
const QUEUE: usize = 1024;

/// One verification.
pub struct Job {
    pub kind: HashKind,
    pub hash: Box<str>,
    pub password: Vec<u8>,
}

/// What became of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The password matches the hash.
    Match,
    /// It does not.
    Mismatch,
    /// The pool is saturated or gone: nobody checked.
    Busy,
}

static POOL: OnceLock<Option<Pool<Job, bool>>> = OnceLock::new();

fn pool() -> Option<&'static Pool<Job, bool>> {
    POOL.get_or_init(|| {
        // CPU-bound: one thread per CPU, at most 4.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 4));
        Pool::start("sluice-hash", threads, QUEUE, |job: Job| check(&job))
    })
    .as_ref()
}

/// Verifies on the calling thread (the pool's threads, and tests).
pub fn check(job: &Job) -> bool {
    match job.kind {
        HashKind::Argon2 => {
            use argon2::PasswordVerifier;
            match argon2::PasswordHash::new(&job.hash) {
                Ok(parsed) => argon2::Argon2::default()
                    .verify_password(&job.password, &parsed)
                    .is_ok(),
                Err(_) => false,
            }
        }
        HashKind::Bcrypt => bcrypt::verify(&job.password, &job.hash).unwrap_or(false),
    }
}

/// Verifies `job` on the pool and waits for the answer without blocking the worker.
pub async fn verify(job: Job) -> Verdict {
    let Some(pool) = pool() else {
        return Verdict::Busy;
    };
    match pool.run(job).await {
        Ok(true) => Verdict::Match,
        Ok(false) => Verdict::Mismatch,
        Err(_) => Verdict::Busy,
    }
}
