//! TLS clients for the integration tests: the test PKI (`scripts/make-test-pki`, made once per test
//! process), `curl`, `openssl s_client`, a python3 `ssl` keep-alive client driven line by line, and
//! labelled `/metrics` sums.
//!
//! Every external command runs under a deadline and is killed and reaped when it passes; nothing
//! here outlives its caller (`PyTlsClient` kills its child on drop).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use super::eventually;

/// Deadline of one curl or s_client run.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------- commands

/// What a finished (or killed) command left.
#[derive(Debug)]
pub struct CmdOut {
    /// Exit code; None if killed (by us at the deadline, or by a signal).
    pub code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOut {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    pub fn all(&self) -> String {
        format!(
            "exit {:?}{}\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            if self.timed_out { " (timed out)" } else { "" },
            self.stdout,
            self.stderr
        )
    }
}

fn drain_to_string(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `program args` with `stdin` as its input; kills it after `timeout`.
pub fn run_cmd(program: &str, args: &[String], stdin: &[u8], timeout: Duration) -> CmdOut {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let mut input = child.stdin.take().expect("stdin piped");
    let data = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&data);
        // Dropping `input` closes the pipe: the command sees EOF.
    });
    let out = drain_to_string(child.stdout.take().expect("stdout piped"));
    let err = drain_to_string(child.stderr.take().expect("stderr piped"));
    let mut status = None;
    eventually(timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    let timed_out = status.is_none();
    if timed_out {
        let _ = child.kill();
        status = child.wait().ok();
    }
    let _ = writer.join();
    CmdOut {
        code: if timed_out {
            None
        } else {
            status.and_then(|s| s.code())
        },
        timed_out,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------- the PKI

/// The directory holding the test PKI, made by `scripts/make-test-pki` on first use (once per test
/// process). Left behind by the process; the next one removes those of processes that are gone.
pub fn pki() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = std::env::temp_dir().join("sluice-tests");
        remove_stale_pkis(&root);
        let dir = root.join(format!("pki-{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-test-pki");
        let out = run_cmd(
            script.to_str().expect("utf-8 path"),
            &[dir.to_str().expect("utf-8 temp path").to_string()],
            b"",
            Duration::from_secs(120),
        );
        assert!(
            out.success(),
            "scripts/make-test-pki failed:\n{}",
            out.all()
        );
        dir
    })
}

fn remove_stale_pkis(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("pki-")) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The path of `file` in the test PKI (`"a.test.crt"`), as a string for a TOML value.
pub fn pki_file(file: &str) -> String {
    pki().join(file).to_str().expect("utf-8 path").to_string()
}

/// Copies PKI files `from` to `to` in `dir` (temp file + rename, so a reader sees one or the other).
pub fn install(dir: &Path, from: &str, to: &str) -> String {
    let dest = dir.join(to);
    let tmp = dir.join(format!("{to}.tmp-copy"));
    std::fs::copy(pki().join(from), &tmp).unwrap_or_else(|e| panic!("copy {from}: {e}"));
    std::fs::rename(&tmp, &dest).unwrap_or_else(|e| panic!("rename to {to}: {e}"));
    dest.to_str().expect("utf-8 path").to_string()
}

/// A serial number as uppercase hex without leading zeros (`openssl`'s and JSON's compare equal).
pub fn norm_serial(s: &str) -> String {
    let s = s
        .trim()
        .trim_start_matches("serial=")
        .replace(':', "")
        .to_ascii_uppercase();
    let s = s.trim_start_matches("0X").trim_start_matches('0');
    if s.is_empty() {
        "0".into()
    } else {
        s.to_string()
    }
}

/// `openssl x509 -noout OPTS` on a PEM certificate given as text.
fn x509(pem: &str, opts: &[&str]) -> String {
    let mut args = strings(&["x509", "-noout"]);
    args.extend(strings(opts));
    let out = run_cmd("openssl", &args, pem.as_bytes(), CLIENT_TIMEOUT);
    assert!(out.success(), "openssl x509 {opts:?}:\n{}", out.all());
    out.stdout
}

/// The normalised serial of PEM certificate text.
pub fn pem_serial(pem: &str) -> String {
    norm_serial(&x509(pem, &["-serial"]))
}

/// The normalised serial of certificate `file` of the PKI (`"a.test.crt"`).
pub fn cert_serial(file: &str) -> String {
    let pem = std::fs::read_to_string(pki().join(file)).expect("read cert");
    pem_serial(&pem)
}

