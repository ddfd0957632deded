//! The runtime consumer database: one SQLite file (`[state] path`) with a `consumers` and a `keys`
//! table, schema versioned by `PRAGMA user_version`. WAL with `synchronous = FULL`: a change the admin
//! API acknowledges has been committed and fsynced, so it survives `kill -9` and power loss. Only API key
//! digests are stored, never a key. Used only off the workers (main thread at start, then the control
//! thread).

use crate::policy::consumers::{ConsumerSet, NewConsumer};
use indexmap::IndexMap;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};

/// The schema this build writes. A database from a newer build is refused rather than misread.
const SCHEMA_VERSION: i64 = 2;

/// What takes a version-1 database (before plans) to this schema.
const MIGRATE_1_2: &str = "
ALTER TABLE consumers ADD COLUMN plan TEXT;
ALTER TABLE consumers ADD COLUMN quota TEXT;
";

const SCHEMA: &str = "
CREATE TABLE consumers (
    name     TEXT PRIMARY KEY NOT NULL,
    groups   TEXT NOT NULL,            -- JSON array of strings
    metadata TEXT NOT NULL,            -- JSON object of strings
    disabled INTEGER NOT NULL DEFAULT 0,
    created  INTEGER NOT NULL,         -- unix seconds
    plan     TEXT,                     -- a [plans.NAME] of the config; NULL = none
    quota    TEXT                      -- JSON {requests, bytes, period} over the plan's; NULL = none
);
CREATE TABLE keys (
    id       TEXT PRIMARY KEY NOT NULL,
    consumer TEXT NOT NULL REFERENCES consumers(name) ON DELETE CASCADE,
    digest   BLOB NOT NULL UNIQUE,     -- SHA-256 of the key
    created  INTEGER NOT NULL,
    expires  INTEGER                   -- unix seconds; NULL = no expiry
);
CREATE INDEX keys_by_consumer ON keys(consumer);
";

/// A connection to the state database as every user of it opens one (the consumer store, the usage
/// ledger): WAL, so readers never block the writer; `synchronous = FULL`, so each commit is fsynced
/// before it is acknowledged; a short busy timeout, as two connections of the control thread share it.
pub fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(2))?;
    Ok(conn)
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The parent directory could not be created.
    #[error("state database {path}: cannot create its directory: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was written by a newer sluice.
    #[error(
        "state database {path}: schema version {found} is newer than this build's {SCHEMA_VERSION}"
    )]
    Schema { path: PathBuf, found: i64 },
    /// A stored row does not parse (hand-edited or damaged).
    #[error("state database {path}: consumer {name}: {what}")]
    Row {
        path: PathBuf,
        name: String,
        what: &'static str,
    },
}

/// One key of a runtime consumer.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub id: String,
    pub digest: [u8; 32],
    pub created: u64,
    pub expires: Option<u64>,
}

/// One runtime consumer with its keys.
#[derive(Debug, Clone)]
pub struct ConsumerRow {
    pub name: String,
    pub groups: Vec<String>,
    pub metadata: IndexMap<String, String>,
    pub disabled: bool,
    pub created: u64,
    pub keys: Vec<KeyRow>,
    /// `[plans.NAME]` it is on.
    pub plan: Option<String>,
    /// Its own quota fields, over the plan's.
    pub quota: Option<crate::config::limits::QuotaSpec>,
}

/// A quota as the `quota` column keeps it (the fields set only).
fn quota_text(q: &crate::config::limits::QuotaSpec) -> String {
    let mut o = serde_json::Map::new();
    if let Some(r) = q.requests {
        o.insert("requests".into(), r.into());
    }
    if let Some(b) = q.bytes {
        o.insert("bytes".into(), b.into());
    }
    if let Some(p) = q.period {
        o.insert("period".into(), p.as_str().into());
    }
    serde_json::Value::Object(o).to_string()
}

fn quota_from_text(s: &str) -> Option<crate::config::limits::QuotaSpec> {
    let t: crate::config::limits::QuotaToml = serde_json::from_str(s).ok()?;
    crate::config::limits::QuotaSpec::from_toml(&t).ok()
}

