//! Access log. A worker formats each record into its own buffer (`LogSink`) and hands full buffers to
//! the log thread over a bounded channel; if the channel is full the buffer is dropped and counted, so a
//! slow or full disk never stalls a worker. The log thread owns the file, reopens it on SIGUSR1
//! (logrotate), and counts lines it could not write. Buffers travel back for reuse.

use crate::config::monitoring::{template_pieces, AccessLog, LogTarget, TemplatePiece};
use crate::http1::head::RequestHead;
use crate::metrics::RequestRecord;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Buffers in flight between all workers and the log thread.
const QUEUE: usize = 64;

/// Counters shared with the control thread (written by the log thread and workers' sinks off the hot path).
#[derive(Debug, Default)]
pub struct LogCounters {
    /// Lines written.
    pub written: AtomicU64,
    /// Lines dropped (queue full or write failed).
    pub dropped: AtomicU64,
}

/// A worker's end: formats into a local buffer, ships full buffers.
pub struct LogSink {
    tx: Sender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    lines: u64,
    limit: usize,
    sample_acc: f64,
    counters: Arc<LogCounters>,
}

/// Control messages for the log thread.
enum Ctl {
    Reopen,
    Stop,
}

/// Handle to the log thread.
pub struct LogThread {
    ctl: Sender<Ctl>,
    join: Option<JoinHandle<()>>,
    /// Shared counters.
    pub counters: Arc<LogCounters>,
}

impl LogThread {
    /// Asks the thread to reopen its file (SIGUSR1).
    pub fn reopen(&self) {
        let _ = self.ctl.send(Ctl::Reopen);
    }

    /// Writes what is queued and stops.
    pub fn stop(mut self) {
        let _ = self.ctl.send(Ctl::Stop);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

fn open(target: &LogTarget) -> io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        LogTarget::Stdout => Box::new(io::stdout()),
        LogTarget::Stderr => Box::new(io::stderr()),
        LogTarget::File(p) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("access log {}: {e}", p.display()))
                })?,
        ),
    })
}

/// Opens the log and starts the thread; returns one sink per worker.
pub fn start(cfg: &AccessLog, workers: usize) -> io::Result<(LogThread, Vec<LogSink>)> {
    let mut out = open(&cfg.target)?;
    let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(QUEUE);
    let (spare_tx, spare_rx) = crossbeam_channel::bounded::<Vec<u8>>(QUEUE + workers);
    let (ctl_tx, ctl_rx) = crossbeam_channel::unbounded::<Ctl>();
    let counters = Arc::new(LogCounters::default());
    let target = cfg.target.clone();
    let c = counters.clone();
    let join = std::thread::Builder::new().name("sluice-log".into()).spawn(move || {
        let mut failing = false;
        let mut write = |out: &mut Box<dyn Write + Send>, buf: &[u8]| {
            let lines = buf.iter().filter(|&&b| b == b'\n').count() as u64;
            match out.write_all(buf).and_then(|_| out.flush()) {
                Ok(()) => {
                    c.written.fetch_add(lines, Ordering::Relaxed);
                    if failing {
                        tracing::info!("access log writable again");
                        failing = false;
                    }
                }
                Err(e) => {
                    c.dropped.fetch_add(lines, Ordering::Relaxed);
                    if !failing {
                        tracing::warn!(error = %e, "access log write failed; dropping and counting records");
                        failing = true;
                    }
                }
            }
        };
        loop {
            crossbeam_channel::select! {
                recv(rx) -> msg => match msg {
                    Ok(mut buf) => {
                        write(&mut out, &buf);
                        buf.clear();
                        let _ = spare_tx.try_send(buf);
                    }
                    Err(_) => return,
                },
                recv(ctl_rx) -> msg => match msg {
                    Ok(Ctl::Reopen) => match open(&target) {
                        Ok(f) => {
                            out = f;
                            tracing::info!("access log reopened");
                        }
                        Err(e) => tracing::warn!(error = %e, "access log reopen failed; keeping the old file"),
                    },
                    Ok(Ctl::Stop) | Err(_) => {
                        while let Ok(buf) = rx.try_recv() {
                            write(&mut out, &buf);
                        }
                        return;
                    }
                },
            }
        }
    })?;
    let sinks = (0..workers)
        .map(|_| LogSink {
            tx: tx.clone(),
            spare: spare_rx.clone(),
            buf: Vec::with_capacity(cfg.buffer_bytes),
            lines: 0,
            limit: cfg.buffer_bytes,
            sample_acc: 0.0,
            counters: counters.clone(),
        })
        .collect();
    Ok((
        LogThread {
            ctl: ctl_tx,
            join: Some(join),
            counters,
        },
        sinks,
    ))
}

