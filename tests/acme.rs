//! Automatic certificates end to end: the real binary orders from a local pebble (Debian's package),
//! answers HTTP-01 on its plain listener, stores the chain and key under the state directory, reloads
//! them in, renews without a restart, and keeps the stored certificate through a failing CA with
//! backoff and an alert. Prints SKIPPED without /usr/bin/pebble.

mod common;

use common::pebble::{self, Pebble};
use common::webhook::WebhookReceiver;
use common::{eventually, http_get, metric_value, scrape, Sluice};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const NAME: &str = "a.sluice.test";

fn skip() -> bool {
    if pebble::available() {
        return false;
    }
    println!(
        "SKIPPED: {} not installed (apt-get install pebble)",
        pebble::PEBBLE
    );
    true
}

/// A sluice config ordering `NAME` from `ca` for a TLS listener at `tls_port`, with a plain listener
/// at `port` (HTTP-01 is answered there); `acme_extra` adds `[acme]` keys and `rest` tables.
fn config(ca: &Pebble, port: u16, tls_port: u16, acme_extra: &str, rest: &str) -> String {
    format!(
        "workers = 1\nlog_level = \"info,sluice::control::acme=debug\"\nshutdown_timeout = \"1s\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [state]\npath = \"state/sluice.db\"\n\n\
         [acme]\ndirectory = \"{dir}\"\nemail = \"ops@sluice.test\"\nca = \"{root}\"\n\
         check_interval = \"300ms\"\nretry = \"200ms\"\nretry_max = \"1s\"\norder_timeout = \"20s\"\n{acme_extra}\n\n\
         [listeners.plain]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [listeners.https]\nlisten = \"127.0.0.1:{tls_port}\"\ntls = {{}}\nacme = {{ names = [\"{NAME}\"] }}\n\n\
         [routes.all]\npath = \"/*\"\nrespond = {{ status = 200, body = \"routed\" }}\n\n{rest}\n",
        dir = ca.directory(),
        root = ca.tls_root.display(),
    )
}

fn files(s: &Sluice) -> (PathBuf, PathBuf) {
    sluice::config::acme::cert_files(&s.dir().join("state"), "acme", NAME)
}

/// The leaf's serial (hex) and issuer, and the whole chain's certificates (DER).
fn leaf(crt: &Path) -> Option<(String, String, Vec<Vec<u8>>)> {
    let pem = std::fs::read(crt).ok()?;
    let ders: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(&pem)
        .filter_map(Result::ok)
        .map(|p| p.contents)
        .collect();
    let (_, x) = x509_parser::parse_x509_certificate(ders.first()?).ok()?;
    Some((x.raw_serial_as_string(), x.issuer().to_string(), ders))
}

