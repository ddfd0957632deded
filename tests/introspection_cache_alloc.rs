//! An introspection cache hit allocates nothing: after one answer fills the per-worker cache, a
//! thousand more lookups of the same token (the b64token check, the SHA-256 key, the map, the `Rc`
//! of the claims, the scope and consumer reads the access rules make) are counted by a global
//! allocator that counts only while this thread measures. In-process (the library, not the binary);
//! one test per file, since the allocator is process-wide.

use sluice::policy::introspection::client::{parse, Reply};
use sluice::policy::introspection::{cache_until, cached, Answer, AnswerCache};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

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

    MEASURING.with(|m| m.set(true));
    let mut hits = 0;
    for _ in 0..1000 {
        let hit = cached(&cache, generation, auth, token, Instant::now());
        if let Some((_, Some(Answer::Active(c)))) = hit {
            hits +=
                usize::from(c.has_scope("b") && c.consumer() == Some("alice") && c.exp() == exp);
        }
    }
    MEASURING.with(|m| m.set(false));
    assert_eq!(hits, 1000);
    assert_eq!(ALLOCS.load(Relaxed), 0, "allocations on cache hits");
}
