//! TLS to upstreams on the real binary: sluice in front of a TLS origin that this test runs (`Front`:
//! rustls on std threads with a certificate of the test PKI, `scripts/make-test-pki`, relaying each
//! session's plaintext to a plain `Backend` on a connection of its own, so the backend's records are
//! the requests as they came out of TLS and its connection count is the count of sessions). Checked
//! on the wire: a private CA, the endpoint's host or IP as the name, a wrong `server_name` refused
//! (502, counted as a connect failure, the reason logged), retried on another endpoint, `verify =
//! false`, the system store (`SSL_CERT_FILE`) and an empty one (a config error), client
//! certificates (TLS 1.3 and 1.2), pooled sessions reused (also across a reload) and retired when the
//! origin closes them while idle, the handshake bounded by `connect_timeout`, health checks over TLS.

// The origin runs on plain std threads, not on sluice's workers: a Mutex there is the simple,
// correct tool (as in the harness).
#![allow(clippy::disallowed_types)]

mod common;

use common::tls::pki_file;
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConnection;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- the TLS origin

/// How a `Front` runs its TLS.
struct FrontOpts {
    /// PKI name of its certificate (`NAME.crt` + `NAME.key`).
    cert: &'static str,
    /// PKI file of the CA whose client certificates it requires.
    client_ca: Option<&'static str>,
    tls12_only: bool,
    /// Ends a session (close_notify, then FIN) that has been idle this long.
    idle_close: Option<Duration>,
}

impl Default for FrontOpts {
    fn default() -> Self {
        FrontOpts {
            cert: "app.internal",
            client_ca: None,
            tls12_only: false,
            idle_close: None,
        }
    }
}

#[derive(Default)]
struct FrontState {
    handshakes: AtomicUsize,
    /// Why handshakes failed, as rustls said.
    failures: Mutex<Vec<String>>,
    /// The SNI of each completed handshake.
    sni: Mutex<Vec<Option<String>>>,
    /// Completed handshakes whose client presented a (verified) certificate.
    client_certs: AtomicUsize,
    /// Sessions this side ended for idleness.
    idle_closed: AtomicUsize,
    stop: AtomicBool,
}

/// A TLS origin on 127.0.0.1:0 relaying to `Backend` `to`. Dropping it stops its accept thread;
/// session threads notice within 20 ms.
struct Front {
    addr: SocketAddr,
    st: Arc<FrontState>,
    accept: Option<thread::JoinHandle<()>>,
}

fn server_config(o: &FrontOpts) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(pki_file(&format!("{}.crt", o.cert)))
            .expect("cert file")
            .collect::<Result<_, _>>()
            .expect("cert pem");
    let key = PrivateKeyDer::from_pem_file(pki_file(&format!("{}.key", o.cert))).expect("key pem");
    let versions: &[&'static rustls::SupportedProtocolVersion] = if o.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS12, &rustls::version::TLS13]
    };
    let b = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("versions");
    let b = match o.client_ca {
        None => b.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(pki_file(ca)).expect("ca file") {
                roots.add(c.expect("ca pem")).expect("ca cert");
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            b.with_client_cert_verifier(v)
        }
    };
    let mut c = b.with_single_cert(chain, key).expect("server cert");
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