/// The groups and metadata columns of a row.
fn row_json(r: &ConsumerRow) -> (String, String) {
    (
        serde_json::to_string(&r.groups).unwrap_or_else(|_| "[]".into()),
        serde_json::to_string(&r.metadata).unwrap_or_else(|_| "{}".into()),
    )
}

/// A change to a consumer: each field set replaces the stored one.
#[derive(Debug, Default)]
pub struct ConsumerChange {
    pub groups: Option<Vec<String>>,
    pub metadata: Option<IndexMap<String, String>>,
    pub disabled: Option<bool>,
    /// `Some(None)` removes the plan.
    pub plan: Option<Option<String>>,
    /// `Some(None)` removes the override.
    pub quota: Option<Option<crate::config::limits::QuotaSpec>>,
}

/// The open database plus the rows it holds (read once at open, then kept in step with each
/// committed change, so answering a GET or building a table never reads the file).
pub struct ConsumerStore {
    path: PathBuf,
    conn: Connection,
    rows: IndexMap<String, ConsumerRow>,
}

impl ConsumerStore {
    /// Opens (creating it and its directory on first use) and reads the database.
    pub fn open(path: &Path) -> Result<ConsumerStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let sq = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = open_connection(path).map_err(sq)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(sq)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sq)?;
        match version {
            0 => {
                conn.execute_batch(&format!(
                    "BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                ))
                .map_err(sq)?;
            }
            1 => {
                conn.execute_batch(&format!(
                    "BEGIN; {MIGRATE_1_2} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                ))
                .map_err(sq)?;
            }
            SCHEMA_VERSION => {}
            found => {
                return Err(StoreError::Schema {
                    path: path.to_path_buf(),
                    found,
                })
            }
        }
        let mut store = ConsumerStore {
            path: path.to_path_buf(),
            conn,
            rows: IndexMap::new(),
        };
        store.rows = store.read_all()?;
        Ok(store)
    }

    /// What `--check` can tell without creating anything: an existing file opens read-only as a
    /// state database of a known schema; otherwise the nearest existing parent is a directory.
    pub fn check(path: &Path) -> Result<(), StoreError> {
        let sq = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        if path.exists() {
            let conn =
                Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .map_err(sq)?;
            let found: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(sq)?;
            if found > SCHEMA_VERSION {
                return Err(StoreError::Schema {
                    path: path.to_path_buf(),
                    found,
                });
            }
            return Ok(());
        }
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            if d.exists() {
                if d.is_dir() {
                    return Ok(());
                }
                return Err(StoreError::Dir {
                    path: path.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotADirectory,
                        format!("{} is not a directory", d.display()),
                    ),
                });
            }
            dir = d.parent();
        }
        Ok(())
    }

    fn sq(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn read_all(&self) -> Result<IndexMap<String, ConsumerRow>, StoreError> {
        let mut rows = IndexMap::new();
        let mut q = self
            .conn
            .prepare("SELECT name, groups, metadata, disabled, created, plan, quota FROM consumers ORDER BY created, name")
            .map_err(|e| self.sq(e))?;
        let it = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })
            .map_err(|e| self.sq(e))?;
        for row in it {
            let (name, groups, metadata, disabled, created, plan, quota) =
                row.map_err(|e| self.sq(e))?;
            let bad = |what| StoreError::Row {
                path: self.path.clone(),
                name: name.clone(),
                what,
            };
            let groups: Vec<String> =
                serde_json::from_str(&groups).map_err(|_| bad("groups is not a JSON array"))?;
            let metadata: IndexMap<String, String> = serde_json::from_str(&metadata)
                .map_err(|_| bad("metadata is not a JSON object of strings"))?;
            let quota = match quota {
                None => None,
                Some(q) => {
                    Some(quota_from_text(&q).ok_or_else(|| bad("quota is not a valid quota"))?)
                }
            };
            rows.insert(
                name.clone(),
                ConsumerRow {
                    name,
                    groups,
                    metadata,
                    disabled,
                    created: created.max(0) as u64,
                    keys: Vec::new(),
                    plan,
                    quota,
                },
            );
        }
        let mut q = self
            .conn
            .prepare("SELECT id, consumer, digest, created, expires FROM keys ORDER BY created, id")
            .map_err(|e| self.sq(e))?;
        let it = q
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })
            .map_err(|e| self.sq(e))?;
        for row in it {
            let (id, consumer, digest, created, expires) = row.map_err(|e| self.sq(e))?;
            let digest: [u8; 32] = digest.try_into().map_err(|_| StoreError::Row {
                path: self.path.clone(),
                name: consumer.clone(),
                what: "a key digest is not 32 bytes",
            })?;
            if let Some(c) = rows.get_mut(&consumer) {
                c.keys.push(KeyRow {
                    id,
                    digest,
                    created: created.max(0) as u64,
                    expires: expires.map(|e| e.max(0) as u64),
                });
            }
        }
        Ok(rows)
    }

    /// The consumers, oldest first.
    pub fn rows(&self) -> impl Iterator<Item = &ConsumerRow> {
        self.rows.values()
    }

    /// The consumer named `name`.
    pub fn get(&self, name: &str) -> Option<&ConsumerRow> {
        self.rows.get(name)
    }

    /// A worker's table of every runtime consumer (each worker gets its own, built here).
    pub fn table(&self) -> ConsumerSet {
        let mut set = ConsumerSet::default();
        for c in self.rows.values() {
            let keys: Vec<([u8; 32], Option<u64>)> =
                c.keys.iter().map(|k| (k.digest, k.expires)).collect();
            set.push(NewConsumer {
                name: &c.name,
                groups: &c.groups,
                disabled: c.disabled,
                keys: &keys,
                basic: None,
                plan: c.plan.as_deref(),
                quota: c.quota,
            });
        }
        set
    }

    /// Inserts a new consumer with the fields `c` sets (the rest empty); the caller has checked the
    /// name is free.
    pub fn create(
        &mut self,
        name: &str,
        c: ConsumerChange,
        now: u64,
    ) -> Result<&ConsumerRow, StoreError> {
        let row = ConsumerRow {
            name: name.to_string(),
            groups: c.groups.unwrap_or_default(),
            metadata: c.metadata.unwrap_or_default(),
            disabled: c.disabled.unwrap_or(false),
            created: now,
            keys: Vec::new(),
            plan: c.plan.flatten(),
            quota: c.quota.flatten(),
        };
        let (g, m) = row_json(&row);
        self.conn
            .execute(
                "INSERT INTO consumers (name, groups, metadata, disabled, created, plan, quota)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    name,
                    g,
                    m,
                    row.disabled,
                    now as i64,
                    row.plan,
                    row.quota.as_ref().map(quota_text)
                ],
            )
            .map_err(|e| self.sq(e))?;
        Ok(self.rows.entry(name.to_string()).or_insert(row))
    }

    /// Changes the fields `c` sets of an existing consumer.
    pub fn update(
        &mut self,
        name: &str,
        c: ConsumerChange,
    ) -> Result<Option<&ConsumerRow>, StoreError> {
        let Some(cur) = self.rows.get(name) else {
            return Ok(None);
        };
        let mut row = cur.clone();
        if let Some(g) = c.groups {
            row.groups = g;
        }
        if let Some(m) = c.metadata {
            row.metadata = m;
        }
        if let Some(d) = c.disabled {
            row.disabled = d;
        }
        if let Some(p) = c.plan {
            row.plan = p;
        }
        if let Some(q) = c.quota {
            row.quota = q;
        }
        let (g, m) = row_json(&row);
        self.conn
            .execute(
                "UPDATE consumers SET groups = ?2, metadata = ?3, disabled = ?4, plan = ?5, quota = ?6
                 WHERE name = ?1",
                params![
                    name,
                    g,
                    m,
                    row.disabled,
                    row.plan,
                    row.quota.as_ref().map(quota_text)
                ],
            )
            .map_err(|e| self.sq(e))?;
        let Some(slot) = self.rows.get_mut(name) else {
            return Ok(None);
        };
        *slot = row;
        Ok(Some(slot))
    }

    /// Deletes a consumer and its keys; false if there was none.
    pub fn delete(&mut self, name: &str) -> Result<bool, StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.sq(e))?;
        tx.execute("DELETE FROM keys WHERE consumer = ?1", params![name])
            .map_err(|e| self.sq(e))?;
        let n = tx
            .execute("DELETE FROM consumers WHERE name = ?1", params![name])
            .map_err(|e| self.sq(e))?;
        tx.commit().map_err(|e| self.sq(e))?;
        Ok(self.rows.shift_remove(name).is_some() || n > 0)
    }

    /// Adds a key (by digest) to an existing consumer.
    pub fn add_key(
        &mut self,
        name: &str,
        id: &str,
        digest: [u8; 32],
        now: u64,
    ) -> Result<bool, StoreError> {
        if !self.rows.contains_key(name) {
            return Ok(false);
        }
        self.conn
            .execute(
                "INSERT INTO keys (id, consumer, digest, created, expires) VALUES (?1, ?2, ?3, ?4, NULL)",
                params![id, name, &digest[..], now as i64],
            )
            .map_err(|e| self.sq(e))?;
        if let Some(c) = self.rows.get_mut(name) {
            c.keys.push(KeyRow {
                id: id.to_string(),
                digest,
                created: now,
                expires: None,
            });
        }
        Ok(true)
    }

    /// Replaces key `old` with a new one in one transaction: the old key expires at `old_expires`
    /// (or is deleted at once when that is `None`).
    pub fn rotate(
        &mut self,
        name: &str,
        old: &str,
        new_id: &str,
        digest: [u8; 32],
        now: u64,
        old_expires: Option<u64>,
    ) -> Result<bool, StoreError> {
        let exists = self
            .rows
            .get(name)
            .is_some_and(|c| c.keys.iter().any(|k| k.id == old));
        if !exists {
            return Ok(false);
        }
        let tx = self.conn.unchecked_transaction().map_err(|e| self.sq(e))?;
        match old_expires {
            Some(t) => tx.execute(
                "UPDATE keys SET expires = ?3 WHERE id = ?1 AND consumer = ?2",
                params![old, name, t as i64],
            ),
            None => tx.execute(
                "DELETE FROM keys WHERE id = ?1 AND consumer = ?2",
                params![old, name],
            ),
        }
        .map_err(|e| self.sq(e))?;
        tx.execute(
            "INSERT INTO keys (id, consumer, digest, created, expires) VALUES (?1, ?2, ?3, ?4, NULL)",
            params![new_id, name, &digest[..], now as i64],
        )
        .map_err(|e| self.sq(e))?;
        tx.commit().map_err(|e| self.sq(e))?;
        if let Some(c) = self.rows.get_mut(name) {
            match old_expires {
                Some(t) => {
                    if let Some(k) = c.keys.iter_mut().find(|k| k.id == old) {
                        k.expires = Some(t);
                    }
                }
                None => c.keys.retain(|k| k.id != old),
            }
            c.keys.push(KeyRow {
                id: new_id.to_string(),
                digest,
                created: now,
                expires: None,
            });
        }
        Ok(true)
    }

    /// Deletes key `id` of consumer `name`; false if there was none.
    pub fn revoke(&mut self, name: &str, id: &str) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "DELETE FROM keys WHERE id = ?1 AND consumer = ?2",
                params![id, name],
            )
            .map_err(|e| self.sq(e))?;
        if let Some(c) = self.rows.get_mut(name) {
            c.keys.retain(|k| k.id != id);
        }
        Ok(n > 0)
    }

    /// Deletes keys whose grace ended at or before `now`; returns how many went.
    pub fn purge_expired(&mut self, now: u64) -> Result<usize, StoreError> {
        let n = self
            .conn
            .execute(
                "DELETE FROM keys WHERE expires IS NOT NULL AND expires <= ?1",
                params![now as i64],
            )
            .map_err(|e| self.sq(e))?;
        for c in self.rows.values_mut() {
            c.keys.retain(|k| k.expires.is_none_or(|t| t > now));
        }
        Ok(n)
    }

    /// Whether a key id is taken (ids are random; a clash is retried).
    pub fn key_id_taken(&self, id: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row("SELECT 1 FROM keys WHERE id = ?1", params![id], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| self.sq(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sluice-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d.join("sub").join("state.db")
    }

    #[test]
    fn survives_reopen_and_rotates() {
        let p = tmp("reopen");
        {
            let mut s = ConsumerStore::open(&p).unwrap();
            let c = ConsumerChange {
                groups: Some(vec!["gold".into()]),
                plan: Some(Some("gold".into())),
                quota: Some(Some(crate::config::limits::QuotaSpec {
                    requests: Some(5),
                    bytes: Some(1 << 30),
                    period: Some(crate::config::limits::Period::Day),
                })),
                ..Default::default()
            };
            s.create("carol", c, 10).unwrap();
            assert!(s.add_key("carol", "k1", [1; 32], 10).unwrap());
            assert!(s
                .rotate("carol", "k1", "k2", [2; 32], 11, Some(20))
                .unwrap());
            assert!(!s.add_key("nobody", "k3", [3; 32], 10).unwrap());
        }
        let mut s = ConsumerStore::open(&p).unwrap();
        let c = s.get("carol").unwrap();
        assert_eq!(c.groups, vec!["gold".to_string()]);
        assert_eq!(c.keys.len(), 2);
        assert_eq!(c.plan.as_deref(), Some("gold"));
        assert_eq!(c.quota.and_then(|q| q.bytes), Some(1 << 30));
        let t = s.table();
        assert_eq!(t.by_key(&[1; 32], 19), Some(0));
        assert_eq!(t.by_key(&[1; 32], 20), None);
        assert_eq!(t.by_key(&[2; 32], 1000), Some(0));
        assert_eq!(s.purge_expired(20).unwrap(), 1);
        assert!(s.revoke("carol", "k2").unwrap());
        assert!(s.get("carol").unwrap().keys.is_empty());
        let off = ConsumerChange {
            disabled: Some(true),
            plan: Some(None),
            ..Default::default()
        };
        s.update("carol", off).unwrap();
        assert!(s.table().get(0).unwrap().disabled);
        assert!(s.table().get(0).unwrap().plan.is_none());
        assert_eq!(
            s.get("carol").unwrap().quota.and_then(|q| q.requests),
            Some(5)
        );
        assert!(s.delete("carol").unwrap());
        assert!(ConsumerStore::open(&p).unwrap().get("carol").is_none());
    }

    #[test]
    fn a_version_1_database_gains_plans() {
        let p = tmp("v1");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let old = Connection::open(&p).unwrap();
        old.execute_batch(
            "CREATE TABLE consumers (name TEXT PRIMARY KEY NOT NULL, groups TEXT NOT NULL,
                 metadata TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL);
             CREATE TABLE keys (id TEXT PRIMARY KEY NOT NULL,
                 consumer TEXT NOT NULL REFERENCES consumers(name) ON DELETE CASCADE,
                 digest BLOB NOT NULL UNIQUE, created INTEGER NOT NULL, expires INTEGER);
             INSERT INTO consumers VALUES ('dan', '[]', '{}', 0, 5);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(old);
        let mut s = ConsumerStore::open(&p).unwrap();
        assert!(s.get("dan").unwrap().plan.is_none());
        let c = ConsumerChange {
            plan: Some(Some("gold".into())),
            ..Default::default()
        };
        s.update("dan", c).unwrap();
        drop(s);
        let s = ConsumerStore::open(&p).unwrap();
        assert_eq!(s.get("dan").unwrap().plan.as_deref(), Some("gold"));
    }

    #[test]
    fn refuses_a_newer_schema_and_garbage() {
        let p = tmp("schema");
        drop(ConsumerStore::open(&p).unwrap());
        Connection::open(&p)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            ConsumerStore::open(&p),
            Err(StoreError::Schema { found: 99, .. })
        ));
        assert!(ConsumerStore::check(&p).is_err());
        let g = tmp("garbage");
        std::fs::create_dir_all(g.parent().unwrap()).unwrap();
        std::fs::write(&g, vec![0x55u8; 8192]).unwrap();
        assert!(ConsumerStore::open(&g).is_err());
        assert!(ConsumerStore::check(&g).is_err());
        assert!(ConsumerStore::check(&g.join("below-a-file.db")).is_err());
        assert!(ConsumerStore::check(&tmp("fresh")).is_ok());
    }
}
