//! `sluice top`: a live terminal view of a running gateway, like htop, read from the admin API.
//!
//! Off the request path entirely: a separate process that polls the admin listener's JSON
//! (`/status`, `/workers`, `/routes`, `/upstreams`) over plain blocking HTTP/1.1 and draws per-core,
//! per-route, per-consumer and per-endpoint figures with ratatui. It needs nothing from sluice but the documented
//! admin API, and must never leave the terminal in raw mode. `--once` renders one frame as plain text
//! to stdout (no terminal needed), so scripts and tests see exactly what the live view shows.

use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, RenderDirection, Row, Sparkline, Table};
use ratatui::{Frame, Terminal};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::{Duration, Instant};

mod admin;
use admin::{poll, ConsumerFigures, Poll};

/// What `sluice top` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The admin listener, `host:port`.
    pub admin: String,
    /// Bearer token for the admin API.
    pub token: Option<String>,
    /// Time between polls.
    pub interval: Duration,
    /// Print one plain-text frame and exit.
    pub once: bool,
}

/// Why a poll or the terminal failed.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// The admin address did not resolve.
    #[error("cannot resolve admin address {0:?}")]
    Resolve(String),
    /// No connection to the admin listener.
    #[error("cannot connect to the admin API at {addr}: {source}")]
    Connect {
        /// The address given.
        addr: String,
        /// The last connect error.
        source: io::Error,
    },
    /// Reading or writing the admin connection failed (or timed out).
    #[error("admin {path}: {source}")]
    Io {
        /// The endpoint asked.
        path: &'static str,
        /// What failed.
        source: io::Error,
    },
    /// Not an HTTP/1.1 response we can read.
    #[error("admin {path}: malformed HTTP response")]
    Malformed {
        /// The endpoint asked.
        path: &'static str,
    },
    /// The admin API wants a bearer token.
    #[error("admin {path}: 401, the admin API wants a bearer token (--token)")]
    Unauthorized {
        /// The endpoint asked.
        path: &'static str,
    },
    /// Any other status than 200.
    #[error("admin {path}: HTTP {status}")]
    Status {
        /// The endpoint asked.
        path: &'static str,
        /// The status received.
        status: u16,
    },
    /// The body was not the JSON we expect.
    #[error("admin {path}: unexpected JSON: {source}")]
    Json {
        /// The endpoint asked.
        path: &'static str,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The terminal could not be set up or drawn on.
    #[error("terminal: {0}")]
    Terminal(io::Error),
}

/// Rates of counters are taken over at least this span of polls: the server merges once a second,
/// so a one-poll difference would jitter between 0 and twice the truth.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// `--once` polls twice at least this far apart: the server merges once a second, so closer polls
/// could both fall between two merges and show every route at 0 req/s.
const ONCE_MIN_GAP: Duration = Duration::from_millis(1500);
/// Samples of total req/s kept for the sparkline.
const SPARK_SAMPLES: usize = 240;

// ---------------------------------------------------------------- the view's state

/// Per-second rates of counters, each over the polls of the last `RATE_WINDOW`.
#[derive(Debug, Default)]
struct Rates(HashMap<String, VecDeque<(Instant, u64)>>);

