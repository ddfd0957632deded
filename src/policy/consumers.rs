//! The consumer table a worker authenticates against: names, groups, API key digests and Basic users,
//! hashed for lookups that allocate nothing. Two tables are consulted per request: the file's (built
//! with each config generation) and the runtime one (consumers created through the admin API, built by
//! the control thread and sent whole to every worker on each change). Built off the workers; a worker
//! only reads it.

use crate::config::consumer::{Consumer, HashKind, KeyDigest};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// One consumer as a worker sees it.
#[derive(Debug)]
pub struct Entry {
    /// Its name (`X-Consumer-Id`).
    pub name: Box<str>,
    /// Its groups.
    pub groups: Box<[Box<str>]>,
    /// The groups joined with ',' (`X-Consumer-Groups`), built once.
    pub groups_header: Box<str>,
    /// A disabled consumer authenticates nobody.
    pub disabled: bool,
    /// Basic user, password hash and its kind.
    pub basic: Option<(Box<str>, Box<str>, HashKind)>,
    /// SHA-256 of the password hash string: a cached Basic verification holds it, so a changed
    /// password invalidates the cache entry without any message.
    pub basic_id: [u8; 32],
    /// `[plans.NAME]`, looked up by name in the generation a request runs on, so a reload that
    /// changes a plan applies to runtime consumers without rebuilding their table.
    pub plan: Option<Box<str>>,
    /// The consumer's own quota fields, over its plan's.
    pub quota: Option<crate::config::limits::QuotaSpec>,
}

impl Entry {
    /// Whether `allow` (consumer and group names) admits this consumer.
    pub fn allowed_by(&self, allow: &[String]) -> bool {
        allow
            .iter()
            .any(|a| **a == *self.name || self.groups.iter().any(|g| **g == **a))
    }
}

#[derive(Debug, Clone, Copy)]
struct KeyEntry {
    consumer: u32,
    /// Unix seconds after which the key no longer works (a rotated key's grace).
    expires: Option<u64>,
}

/// A consumer to add to a table (the runtime table's rows, or a file consumer).
pub struct NewConsumer<'a> {
    pub name: &'a str,
    pub groups: &'a [String],
    pub disabled: bool,
    /// Key digests with their expiry.
    pub keys: &'a [([u8; 32], Option<u64>)],
    pub basic: Option<(&'a str, &'a str, HashKind)>,
    pub plan: Option<&'a str>,
    pub quota: Option<crate::config::limits::QuotaSpec>,
}

/// A table of consumers.
#[derive(Debug, Default)]
pub struct ConsumerSet {
    entries: Vec<Entry>,
    keys: HashMap<[u8; 32], KeyEntry, ahash::RandomState>,
    users: HashMap<Box<[u8]>, u32, ahash::RandomState>,
    names: HashMap<Box<str>, u32, ahash::RandomState>,
    /// Client certificate SANs and subjects (normalised) of the file's consumers.
    cert_sans: HashMap<Box<str>, u32, ahash::RandomState>,
    cert_subjects: HashMap<Box<str>, u32, ahash::RandomState>,
}

impl ConsumerSet {
    /// The file's consumers.
    pub fn from_config(consumers: &[Consumer]) -> ConsumerSet {
        let mut set = ConsumerSet::default();
        for c in consumers {
            let keys: Vec<([u8; 32], Option<u64>)> =
                c.api_keys.iter().map(|KeyDigest(d)| (*d, None)).collect();
            set.push(NewConsumer {
                name: &c.name,
                groups: &c.groups,
                disabled: false,
                keys: &keys,
                basic: c
                    .basic
                    .as_ref()
                    .map(|b| (b.user.as_str(), b.password_hash.as_str(), b.kind)),
                plan: c.plan.as_deref(),
                quota: c.quota,
            });
            if let Some(i) = set.by_name(&c.name) {
                for san in &c.mtls_sans {
                    set.cert_sans.entry(san.as_str().into()).or_insert(i);
                }
                for sub in &c.mtls_subjects {
                    set.cert_subjects.entry(sub.as_str().into()).or_insert(i);
                }
            }
        }
        set
    }

