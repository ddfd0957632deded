//! Integration-test harness: runs the real `sluice` binary on a temp config,
//! in-process HTTP/1.1 backends, a scripted raw TCP origin (`raw`), a raw-socket
//! client, `/metrics` readers, and TLS clients with the test PKI (`tls`).
//!
//! Sits outside the proxy: everything here talks to sluice over loopback TCP
//! or signals. It must never leave a process or a thread running past its
//! owner (`Sluice` kills and reaps its child on drop, `Backend` stops its
//! threads on drop), and every wait is bounded in time (`eventually`,
//! socket timeouts).
#![allow(dead_code)]
// The harness runs on plain std threads (backends, pipe drains), not on
// sluice's workers: a Mutex here is the simple, correct tool.
#![allow(clippy::disallowed_types)]

pub mod backend;
pub mod client;
pub mod idp;
pub mod metrics;
pub mod raw;
pub mod tls;
pub mod traffic;
pub mod webhook;

#[allow(unused_imports)]
pub use backend::{refused_addr, Backend, Reply, Request};
#[allow(unused_imports)]
pub use client::{build_request, http_get, send_raw, Conn, Response};
#[allow(unused_imports)]
pub use metrics::{metric_sum, metric_value, scrape};
#[allow(unused_imports)]
pub use raw::{request_path, HeadRead, RawBackend, RawConn};
#[allow(unused_imports)]
pub use traffic::Traffic;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");
/// How long `Sluice::start` waits for every `listening on` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Read/write timeout of every client socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------- helpers

/// Polls `f` every 10 ms until it returns true or `timeout` passes.
/// Returns whether it became true. The only way tests wait for something.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// An argon2id PHC string of `password`, with small parameters: tests check verification, not the
/// cost.
pub fn argon2_hash(password: &str) -> String {
    use argon2::password_hash::PasswordHasher;
    let params = argon2::Params::new(1024, 1, 1, None).expect("params");
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let h: argon2::PasswordHash = a
        .hash_password_with_salt(password.as_bytes(), b"sluice-test-salt")
        .expect("hash");
    h.to_string()
}

/// Deterministic pseudo-random bytes (xorshift), so big bodies are not all one byte.
pub fn pattern_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// Writes `contents` to `name` inside the dir (atomically: temp file + rename).
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        write_atomic(&path, contents);
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty, per-test directory under the system temp dir.
pub fn temp_dir() -> TempDir {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join("sluice-tests").join(format!(
        "{}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        nanos
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    TempDir(dir)
}

fn write_atomic(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename temp file");
}

/// Top-level keys `config` uses.
pub const DEFAULT_TOP: &str = "workers = 1\nlog_level = \"info\"\nshutdown_timeout = \"2s\"";

/// A config with one listener `main` on port 0, `workers = 1`, short
/// timeouts, followed by `rest` (tables only: `[upstreams.x]`, `[routes.y]`, ...).
pub fn config(rest: &str) -> String {
    config_with(DEFAULT_TOP, rest)
}

/// Like `config` but with the given top-level keys instead of `DEFAULT_TOP`.
pub fn config_with(top: &str, rest: &str) -> String {
    format!("{top}\n\n[listeners.main]\nlisten = \"127.0.0.1:0\"\n\n{rest}\n")
}

/// `[upstreams.NAME]` with the given endpoints and extra keys. Short
/// `connect_timeout` (500ms) and `response_timeout` (2s) unless `extra` sets them.
pub fn upstream(name: &str, endpoints: &[SocketAddr], extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    upstream_raw(name, &eps.join(", "), extra)
}

/// Like `upstream` with the `endpoints` array body written out as TOML.
pub fn upstream_raw(name: &str, endpoints_toml: &str, extra: &str) -> String {
    let mut out = format!("[upstreams.{name}]\nendpoints = [{endpoints_toml}]\n");
    let sets = |key: &str| extra.lines().any(|l| l.trim_start().starts_with(key));
    if !sets("connect_timeout") {
        out.push_str("connect_timeout = \"500ms\"\n");
    }
    if !sets("response_timeout") {
        out.push_str("response_timeout = \"2s\"\n");
    }
    out.push_str(extra);
    out.push_str("\n\n");
    out
}

/// A catch-all route `/*` to upstream `up`.
pub fn catch_all(up: &str) -> String {
    format!("[routes.all]\npath = \"/*\"\nupstream = \"{up}\"\n\n")
}

/// A config routing everything (`/*`) to upstream `app` = `backends`, with
/// extra upstream keys `up_extra` and further tables `more` (e.g. `[http]`).
pub fn simple_config(backends: &[SocketAddr], up_extra: &str, more: &str) -> String {
    config(&format!(
        "{more}\n\n{}{}",
        upstream("app", backends, up_extra),
        catch_all("app")
    ))
}

/// sluice (workers = 1) proxying everything to `be`.
pub fn proxy_to(be: &Backend) -> Sluice {
    Sluice::start(&simple_config(&[be.addr()], "", ""))
}

/// Extracts a string field from a flat JSON object (`"key":"value"`).
pub fn json_str(body: &[u8], key: &str) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let rest = json_after_key(&text, key)?;
    let rest = rest.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

/// Extracts an integer field from a flat JSON object (`"key":123`).
pub fn json_num(body: &[u8], key: &str) -> Option<i64> {
    let text = String::from_utf8_lossy(body);
    let rest = json_after_key(&text, key)?;
    let digits: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().ok()
}

fn json_after_key<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\"");
    let at = text.find(&pat)?;
    let rest = text[at + pat.len()..].trim_start();
    let rest = rest.strip_prefix(':')?;
    Some(rest.trim_start())
}