/// `notAfter` of certificate `file` of the PKI as RFC 3339 UTC (`2029-03-08T20:57:25Z`).
pub fn cert_not_after(file: &str) -> String {
    let pem = std::fs::read_to_string(pki().join(file)).expect("read cert");
    let out = x509(&pem, &["-enddate", "-dateopt", "iso_8601"]);
    out.trim()
        .trim_start_matches("notAfter=")
        .replacen(' ', "T", 1)
}

// ---------------------------------------------------------------- curl

/// A curl request to `https://NAME:PORT/PATH`, NAME resolved to the listener's address, verified
/// against the server CA.
pub struct Curl {
    args: Vec<String>,
    url: String,
}

/// What curl reported.
#[derive(Debug)]
pub struct CurlOut {
    pub out: CmdOut,
    /// `%{http_code}`: 0 when no response came.
    pub status: u16,
    /// `%{http_version}`: "1.1", "2", "0" when none.
    pub http_version: String,
    /// `%{ssl_verify_result}`: 0 = the server certificate verified.
    pub verify: i64,
    pub body: String,
}

impl CurlOut {
    pub fn ok(&self) -> bool {
        self.out.success()
    }
}

impl std::fmt::Display for CurlOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "curl: status {} http_version {} verify {} body {:?}\n{}",
            self.status,
            self.http_version,
            self.verify,
            self.body,
            self.out.all()
        )
    }
}

const CURL_MARK: &str = "\n--curl-w--";

impl Curl {
    pub fn new(addr: SocketAddr, name: &str, path: &str) -> Curl {
        let port = addr.port();
        Curl {
            args: strings(&[
                "-sS",
                "--max-time",
                "10",
                "--connect-timeout",
                "5",
                "--resolve",
                &format!("{name}:{port}:{}", addr.ip()),
                "--cacert",
                &pki_file("ca.crt"),
                "-w",
                &format!("{CURL_MARK} %{{http_code}} %{{http_version}} %{{ssl_verify_result}}\n"),
            ]),
            url: format!("https://{name}:{port}{path}"),
        }
    }
    /// Presents client certificate `who` (`alice` = alice.crt + alice.key).
    pub fn cert(self, who: &str) -> Curl {
        self.args(&[
            "--cert",
            &pki_file(&format!("{who}.crt")),
            "--key",
            &pki_file(&format!("{who}.key")),
        ])
    }
    pub fn header(self, h: &str) -> Curl {
        self.args(&["-H", h])
    }
    pub fn args(mut self, more: &[&str]) -> Curl {
        self.args.extend(strings(more));
        self
    }
    pub fn run(self) -> CurlOut {
        let mut args = self.args;
        args.push(self.url);
        let out = run_cmd("curl", &args, b"", CLIENT_TIMEOUT);
        let (body, tail) = match out.stdout.rfind(CURL_MARK) {
            Some(at) => (
                out.stdout[..at].to_string(),
                out.stdout[at + CURL_MARK.len()..].to_string(),
            ),
            None => (out.stdout.clone(), String::new()),
        };
        let mut w = tail.split_whitespace();
        let status = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let http_version = w.next().unwrap_or("").to_string();
        let verify = w.next().and_then(|s| s.parse().ok()).unwrap_or(-1);
        CurlOut {
            out,
            status,
            http_version,
            verify,
            body,
        }
    }
}

// ---------------------------------------------------------------- openssl s_client

/// One `openssl s_client` run: a handshake and, once it is up, one `GET PATH` with
/// `Connection: close`, read until the server closes (so TLS 1.3 tickets arrive too).
pub struct SClient {
    args: Vec<String>,
    host: String,
    path: String,
    send_request: bool,
}

/// What s_client printed, parsed.
#[derive(Debug)]
pub struct Handshake {
    pub out: CmdOut,
    /// The `New, TLSv1.3, Cipher is ...` / `Reused, ...` line, if a session was established.
    pub established: Option<String>,
    /// Whether the session was resumed (`Reused`).
    pub resumed: bool,
    /// `TLSv1.2`, `TLSv1.3`, ...
    pub version: String,
    /// The negotiated ALPN protocol, None if none was.
    pub alpn: Option<String>,
    /// The server's leaf certificate (PEM), if it sent one.
    pub peer_pem: Option<String>,
    /// `Peer signature type: ...`
    pub peer_sig: Option<String>,
    /// The status of the HTTP response, if one came.
    pub http_status: Option<u16>,
}