impl Front {
    fn start(to: &Backend, o: FrontOpts) -> Front {
        let config = server_config(&o);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind front");
        let addr = listener.local_addr().expect("front addr");
        let st = Arc::new(FrontState::default());
        let (st2, target, idle_close) = (st.clone(), to.addr(), o.idle_close);
        let accept = thread::spawn(move || {
            for tcp in listener.incoming() {
                if st2.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = tcp else { continue };
                let (st3, config) = (st2.clone(), config.clone());
                thread::spawn(move || session(&st3, config, tcp, target, idle_close));
            }
        });
        Front {
            addr,
            st,
            accept: Some(accept),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn handshakes(&self) -> usize {
        self.st.handshakes.load(Ordering::SeqCst)
    }
    fn failures(&self) -> Vec<String> {
        self.st.failures.lock().unwrap().clone()
    }
    fn sni(&self) -> Vec<Option<String>> {
        self.st.sni.lock().unwrap().clone()
    }
    fn client_certs(&self) -> usize {
        self.st.client_certs.load(Ordering::SeqCst)
    }
    fn idle_closed(&self) -> usize {
        self.st.idle_closed.load(Ordering::SeqCst)
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.st.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One session: the handshake (5 s at most), then plaintext both ways until either side ends.
fn session(
    st: &FrontState,
    config: Arc<rustls::ServerConfig>,
    mut tcp: TcpStream,
    target: SocketAddr,
    idle_close: Option<Duration>,
) {
    let Ok(mut conn) = ServerConnection::new(config) else {
        return;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(5)));
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            st.failures.lock().unwrap().push(e.to_string());
            return;
        }
    }
    st.sni
        .lock()
        .unwrap()
        .push(conn.server_name().map(str::to_owned));
    if conn.peer_certificates().is_some_and(|c| !c.is_empty()) {
        st.client_certs.fetch_add(1, Ordering::SeqCst);
    }
    st.handshakes.fetch_add(1, Ordering::SeqCst);
    let Ok(mut inner) = TcpStream::connect(target) else {
        return;
    };
    let step = Some(Duration::from_millis(20));
    let _ = tcp.set_read_timeout(step);
    let _ = inner.set_read_timeout(step);
    let mut buf = vec![0u8; 64 * 1024];
    let mut last = Instant::now();
    let flush = |conn: &mut ServerConnection, tcp: &mut TcpStream| -> io::Result<()> {
        while conn.wants_write() {
            conn.write_tls(tcp)?;
        }
        Ok(())
    };
    'relay: while !st.stop.load(Ordering::SeqCst) {
        if idle_close.is_some_and(|d| last.elapsed() >= d) {
            conn.send_close_notify();
            let _ = flush(&mut conn, &mut tcp);
            st.idle_closed.fetch_add(1, Ordering::SeqCst);
            break;
        }
        // Client -> origin: what rustls holds already (a request that came with the client's
        // Finished is decrypted during the handshake), then what the socket has.
        loop {
            match conn.reader().read(&mut buf) {
                Ok(0) => break 'relay, // close_notify
                Ok(n) => {
                    if inner.write_all(&buf[..n]).is_err() {
                        break 'relay;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => break 'relay,
            }
        }
        // Tickets and other handshake messages rustls queued.
        if flush(&mut conn, &mut tcp).is_err() {
            break;
        }
        match conn.read_tls(&mut tcp) {
            Ok(0) => break,
            Ok(_) => {
                last = Instant::now();
                if conn.process_new_packets().is_err() {
                    let _ = flush(&mut conn, &mut tcp);
                    break;
                }
                continue;
            }
            Err(e) if timed_out(&e) => {}
            Err(_) => break,
        }
        // Origin -> client.
        match inner.read(&mut buf) {
            Ok(0) => {
                conn.send_close_notify();
                let _ = flush(&mut conn, &mut tcp);
                break;
            }
            Ok(n) => {
                last = Instant::now();
                if conn.writer().write_all(&buf[..n]).is_err()
                    || flush(&mut conn, &mut tcp).is_err()
                {
                    break;
                }
            }
            Err(e) if timed_out(&e) => {}
            Err(_) => break,
        }
    }
}

// ---------------------------------------------------------------- config

/// `tls = { .. }` with `keys` (TOML inline-table body).
fn tls(keys: &str) -> String {
    format!("tls = {{ {keys} }}\nconnect_timeout = \"3s\"\n")
}

fn ca() -> String {
    format!("ca = \"{}\"", pki_file("internal-ca.crt"))
}

fn client_cert() -> String {
    format!(
        "client_cert = \"{}\", client_key = \"{}\"",
        pki_file("gw.crt"),
        pki_file("gw.key")
    )
}

/// sluice routing everything to upstream `secure` = `endpoints` with `extra` keys.
fn secure(endpoints: &[SocketAddr], extra: &str) -> String {
    secure_with(endpoints, extra, "")
}

/// Like `secure`, with further tables `more` (`[admin]`).
fn secure_with(endpoints: &[SocketAddr], extra: &str, more: &str) -> String {
    config(&format!(
        "{more}\n{}{}",
        upstream("secure", endpoints, extra),
        catch_all("secure")
    ))
}

/// The system store is `SSL_CERT_FILE` alone: no `SSL_CERT_DIR` (which may be set around the test)
/// adds the machine's CAs.
const NO_CERT_DIR: (&str, &str) = ("SSL_CERT_DIR", "");

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

// ---------------------------------------------------------------- tests

#[test]
fn a_request_reaches_the_backend_through_tls_with_a_private_ca_intact() {
    let be = Backend::start(|r| {
        Reply::ok(format!("{} {} {}", r.method, r.path, r.body.len())).header("x-origin", "tls")
    });
    let front = Front::start(&be, FrontOpts::default());
    let sl = Sluice::start(&secure(
        &[front.addr()],
        &tls(&format!("server_name = \"app.internal\", {}", ca())),
    ));
    let mut c = Conn::connect(sl.addr());
    let body = pattern_bytes(100_000, 7);
    let r = c.request("POST", "/upload?x=1", &[("x-test", "yes")], &body);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body_str(), "POST /upload?x=1 100000");
    assert_eq!(r.header("x-origin"), Some("tls"));
    let got = be.last_request();
    assert_eq!(got.method, "POST");
    assert_eq!(got.path, "/upload?x=1");
    assert_eq!(got.header("x-test"), Some("yes"));
    assert_eq!(got.body, body, "the body came through TLS unchanged");
    assert_eq!(front.sni(), vec![Some("app.internal".to_owned())]);
    assert_eq!(front.client_certs(), 0);
    // A chunked upload streams through the TLS write half too.
    let mut raw = build_request("PUT", "/chunked", &[("transfer-encoding", "chunked")], b"");
    raw.extend_from_slice(&client::chunked(&pattern_bytes(50_000, 9), 4096));
    c.send(&raw);
    let r = c.read_response().expect("chunked response");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body_str(), "PUT /chunked 50000");
    assert_eq!(be.last_request().body, pattern_bytes(50_000, 9));
}

