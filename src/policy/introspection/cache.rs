//! A worker's cache of introspection answers, so the endpoint is asked once per token and worker
//! rather than per request. Keyed by `super::cache_key` (a SHA-256: the token is not kept, and a
//! digest match is the token's); an entry is good until the instant `super::cache_until` gave it,
//! never past the token's `exp`. Bounded like the JWT cache. A hit allocates nothing: the key is on
//! the stack and the claims are an `Rc`.

use super::Answer;
use crate::policy::jwt::cache::make_room;
use crate::policy::jwt::Claims;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

/// Entries a worker keeps.
pub const CAPACITY: usize = 4096;

struct Entry {
    until: Instant,
    /// None: the token was inactive.
    active: Option<Rc<Claims>>,
}

/// One worker's answers. Not `Send`.
pub struct AnswerCache {
    map: HashMap<[u8; 32], Entry, ahash::RandomState>,
    capacity: usize,
}

impl Default for AnswerCache {
    fn default() -> Self {
        AnswerCache::new(CAPACITY)
    }
}

impl AnswerCache {
    /// Empty, holding at most `capacity` answers.
    pub fn new(capacity: usize) -> AnswerCache {
        AnswerCache {
            map: HashMap::default(),
            capacity: capacity.max(1),
        }
    }

    /// The answer for `key`, if still fresh at `now`.
    pub fn get(&self, key: &[u8; 32], now: Instant) -> Option<Answer> {
        let e = self.map.get(key).filter(|e| now < e.until)?;
        Some(match &e.active {
            Some(c) => Answer::Active(c.clone()),
            None => Answer::Inactive,
        })
    }

    /// Keeps `answer` until `until` (an unavailable answer is never kept).
    pub fn put(&mut self, key: [u8; 32], until: Instant, answer: &Answer) {
        let active = match answer {
            Answer::Active(c) => Some(c.clone()),
            Answer::Inactive => None,
            Answer::Unavailable => return,
        };
        let now = Instant::now();
        make_room(&mut self.map, self.capacity, |e| now < e.until);
        self.map.insert(key, Entry { until, active });
    }

    /// Answers held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fresh_until_the_instant_then_gone_and_bounded() {
        let mut c = AnswerCache::new(4);
        let now = Instant::now();
        c.put([1; 32], now + Duration::from_secs(5), &Answer::Inactive);
        c.put([2; 32], now + Duration::from_secs(5), &Answer::Unavailable);
        assert!(matches!(c.get(&[1; 32], now), Some(Answer::Inactive)));
        assert!(c.get(&[1; 32], now + Duration::from_secs(5)).is_none());
        assert!(c.get(&[2; 32], now).is_none(), "unavailable is never kept");
        for i in 0..20u8 {
            c.put([i; 32], now + Duration::from_secs(60), &Answer::Inactive);
        }
        assert!(c.len() <= 4, "{}", c.len());
        assert!(c.get(&[19; 32], now).is_some(), "the newest is kept");
    }
}