impl Handshake {
    /// Whether the handshake completed and the connection ended cleanly. s_client prints a
    /// `New, ...` line with the suite the ServerHello chose even when a later alert ends the
    /// handshake, so that line alone does not say it.
    pub fn ok(&self) -> bool {
        self.established.is_some() && self.peer_pem.is_some() && self.out.success()
    }
    /// The normalised serial of the server's certificate.
    pub fn peer_serial(&self) -> String {
        let pem = self
            .peer_pem
            .as_deref()
            .unwrap_or_else(|| panic!("no server certificate:\n{}", self.out.all()));
        pem_serial(pem)
    }
    /// The subject of the server's certificate (`CN = a.test`).
    pub fn peer_subject(&self) -> String {
        let pem = self
            .peer_pem
            .as_deref()
            .unwrap_or_else(|| panic!("no server certificate:\n{}", self.out.all()));
        x509(pem, &["-subject"])
            .trim()
            .trim_start_matches("subject=")
            .to_string()
    }
}

impl std::fmt::Display for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "s_client: established {:?} version {} alpn {:?} http {:?}\n{}",
            self.established,
            self.version,
            self.alpn,
            self.http_status,
            self.out.all()
        )
    }
}

impl SClient {
    /// A handshake with `addr`, SNI `name` (None: no SNI at all).
    pub fn new(addr: SocketAddr, name: Option<&str>) -> SClient {
        let mut args = strings(&["s_client", "-connect", &addr.to_string(), "-ign_eof"]);
        match name {
            Some(n) => args.extend(strings(&["-servername", n])),
            None => args.push("-noservername".into()),
        }
        SClient {
            args,
            host: name.unwrap_or("localhost").to_string(),
            path: "/".into(),
            send_request: true,
        }
    }
    /// Verifies the server against the server CA (the handshake fails if it does not verify).
    pub fn verify(self) -> SClient {
        self.args(&["-CAfile", &pki_file("ca.crt"), "-verify_return_error"])
    }
    pub fn alpn(self, protos: &str) -> SClient {
        self.args(&["-alpn", protos])
    }
    /// Presents client certificate `who`.
    pub fn cert(self, who: &str) -> SClient {
        self.args(&[
            "-cert",
            &pki_file(&format!("{who}.crt")),
            "-key",
            &pki_file(&format!("{who}.key")),
        ])
    }
    pub fn sess_out(self, file: &Path) -> SClient {
        self.args(&["-sess_out", file.to_str().expect("utf-8 path")])
    }
    pub fn sess_in(self, file: &Path) -> SClient {
        self.args(&["-sess_in", file.to_str().expect("utf-8 path")])
    }
    pub fn path(mut self, path: &str) -> SClient {
        self.path = path.into();
        self
    }
    /// Sends no request: the client closes right after the handshake.
    pub fn no_request(mut self) -> SClient {
        self.send_request = false;
        self
    }
    pub fn args(mut self, more: &[&str]) -> SClient {
        self.args.extend(strings(more));
        self
    }
    pub fn run(self) -> Handshake {
        let mut args = self.args;
        let req = if self.send_request {
            format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.path, self.host
            )
        } else {
            // No -ign_eof then: EOF on stdin ends the connection after the handshake.
            args.retain(|a| a != "-ign_eof");
            String::new()
        };
        let out = run_cmd("openssl", &args, req.as_bytes(), CLIENT_TIMEOUT);
        parse_s_client(out)
    }
}

fn parse_s_client(out: CmdOut) -> Handshake {
    let text = out.stdout.clone();
    let established = text
        .lines()
        .find(|l| l.starts_with("New, ") || l.starts_with("Reused, "))
        .filter(|l| !l.contains("(NONE)"))
        .map(str::to_string);
    let resumed = established
        .as_deref()
        .is_some_and(|l| l.starts_with("Reused, "));
    let version = established
        .as_deref()
        .and_then(|l| l.split(", ").nth(1))
        .unwrap_or("")
        .to_string();
    let alpn = text
        .lines()
        .find_map(|l| l.strip_prefix("ALPN protocol: "))
        .map(|s| s.trim().to_string());
    let peer_pem = text.find("-----BEGIN CERTIFICATE-----").and_then(|start| {
        let end_mark = "-----END CERTIFICATE-----";
        let end = text[start..].find(end_mark)? + start + end_mark.len();
        Some(format!("{}\n", &text[start..end]))
    });
    let peer_sig = text
        .lines()
        .find_map(|l| l.strip_prefix("Peer signature type: "))
        .map(|s| s.trim().to_string());
    let http_status = text.lines().find_map(|l| {
        let rest = l.strip_prefix("HTTP/1.1 ")?;
        rest.split_whitespace().next()?.parse().ok()
    });
    Handshake {
        out,
        established,
        resumed,
        version,
        alpn,
        peer_pem,
        peer_sig,
        http_status,
    }
}