#[test]
fn the_endpoints_host_is_the_name_without_server_name() {
    let be = Backend::fixed("ok");
    let front = Front::start(&be, FrontOpts::default());
    // By name: verified against DNS:localhost, which is also the SNI.
    let by_name = format!("\"localhost:{}\"", front.addr().port());
    let sl = Sluice::start(&config(&format!(
        "{}{}{}[routes.ip]\npath = \"/ip\"\nupstream = \"ip\"\n\n",
        upstream_raw("named", &by_name, &tls(&ca())),
        upstream("ip", &[front.addr()], &tls(&ca())),
        catch_all("named"),
    )));
    let r = http_get(sl.addr(), "/", &[]);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(front.sni(), vec![Some("localhost".to_owned())]);
    // By IP: verified against IP:127.0.0.1, and no SNI (RFC 6066 §3 allows no IP literal there).
    let r = http_get(sl.addr(), "/ip", &[]);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(front.sni(), vec![Some("localhost".to_owned()), None]);
}

#[test]
fn a_wrong_server_name_is_refused_with_502_and_the_reason_logged() {
    let be = Backend::fixed("must not be reached");
    let front = Front::start(&be, FrontOpts::default());
    let sl = Sluice::start(&secure_with(
        &[front.addr()],
        &tls(&format!("server_name = \"other.internal\", {}", ca())),
        ADMIN,
    ));
    let r = http_get(sl.addr(), "/", &[]);
    assert_json_error(&r, 502);
    assert!(
        r.body_str().contains("upstream TLS handshake failed"),
        "{r}"
    );
    assert_eq!(be.request_count(), 0);
    assert_eq!(be.connections(), 0, "no session was established");
    assert!(
        eventually(Duration::from_secs(5), || sl
            .stderr_text()
            .contains("upstream TLS handshake failed")),
        "{}",
        sl.stderr_text()
    );
    let log = sl.stderr_text();
    let line = log
        .lines()
        .find(|l| l.contains("upstream TLS handshake failed"))
        .unwrap_or_default();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("bad_certificate"), "{line}");
    assert!(line.contains("upstream=secure"), "{line}");
    assert!(line.contains(&front.addr().to_string()), "{line}");
    // Counted like any connect failure.
    let admin = sl.admin_addr().expect("admin");
    assert!(eventually(Duration::from_secs(5), || metric_value(
        &scrape(admin),
        "sluice_errors_total",
        "kind=\"upstream_connect\""
    ) >= Some(1.0)));
}