impl Rates {
    fn update(&mut self, key: &str, at: Instant, value: u64) -> f64 {
        let h = self.0.entry(key.to_string()).or_default();
        if h.back().is_some_and(|&(_, v)| value < v) {
            h.clear(); // the counter restarted
        }
        h.push_back((at, value));
        while h.len() > 2 && h[1].0 + RATE_WINDOW <= at {
            h.pop_front();
        }
        match h.front() {
            Some(&(t0, v0)) if at > t0 => (value - v0) as f64 / (at - t0).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// Everything one frame shows.
#[derive(Debug, Default)]
pub struct View {
    admin: String,
    interval: Duration,
    last: Option<Poll>,
    route_rps: Vec<f64>,
    endpoint_rps: Vec<Vec<f64>>,
    rates: Rates,
    total_rps: VecDeque<u64>,
    error: Option<String>,
}

impl View {
    fn new(opts: &Options) -> View {
        View {
            admin: opts.admin.clone(),
            interval: opts.interval,
            ..View::default()
        }
    }

    fn apply(&mut self, p: Result<Poll, TopError>) {
        let p = match p {
            Ok(p) => p,
            Err(e) => {
                self.error = Some(e.to_string());
                return;
            }
        };
        self.error = None;
        self.route_rps = p
            .routes
            .iter()
            .map(|r| {
                self.rates
                    .update(&format!("r/{}", r.name), p.at, r.requests)
            })
            .collect();
        self.endpoint_rps = p
            .upstreams
            .iter()
            .map(|u| {
                u.endpoints
                    .iter()
                    .map(|e| {
                        let key = format!("e/{}/{}", u.name, e.address);
                        self.rates.update(&key, p.at, e.requests)
                    })
                    .collect()
            })
            .collect();
        let total: f64 = p.workers.iter().map(|w| w.requests_per_second).sum();
        self.total_rps.push_back(total.round() as u64);
        if self.total_rps.len() > SPARK_SAMPLES {
            self.total_rps.pop_front();
        }
        self.last = Some(p);
    }
}

// ---------------------------------------------------------------- drawing

/// A figure with as many decimals as it deserves: 4638, 45.1, 0.11.
fn num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "-".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{v:.2}")
    }
}

fn uptime(s: u64) -> String {
    let (d, h, m) = (s / 86400, s / 3600 % 24, s / 60 % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m {}s", s % 60)
    }
}

/// htop's meter: `[|||||     16.2%]`, green, then yellow past 60%, red past 85%.
fn meter(fraction: f64, width: usize) -> Line<'static> {
    let f = fraction.clamp(0.0, 1.0);
    let label = format!("{:.1}%", f * 100.0);
    let bars = (f * width as f64).round() as usize;
    let color = if f > 0.85 {
        Color::Red
    } else if f > 0.6 {
        Color::Yellow
    } else {
        Color::Green
    };
    let inner = width.saturating_sub(label.len());
    let fill = "|".repeat(bars.min(inner));
    let gap = " ".repeat(inner - fill.len());
    Line::from(vec![
        Span::raw("["),
        Span::styled(fill, Style::new().fg(color)),
        Span::raw(gap),
        Span::styled(label, Style::new().add_modifier(Modifier::BOLD)),
        Span::raw("]"),
    ])
}

