//! tlsload: new TLS connections at saturation, for loadtest/run's tls_handshake and tls_resume.
//!
//! Each of `--conns` threads loops until `--duration` has passed: TCP connect, TLS handshake
//! (rustls client, ring provider), one `GET PATH` with `Connection: close`, read until the server
//! closes. Without `--resume` every handshake is full (no session cache, so no PSK or session id is
//! ever offered); with `--resume` each thread has its own session cache, so its first handshake is
//! full and every later one offers the ticket (TLS 1.3) or session (TLS 1.2) of an earlier one.
//! Which kind each handshake really was comes from rustls' `handshake_kind()`: the client sees
//! whether the server accepted the offer, so the counts are what the server did, not what we asked.
//!
//! The certificate chain and the handshake signature are not verified (the server still signs,
//! and loadtest/run checks the certificate with `curl --cacert` first); `--expect-cert FILE`
//! checks that the first handshake of each thread got exactly that end-entity certificate.
//! Prints one JSON object on stdout. Never writes anything else but to stderr on bad usage.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::ring::kx_group;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind, SignatureScheme, StreamOwned};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

const USAGE: &str = "usage: tlsload --addr HOST:PORT [--sni NAME] [--conns N] [--duration SECONDS]
               [--resume] [--tls-version 1.2|1.3] [--path PATH] [--expect-cert PEM]
  a new TCP connection and TLS handshake per request (Connection: close), N threads in parallel;
  --resume: a session cache per thread (resumed handshakes), else full handshakes only";

struct Opts {
    addr: SocketAddr,
    sni: ServerName<'static>,
    host: String,
    conns: usize,
    duration: Duration,
    resume: bool,
    tls12: bool,
    path: String,
    expect_cert: Option<Vec<u8>>,
}

fn usage(msg: &str) -> ! {
    eprintln!("tlsload: {msg}\n{USAGE}");
    std::process::exit(2);
}

fn parse_opts() -> Opts {
    let mut args = std::env::args().skip(1);
    let (mut addr, mut sni, mut conns, mut secs) = (None, "localhost".to_string(), 64usize, 10.0f64);
    let (mut resume, mut tls12, mut path, mut expect) = (false, false, "/".to_string(), None);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage(&format!("{a} needs a value")));
        match a.as_str() {
            "--addr" => addr = Some(val()),
            "--sni" => sni = val(),
            "--conns" => conns = val().parse().unwrap_or_else(|_| usage("--conns: not a number")),
            "--duration" => secs = val().parse().unwrap_or_else(|_| usage("--duration: not a number")),
            "--resume" => resume = true,
            "--tls-version" => match val().as_str() {
                "1.2" => tls12 = true,
                "1.3" => tls12 = false,
                v => usage(&format!("--tls-version {v}: 1.2 or 1.3")),
            },
            "--path" => path = val(),
            "--expect-cert" => expect = Some(val()),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    let addr = addr.unwrap_or_else(|| usage("--addr is required"));
    let addr = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| usage(&format!("--addr {addr}: not an address")));
    if conns == 0 || !(secs > 0.0) {
        usage("--conns and --duration must be > 0");
    }
    let expect_cert = expect.map(|f| {
        let pem = std::fs::read_to_string(&f).unwrap_or_else(|e| usage(&format!("--expect-cert {f}: {e}")));
        first_pem_der(&pem).unwrap_or_else(|| usage(&format!("--expect-cert {f}: no CERTIFICATE block")))
    });
    let server_name = ServerName::try_from(sni.clone()).unwrap_or_else(|_| usage(&format!("--sni {sni}: not a name")));
    Opts { addr, sni: server_name, host: sni, conns, duration: Duration::from_secs_f64(secs), resume, tls12, path, expect_cert }
}