/// Asserts `resp` is one of sluice's JSON error responses with `status`,
/// whose `request_id` matches the `X-Request-Id` response header.
/// Asserts that a response the upstream cut short reaches the client as an early close or as the error
/// `status`, never as a complete-looking reply, and that the client was not left hanging.
pub fn assert_cut_off(r: std::io::Result<Response>, status: u16, what: &str) {
    match r {
        Ok(r) => assert_eq!(r.status, status, "{what} must not look complete:\n{r}"),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "client left hanging after {what}: {e}"
        ),
    }
}

pub fn assert_json_error(resp: &Response, status: u16) {
    assert_eq!(resp.status, status, "status; response:\n{resp}");
    let ct = resp.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "error content-type should be application/json, got {ct:?}; response:\n{resp}"
    );
    assert_eq!(
        json_num(&resp.body, "status"),
        Some(status as i64),
        "JSON body should carry \"status\":{status}; response:\n{resp}"
    );
    assert!(
        json_str(&resp.body, "error").is_some_and(|e| !e.is_empty()),
        "JSON body should carry a non-empty \"error\"; response:\n{resp}"
    );
    let id = json_str(&resp.body, "request_id");
    assert!(
        id.as_deref().is_some_and(|i| !i.is_empty()),
        "JSON body should carry a \"request_id\"; response:\n{resp}"
    );
    if let Some(h) = resp.header("x-request-id") {
        assert_eq!(
            Some(h),
            id.as_deref(),
            "X-Request-Id header vs body request_id"
        );
    }
}

// ---------------------------------------------------------------- process

/// Lines captured from one of the child's pipes.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    pub fn text(&self) -> String {
        self.lines().join("\n")
    }
    pub fn count(&self, needle: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
    pub fn contains(&self, needle: &str) -> bool {
        self.count(needle) > 0
    }
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

/// Removes ANSI escape sequences (in case colours are forced on).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Drains `pipe` line by line into `log` (and `tx`) until EOF, so the child never blocks.
fn drain(
    pipe: impl Read + Send + 'static,
    log: Log,
    tx: Option<mpsc::Sender<String>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line =
                        strip_ansi(String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']));
                    log.push(line.clone());
                    if let Some(tx) = &tx {
                        let _ = tx.send(line);
                    }
                }
            }
        }
    })
}

/// What a listener line announced.
enum Announce {
    Admin(SocketAddr),
    Listener(SocketAddr),
}

fn parse_announce(line: &str) -> Option<Announce> {
    fn addr_after(line: &str, marker: &str) -> Option<SocketAddr> {
        let at = line.find(marker)?;
        let token = line[at + marker.len()..].split_whitespace().next()?;
        let token = token.trim_matches(|c: char| c == '"' || c == ',' || c == ';' || c == '\'');
        token.parse().ok()
    }
    if line.contains("admin listening on ") {
        return addr_after(line, "admin listening on ").map(Announce::Admin);
    }
    addr_after(line, "listening on ").map(Announce::Listener)
}

