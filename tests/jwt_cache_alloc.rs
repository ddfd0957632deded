//! A JWT cache hit allocates nothing: after one verification fills the per-worker cache, a thousand
//! more checks of the same token are counted by a global allocator that counts only while this
//! thread measures. In-process (the library, not the binary); one test per file, since the allocator
//! is process-wide.

use sluice::config::{parse, Source};
use sluice::policy::jwt::JwtState;
use sluice::snapshot::Snapshot;
use std::sync::Arc;

#[path = "common/counting.rs"]
mod counting;

#[test]
fn cache_hit_allocates_nothing() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/jwt");
    let cfg = parse(
        &format!(
            "[listeners.a]\nlisten = \"127.0.0.1:0\"\n[auth.corp]\ntype = \"jwt\"\njwks_file = \"{dir}/jwks.json\"\naudiences = [\"api\"]\n"
        ),
        Source::Embedded,
    )
    .unwrap();
    let snap = Snapshot::build(Arc::new(cfg), 1).unwrap();
    let v = &snap.jwt[0];
    let now = 1_800_000_000;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(
        &std::fs::read(format!("{dir}/rsa_private.pem")).unwrap(),
    )
    .unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = Some("rsa1".into());
    let claims =
        serde_json::json!({ "sub": "alice", "aud": "api", "exp": now + 60, "scope": "a b" });
    let token = jsonwebtoken::encode(&h, &claims, &key).unwrap();

    let mut st = JwtState::default();
    let first = st.verify(v, token.as_bytes(), now).unwrap();
    let (hits, allocs) = counting::allocations(|| {
        let mut hits = 0;
        for i in 0..1000 {
            let c = st.verify(v, token.as_bytes(), now + i % 30).unwrap();
            hits += usize::from(c.has_scope("b") && c.consumer() == Some("alice"));
        }
        hits
    });
    assert_eq!(hits, 1000);
    assert_eq!(allocs, 0, "allocations on cache hits");
    assert_eq!(first.consumer(), Some("alice"));
}