/// The DER of the first `CERTIFICATE` block of a PEM file (base64 decoded by hand: no extra crate).
fn first_pem_der(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = start + pem[start..].find("-----END CERTIFICATE-----")?;
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in pem[start..end].bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => continue, // line breaks
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Accepts any certificate and signature: the load generator must not spend its CPU (shared with
/// the backend) checking what loadtest/run already checked once with curl.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One client config per thread, so each thread's session cache holds only its own tickets.
fn client_config(o: &Opts) -> Arc<ClientConfig> {
    // ring, as sluice uses (deprecated in rustls 0.23.48 for lacking post-quantum key exchange;
    // X25519 is what both proxies negotiate with it, which keeps the comparison like for like)
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    // rustls 0.23.48 lists secp384r1 first for ring; offer X25519 first, as curl, OpenSSL and
    // browsers do (a P-384 key share costs both sides about ten times an X25519 one)
    provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    let provider = Arc::new(provider);
    let versions: &[&rustls::SupportedProtocolVersion] =
        if o.tls12 { &[&rustls::version::TLS12] } else { &[&rustls::version::TLS13] };
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap_or_else(|e| usage(&format!("protocol versions: {e}")))
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.resumption = if o.resume { Resumption::in_memory_sessions(64) } else { Resumption::disabled() };
    Arc::new(cfg)
}

#[derive(Default)]
struct Stats {
    ok: u64,
    full: u64,
    full_hrr: u64,
    resumed: u64,
    errors: BTreeMap<&'static str, (u64, String)>,
    latency_us: Vec<u32>,
    /// from the thread's first good connection: protocol, suite, group, ALPN, certificate match
    first: Option<[String; 5]>,
}

impl Stats {
    fn error(&mut self, kind: &'static str, e: impl std::fmt::Display) {
        let slot = self.errors.entry(kind).or_insert_with(|| (0, e.to_string()));
        slot.0 += 1;
    }
}

enum Fail {
    Connect(io::Error),
    Io(io::Error),
    Status(String),
}

/// One connection: handshake, GET, the response up to the server's close.
fn one(o: &Opts, cfg: &Arc<ClientConfig>, req: &[u8], buf: &mut Vec<u8>) -> Result<ClientConnection, Fail> {
    let sock = TcpStream::connect_timeout(&o.addr, IO_TIMEOUT).map_err(Fail::Connect)?;
    let _ = sock.set_nodelay(true);
    sock.set_read_timeout(Some(IO_TIMEOUT)).map_err(Fail::Io)?;
    sock.set_write_timeout(Some(IO_TIMEOUT)).map_err(Fail::Io)?;
    let conn = ClientConnection::new(cfg.clone(), o.sni.clone())
        .map_err(|e| Fail::Io(io::Error::other(e)))?;
    let mut tls = StreamOwned::new(conn, sock);
    tls.write_all(req).map_err(Fail::Io)?; // the handshake completes first
    tls.flush().map_err(Fail::Io)?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // a server that closes without close_notify after a complete response is still fine
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !buf.is_empty() => break,
            Err(e) => return Err(Fail::Io(e)),
        }
    }
    if !(buf.starts_with(b"HTTP/1.1 200 ") || buf.starts_with(b"HTTP/1.0 200 ")) {
        let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
        return Err(Fail::Status(String::from_utf8_lossy(line).into_owned()));
    }
    let (conn, _) = tls.into_parts();
    Ok(conn)
}

