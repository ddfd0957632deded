//! The limiter on a worker: a check that spends a held token (hit), one that finds the key new
//! (miss: an insert into a full table, evicting), and the pool answering an ask (lease). And the
//! usage record every request ends with (a known consumer among 1,000, and an anonymous request).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sluice::limit::pool::{Params, Pool, Replies};
use sluice::limit::shard::Shard;
use sluice::limit::{Ask, Bucket, Grant, LimitId};
use std::time::Instant;

const BUCKET: Bucket = Bucket::Rate(LimitId {
    index: 0,
    digest: 7,
});

fn limiter(c: &mut Criterion) {
    let mut out = Vec::new();
    // Hit: a known key with tokens, among 100k keys; the grant keeps it from ever running dry.
    let mut s = Shard::new(BUCKET, 100_000, 1_000_000_000, 50);
    for i in 0..100_000u32 {
        s.check(&i.to_be_bytes(), 0, 0, 0, &mut out);
    }
    out.clear();
    c.bench_function("limit_check_hit_100k_keys", |b| {
        b.iter(|| {
            let r = s.check(black_box(&7u32.to_be_bytes()), 0, 1, 0, &mut out);
            black_box(r.admitted)
        })
    });
    // Miss: every check a new key into a full table of 100k (an eviction each).
    let mut n = 1_000_000u32;
    c.bench_function("limit_check_miss_evicting_100k_keys", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let r = s.check(&n.to_be_bytes(), 0, 2, 0, &mut out);
            out.clear();
            black_box(r.admitted)
        })
    });
    // Lease: the pool answers a worker's ask and the worker takes the grant.
    let p = Params::rate(1e12, 1_000_000_000, 2);
    let mut pool = Pool::new(&p, Instant::now());
    let mut replies = Replies::default();
    let mut w = Shard::new(BUCKET, 16, 0, 1000);
    c.bench_function("limit_lease_ask_and_grant", |b| {
        b.iter(|| {
            let ask = Ask {
                limit: BUCKET,
                key: b"k"[..].into(),
                epoch: 1,
                holding: 0,
                given: 0,
                want: 100,
                used: 100,
                capacity: 0,
            };
            pool.ask(&p, 0, &ask, Instant::now(), None, &mut replies);
            for (_, g) in replies.grants.drain(..) {
                let g: Grant = g;
                w.grant(&g, &mut out);
            }
            out.clear();
        })
    });
}

fn usage_record(c: &mut Criterion) {
    use sluice::usage::{UsageCounts, UsageTable};
    let mut t = UsageTable::default();
    let names: Vec<String> = (0..1000).map(|i| format!("consumer-{i}")).collect();
    let one = UsageCounts {
        requests: 1,
        admitted: 1,
        limited: 0,
        bytes_in: 120,
        bytes_out: 300,
        latency_us: 250,
    };
    for (i, n) in names.iter().enumerate() {
        t.record(Some(n), true, Some((i % 8) as u32), 200, &one);
    }
    c.bench_function("usage_record_known_consumer_1k", |b| {
        b.iter(|| {
            t.record(
                Some(black_box("consumer-517")),
                true,
                Some(5),
                200,
                black_box(&one),
            )
        })
    });
    c.bench_function("usage_record_anonymous", |b| {
        b.iter(|| t.record(None, false, Some(3), 404, black_box(&one)))
    });
}

criterion_group!(benches, limiter, usage_record);
criterion_main!(benches);