    /// The consumer a verified client certificate names: its first SAN that a consumer lists, else
    /// its subject.
    pub fn by_certificate(&self, id: &crate::tls::identity::PeerIdentity) -> Option<u32> {
        id.sans
            .iter()
            .find_map(|s| self.cert_sans.get(&**s).copied())
            .or_else(|| self.cert_subjects.get(&*id.subject).copied())
    }

    /// Adds a consumer. A name, key or user already in the table is skipped for the newcomer (the
    /// file's validation and the admin API both refuse duplicates before they get here).
    pub fn push(&mut self, c: NewConsumer<'_>) {
        if self.names.contains_key(c.name) {
            return;
        }
        let idx = self.entries.len() as u32;
        for (d, expires) in c.keys {
            self.keys.entry(*d).or_insert(KeyEntry {
                consumer: idx,
                expires: *expires,
            });
        }
        let mut basic_id = [0u8; 32];
        if let Some((user, hash, _)) = c.basic {
            basic_id = Sha256::digest(hash.as_bytes()).into();
            self.users.entry(user.as_bytes().into()).or_insert(idx);
        }
        self.names.insert(c.name.into(), idx);
        self.entries.push(Entry {
            name: c.name.into(),
            groups: c.groups.iter().map(|g| g.as_str().into()).collect(),
            groups_header: c.groups.join(",").into(),
            disabled: c.disabled,
            basic: c.basic.map(|(u, h, k)| (u.into(), h.into(), k)),
            basic_id,
            plan: c.plan.map(Into::into),
            quota: c.quota,
        });
    }

    /// The consumer holding the key with digest `d`, if the key is valid at `now_unix`.
    pub fn by_key(&self, d: &[u8; 32], now_unix: u64) -> Option<u32> {
        let k = self.keys.get(d)?;
        match k.expires {
            Some(t) if now_unix >= t => None,
            _ => Some(k.consumer),
        }
    }

    /// The stored digest and consumer for `d`, if the key is valid at `now_unix`.
    pub fn by_key_digest(&self, d: &[u8; 32], now_unix: u64) -> Option<(&[u8; 32], u32)> {
        let (stored, k) = self.keys.get_key_value(d)?;
        match k.expires {
            Some(t) if now_unix >= t => None,
            _ => Some((stored, k.consumer)),
        }
    }

    /// The consumer with Basic user `user`.
    pub fn by_user(&self, user: &[u8]) -> Option<u32> {
        self.users.get(user).copied()
    }

    /// The consumer named `name`.
    pub fn by_name(&self, name: &str) -> Option<u32> {
        self.names.get(name).copied()
    }

    /// Consumer `i`.
    pub fn get(&self, i: u32) -> Option<&Entry> {
        self.entries.get(i as usize)
    }

    /// Number of consumers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No consumers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_expire_and_names_are_unique() {
        let mut s = ConsumerSet::default();
        let g = vec!["gold".to_string()];
        s.push(NewConsumer {
            name: "a",
            groups: &g,
            disabled: false,
            keys: &[([1; 32], None), ([2; 32], Some(100))],
            basic: None,
            plan: None,
            quota: None,
        });
        s.push(NewConsumer {
            name: "a",
            groups: &[],
            disabled: false,
            keys: &[([3; 32], None)],
            basic: None,
            plan: None,
            quota: None,
        });
        assert_eq!(s.len(), 1);
        assert_eq!(s.by_key(&[1; 32], 1_000), Some(0));
        assert_eq!(s.by_key(&[2; 32], 99), Some(0));
        assert_eq!(s.by_key(&[2; 32], 100), None);
        assert_eq!(s.by_key(&[3; 32], 0), None);
        let e = s.get(0).unwrap();
        assert_eq!(&*e.groups_header, "gold");
        assert!(e.allowed_by(&["gold".into()]));
        assert!(e.allowed_by(&["a".into()]));
        assert!(!e.allowed_by(&["silver".into(), "b".into()]));
    }
}