/// An HTTPS GET to `addr` with SNI `NAME`, trusting only `root_pem`: the served leaf's serial (as
/// `leaf` writes it) and the response text. Err while the handshake fails (no certificate yet).
fn https_get(addr: SocketAddr, root_pem: &str) -> Result<(String, String), String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(NAME.to_string()).map_err(|e| e.to_string())?;
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(common::IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(common::IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(
        format!("GET / HTTP/1.1\r\nhost: {NAME}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    // A peer closing without close_notify ends the read with an error after the whole response.
    let _ = tls.read_to_end(&mut out);
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no certificate")?;
    let (_, x) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
    Ok((
        x.raw_serial_as_string(),
        String::from_utf8_lossy(&out).into_owned(),
    ))
}

/// Waits (≤10 s) until sluice's TLS listener serves the certificate with `serial` for `NAME`.
fn assert_served(s: &Sluice, ca: &Pebble, serial: &str) {
    let root = ca.issuing_root();
    let mut last = Err(String::new());
    let ok = eventually(Duration::from_secs(10), || {
        last = https_get(s.addrs()[1], &root);
        last.as_ref().is_ok_and(|(got, _)| got == serial)
    });
    assert!(
        ok,
        "HTTPS with SNI {NAME} serves {serial}: {last:?}\n{}",
        s.stderr_text()
    );
    let (_, text) = last.unwrap_or_default();
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("routed"),
        "{text}"
    );
}

fn acme_status(admin: SocketAddr) -> Value {
    let r = http_get(admin, "/acme", &[]);
    assert_eq!(r.status, 200, "{}", r.body_str());
    serde_json::from_str(&r.body_str()).expect("GET /acme is JSON")
}

fn cert_status(admin: SocketAddr) -> Value {
    acme_status(admin)["certificates"][0].clone()
}

/// Waits (≤30 s) for a stored certificate whose serial differs from `old`; returns its serial.
fn wait_for_cert(s: &Sluice, ca: &Pebble, old: Option<&str>) -> String {
    let (crt, _) = files(s);
    let mut serial = None;
    let ok = eventually(Duration::from_secs(30), || {
        serial = leaf(&crt)
            .map(|l| l.0)
            .filter(|got| Some(got.as_str()) != old);
        serial.is_some()
    });
    assert!(
        ok,
        "no new certificate at {} (old {old:?}); sluice:\n{}\n{}",
        crt.display(),
        s.stderr_text(),
        ca.logs()
    );
    serial.unwrap_or_default()
}

#[test]
fn http01_certificate_is_issued_stored_reloaded_and_renewed_without_restart() {
    if skip() {
        return;
    }
    let (port, tls_port) = (pebble::free_port(), pebble::free_port());
    let ca = Pebble::start(port, tls_port);
    let s = Sluice::start(&config(&ca, port, tls_port, "", ""));
    let admin = s.admin_addr().expect("admin");
    let pid = s.pid();

    let first = wait_for_cert(&s, &ca, None);
    let (crt, key) = files(&s);
    let (_, issuer, chain) = leaf(&crt).expect("stored chain");
    assert!(chain.len() >= 2, "leaf first, then the intermediate");
    assert!(issuer.contains("Pebble"), "issued by pebble: {issuer}");
    let (_, x) = x509_parser::parse_x509_certificate(&chain[0]).expect("leaf");
    let sans: Vec<String> = x
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|e| {
            e.value
                .general_names
                .iter()
                .map(|n| n.to_string())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(sans, [format!("DNSName({NAME})")]);
    // The key is PKCS#8 PEM and belongs to the certificate.
    let key_pem = std::fs::read_to_string(&key).expect("key file");
    assert!(
        key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "{key_pem}"
    );
    let kp = rcgen::KeyPair::from_pem(&key_pem).expect("PKCS#8 key");
    assert_eq!(
        kp.public_key_raw(),
        &*x.public_key().subject_public_key.data
    );
    // Owner-only files.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key)
        .expect("key meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "key mode {mode:o}");
    assert!(crt.parent().expect("dir").join("account.json").exists());

    // Swapped in by a reload (what POST /reload does), in the same process.
    assert!(
        eventually(Duration::from_secs(5), || s
            .stderr_log()
            .contains("config reloaded")),
        "{}",
        s.stderr_text()
    );
    assert_served(&s, &ca, &first);
    let st = cert_status(admin);
    assert_eq!(st["state"], "valid", "{st}");
    assert_eq!(st["serial"], first.to_lowercase().replace(':', ""));
    assert_eq!(st["orders_ok"], 1);
    let m = scrape(admin);
    let success = format!("name=\"{NAME}\",outcome=\"success\"");
    assert_eq!(
        metric_value(&m, "sluice_acme_orders_total", &success),
        Some(1.0)
    );
    let left = metric_value(
        &m,
        "sluice_acme_certificate_expiry_seconds",
        &format!("name=\"{NAME}\""),
    )
    .expect("expiry gauge");
    assert!(left > 86_400.0, "{left}");

    // HTTP-01 answers only the tokens of a pending order: any other goes to the routes.
    let r = http_get(s.addr(), "/.well-known/acme-challenge/nothing-pending", &[]);
    assert_eq!((r.status, r.body_str().as_str()), (200, "routed"));

    // Renewal: a renew_before longer than pebble's lifetimes makes every check renew.
    s.rewrite_config(&config(
        &ca,
        port,
        tls_port,
        "renew_before = \"10000d\"",
        "",
    ));
    assert_eq!(s.reload(), common::Reload::Applied);
    let reloads = s.stderr_log().count("config reloaded");
    let second = wait_for_cert(&s, &ca, Some(&first));
    assert_ne!(first, second);
    assert!(
        eventually(Duration::from_secs(5), || s
            .stderr_log()
            .count("config reloaded")
            > reloads),
        "the renewed certificate is reloaded in: {}",
        s.stderr_text()
    );
    assert_served(&s, &ca, &second);
    assert_eq!(s.pid(), pid, "no restart");
    assert!(eventually(Duration::from_secs(5), || {
        cert_status(admin)["orders_ok"].as_u64() >= Some(2)
    }));
}

#[test]
fn failing_directory_keeps_the_certificate_retries_with_backoff_and_alerts() {
    if skip() {
        return;
    }
    let hook = WebhookReceiver::start(0);
    let alert = format!(
        "[alerts.acme]\nmetric = \"acme_failures\"\nthreshold = 1\nwebhook = \"http://{}/hook\"\n",
        hook.addr
    );
    let (port, tls_port) = (pebble::free_port(), pebble::free_port());
    let mut ca = Pebble::start(port, tls_port);
    let s = Sluice::start(&config(&ca, port, tls_port, "", &alert));
    let admin = s.admin_addr().expect("admin");
    let first = wait_for_cert(&s, &ca, None);
    let (crt, key) = files(&s);
    let crt_bytes = std::fs::read(&crt).expect("crt");
    let key_bytes = std::fs::read(&key).expect("key");

    // The CA goes away; renewal is forced.
    ca.stop_ca();
    s.rewrite_config(&config(
        &ca,
        port,
        tls_port,
        "renew_before = \"10000d\"",
        &alert,
    ));
    assert_eq!(s.reload(), common::Reload::Applied);

    // Retries back off: 200 ms, 400 ms, 800 ms, then the 1 s cap.
    let mut waits: Vec<u64> = Vec::new();
    let ok = eventually(Duration::from_secs(20), || {
        let st = cert_status(admin);
        if let Some(w) = st["retry_in_ms"].as_u64().filter(|w| *w > 0) {
            if waits.last() != Some(&w) {
                waits.push(w);
            }
        }
        st["consecutive_failures"].as_u64() >= Some(5) && waits.last() == Some(&1000)
    });
    assert!(ok, "waits {waits:?}: {}", s.stderr_text());
    assert!(
        waits.windows(2).all(|w| w[0] < w[1])
            && waits.iter().all(|w| [200, 400, 800, 1000].contains(w)),
        "backoff doubles to its cap: {waits:?}"
    );
    let st = cert_status(admin);
    assert_eq!(st["state"], "failing", "{st}");
    assert!(
        st["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{st}"
    );
    // The stored certificate and key are untouched and still reported.
    assert_eq!(std::fs::read(&crt).expect("crt"), crt_bytes);
    assert_eq!(std::fs::read(&key).expect("key"), key_bytes);
    assert_eq!(st["serial"], first.to_lowercase().replace(':', ""));
    let m = scrape(admin);
    let failed = metric_value(
        &m,
        "sluice_acme_orders_total",
        &format!("name=\"{NAME}\",outcome=\"failure\""),
    )
    .unwrap_or(0.0);
    assert!(failed >= 5.0, "{failed}");
    assert!(metric_value(
        &m,
        "sluice_acme_certificate_expiry_seconds",
        &format!("name=\"{NAME}\"")
    )
    .is_some_and(|v| v > 0.0));
    assert!(s
        .stderr_log()
        .contains("certificate order failed; keeping the stored certificate"));

    // The alert fires, on /alerts and to its webhook.
    let mut hook = hook;
    assert!(
        eventually(Duration::from_secs(10), || hook.has("acme", "firing")),
        "no alert webhook: {}",
        s.stderr_text()
    );
    let event = hook
        .events()
        .iter()
        .find(|e| e["alert"] == "acme")
        .cloned()
        .unwrap_or_default();
    assert_eq!(event["metric"], "acme_failures");
    assert!(event["value"].as_f64() > Some(1.0), "{event}");
    let alerts: Value =
        serde_json::from_str(&http_get(admin, "/alerts", &[]).body_str()).expect("alerts JSON");
    let rule = &alerts["alerts"][0];
    assert_eq!(
        (&rule["name"], &rule["state"]),
        (&"acme".into(), &"firing".into()),
        "{alerts}"
    );
}

#[test]
fn tls_alpn01_is_answered_by_the_tls_listener() {
    if skip() {
        return;
    }
    let (port, tls_port) = (pebble::free_port(), pebble::free_port());
    // Pebble's HTTP-01 port has nothing on it: only the TLS listener can answer.
    let ca = Pebble::start(pebble::free_port(), tls_port);
    let s = Sluice::start(&config(
        &ca,
        port,
        tls_port,
        "challenge = \"tls-alpn-01\"",
        "",
    ));
    let serial = wait_for_cert(&s, &ca, None);
    assert_served(&s, &ca, &serial);
    let st = cert_status(s.admin_addr().expect("admin"));
    assert_eq!(
        (st["state"].as_str(), st["orders_ok"].as_u64()),
        (Some("valid"), Some(1)),
        "{st}"
    );
    let logs = ca.logs();
    assert!(
        !logs.contains("validate w/ HTTP"),
        "validated over TLS only: {logs}"
    );
}