#[test]
fn an_untrusted_certificate_is_refused_and_retried_on_the_next_endpoint() {
    let be = Backend::start(|r| Reply::ok(r.method.clone()));
    // Its certificate (a.test, from the server CA) does not chain to internal-ca.
    let untrusted = Front::start(
        &be,
        FrontOpts {
            cert: "a.test",
            ..Default::default()
        },
    );
    let good = Front::start(&be, FrontOpts::default());
    let sl = Sluice::start(&secure(
        &[untrusted.addr(), good.addr()],
        &format!(
            "{}retries = 1\nbalancer = \"round_robin\"\npassive_health = {{ max_failures = 1000, cooldown = \"1s\" }}\n",
            tls(&format!("server_name = \"app.internal\", {}", ca()))
        ),
    ));
    let mut c = Conn::connect(sl.addr());
    for i in 0..6 {
        // A POST too: nothing was sent on a connection whose handshake failed.
        let r = c.request("POST", "/", &[], b"x");
        assert_eq!(
            (r.status, r.body_str()),
            (200, "POST".to_owned()),
            "{i}: {r}"
        );
    }
    assert_eq!(be.request_count(), 6);
    assert_eq!(untrusted.handshakes(), 0);
    assert!(!untrusted.failures().is_empty());
    // Without another endpoint the same refusal is the client's 502.
    let sl = Sluice::start(&secure(
        &[untrusted.addr()],
        &tls(&format!("server_name = \"app.internal\", {}", ca())),
    ));
    assert_json_error(&http_get(sl.addr(), "/", &[]), 502);
}

#[test]
fn verify_false_accepts_any_certificate_and_warns_at_load() {
    let be = Backend::fixed("unverified");
    let front = Front::start(
        &be,
        FrontOpts {
            cert: "a.test",
            ..Default::default()
        },
    );
    // No ca, a name the certificate does not carry, and an empty system store: all irrelevant.
    let empty = temp_dir();
    let none = empty.write("empty.pem", "");
    let sl = Sluice::start_env(
        &secure(
            &[front.addr()],
            &tls("server_name = \"whatever.example\", verify = false"),
        ),
        &[
            ("SSL_CERT_FILE", none.to_str().expect("utf-8")),
            NO_CERT_DIR,
        ],
    );
    let r = http_get(sl.addr(), "/", &[]);
    assert_eq!(
        (r.status, r.body_str()),
        (200, "unverified".to_owned()),
        "{r}"
    );
    assert_eq!(front.sni(), vec![Some("whatever.example".to_owned())]);
    let log = sl.stderr_text();
    let line = log
        .lines()
        .find(|l| l.contains("verification is off"))
        .unwrap_or_else(|| panic!("no warning at load:\n{log}"));
    assert!(
        line.contains("WARN") && line.contains("upstream=secure"),
        "{line}"
    );
}

