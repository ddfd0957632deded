//! A JWT cache hit allocates nothing: after one verification fills the per-worker cache, a thousand
//! more checks of the same token are counted by a global allocator that counts only while this
//! thread measures. In-process (the library, not the binary); one test per file, since the allocator
//! is process-wide.

use sluice::config::{parse, Source};
use sluice::policy::jwt::JwtState;
use sluice::snapshot::Snapshot;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

struct Counting;

// SAFETY: every call is passed to the system allocator unchanged; the counter is an atomic add and
// the flag a const-initialised thread-local, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if MEASURING.with(Cell::get) {
            ALLOCS.fetch_add(1, Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if MEASURING.with(Cell::get) {
            ALLOCS.fetch_add(1, Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
    MEASURING.with(|m| m.set(true));
    let mut hits = 0;
    for i in 0..1000 {
        let c = st.verify(v, token.as_bytes(), now + i % 30).unwrap();
        hits += usize::from(c.has_scope("b") && c.consumer() == Some("alice"));
    }
    MEASURING.with(|m| m.set(false));
    assert_eq!(hits, 1000);
    assert_eq!(ALLOCS.load(Relaxed), 0, "allocations on cache hits");
    assert_eq!(first.consumer(), Some("alice"));
}