fn worker(o: Arc<Opts>, deadline: Instant) -> Stats {
    let cfg = client_config(&o);
    let req = format!("GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tlsload\r\nConnection: close\r\n\r\n", o.path, o.host);
    let mut st = Stats { latency_us: Vec::with_capacity(1 << 16), ..Stats::default() };
    let mut buf = Vec::with_capacity(8192);
    while Instant::now() < deadline {
        let t0 = Instant::now();
        match one(&o, &cfg, req.as_bytes(), &mut buf) {
            Ok(conn) => {
                st.ok += 1;
                st.latency_us.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                match conn.handshake_kind() {
                    Some(HandshakeKind::Resumed) => st.resumed += 1,
                    Some(HandshakeKind::FullWithHelloRetryRequest) => {
                        st.full += 1;
                        st.full_hrr += 1
                    }
                    _ => st.full += 1,
                }
                if st.first.is_none() {
                    let cert_match = match (&o.expect_cert, conn.peer_certificates()) {
                        (None, _) => "not checked".to_string(),
                        (Some(want), Some(got)) if got.first().is_some_and(|c| c.as_ref() == want.as_slice()) => "yes".into(),
                        (Some(_), _) => "NO".into(),
                    };
                    st.first = Some([
                        conn.protocol_version().map_or("-".into(), |v| format!("{v:?}")),
                        conn.negotiated_cipher_suite().map_or("-".into(), |s| format!("{:?}", s.suite())),
                        conn.negotiated_key_exchange_group().map_or("-".into(), |g| format!("{:?}", g.name())),
                        conn.alpn_protocol().map_or("-".into(), |a| String::from_utf8_lossy(a).into_owned()),
                        cert_match,
                    ]);
                }
            }
            Err(Fail::Connect(e)) => st.error("connect", e),
            Err(Fail::Io(e)) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => st.error("timeout", e),
            Err(Fail::Io(e)) => st.error(if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) { "tls" } else { "io" }, e),
            Err(Fail::Status(line)) => st.error("status", line),
        }
    }
    st
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() {
    let o = Arc::new(parse_opts());
    let start = Instant::now();
    let deadline = start + o.duration;
    let threads: Vec<_> = (0..o.conns)
        .map(|_| {
            let o = o.clone();
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || worker(o, deadline))
                .unwrap_or_else(|e| usage(&format!("cannot start a thread: {e}")))
        })
        .collect();
    let mut all = Stats::default();
    let mut firsts = BTreeMap::new();
    for t in threads {
        let st = t.join().unwrap_or_else(|_| usage("a worker thread panicked"));
        all.ok += st.ok;
        all.full += st.full;
        all.full_hrr += st.full_hrr;
        all.resumed += st.resumed;
        for (k, (n, sample)) in st.errors {
            let slot = all.errors.entry(k).or_insert((0, sample));
            slot.0 += n;
        }
        all.latency_us.extend(st.latency_us);
        if let Some(f) = st.first {
            *firsts.entry(f).or_insert(0u64) += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    all.latency_us.sort_unstable();
    let pct = |p: f64| -> String {
        if all.latency_us.is_empty() {
            return "null".into();
        }
        let i = ((p / 100.0) * (all.latency_us.len() - 1) as f64).round() as usize;
        format!("{:.3}", f64::from(all.latency_us[i]) / 1e3)
    };
    let errors: Vec<String> = all
        .errors
        .iter()
        .map(|(k, (n, s))| format!("{}: {{\"count\": {n}, \"sample\": {}}}", json_str(k), json_str(s)))
        .collect();
    let nerr: u64 = all.errors.values().map(|(n, _)| n).sum();
    let firsts: Vec<String> = firsts
        .iter()
        .map(|(f, n)| {
            format!(
                "{{\"threads\": {n}, \"protocol\": {}, \"suite\": {}, \"group\": {}, \"alpn\": {}, \"cert_match\": {}}}",
                json_str(&f[0]), json_str(&f[1]), json_str(&f[2]), json_str(&f[3]), json_str(&f[4])
            )
        })
        .collect();
    println!(
        "{{\"tool\": \"tlsload\", \"addr\": {}, \"sni\": {}, \"conns\": {}, \"mode\": {}, \"tls_version\": {}, \
         \"seconds\": {secs:.3}, \"connections\": {}, \"per_sec\": {:.1}, \"full\": {}, \"full_hrr\": {}, \"resumed\": {}, \
         \"p50_ms\": {}, \"p90_ms\": {}, \"p99_ms\": {}, \"errors\": {nerr}, \"error_detail\": {{{}}}, \"negotiated\": [{}]}}",
        json_str(&o.addr.to_string()),
        json_str(&o.host),
        o.conns,
        json_str(if o.resume { "resume" } else { "full" }),
        json_str(if o.tls12 { "1.2" } else { "1.3" }),
        all.ok,
        all.ok as f64 / secs,
        all.full,
        all.full_hrr,
        all.resumed,
        pct(50.0),
        pct(90.0),
        pct(99.0),
        errors.join(", "),
        firsts.join(", "),
    );
}