// ---------------------------------------------------------------- python3 keep-alive client

const PY_CLIENT: &str = r#"
import socket, ssl, sys
host, port, name, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    ctx = ssl.create_default_context(cafile=cafile)
    if len(sys.argv) > 6:
        ctx.load_cert_chain(sys.argv[5], sys.argv[6])
    ctx.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection((host, port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname=name)
    print("serial", s.getpeercert()["serialNumber"], flush=True)
    f = s.makefile("rb")
    for line in sys.stdin:
        path = line.strip()
        if not path:
            break
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, name)).encode())
        status = f.readline().split()
        if len(status) < 2:
            print("error connection closed", flush=True)
            break
        length = 0
        while True:
            h = f.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            if k.strip().lower() == "content-length":
                length = int(v.strip())
        body = f.read(length).decode("utf-8", "replace").replace("\n", " ")
        print("response", status[1].decode(), body, flush=True)
except Exception as e:
    print("error", type(e).__name__, e, flush=True)
"#;

/// A python3 `ssl` client holding one keep-alive connection; each `get` sends one request on it.
pub struct PyTlsClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// The serial of the certificate the connection was set up with (normalised).
    pub serial: String,
}

impl PyTlsClient {
    /// Connects to `addr` with SNI `name`, verifying against the server CA.
    pub fn connect(addr: SocketAddr, name: &str) -> PyTlsClient {
        Self::start(addr, name, &[])
    }

    /// `connect`, presenting client certificate `who` (`alice` = alice.crt + alice.key).
    pub fn connect_as(addr: SocketAddr, name: &str, who: &str) -> PyTlsClient {
        Self::start(
            addr,
            name,
            &[
                pki_file(&format!("{who}.crt")),
                pki_file(&format!("{who}.key")),
            ],
        )
    }

    fn start(addr: SocketAddr, name: &str, cert: &[String]) -> PyTlsClient {
        let mut child = Command::new("python3")
            .args([
                "-c",
                PY_CLIENT,
                &addr.ip().to_string(),
                &addr.port().to_string(),
                name,
                &pki_file("ca.crt"),
            ])
            .args(cert)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn python3: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut c = PyTlsClient {
            child,
            stdin,
            lines,
            serial: String::new(),
        };
        let first = c.line();
        let serial = first
            .strip_prefix("serial ")
            .unwrap_or_else(|| panic!("python TLS client: {first}"));
        c.serial = norm_serial(serial);
        c
    }

    fn line(&mut self) -> String {
        match self.lines.recv_timeout(CLIENT_TIMEOUT) {
            Ok(l) => l,
            Err(e) => format!("error no line from the client ({e})"),
        }
    }

    /// GET `path` on the open connection: (status, body), or Err(what the client said).
    pub fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        writeln!(stdin, "{path}").map_err(|e| format!("write to python: {e}"))?;
        stdin.flush().map_err(|e| format!("flush: {e}"))?;
        let line = self.line();
        let rest = line.strip_prefix("response ").ok_or(line.clone())?;
        let (status, body) = rest.split_once(' ').unwrap_or((rest, ""));
        let status = status.parse().map_err(|_| line.clone())?;
        Ok((status, body.to_string()))
    }
}

impl Drop for PyTlsClient {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- metrics

/// Parses `a="x",b="y"` into a map.
fn labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',').trim().to_string();
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = rest.len() - eq - 2;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(match n {
                            'n' => '\n',
                            o => o,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key, value);
        rest = &rest[eq + 2 + end..];
    }
    out
}

/// The sum of the samples of family `name` whose labels include every `(key, value)` of `want`
/// (other labels, such as `worker`, may be anything). 0 when none match.
pub fn metric_where(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (l, rest) = match rest.strip_prefix('{') {
                Some(r) => {
                    let end = r.rfind('}')?;
                    (labels(&r[..end]), &r[end + 1..])
                }
                None if rest.starts_with(' ') => (BTreeMap::new(), rest),
                None => return None,
            };
            let ok = want
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v));
            let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
            ok.then_some(value)
        })
        .sum()
}