#[test]
fn without_ca_the_system_store_is_used_and_an_empty_one_is_a_config_error() {
    let be = Backend::fixed("via system roots");
    let front = Front::start(&be, FrontOpts::default());
    let toml = secure(&[front.addr()], &tls("server_name = \"app.internal\""));
    // The system store is what SSL_CERT_FILE names (rustls-native-certs honours it, as OpenSSL does).
    let sl = Sluice::start_env(
        &toml,
        &[("SSL_CERT_FILE", &pki_file("internal-ca.crt")), NO_CERT_DIR],
    );
    let r = http_get(sl.addr(), "/", &[]);
    assert_eq!(
        (r.status, r.body_str()),
        (200, "via system roots".to_owned()),
        "{r}"
    );
    drop(sl);
    // A store that does not hold internal-ca: refused.
    let sl = Sluice::start_env(
        &toml,
        &[("SSL_CERT_FILE", &pki_file("ca.crt")), NO_CERT_DIR],
    );
    assert_json_error(&http_get(sl.addr(), "/", &[]), 502);
    drop(sl);
    // An empty store with no `ca`: the config is refused, naming the key.
    let dir = temp_dir();
    let none = dir.write("empty.pem", "");
    let path = dir.write("sluice.toml", &toml);
    let out = run(
        &["--check", "-c", path.to_str().expect("utf-8")],
        &[
            ("SSL_CERT_FILE", none.to_str().expect("utf-8")),
            NO_CERT_DIR,
        ],
        dir.path(),
    );
    assert_ne!(out.status.code(), Some(0), "{}", out.all());
    assert!(
        out.all().contains("upstreams.secure.tls.ca"),
        "{}",
        out.all()
    );
    assert!(out.all().contains("system trust store"), "{}", out.all());
}

#[test]
fn a_backend_requiring_a_client_certificate_accepts_sluices_and_refuses_none() {
    for tls12_only in [false, true] {
        let be = Backend::fixed("mutual");
        let front = Front::start(
            &be,
            FrontOpts {
                client_ca: Some("internal-ca.crt"),
                tls12_only,
                ..Default::default()
            },
        );
        let with = Sluice::start(&secure(
            &[front.addr()],
            &tls(&format!(
                "server_name = \"app.internal\", {}, {}",
                ca(),
                client_cert()
            )),
        ));
        let r = http_get(with.addr(), "/", &[]);
        assert_eq!(
            (r.status, r.body_str()),
            (200, "mutual".to_owned()),
            "tls12_only={tls12_only}: {r}"
        );
        assert_eq!(front.client_certs(), 1);
        drop(with);

        let without = Sluice::start(&secure(
            &[front.addr()],
            &tls(&format!("server_name = \"app.internal\", {}", ca())),
        ));
        let r = http_get(without.addr(), "/", &[]);
        assert_json_error(&r, 502);
        assert_eq!(
            be.request_count(),
            1,
            "tls12_only={tls12_only}: only the first got through"
        );
        assert!(
            eventually(Duration::from_secs(5), || !front.failures().is_empty()),
            "the origin refused the session"
        );
        assert_eq!(front.handshakes(), 1, "tls12_only={tls12_only}");
    }
}

