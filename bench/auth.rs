//! Micro-benchmarks of the authentication checks a route runs per request: the API key (read, hash,
//! look up among 10,000 consumers), Basic cached and uncached (argon2id at the crate's default cost,
//! bcrypt at cost 10), and the allow list.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sluice::config::consumer::ApiKeySource;
use sluice::http1::head::{Limits, RequestHead};
use sluice::policy::auth_state::AuthState;
use sluice::policy::consumers::{ConsumerSet, NewConsumer};
use sluice::policy::{api_key, basic, hasher};

const LIMITS: Limits = Limits {
    max_header_bytes: 65536,
    max_headers: 100,
    max_uri_bytes: 8192,
};

fn head(req: &[u8]) -> RequestHead {
    let mut h = RequestHead::default();
    let mut buf = BytesMut::from(req);
    h.parse(&mut buf, &LIMITS).expect("parse");
    h
}

fn digest(k: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(k.as_bytes()).into()
}

fn consumers(argon: &str, bcrypt: &str) -> ConsumerSet {
    let mut set = ConsumerSet::default();
    let groups = vec!["silver".to_string(), "gold".to_string()];
    for i in 0..10_000 {
        let name = format!("consumer-{i}");
        set.push(NewConsumer {
            name: &name,
            groups: &groups,
            disabled: false,
            keys: &[(digest(&format!("key-{i:08}")), None)],
            basic: None,
            plan: None,
            quota: None,
        });
    }
    set.push(NewConsumer {
        name: "alice",
        groups: &groups,
        disabled: false,
        keys: &[],
        basic: Some(("alice", argon, sluice::config::consumer::HashKind::Argon2)),
        plan: None,
        quota: None,
    });
    set.push(NewConsumer {
        name: "bob",
        groups: &groups,
        disabled: false,
        keys: &[],
        basic: Some(("bob", bcrypt, sluice::config::consumer::HashKind::Bcrypt)),
        plan: None,
        quota: None,
    });
    set
}

fn bench_auth(c: &mut Criterion) {
    use argon2::password_hash::PasswordHasher;
    let argon: argon2::PasswordHash = argon2::Argon2::default()
        .hash_password_with_salt(b"wonderland", b"sluice-bench-salt")
        .expect("argon2");
    let argon = argon.to_string();
    let bcrypt = bcrypt::hash("builder", 10).expect("bcrypt");
    let set = consumers(&argon, &bcrypt);
    let src = ApiKeySource {
        header: "x-api-key".into(),
        query: None,
    };
    let keyed = head(b"GET /v1/orders HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\nX-API-Key: key-00004711\r\n\r\n");
    c.bench_function("api_key_10k_consumers", |b| {
        b.iter(|| match api_key::presented(black_box(&keyed), &src) {
            api_key::Presented::Key(d, _) => black_box(api_key::lookup(&set, &d, 1)),
            _ => None,
        })
    });

    let st = AuthState::default();
    let alice = set.by_user(b"alice").expect("alice");
    let bob = set.by_user(b"bob").expect("bob");
    let basic_req = head(b"GET /v1/orders HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Basic YWxpY2U6d29uZGVybGFuZA==\r\n\r\n");
    let check = |st: &AuthState, i: u32| {
        let mut buf = basic::buffer();
        match basic::presented(&basic_req, &mut buf) {
            basic::Presented::Credential { user, password } => {
                match basic::check(st, &set, i, user, password) {
                    basic::Check::Cached => true,
                    basic::Check::Hash { cred, hash_id, job } => {
                        let ok = hasher::check(&job);
                        if ok {
                            st.basic_remember(cred, hash_id);
                        }
                        ok
                    }
                    basic::Check::NoPassword => false,
                }
            }
            _ => false,
        }
    };
    assert!(check(&st, alice));
    c.bench_function("basic_cached", |b| b.iter(|| black_box(check(&st, alice))));
    // Uncached: the hash alone, as a hashing thread runs it (off the worker).
    let mut g = c.benchmark_group("basic_uncached");
    g.sample_size(10);
    g.bench_function("argon2id_default", |b| {
        b.iter(|| black_box(check(&AuthState::default(), alice)))
    });
    let bob_job = hasher::Job {
        kind: sluice::config::consumer::HashKind::Bcrypt,
        hash: bcrypt.clone().into(),
        password: b"builder".to_vec(),
    };
    let _ = bob;
    g.bench_function("bcrypt_cost_10", |b| {
        b.iter(|| black_box(hasher::check(&bob_job)))
    });
    g.finish();

    let entry = set.get(4711).expect("entry");
    let allow: Vec<String> = vec!["bronze".into(), "partner".into(), "gold".into()];
    c.bench_function("allow_list_3_names", |b| {
        b.iter(|| black_box(entry.allowed_by(black_box(&allow))))
    });
}

criterion_group!(benches, bench_auth);
criterion_main!(benches);