fn target(action: &serde_json::Value) -> String {
    if let Some(s) = action.get("respond") {
        return format!("respond {s}");
    }
    let ups = action.get("upstreams").and_then(|u| u.as_array());
    ups.map(|u| {
        u.iter()
            .filter_map(|t| t.get("upstream").and_then(|n| n.as_str()))
            .map(|n| format!("-> {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    })
    .unwrap_or_default()
}

// Column titles and widths; a table wider than the terminal squeezes its columns.
#[rustfmt::skip]
const WORKER_COLS: [(&str, u16); 11] = [
    ("CORE", 4), ("CPU", 4), ("REQ/S", 8), ("ERR/S", 7), ("P50 ms", 7), ("P99 ms", 7),
    ("UTIL", 16), ("CONNS", 6), ("IN FLIGHT", 9), ("ACCEPT/S", 8), ("REQUESTS", 10),
];
#[rustfmt::skip]
const ROUTE_COLS: [(&str, u16); 10] = [
    ("ROUTE", 0), ("REQ/S", 8), ("REQUESTS", 9), ("2xx", 8), ("3xx", 6), ("4xx", 7), ("5xx", 6),
    ("NONE", 6), ("P50 ms", 7), ("P99 ms", 7),
];
#[rustfmt::skip]
const CONSUMER_COLS: [(&str, u16); 8] = [
    ("CONSUMER", 0), ("REQ/S", 8), ("REQUESTS", 10), ("429s", 8), ("ERRORS", 8), ("IN", 9),
    ("OUT", 9), ("QUOTA", 6),
];
#[rustfmt::skip]
const ENDPOINT_COLS: [(&str, u16); 9] = [
    ("UPSTREAM", 0), ("ENDPOINT", 0), ("STATE", 9), ("REQ/S", 8), ("REQUESTS", 10),
    ("FAILURES", 8), ("IN FLIGHT", 9), ("IDLE", 5), ("TTFB P99", 8),
];

fn header_cells(cols: &[(&'static str, u16)]) -> Row<'static> {
    Row::new(cols.iter().map(|(n, _)| Cell::from(*n)))
        .style(Style::new().fg(Color::Black).bg(Color::Cyan))
}

/// The fixed widths of `cols`; each 0 (sized by content) takes the next of `sized`.
fn widths(cols: &[(&str, u16)], sized: &[u16]) -> Vec<Constraint> {
    let mut sized = sized.iter();
    cols.iter()
        .map(|&(_, w)| {
            Constraint::Length(if w == 0 {
                sized.next().copied().unwrap_or(8)
            } else {
                w
            })
        })
        .collect()
}

/// Rows of the consumers table: the top consumers, then `(other)` when it sums any.
fn consumer_rows(p: &Poll) -> usize {
    let c = &p.status.consumers;
    c.top.len() + (c.other.consumers > 0 || c.other.requests > 0) as usize
}

/// Rows the frame needs at full height: header, four tables (border, title row, rows), footer.
fn height_needed(p: &Poll) -> u16 {
    let eps: usize = p.upstreams.iter().map(|u| u.endpoints.len()).sum();
    (4 + (p.workers.len() + 3)
        + (p.routes.len().max(1) + 3)
        + (consumer_rows(p).max(1) + 3)
        + (eps.max(1) + 3)
        + 1) as u16
}

/// A byte count in binary units, without a space (tables split on whitespace): 512B, 1.4KiB.
fn bytes(n: u64) -> String {
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < 4 {
        v /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n}B"),
        u => format!("{v:.1}{}", ["", "KiB", "MiB", "GiB", "TiB"][u]),
    }
}

/// Draws one frame of the view.
pub fn draw(f: &mut Frame, v: &View) {
    let area = f.area();
    let Some(p) = &v.last else {
        let msg = v.error.as_deref().unwrap_or("connecting…");
        f.render_widget(
            Paragraph::new(format!("sluice top: {} — {msg}\nq to quit", v.admin)),
            area,
        );
        return;
    };
    let eps: usize = p.upstreams.iter().map(|u| u.endpoints.len()).sum();
    // Each table as tall as its rows; on a short terminal the tables shrink, spare rows go below.
    let [head, workers, routes, consumers, ups, _, foot] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Length(p.workers.len() as u16 + 3),
        Constraint::Max(p.routes.len().max(1) as u16 + 3),
        Constraint::Max(consumer_rows(p).max(1) as u16 + 3),
        Constraint::Max(eps.max(1) as u16 + 3),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_head(f, head, v, p);
    draw_workers(f, workers, p);
    draw_routes(f, routes, v, p);
    draw_consumers(f, consumers, p);
    draw_upstreams(f, ups, v, p);
    let footer = match &v.error {
        Some(e) => Line::styled(format!(" {e}"), Style::new().fg(Color::Red)),
        None => Line::from(format!(
            " q quit · every {:?} · route and endpoint rates over the last {}s",
            v.interval,
            RATE_WINDOW.as_secs()
        ))
        .style(Style::new().fg(Color::DarkGray)),
    };
    f.render_widget(footer, foot);
}

fn draw_head(f: &mut Frame, area: Rect, v: &View, p: &Poll) {
    let s = &p.status;
    let rps: f64 = p.workers.iter().map(|w| w.requests_per_second).sum();
    let errs: f64 = p.workers.iter().map(|w| w.errors_per_second).sum();
    let p99 = p.workers.iter().map(|w| w.p99_ms).fold(0.0, f64::max);
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let lines = vec![
        Line::from(vec![
            Span::styled(format!("sluice {}", s.version), bold.fg(Color::Cyan)),
            Span::raw(format!(
                "  {}  pid {}  up {}  {} workers on {}  config {} (generation {})",
                v.admin,
                s.pid,
                uptime(s.uptime_seconds),
                s.workers,
                s.io_driver,
                s.config,
                s.config_generation
            )),
        ]),
        Line::from(vec![
            Span::styled(num(rps), bold),
            Span::raw(" req/s  "),
            Span::styled(
                num(errs),
                if errs > 0.0 {
                    bold.fg(Color::Red)
                } else {
                    bold
                },
            ),
            Span::raw(" err/s  worst p99 "),
            Span::styled(num(p99), bold),
            Span::raw(format!(
                " ms  {} connections  {} in flight  {} requests",
                s.connections, s.in_flight, s.requests_total
            )),
        ]),
    ];
    let [text, spark] = Layout::vertical([Constraint::Length(2); 2]).areas(area);
    f.render_widget(Paragraph::new(lines), text);
    // Total req/s, newest at the right edge, older samples running left.
    let newest_first: Vec<u64> = v.total_rps.iter().rev().copied().collect();
    f.render_widget(
        Sparkline::default()
            .data(&newest_first)
            .direction(RenderDirection::RightToLeft)
            .style(Style::new().fg(Color::Green)),
        spark,
    );
}

fn draw_workers(f: &mut Frame, area: Rect, p: &Poll) {
    let rows = p.workers.iter().map(|w| {
        let cpu = w
            .cpu
            .filter(|c| *c >= 0)
            .map_or("-".into(), |c| c.to_string());
        let err = if w.errors_per_second > 0.0 {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        };
        Row::new(vec![
            Cell::from(w.worker.to_string()),
            Cell::from(cpu),
            Cell::from(num(w.requests_per_second)),
            Cell::from(num(w.errors_per_second)).style(err),
            Cell::from(num(w.p50_ms)),
            Cell::from(num(w.p99_ms)),
            Cell::from(meter(w.utilization, 14)),
            Cell::from(w.connections.to_string()),
            Cell::from(w.in_flight.to_string()),
            Cell::from(num(w.accepts_per_second)),
            Cell::from(w.requests_total.to_string()),
        ])
    });
    let t = Table::new(rows, widths(&WORKER_COLS, &[]))
        .header(header_cells(&WORKER_COLS))
        .block(Block::bordered().title(" Workers (one per core) "));
    f.render_widget(t, area);
}

fn draw_routes(f: &mut Frame, area: Rect, v: &View, p: &Poll) {
    let rows = p.routes.iter().enumerate().map(|(i, r)| {
        let rps = v.route_rps.get(i).copied().unwrap_or(0.0);
        let rs = &r.responses;
        let matched = format!("{} {}", r.host.as_deref().unwrap_or("*"), r.path);
        Row::new(vec![
            Cell::from(r.name.clone()).style(Style::new().add_modifier(Modifier::BOLD)),
            Cell::from(num(rps)),
            Cell::from(r.requests.to_string()),
            Cell::from(rs.s2xx.to_string()),
            Cell::from(rs.s3xx.to_string()),
            Cell::from(rs.s4xx.to_string()),
            Cell::from(rs.s5xx.to_string()).style(if rs.s5xx > 0 {
                Style::new().fg(Color::Red)
            } else {
                Style::new()
            }),
            Cell::from(rs.none.to_string()),
            Cell::from(num(r.p50_ms)),
            Cell::from(num(r.p99_ms)),
            Cell::from(matched),
            Cell::from(target(&r.action)),
        ])
    });
    let name_w = p.routes.iter().map(|r| r.name.len()).max().unwrap_or(5);
    let mut cols = widths(&ROUTE_COLS, &[name_w.clamp(5, 24) as u16]);
    cols.extend([Constraint::Fill(2), Constraint::Fill(1)]);
    let mut titles = ROUTE_COLS.to_vec();
    titles.extend([("MATCH", 0), ("TARGET", 0)]);
    let t = Table::new(rows, cols)
        .header(header_cells(&titles))
        .block(Block::bordered().title(" Routes "));
    f.render_widget(t, area);
}

fn draw_consumers(f: &mut Frame, area: Rect, p: &Poll) {
    let c = &p.status.consumers;
    let red = |n: u64, color: Color| {
        if n > 0 {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    };
    let row = |name: Cell<'static>, c: &ConsumerFigures| {
        let quota = c.quota_used.map_or(("-".to_string(), Style::new()), |q| {
            let color = if q >= 1.0 {
                Color::Red
            } else if q >= 0.8 {
                Color::Yellow
            } else {
                Color::Reset
            };
            (format!("{:.0}%", q * 100.0), Style::new().fg(color))
        });
        Row::new(vec![
            name,
            Cell::from(num(c.requests_per_second)),
            Cell::from(c.requests.to_string()),
            Cell::from(c.limited.to_string()).style(red(c.limited, Color::Yellow)),
            Cell::from(c.errors.to_string()).style(red(c.errors, Color::Red)),
            Cell::from(bytes(c.bytes_in)),
            Cell::from(bytes(c.bytes_out)),
            Cell::from(quota.0).style(quota.1),
        ])
    };
    let mut rows: Vec<Row> = c
        .top
        .iter()
        .map(|t| {
            let name = Cell::from(t.name.clone()).style(Style::new().add_modifier(Modifier::BOLD));
            row(name, t)
        })
        .collect();
    if consumer_rows(p) > c.top.len() {
        let name = Cell::from("(other)").style(Style::new().fg(Color::DarkGray));
        rows.push(row(name, &c.other));
    }
    let name_w = c.top.iter().map(|t| t.name.len()).max().unwrap_or(8);
    let title = if c.other.consumers > 0 {
        format!(
            " Consumers (top {} by req/s over {}s; {} more as (other)) ",
            c.top.len(),
            c.rate_window_seconds,
            c.other.consumers
        )
    } else {
        format!(" Consumers (by req/s over {}s) ", c.rate_window_seconds)
    };
    let t = Table::new(rows, widths(&CONSUMER_COLS, &[name_w.clamp(8, 32) as u16]))
        .header(header_cells(&CONSUMER_COLS))
        .block(Block::bordered().title(title));
    f.render_widget(t, area);
}

fn draw_upstreams(f: &mut Frame, area: Rect, v: &View, p: &Poll) {
    let mut rows = Vec::new();
    for (i, u) in p.upstreams.iter().enumerate() {
        for (j, e) in u.endpoints.iter().enumerate() {
            let rps = v
                .endpoint_rps
                .get(i)
                .and_then(|r| r.get(j))
                .copied()
                .unwrap_or(0.0);
            let (state, color) = match e.admin_state.as_deref() {
                Some(s) if s != "enabled" => (s.to_uppercase(), Color::Yellow),
                _ if e.healthy => ("UP".into(), Color::Green),
                _ if e.ejected => ("EJECTED".into(), Color::Red),
                _ => ("DOWN".into(), Color::Red),
            };
            rows.push(Row::new(vec![
                Cell::from(if j == 0 {
                    u.name.clone()
                } else {
                    String::new()
                }),
                Cell::from(e.address.clone()),
                Cell::from(state).style(Style::new().fg(color).add_modifier(Modifier::BOLD)),
                Cell::from(num(rps)),
                Cell::from(e.requests.to_string()),
                Cell::from(e.failures.to_string()),
                Cell::from(e.in_flight.to_string()),
                Cell::from(e.idle_connections.to_string()),
                Cell::from(num(e.ttfb_p99_ms)),
            ]));
        }
    }
    let name_w = p.upstreams.iter().map(|u| u.name.len()).max().unwrap_or(8);
    let addr_w = p
        .upstreams
        .iter()
        .flat_map(|u| u.endpoints.iter().map(|e| e.address.len()))
        .max()
        .unwrap_or(8);
    let cols = widths(
        &ENDPOINT_COLS,
        &[name_w.clamp(8, 20) as u16, addr_w.clamp(8, 47) as u16],
    );
    let t = Table::new(rows, cols)
        .header(header_cells(&ENDPOINT_COLS))
        .block(Block::bordered().title(" Upstreams "));
    f.render_widget(t, area);
}

/// The frame as plain text, `width` columns, as tall as it needs.
pub fn render_text(v: &View, width: u16) -> String {
    let height = v.last.as_ref().map_or(3, height_needed);
    let Ok(mut term) = Terminal::new(TestBackend::new(width, height)) else {
        return String::new();
    };
    let _ = term.draw(|f| draw(f, v));
    let buf = term.backend().buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let mut line = String::new();
        for x in 0..buf.area.width {
            if let Some(c) = buf.cell((x, y)) {
                line.push_str(c.symbol());
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------- running

/// Runs `sluice top`; returns the process exit code.
pub fn run(opts: &Options) -> i32 {
    let res = if opts.once { once(opts) } else { live(opts) };
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sluice top: {e}");
            1
        }
    }
}

/// Two polls one interval (at least `ONCE_MIN_GAP`) apart, since route rates need two; then one
/// frame to stdout.
fn once(opts: &Options) -> Result<(), TopError> {
    let mut view = View::new(opts);
    view.apply(Ok(poll(opts)?));
    std::thread::sleep(opts.interval.max(ONCE_MIN_GAP));
    view.apply(Ok(poll(opts)?));
    use std::io::IsTerminal;
    let width = match crossterm::terminal::size() {
        Ok((w, _)) if io::stdout().is_terminal() => w.max(100),
        _ => 120,
    };
    print!("{}", render_text(&view, width));
    Ok(())
}

fn live(opts: &Options) -> Result<(), TopError> {
    // Polls run on their own thread so a slow admin API never delays a key press.
    let (tx, rx) = crossbeam_channel::bounded(4);
    let poller = opts.clone();
    std::thread::spawn(move || loop {
        let started = Instant::now();
        if tx.send(poll(&poller)).is_err() {
            return;
        }
        std::thread::sleep(poller.interval.saturating_sub(started.elapsed()));
    });
    let mut term = ratatui::try_init().map_err(TopError::Terminal)?;
    let res = event_loop(&mut term, opts, &rx);
    let restored = ratatui::try_restore().map_err(TopError::Terminal);
    res.and(restored)
}

fn event_loop(
    term: &mut ratatui::DefaultTerminal,
    opts: &Options,
    rx: &crossbeam_channel::Receiver<Result<Poll, TopError>>,
) -> Result<(), TopError> {
    let mut view = View::new(opts);
    let mut dirty = true;
    loop {
        while let Ok(p) = rx.try_recv() {
            view.apply(p);
            dirty = true;
        }
        if dirty {
            term.draw(|f| draw(f, &view)).map_err(TopError::Terminal)?;
            dirty = false;
        }
        if !event::poll(Duration::from_millis(100)).map_err(TopError::Terminal)? {
            continue;
        }
        match event::read().map_err(TopError::Terminal)? {
            Event::Key(k) if k.kind == KeyEventKind::Press => match k.code {
                KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => return Ok(()),
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                _ => {}
            },
            Event::Resize(..) => dirty = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