impl LogSink {
    /// Whether this record is logged: errors always, the rest by the sampling ratio.
    pub fn sampled(&mut self, rec: &RequestRecord, ratio: f64) -> bool {
        if rec.status >= 500 || rec.status == 0 || rec.reason.error_kind().is_some() {
            return true;
        }
        self.sample_acc += ratio;
        if self.sample_acc >= 1.0 {
            self.sample_acc -= 1.0;
            true
        } else {
            false
        }
    }

    /// Appends one line (the closure writes it, without the newline).
    pub fn line(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        f(&mut self.buf);
        self.buf.push(b'\n');
        self.lines += 1;
        if self.buf.len() >= self.limit {
            self.flush();
        }
    }

    /// Ships the buffer to the log thread; drops (and counts) it when the queue is full.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.limit));
        let full = std::mem::replace(&mut self.buf, next);
        let lines = std::mem::take(&mut self.lines);
        if let Err(TrySendError::Full(mut b) | TrySendError::Disconnected(mut b)) =
            self.tx.try_send(full)
        {
            self.counters.dropped.fetch_add(lines, Ordering::Relaxed);
            b.clear();
            self.buf = b;
        }
    }
}

/// Everything a log line may show.
pub struct LogFields<'a> {
    pub head: &'a RequestHead,
    pub rec: &'a RequestRecord,
    pub request_id: &'a [u8],
    /// Traceparent sent upstream.
    pub traceparent: &'a [u8],
    pub client: &'a [u8],
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub endpoint: Option<std::net::SocketAddr>,
    pub worker: usize,
    /// The authenticated consumer.
    pub consumer: Option<&'a str>,
    /// How authentication ended: `method:outcome`, e.g. `api_key:ok`.
    pub auth: Option<(&'a str, &'static str)>,
}

/// Writes `s` as JSON string content; bytes outside ASCII are written as \u00XX (Latin-1), so the line
/// is valid JSON whatever the client sent.
fn json_str(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(b),
            _ => {
                let mut hex = *b"\\u0000";
                crate::hex::hex_into(&mut hex[4..], b as u64);
                out.extend_from_slice(&hex);
            }
        }
    }
}

/// RFC 3339 UTC time with milliseconds, from the system clock.
pub fn rfc3339_now(out: &mut Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    );
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// One JSON object per line.
pub fn format_json(out: &mut Vec<u8>, f: &LogFields<'_>) {
    let r = f.rec;
    out.extend_from_slice(b"{\"time\":\"");
    rfc3339_now(out);
    out.extend_from_slice(b"\",\"request_id\":\"");
    json_str(out, f.request_id);
    out.extend_from_slice(b"\",\"trace_id\":\"");
    out.extend_from_slice(&f.traceparent[3..35.min(f.traceparent.len())]);
    out.extend_from_slice(b"\",\"client\":\"");
    json_str(out, f.client);
    out.extend_from_slice(b"\",\"method\":\"");
    json_str(out, f.head.method());
    out.extend_from_slice(b"\",\"host\":\"");
    json_str(out, f.head.host().unwrap_or(b""));
    out.extend_from_slice(b"\",\"path\":\"");
    json_str(out, f.head.path());
    out.extend_from_slice(b"\",\"query\":\"");
    json_str(out, f.head.query().unwrap_or(b""));
    let _ = write!(out, "\",\"status\":{},\"route\":", r.status);
    opt_str(out, f.route);
    out.extend_from_slice(b",\"upstream\":");
    opt_str(out, f.upstream);
    out.extend_from_slice(b",\"endpoint\":");
    match f.endpoint {
        Some(a) => {
            let _ = write!(out, "\"{a}\"");
        }
        None => out.extend_from_slice(b"null"),
    }
    let total_us = r.start.elapsed().as_micros() as u64;
    let _ = write!(
        out,
        ",\"bytes_in\":{},\"bytes_out\":{},\"duration_ms\":{:.3},\"connect_ms\":{:.3},\"ttfb_ms\":{:.3},\"attempts\":{},\"reason\":\"{}\",\"consumer\":",
        r.bytes_in,
        r.bytes_out,
        ms(total_us),
        ms(r.connect_us as u64),
        ms(r.ttfb_us as u64),
        r.attempts,
        r.reason.as_str(),
    );
    opt_str(out, f.consumer);
    out.extend_from_slice(b",\"auth\":");
    match f.auth {
        Some((m, o)) => {
            let _ = write!(out, "\"{m}:{o}\"");
        }
        None => out.extend_from_slice(b"null"),
    }
    let _ = write!(out, ",\"worker\":{},\"user_agent\":\"", f.worker);
    json_str(out, f.head.get(b"user-agent").unwrap_or(b""));
    out.extend_from_slice(b"\",\"traceparent\":\"");
    out.extend_from_slice(f.traceparent);
    out.extend_from_slice(b"\"}");
}

