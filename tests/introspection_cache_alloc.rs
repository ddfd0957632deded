//! An introspection cache hit allocates nothing: after one answer fills the per-worker cache, a
//! thousand more lookups of the same token (the b64token check, the SHA-256 key, the map, the `Rc`
//! of the claims, the scope and consumer reads the access rules make) are counted by a global
//! allocator that counts only while this thread measures. In-process (the library, not the binary);
//! one test per file, since the allocator is process-wide.

use sluice::policy::introspection::client::{parse, Reply};
use sluice::policy::introspection::{cache_until, cached, Answer, AnswerCache};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

#[path = "common/counting.rs"]
mod counting;

#[test]
fn cache_hit_allocates_nothing() {
    let exp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 600;
    let body = format!(r#"{{"active":true,"sub":"alice","exp":{exp},"scope":"a b"}}"#);
    let Ok(Reply::Active(claims)) = parse(body.as_bytes(), "sub") else {
        panic!("active answer");
    };
    let answer = Answer::Active(Rc::new(claims));
    let token = b"2YotnFZFEjr1zCsicMWpAA-._~+/==";
    let (generation, auth) = (7, 2);
    let now = Instant::now();
    let until = cache_until(
        &answer,
        Duration::from_secs(60),
        None,
        now,
        SystemTime::now(),
    )
    .expect("cached");
    let mut cache = AnswerCache::default();
    let (key, miss) = cached(&cache, generation, auth, token, now).expect("a b64token");
    assert!(miss.is_none());
    cache.put(key, until, &answer);

    let (hits, allocs) = counting::allocations(|| {
        let mut hits = 0;
        for _ in 0..1000 {
            let hit = cached(&cache, generation, auth, token, Instant::now());
            if let Some((_, Some(Answer::Active(c)))) = hit {
                hits += usize::from(
                    c.has_scope("b") && c.consumer() == Some("alice") && c.exp() == exp,
                );
            }
        }
        hits
    });
    assert_eq!(hits, 1000);
    assert_eq!(allocs, 0, "allocations on cache hits");
}