#[test]
fn pooled_tls_connections_are_reused_also_across_a_reload() {
    let be = Backend::start(|r| Reply::ok(format!("{}", r.conn_id)));
    let front = Front::start(&be, FrontOpts::default());
    let toml = secure(
        &[front.addr()],
        &tls(&format!(
            "server_name = \"app.internal\", {}, {}",
            ca(),
            client_cert()
        )),
    );
    let sl = Sluice::start(&toml);
    // New client connections each time: the upstream session is the pool's, not the client's.
    for i in 0..10 {
        let r = http_get(sl.addr(), &format!("/{i}"), &[]);
        assert_eq!((r.status, r.body_str()), (200, "0".to_owned()), "{i}: {r}");
    }
    let mut c = Conn::connect(sl.addr());
    for i in 0..10 {
        let r = c.request("POST", "/", &[], &pattern_bytes(20_000, i));
        assert_eq!((r.status, r.body_str()), (200, "0".to_owned()), "{i}: {r}");
    }
    assert_eq!(front.handshakes(), 1);
    assert_eq!(be.connections(), 1);
    assert_eq!(be.request_count(), 20);
    // A reload with the same settings keeps the warm session (same pool key).
    sl.rewrite_config(&toml);
    assert_eq!(sl.reload(), Reload::Applied, "{}", sl.stderr_text());
    let r = http_get(sl.addr(), "/after-reload", &[]);
    assert_eq!((r.status, r.body_str()), (200, "0".to_owned()), "{r}");
    assert_eq!(front.handshakes(), 1);
    // Without pooling every request has its own session.
    let sl = Sluice::start(&secure(
        &[front.addr()],
        &format!(
            "{}pool = {{ max_idle = 0 }}\n",
            tls(&format!("server_name = \"app.internal\", {}", ca()))
        ),
    ));
    for _ in 0..3 {
        assert_eq!(http_get(sl.addr(), "/", &[]).status, 200);
    }
    assert_eq!(front.handshakes(), 4);
}

#[test]
fn a_session_the_origin_closes_while_idle_is_retired_not_used() {
    let be = Backend::fixed("fresh");
    let front = Front::start(
        &be,
        FrontOpts {
            idle_close: Some(Duration::from_millis(300)),
            ..Default::default()
        },
    );
    let sl = Sluice::start(&secure(
        &[front.addr()],
        // No retries: a stale session used for the request would show as a 502.
        &format!(
            "{}retries = 0\n",
            tls(&format!("server_name = \"app.internal\", {}", ca()))
        ),
    ));
    for i in 0..3 {
        let r = http_get(sl.addr(), "/", &[]);
        assert_eq!(
            (r.status, r.body_str()),
            (200, "fresh".to_owned()),
            "{i}: {r}"
        );
        assert!(
            eventually(Duration::from_secs(5), || front.idle_closed() > i),
            "the origin ends the idle session"
        );
    }
    assert_eq!(front.handshakes(), 3);
    assert_eq!(be.request_count(), 3);
}

#[test]
fn the_handshake_is_bounded_by_connect_timeout() {
    // Accepts and never says a word: the TCP connect succeeds, the handshake cannot.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let sl = Sluice::start(&secure(
        &[addr],
        &format!(
            "tls = {{ server_name = \"app.internal\", {} }}\nconnect_timeout = \"300ms\"\nretries = 0\n",
            ca()
        ),
    ));
    let t0 = Instant::now();
    let r = http_get(sl.addr(), "/", &[]);
    let took = t0.elapsed();
    assert_json_error(&r, 504);
    assert!(r.body_str().contains("upstream connect timeout"), "{r}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    drop(silent);
}

#[test]
fn health_checks_go_over_tls() {
    let be = Backend::fixed("healthy");
    let front = Front::start(
        &be,
        FrontOpts {
            client_ca: Some("internal-ca.crt"),
            ..Default::default()
        },
    );
    let sl = Sluice::start(&secure(
        &[front.addr()],
        &format!(
            "{}health_check = {{ path = \"/healthz\", interval = \"100ms\", timeout = \"2s\", healthy_threshold = 1, unhealthy_threshold = 1 }}\n",
            tls(&format!("server_name = \"app.internal\", {}, {}", ca(), client_cert()))
        ),
    ));
    assert!(
        eventually(Duration::from_secs(5), || be.health_checks() >= 2),
        "health checks reach the origin through TLS"
    );
    assert!(front.handshakes() >= 2);
    assert!(front.client_certs() >= 2, "with the client certificate");
    assert!(front.failures().is_empty(), "{:?}", front.failures());
    assert_eq!(http_get(sl.addr(), "/", &[]).status, 200);
    // The verdict read over TLS takes the endpoint out.
    be.set_healthy(false);
    assert!(
        eventually(Duration::from_secs(5), || http_get(sl.addr(), "/", &[])
            .status
            == 503),
        "{}",
        sl.stderr_text()
    );
}