/// The environment every child gets: no inherited RUST_LOG (it could hide the
/// `listening on` lines); `SLUICE_TEST_RUST_LOG` is passed on as RUST_LOG for debugging.
fn base_command(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Ok(level) = std::env::var("SLUICE_TEST_RUST_LOG") {
        cmd.env("RUST_LOG", level);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A running sluice. Killed and reaped on drop; its stderr is printed then
/// if the test is panicking.
pub struct Sluice {
    child: Child,
    dir: TempDir,
    config_path: Option<PathBuf>,
    addrs: Vec<SocketAddr>,
    admin: Option<SocketAddr>,
    stderr: Log,
    stdout: Log,
    exited: Option<ExitStatus>,
}

impl Sluice {
    /// Starts `sluice -c FILE` on `toml`; waits ≤10 s for every listener line.
    pub fn start(toml: &str) -> Sluice {
        Self::start_env(toml, &[])
    }

    /// Like `start`, with extra environment variables.
    pub fn start_env(toml: &str, env: &[(&str, &str)]) -> Sluice {
        let table: toml::Table = toml
            .parse()
            .unwrap_or_else(|e| panic!("test config is not valid TOML: {e}\n{toml}"));
        let listeners = table
            .get("listeners")
            .and_then(|l| l.as_table())
            .map(|t| t.len())
            .unwrap_or(0);
        let admin = table.get("admin").is_some();
        let dir = temp_dir();
        let path = dir.write("sluice.toml", toml);
        let path_str = path.to_str().expect("utf-8 temp path").to_owned();
        Self::spawn(dir, Some(path), &["-c", &path_str], env, listeners, admin)
    }

    /// Starts sluice with raw CLI arguments (quick mode: `proxy --listen 127.0.0.1:0 --to ADDR`);
    /// waits for one listener line.
    pub fn start_args(args: &[&str]) -> Sluice {
        Self::spawn(temp_dir(), None, args, &[], 1, false)
    }

    fn spawn(
        dir: TempDir,
        config_path: Option<PathBuf>,
        args: &[&str],
        env: &[(&str, &str)],
        listeners: usize,
        expect_admin: bool,
    ) -> Sluice {
        let mut child = base_command(args, dir.path(), env)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        let stderr = Log::default();
        let stdout = Log::default();
        let (tx, rx) = mpsc::channel();
        drain(
            child.stderr.take().expect("stderr piped"),
            stderr.clone(),
            Some(tx),
        );
        drain(
            child.stdout.take().expect("stdout piped"),
            stdout.clone(),
            None,
        );
        let mut sluice = Sluice {
            child,
            dir,
            config_path,
            addrs: Vec::new(),
            admin: None,
            stderr,
            stdout,
            exited: None,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while sluice.addrs.len() < listeners || (expect_admin && sluice.admin.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => match parse_announce(&line) {
                    Some(Announce::Admin(a)) => sluice.admin = Some(a),
                    Some(Announce::Listener(a)) => sluice.addrs.push(a),
                    None => {}
                },
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = sluice.child.kill();
                    let _ = sluice.child.wait();
                    panic!(
                        "sluice did not announce {listeners} listener(s){} within {STARTUP_TIMEOUT:?} \
                         (args {args:?}); stderr:\n{}\nstdout:\n{}",
                        if expect_admin { " + admin" } else { "" },
                        sluice.stderr.text(),
                        sluice.stdout.text()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = sluice.wait_exit(Duration::from_secs(2));
                    panic!(
                        "sluice exited before announcing its listeners (status {status:?}, args {args:?}); \
                         stderr:\n{}\nstdout:\n{}",
                        sluice.stderr.text(),
                        sluice.stdout.text()
                    );
                }
            }
        }
        sluice
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }
    /// Every listener's address, in config order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    /// The config file sluice was started with (panics in CLI mode).
    pub fn config_path(&self) -> &Path {
        self.config_path
            .as_deref()
            .expect("sluice was started without a config file")
    }
    /// The per-test temp dir (also sluice's working directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// Atomically replaces the config file (does not signal).
    pub fn rewrite_config(&self, toml: &str) {
        write_atomic(self.config_path(), toml);
    }
    /// Sends a signal (libc::SIGHUP, SIGTERM, ...) to the child.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.child.id());
    }
    /// Sends SIGHUP and waits (≤5 s) for `config reloaded` or `reload rejected`.
    pub fn reload(&self) -> Reload {
        let ok0 = self.stderr.count("config reloaded");
        let bad0 = self.stderr.count("reload rejected");
        self.signal(libc::SIGHUP);
        let mut out = Reload::Timeout;
        eventually(Duration::from_secs(5), || {
            if self.stderr.count("config reloaded") > ok0 {
                out = Reload::Applied;
            } else if self.stderr.count("reload rejected") > bad0 {
                out = Reload::Rejected;
            }
            out != Reload::Timeout
        });
        out
    }
    /// Everything sluice wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.text()
    }
    pub fn stderr_log(&self) -> &Log {
        &self.stderr
    }
    pub fn stdout_text(&self) -> String {
        self.stdout.text()
    }
    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exited {
            return Some(s);
        }
        let child = &mut self.child;
        let mut status = None;
        eventually(timeout, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        self.exited = status;
        status
    }
    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.exited.is_none() && matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "----- sluice stderr ({} lines) -----\n{}\n----- end sluice stderr -----",
                self.stderr.lines().len(),
                self.stderr.text()
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    Applied,
    Rejected,
    Timeout,
}

/// Result of a one-shot run of the binary.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs the binary to completion (`--check`, `--version`), ≤10 s, in `cwd`.
pub fn run(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    let mut child = base_command(args, cwd, env)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    let out = Log::default();
    let err = Log::default();
    let t_out = drain(
        child.stdout.take().expect("stdout piped"),
        out.clone(),
        None,
    );
    let t_err = drain(
        child.stderr.take().expect("stderr piped"),
        err.clone(),
        None,
    );
    let mut status = None;
    eventually(Duration::from_secs(10), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "`sluice {args:?}` did not exit within 10s; stderr:\n{}",
            err.text()
        );
    };
    // The pipes hit EOF once the child has exited (it spawns nothing).
    let _ = t_out.join();
    let _ = t_err.join();
    Output {
        status,
        stdout: out.text(),
        stderr: err.text(),
    }
}