fn opt_str(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(s) => {
            out.push(b'"');
            json_str(out, s.as_bytes());
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// A line from a template like nginx's `log_format`: `$name` or `${name}` variables, "-" when empty.
pub fn format_template(out: &mut Vec<u8>, tpl: &str, f: &LogFields<'_>) {
    let r = f.rec;
    for piece in template_pieces(tpl) {
        let name = match piece {
            TemplatePiece::Lit(l) => {
                out.extend_from_slice(l.as_bytes());
                continue;
            }
            TemplatePiece::Var(name) => name,
            TemplatePiece::Unclosed => break,
        };
        let dash = |out: &mut Vec<u8>, v: &[u8]| {
            out.extend_from_slice(if v.is_empty() { b"-" } else { v })
        };
        match name {
            "time" => rfc3339_now(out),
            "request_id" => dash(out, f.request_id),
            "trace_id" => dash(out, &f.traceparent[3..35.min(f.traceparent.len())]),
            "traceparent" => dash(out, f.traceparent),
            "client" => dash(out, f.client),
            "method" => dash(out, f.head.method()),
            "path" => dash(out, f.head.path()),
            "query" => dash(out, f.head.query().unwrap_or(b"")),
            "host" => dash(out, f.head.host().unwrap_or(b"")),
            "user_agent" => dash(out, f.head.get(b"user-agent").unwrap_or(b"")),
            "status" => {
                let _ = write!(out, "{}", r.status);
            }
            "route" => dash(out, f.route.unwrap_or("").as_bytes()),
            "upstream" => dash(out, f.upstream.unwrap_or("").as_bytes()),
            "endpoint" => match f.endpoint {
                Some(a) => {
                    let _ = write!(out, "{a}");
                }
                None => out.push(b'-'),
            },
            "bytes_in" => {
                let _ = write!(out, "{}", r.bytes_in);
            }
            "bytes_out" => {
                let _ = write!(out, "{}", r.bytes_out);
            }
            "duration_ms" => {
                let _ = write!(out, "{:.3}", ms(r.start.elapsed().as_micros() as u64));
            }
            "connect_ms" => {
                let _ = write!(out, "{:.3}", ms(r.connect_us as u64));
            }
            "ttfb_ms" => {
                let _ = write!(out, "{:.3}", ms(r.ttfb_us as u64));
            }
            "reason" => out.extend_from_slice(r.reason.as_str().as_bytes()),
            "attempts" => {
                let _ = write!(out, "{}", r.attempts);
            }
            "worker" => {
                let _ = write!(out, "{}", f.worker);
            }
            "consumer" => dash(out, f.consumer.unwrap_or("").as_bytes()),
            "auth" => match f.auth {
                Some((m, o)) => {
                    let _ = write!(out, "{m}:{o}");
                }
                None => out.push(b'-'),
            },
            _ => out.push(b'-'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        let mut v = Vec::new();
        rfc3339_now(&mut v);
        let s = String::from_utf8(v).unwrap();
        assert_eq!(s.len(), 24, "{s}");
        assert!(s.ends_with('Z') && s.as_bytes()[10] == b'T');
    }

    #[test]
    fn json_escapes() {
        let mut v = Vec::new();
        json_str(&mut v, b"a\"b\\c\xff");
        assert_eq!(v, b"a\\\"b\\\\c\\u00ff");
    }
}
