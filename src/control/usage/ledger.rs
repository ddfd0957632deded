//! The usage ledger: every worker's usage rows (`StatsDelta::usage`) summed on the control thread and
//! written to the state database once per `flush_interval`, in one transaction, into three tables of
//! the same shape: per UTC minute (analytics), per UTC day and per UTC month (billing). A bucket is the
//! minute the control thread received the row in (workers report every second). WAL with
//! `synchronous = FULL`, as the consumer store: a flushed interval survives `kill -9` and power loss;
//! what is lost is at most what arrived since the last flush, plus the workers' unreported second.
//!
//! It also keeps, per consumer, the running totals of the current UTC day and month (restored from the
//! database at open, then advanced as rows arrive) for quota checks, and the acknowledgements of billing
//! pushes. Lives on the control thread; a worker never touches it.

use super::calendar::{self, DAY_SECS};
use crate::usage::{UsageCounts, UsageRow};
use rusqlite::{params, Connection};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Tables this build writes; recorded in `usage_meta` (the consumer store owns `user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage_meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS usage_minute (
    bucket INTEGER NOT NULL, consumer TEXT NOT NULL, route TEXT NOT NULL, class INTEGER NOT NULL,
    requests INTEGER NOT NULL, admitted INTEGER NOT NULL, limited INTEGER NOT NULL, bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL, latency_us INTEGER NOT NULL,
    PRIMARY KEY (bucket, consumer, route, class)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_day (
    bucket INTEGER NOT NULL, consumer TEXT NOT NULL, route TEXT NOT NULL, class INTEGER NOT NULL,
    requests INTEGER NOT NULL, admitted INTEGER NOT NULL, limited INTEGER NOT NULL, bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL, latency_us INTEGER NOT NULL,
    PRIMARY KEY (bucket, consumer, route, class)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_month (
    bucket INTEGER NOT NULL, consumer TEXT NOT NULL, route TEXT NOT NULL, class INTEGER NOT NULL,
    requests INTEGER NOT NULL, admitted INTEGER NOT NULL, limited INTEGER NOT NULL, bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL, latency_us INTEGER NOT NULL,
    PRIMARY KEY (bucket, consumer, route, class)) WITHOUT ROWID;
-- One row per acknowledged batch of a closed billing period.
CREATE TABLE IF NOT EXISTS billing_batches (
    period TEXT NOT NULL, batch INTEGER NOT NULL, batch_id TEXT NOT NULL, acked_at INTEGER NOT NULL,
    PRIMARY KEY (period, batch)) WITHOUT ROWID;
-- One row per closed billing period whose every batch is acknowledged: never pushed again.
CREATE TABLE IF NOT EXISTS billing_periods (
    period TEXT PRIMARY KEY NOT NULL, batches INTEGER NOT NULL, acked_at INTEGER NOT NULL);
";

/// Why the ledger failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database could not be opened, read or written.
    #[error("usage ledger {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The tables were written by a newer sluice.
    #[error(
        "usage ledger {path}: schema version {found} is newer than this build's {SCHEMA_VERSION}"
    )]
    Schema { path: PathBuf, found: i64 },
}

/// The most rows a range query answers (`/usage`); more is an error asking for a narrower range.
pub const QUERY_ROWS: usize = 100_000;

/// A granularity of the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// UTC minutes (`bucket` = unix / 60).
    Minute,
    /// UTC days (`bucket` = unix / 86400).
    Day,
    /// UTC months (`bucket` = year * 12 + month - 1).
    Month,
}

impl Grain {
    fn table(self) -> &'static str {
        match self {
            Grain::Minute => "usage_minute",
            Grain::Day => "usage_day",
            Grain::Month => "usage_month",
        }
    }
}

/// What a quota counts of one consumer in one period: requests its policies let through (not those
/// sluice refused itself), and the bytes of all its requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeriodUse {
    /// Admitted requests.
    pub requests: u64,
    /// Bytes in plus bytes out.
    pub bytes: u64,
}

/// One consumer's use of the current UTC day and month: what quotas count against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeriodTotals {
    /// Day number (days since 1970-01-01) `day` is for.
    pub day_id: i64,
    pub day: PeriodUse,
    /// Month index (year * 12 + month - 1) `month` is for.
    pub month_id: i64,
    pub month: PeriodUse,
}

impl PeriodTotals {
    fn roll(&mut self, now_unix: u64) {
        let day = calendar::day_of(now_unix);
        if self.day_id != day {
            self.day_id = day;
            self.day = PeriodUse::default();
        }
        let month = calendar::month_of_day(day);
        if self.month_id != month {
            self.month_id = month;
            self.month = PeriodUse::default();
        }
    }
}

/// A key of the in-memory sums: (minute, consumer, route, class).
type Key = (u64, Arc<str>, Arc<str>, u8);

/// A row read back from the ledger, grouped as a query asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerRow {
    /// Day number, when grouped by day.
    pub day: Option<i64>,
    pub consumer: Option<String>,
    pub route: Option<String>,
    /// Status class, when grouped by status.
    pub class: Option<u8>,
    pub counts: UsageCounts,
}

/// What to group a query by (the rest is summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupBy {
    pub day: bool,
    pub consumer: bool,
    pub route: bool,
    pub status: bool,
}

/// A range query: `[from, to)` in Unix seconds, optionally one consumer.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub consumer: Option<String>,
    pub from: u64,
    pub to: u64,
    pub group: GroupBy,
}

/// The ledger: the connection, what arrived since the last flush, the running period totals.
pub struct Ledger {
    path: PathBuf,
    conn: Connection,
    pending: BTreeMap<Key, UsageCounts>,
    totals: HashMap<Arc<str>, PeriodTotals>,
    retention: Duration,
    minute_retention: Duration,
    /// Unix minute of the last trim.
    trimmed: u64,
}

impl Ledger {
    /// Opens the ledger's tables in the state database at `path` (creating them), and reads the
    /// running totals of the day and month of `now_unix`.
    pub fn open(
        path: &Path,
        retention: Duration,
        minute_retention: Duration,
        now_unix: u64,
    ) -> Result<Ledger, LedgerError> {
        let sq = |source| LedgerError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        // WAL and FULL: a flushed interval is on disk before the next one starts.
        let conn = crate::control::consumers::store::open_connection(path).map_err(sq)?;
        conn.execute_batch(&format!("BEGIN; {SCHEMA} COMMIT;"))
            .map_err(sq)?;
        let found: Option<i64> = conn
            .query_row(
                "SELECT value FROM usage_meta WHERE key = 'schema'",
                [],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(sq)?;
        match found {
            None => {
                conn.execute(
                    "INSERT INTO usage_meta (key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(sq)?;
            }
            Some(v) if v <= SCHEMA_VERSION => {}
            Some(found) => {
                return Err(LedgerError::Schema {
                    path: path.to_path_buf(),
                    found,
                })
            }
        }
        let mut l = Ledger {
            path: path.to_path_buf(),
            conn,
            pending: BTreeMap::new(),
            totals: HashMap::new(),
            retention,
            minute_retention,
            trimmed: 0,
        };
        l.totals = l
            .read_period_totals(now_unix)?
            .into_iter()
            .map(|(k, v)| (Arc::from(k.as_str()), v))
            .collect();
        Ok(l)
    }

    fn sq(&self, source: rusqlite::Error) -> LedgerError {
        LedgerError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Adds a worker's rows, received at `now_unix`.
    pub fn record(&mut self, rows: &[UsageRow], now_unix: u64) {
        let minute = now_unix / 60;
        for r in rows {
            self.pending
                .entry((minute, r.consumer.clone(), r.route.clone(), r.class))
                .or_default()
                .add(&r.counts);
            let t = match self.totals.get_mut(&*r.consumer) {
                Some(t) => t,
                None => self.totals.entry(r.consumer.clone()).or_default(),
            };
            t.roll(now_unix);
            let bytes = r.counts.bytes_in + r.counts.bytes_out;
            t.day.requests += r.counts.admitted;
            t.day.bytes += bytes;
            t.month.requests += r.counts.admitted;
            t.month.bytes += bytes;
        }
    }

    /// Whether anything waits for a flush.
    pub fn dirty(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The first minute not yet flushed, if any.
    pub fn oldest_pending_minute(&self) -> Option<u64> {
        self.pending.keys().next().map(|k| k.0)
    }

    /// Writes everything pending in one transaction (into the minute, day and month tables), then
    /// trims rows past retention at most once a minute. On failure nothing is lost from memory: the
    /// next flush tries again.
    pub fn flush(&mut self, now_unix: u64) -> Result<usize, LedgerError> {
        let n = self.pending.len();
        if n > 0 {
            self.write_pending().map_err(|e| self.sq(e))?;
            self.pending.clear();
        }
        let minute = now_unix / 60;
        if minute != self.trimmed {
            self.trimmed = minute;
            // Running totals of a past month read as zero; let them go, or every name ever seen (JWT
            // subjects can be anything an issuer signs) would stay in memory.
            let month = calendar::month_of_day(calendar::day_of(now_unix));
            self.totals.retain(|_, t| t.month_id >= month);
            self.trim(now_unix).map_err(|e| self.sq(e))?;
        }
        Ok(n)
    }

    fn write_pending(&mut self) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let upsert = |table: &str| {
                format!(
                    "INSERT INTO {table} (bucket, consumer, route, class, requests, admitted, limited, bytes_in, bytes_out, latency_us)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (bucket, consumer, route, class) DO UPDATE SET
                       requests = requests + excluded.requests, admitted = admitted + excluded.admitted,
                       limited = limited + excluded.limited,
                       bytes_in = bytes_in + excluded.bytes_in, bytes_out = bytes_out + excluded.bytes_out,
                       latency_us = latency_us + excluded.latency_us"
                )
            };
            let mut minute = tx.prepare_cached(&upsert("usage_minute"))?;
            let mut day = tx.prepare_cached(&upsert("usage_day"))?;
            let mut month = tx.prepare_cached(&upsert("usage_month"))?;
            for ((m, consumer, route, class), c) in &self.pending {
                let d = calendar::day_of(m * 60);
                let buckets = [
                    (&mut minute, *m as i64),
                    (&mut day, d),
                    (&mut month, calendar::month_of_day(d)),
                ];
                for (stmt, bucket) in buckets {
                    stmt.execute(params![
                        bucket,
                        &**consumer,
                        &**route,
                        *class as i64,
                        sat(c.requests),
                        sat(c.admitted),
                        sat(c.limited),
                        sat(c.bytes_in),
                        sat(c.bytes_out),
                        sat(c.latency_us),
                    ])?;
                }
            }
        }
        tx.commit()
    }

    fn trim(&self, now_unix: u64) -> rusqlite::Result<()> {
        let minute_cut = now_unix.saturating_sub(self.minute_retention.as_secs()) / 60;
        let day_cut = calendar::day_of(now_unix.saturating_sub(self.retention.as_secs()));
        // A month is kept while any of its days is within retention.
        let month_cut = calendar::month_of_day(day_cut);
        self.conn.execute(
            "DELETE FROM usage_minute WHERE bucket < ?1",
            [minute_cut as i64],
        )?;
        self.conn
            .execute("DELETE FROM usage_day WHERE bucket < ?1", [day_cut])?;
        self.conn
            .execute("DELETE FROM usage_month WHERE bucket < ?1", [month_cut])?;
        Ok(())
    }

    /// Each consumer's running totals of the current day and month, as rows arrived (flushed or not).
    /// Entries of an earlier day or month than `now_unix`'s read as zero for that period.
    pub fn running_totals(&self, consumer: &str, now_unix: u64) -> PeriodTotals {
        let mut t = self.totals.get(consumer).copied().unwrap_or_default();
        t.roll(now_unix);
        t
    }

    /// Every consumer's running totals (see `running_totals`).
    pub fn all_running_totals(&self, now_unix: u64) -> HashMap<Arc<str>, PeriodTotals> {
        self.totals
            .iter()
            .map(|(k, t)| {
                let mut t = *t;
                t.roll(now_unix);
                (k.clone(), t)
            })
            .collect()
    }

    /// Each consumer's used totals of the UTC day and month of `now_unix`, read from the database
    /// (flushed rows only): what quotas start from after a restart.
    pub fn read_period_totals(
        &self,
        now_unix: u64,
    ) -> Result<HashMap<String, PeriodTotals>, LedgerError> {
        let day = calendar::day_of(now_unix);
        let month = calendar::month_of_day(day);
        let mut out: HashMap<String, PeriodTotals> = HashMap::new();
        for (table, bucket, is_day) in [("usage_day", day, true), ("usage_month", month, false)] {
            let mut q = self
                .conn
                .prepare(&format!(
                    "SELECT consumer, SUM(admitted), SUM(bytes_in) + SUM(bytes_out) FROM {table}
                     WHERE bucket = ?1 GROUP BY consumer"
                ))
                .map_err(|e| self.sq(e))?;
            let rows = q
                .query_map([bucket], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(|e| self.sq(e))?;
            for row in rows {
                let (consumer, requests, bytes) = row.map_err(|e| self.sq(e))?;
                let t = out.entry(consumer).or_insert(PeriodTotals {
                    day_id: day,
                    month_id: month,
                    ..Default::default()
                });
                let u = PeriodUse {
                    requests: requests.max(0) as u64,
                    bytes: bytes.max(0) as u64,
                };
                if is_day {
                    t.day = u;
                } else {
                    t.month = u;
                }
            }
        }
        Ok(out)
    }

    /// Rows of `[q.from, q.to)`, grouped as asked, from the day table when both ends are whole UTC
    /// days, else from the minute table (kept `minute_retention`). Flushed rows only: callers flush
    /// first for a current answer.
    pub fn query(&self, q: &Query) -> Result<Vec<LedgerRow>, LedgerError> {
        let whole_days = q.from % DAY_SECS == 0 && q.to % DAY_SECS == 0;
        let (grain, from, to) = if whole_days {
            (
                Grain::Day,
                (q.from / DAY_SECS) as i64,
                (q.to / DAY_SECS) as i64,
            )
        } else {
            (
                Grain::Minute,
                (q.from / 60) as i64,
                q.to.div_ceil(60) as i64,
            )
        };
        let day_expr = match grain {
            Grain::Minute => "bucket / 1440",
            _ => "bucket",
        };
        // One more than an answer may hold, so the caller can tell "too many" without the control
        // thread reading (and holding) every row of a huge range.
        let limit = Some(QUERY_ROWS + 1);
        self.grouped(
            grain,
            from,
            to,
            q.consumer.as_deref(),
            q.group,
            day_expr,
            limit,
        )
    }

    /// Rows of buckets `[from, to)` of one table, grouped.
    #[allow(clippy::too_many_arguments)]
    fn grouped(
        &self,
        grain: Grain,
        from: i64,
        to: i64,
        consumer: Option<&str>,
        g: GroupBy,
        day_expr: &str,
        limit: Option<usize>,
    ) -> Result<Vec<LedgerRow>, LedgerError> {
        // Column expressions come from this fixed list only; values are bound parameters.
        let cols = [
            (g.day, day_expr),
            (g.consumer, "consumer"),
            (g.route, "route"),
            (g.status, "class"),
        ];
        let keys: Vec<&str> = cols.iter().filter(|c| c.0).map(|c| c.1).collect();
        let select = cols
            .iter()
            .map(|(on, e)| if *on { *e } else { "NULL" })
            .collect::<Vec<_>>()
            .join(", ");
        let group = if keys.is_empty() {
            String::new()
        } else {
            format!("GROUP BY {0} ORDER BY {0}", keys.join(", "))
        };
        let sql = format!(
            "SELECT {select}, SUM(requests), SUM(admitted), SUM(limited), SUM(bytes_in), SUM(bytes_out), SUM(latency_us)
             FROM {} WHERE bucket >= ?1 AND bucket < ?2 AND (?3 IS NULL OR consumer = ?3) {group} {}",
            grain.table(),
            limit.map_or(String::new(), |n| format!("LIMIT {n}"))
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.sq(e))?;
        let rows = stmt
            .query_map(params![from, to, consumer], |r| {
                let n = |i: usize| {
                    r.get::<_, Option<i64>>(i)
                        .map(|v| v.unwrap_or(0).max(0) as u64)
                };
                Ok(LedgerRow {
                    day: r.get::<_, Option<i64>>(0)?,
                    consumer: r.get(1)?,
                    route: r.get(2)?,
                    class: r.get::<_, Option<i64>>(3)?.map(|c| c.clamp(0, 5) as u8),
                    counts: UsageCounts {
                        requests: n(4)?,
                        admitted: n(5)?,
                        limited: n(6)?,
                        bytes_in: n(7)?,
                        bytes_out: n(8)?,
                        latency_us: n(9)?,
                    },
                })
            })
            .map_err(|e| self.sq(e))?;
        let mut out = Vec::new();
        for r in rows {
            let r = r.map_err(|e| self.sq(e))?;
            // With no grouping SUM over no rows still yields one row of NULLs.
            if r.counts.requests > 0 {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Rows of one day or month bucket, by consumer, route and class (billing).
    pub fn period_rows(&self, grain: Grain, bucket: i64) -> Result<Vec<LedgerRow>, LedgerError> {
        let g = GroupBy {
            day: false,
            consumer: true,
            route: true,
            status: true,
        };
        self.grouped(grain, bucket, bucket + 1, None, g, "bucket", None)
    }

    /// Day or month buckets before `before` that have usage, oldest first.
    pub fn periods_with_usage(&self, grain: Grain, before: i64) -> Result<Vec<i64>, LedgerError> {
        let mut q = self
            .conn
            .prepare(&format!(
                "SELECT DISTINCT bucket FROM {} WHERE bucket < ?1 ORDER BY bucket",
                grain.table()
            ))
            .map_err(|e| self.sq(e))?;
        let rows = q
            .query_map([before], |r| r.get::<_, i64>(0))
            .map_err(|e| self.sq(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sq(e))
    }

    /// Whether every batch of closed period `period` was acknowledged.
    pub fn period_acked(&self, period: &str) -> Result<bool, LedgerError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM billing_periods WHERE period = ?1",
                [period],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| self.sq(e))
    }

    /// Whether batch `batch` of closed period `period` was acknowledged.
    pub fn batch_acked(&self, period: &str, batch: u32) -> Result<bool, LedgerError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM billing_batches WHERE period = ?1 AND batch = ?2",
                params![period, batch],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| self.sq(e))
    }

    /// Records the acknowledgement of a batch of a closed period; once all its batches are, the
    /// period's.
    pub fn ack_batch(&mut self, a: &BatchAck<'_>, now_unix: u64) -> Result<(), LedgerError> {
        ack_tx(&mut self.conn, a, now_unix).map_err(|e| self.sq(e))
    }
}

/// One acknowledged batch of a closed period.
#[derive(Debug, Clone, Copy)]
pub struct BatchAck<'a> {
    pub period: &'a str,
    /// Its number, 0-based.
    pub batch: u32,
    /// How many the period has.
    pub batches: u32,
    pub batch_id: &'a str,
}

fn ack_tx(conn: &mut Connection, a: &BatchAck<'_>, now_unix: u64) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT OR REPLACE INTO billing_batches (period, batch, batch_id, acked_at) VALUES (?1, ?2, ?3, ?4)",
        params![a.period, a.batch, a.batch_id, now_unix as i64],
    )?;
    let acked: i64 = tx.query_row(
        "SELECT COUNT(*) FROM billing_batches WHERE period = ?1 AND batch < ?2",
        params![a.period, a.batches],
        |r| r.get(0),
    )?;
    if acked >= a.batches as i64 {
        tx.execute(
            "INSERT OR REPLACE INTO billing_periods (period, batches, acked_at) VALUES (?1, ?2, ?3)",
            params![a.period, a.batches, now_unix as i64],
        )?;
    }
    tx.commit()
}

/// SQLite integers are i64; a counter past that (never, in practice) is stored as the maximum.
fn sat(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_796_292_000; // 2026-12-03T10:00:00Z

    fn row(consumer: &str, route: &str, class: u8, requests: u64) -> UsageRow {
        UsageRow {
            consumer: Arc::from(consumer),
            route: Arc::from(route),
            class,
            counts: UsageCounts {
                requests,
                admitted: requests,
                limited: 0,
                bytes_in: requests * 10,
                bytes_out: requests * 100,
                latency_us: requests,
            },
        }
    }

    fn open(dir: &Path) -> Ledger {
        Ledger::open(
            &dir.join("state.db"),
            Duration::from_secs(400 * DAY_SECS),
            Duration::from_secs(30 * DAY_SECS),
            NOW,
        )
        .unwrap()
    }

    fn temp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "sluice-ledger-{}-{}",
            std::process::id(),
            NOW ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn flush_query_and_restore() {
        assert_eq!(calendar::time_label(NOW), "2026-12-03T10:00:00Z");
        let dir = temp();
        let mut l = open(&dir);
        l.record(&[row("alice", "api", 2, 3), row("alice", "api", 5, 1)], NOW);
        l.record(&[row("bob", "web", 2, 2)], NOW + 61);
        assert_eq!(l.running_totals("alice", NOW).day.requests, 4);
        assert_eq!(l.flush(NOW + 61).unwrap(), 3);
        assert!(!l.dirty());
        let day = calendar::day_of(NOW);
        let all = l
            .query(&Query {
                consumer: None,
                from: day as u64 * DAY_SECS,
                to: (day as u64 + 1) * DAY_SECS,
                group: GroupBy {
                    consumer: true,
                    ..Default::default()
                },
            })
            .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].consumer.as_deref(), Some("alice"));
        assert_eq!(all[0].counts.requests, 4);
        assert_eq!(all[0].counts.bytes_out, 400);
        // A time range reads minutes: only bob's minute.
        let bob = l
            .query(&Query {
                consumer: None,
                from: NOW + 60,
                to: NOW + 120,
                group: GroupBy::default(),
            })
            .unwrap();
        assert_eq!(bob.len(), 1);
        assert_eq!(bob[0].counts.requests, 2);
        drop(l);
        let l = open(&dir);
        let t = l.running_totals("alice", NOW + 100);
        assert_eq!(t.day.requests, 4);
        assert_eq!(t.month.bytes, 440);
        assert_eq!(l.running_totals("alice", NOW + DAY_SECS).day.requests, 0);
        let p = l.read_period_totals(NOW).unwrap();
        assert_eq!(p["bob"].day.requests, 2);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn flushes_add_up_and_trim() {
        let dir = temp();
        let mut l = open(&dir);
        l.record(&[row("alice", "api", 2, 1)], NOW);
        l.flush(NOW).unwrap();
        l.record(&[row("alice", "api", 2, 2)], NOW);
        l.flush(NOW).unwrap();
        let day = calendar::day_of(NOW);
        let rows = l.period_rows(Grain::Day, day).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].counts.requests, 3);
        assert_eq!(
            l.periods_with_usage(Grain::Day, day + 1).unwrap(),
            vec![day]
        );
        // 31 days later the minute rows are gone, the day rows stay.
        let later = NOW + 31 * DAY_SECS;
        l.flush(later).unwrap();
        let minutes = l
            .query(&Query {
                from: NOW,
                to: NOW + 60,
                ..Default::default()
            })
            .unwrap();
        assert!(minutes.is_empty());
        assert_eq!(l.period_rows(Grain::Day, day).unwrap().len(), 1);
        assert!(
            l.totals.is_empty(),
            "last month's running totals are let go"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn acks_are_kept() {
        let dir = temp();
        let mut l = open(&dir);
        assert!(!l.period_acked("2026-12-02").unwrap());
        let ack = |batch, batch_id| BatchAck {
            period: "2026-12-02",
            batch,
            batches: 2,
            batch_id,
        };
        l.ack_batch(&ack(0, "b0"), NOW).unwrap();
        assert!(l.batch_acked("2026-12-02", 0).unwrap());
        assert!(!l.period_acked("2026-12-02").unwrap());
        l.ack_batch(&ack(1, "b1"), NOW).unwrap();
        drop(l);
        let l = open(&dir);
        assert!(l.period_acked("2026-12-02").unwrap());
        let _ = std::fs::remove_dir_all(dir);
    }
}
