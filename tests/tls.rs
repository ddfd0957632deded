//! TLS termination on the real binary, checked with real clients (curl, `openssl s_client`,
//! python3's `ssl`) against the test PKI of `scripts/make-test-pki`: certificates picked by SNI
//! (exact, wildcard, default), ALPN settling on http/1.1, versions (1.2 and 1.3 only, `min_version`),
//! session resumption, RSA/ECDSA/Ed25519 keys, certificate reloads (open connections keep working,
//! a broken file keeps the old certificate), mTLS (required, optional, mapped to consumers, identity
//! headers), `x-forwarded-proto: https`, handshake metrics by reason, the header timeout for a silent
//! client, `GET /tls`, and config errors.
//!
//! Every listener here is `[listeners.https]` (and `mtls` where two are needed), after the harness's
//! plain `main`: `addrs()[0]` is `main`, `addrs()[1]` is `https`.

mod common;

use common::tls::*;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

const HANDSHAKES: &str = "sluice_tls_handshakes_total";
const FAILURES: &str = "sluice_tls_handshake_failures_total";

// ---------------------------------------------------------------- config

/// `{ cert = ".../NAME.crt", key = ".../NAME.key" }` from the test PKI.
fn cert(name: &str) -> String {
    cert_at(
        &pki_file(&format!("{name}.crt")),
        &pki_file(&format!("{name}.key")),
        false,
    )
}

/// Like `cert`, marked `default = true`.
fn cert_default(name: &str) -> String {
    cert_at(
        &pki_file(&format!("{name}.crt")),
        &pki_file(&format!("{name}.key")),
        true,
    )
}

fn cert_at(crt: &str, key: &str, default: bool) -> String {
    let d = if default { ", default = true" } else { "" };
    format!("{{ cert = \"{crt}\", key = \"{key}\"{d} }}")
}

/// `certificates = [ ... ]` (one per line).
fn certificates(list: &[String]) -> String {
    format!("certificates = [\n  {},\n]\n", list.join(",\n  "))
}

/// a.test, *.b.test and the default (Ed25519, default.test).
fn sni_certs() -> String {
    certificates(&[cert("a.test"), cert("wild.b.test"), cert_default("default")])
}

/// `[listeners.NAME]` on port 0 with `[listeners.NAME.tls]` holding `tls` (TOML lines).
fn tls_listener(name: &str, tls: &str) -> String {
    format!("[listeners.{name}]\nlisten = \"127.0.0.1:0\"\n\n[listeners.{name}.tls]\n{tls}\n")
}

/// A backend answering `ok PATH`.
fn backend() -> Backend {
    Backend::start(|r| Reply::ok(format!("ok {}", r.path)))
}

/// sluice with an admin listener, `tables` (listeners, `[http]`, consumers...), upstream `app` =
/// `be`, and `routes` (or a catch-all to `app` if empty).
fn gateway(be: &Backend, tables: &str, routes: &str) -> Sluice {
    let routes = if routes.is_empty() {
        catch_all("app")
    } else {
        routes.to_string()
    };
    Sluice::start(&config(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{tables}\n{}{routes}",
        upstream("app", &[be.addr()], "")
    )))
}

/// sluice with one TLS listener `https` holding `tls`, everything routed to `be`.
fn https(be: &Backend, tls: &str) -> Sluice {
    gateway(be, &tls_listener("https", tls), "")
}

fn tls_addr(s: &Sluice) -> SocketAddr {
    s.addrs()[1]
}

fn admin(s: &Sluice) -> SocketAddr {
    s.admin_addr().expect("admin listener")
}

/// Waits (≤5 s: workers report about once a second) until `f(metrics)` holds; panics with the
/// metrics text otherwise.
fn metrics_until(s: &Sluice, what: &str, f: impl Fn(&str) -> bool) {
    let mut text = String::new();
    let ok = eventually(Duration::from_secs(5), || {
        text = common::metrics::scrape(admin(s));
        f(&text)
    });
    let tls: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("sluice_tls"))
        .collect();
    assert!(ok, "{what}; sluice_tls samples:\n{}", tls.join("\n"));
}

fn failures(text: &str, listener: &str, reason: &str) -> f64 {
    metric_where(
        text,
        FAILURES,
        &[("listener", listener), ("reason", reason)],
    )
}

fn admin_json(s: &Sluice, path: &str) -> Value {
    let r = http_get(admin(s), path, &[]);
    assert_eq!(r.status, 200, "GET {path}: {r}");
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {r}"))
}

/// The certificates `GET /tls` lists for `listener`.
fn tls_certs(s: &Sluice, listener: &str) -> Vec<Value> {
    let v = admin_json(s, "/tls");
    let ls = v["listeners"]
        .as_array()
        .unwrap_or_else(|| panic!("/tls without listeners: {v}"));
    let l = ls
        .iter()
        .find(|l| l["listener"] == listener)
        .unwrap_or_else(|| panic!("/tls has no listener {listener}: {v}"));
    l["certificates"]
        .as_array()
        .unwrap_or_else(|| panic!("/tls listener {listener} without certificates: {v}"))
        .clone()
}

fn json_serial(c: &Value) -> String {
    norm_serial(
        c["serial"]
            .as_str()
            .unwrap_or_else(|| panic!("serial: {c}")),
    )
}

// ---------------------------------------------------------------- the helpers themselves

#[test]
fn metric_where_sums_samples_with_matching_labels() {
    let text = "# HELP sluice_tls_handshakes_total x\n\
                sluice_tls_handshakes_total{listener=\"https\",version=\"1.3\",resumed=\"true\"} 2\n\
                sluice_tls_handshakes_total{worker=\"1\",listener=\"https\",version=\"1.3\",resumed=\"true\"} 3\n\
                sluice_tls_handshakes_total{listener=\"https\",version=\"1.2\",resumed=\"false\"} 5\n\
                sluice_tls_handshakes_total_x{listener=\"https\"} 7\n";
    assert_eq!(metric_where(text, HANDSHAKES, &[("resumed", "true")]), 5.0);
    assert_eq!(
        metric_where(text, HANDSHAKES, &[("listener", "https")]),
        10.0
    );
    assert_eq!(metric_where(text, HANDSHAKES, &[("version", "1.1")]), 0.0);
    assert_eq!(norm_serial("serial=00AB:cd"), "ABCD");
}

#[test]
fn the_test_pki_chains_as_intended() {
    let verify = |ca: &str, leaf: &str| {
        run_cmd(
            "openssl",
            &[
                "verify".to_string(),
                "-CAfile".to_string(),
                pki_file(ca),
                pki_file(leaf),
            ],
            b"",
            CLIENT_TIMEOUT,
        )
        .success()
    };
    assert!(verify("ca.crt", "a.test.crt"));
    assert!(verify("client-ca.crt", "alice.crt"));
    assert!(verify("internal-ca.crt", "gw.crt"));
    assert!(
        !verify("client-ca.crt", "mallory.crt"),
        "mallory is not ours"
    );
    assert_ne!(cert_serial("a.test.crt"), cert_serial("a.test.v2.crt"));
}

// ---------------------------------------------------------------- SNI

#[test]
fn sni_picks_the_certificate_by_name() {
    let be = backend();
    let s = https(&be, &sni_certs());
    let a = cert_serial("a.test.crt");
    let wild = cert_serial("wild.b.test.crt");
    let dflt = cert_serial("default.crt");
    for (sni, want, what) in [
        ("a.test", &a, "a.test's own cert"),
        ("A.Test", &a, "SNI is case-insensitive (RFC 6066 §3)"),
        ("x.b.test", &wild, "*.b.test covers x.b.test"),
        ("b.test", &dflt, "*.b.test does not cover b.test"),
        ("deep.x.b.test", &dflt, "*.b.test covers one label only"),
    ] {
        let h = SClient::new(tls_addr(&s), Some(sni)).run();
        assert!(h.ok(), "SNI {sni}: {h}");
        assert_eq!(&h.peer_serial(), want, "SNI {sni}: {what}; {h}");
        assert_eq!(h.http_status, Some(200), "SNI {sni}: {h}");
    }
    // A client verifying the name gets through for each name a certificate covers.
    for name in ["a.test", "x.b.test", "default.test"] {
        let r = Curl::new(tls_addr(&s), name, "/hello").run();
        assert!(r.ok(), "{name}: {r}");
        assert_eq!((r.status, r.verify), (200, 0), "{name}: {r}");
        assert_eq!(r.body, "ok /hello", "{name}: {r}");
    }
}

#[test]
fn unknown_or_absent_sni_gets_the_default_certificate() {
    let be = backend();
    let s = https(&be, &sni_certs());
    let dflt = cert_serial("default.crt");
    let h = SClient::new(tls_addr(&s), Some("nope.test")).run();
    assert!(h.ok(), "{h}");
    assert_eq!(h.peer_serial(), dflt, "unknown SNI: {h}");
    let h = SClient::new(tls_addr(&s), None).run();
    assert!(h.ok(), "{h}");
    assert_eq!(h.peer_serial(), dflt, "no SNI: {h}");
    assert_eq!(h.http_status, Some(200), "no SNI: {h}");
    // curl sends no SNI for an IP address.
    let url = format!("https://{}/ip", tls_addr(&s));
    let out = run_cmd(
        "curl",
        &[
            "-sS",
            "-k",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            url.as_str(),
        ]
        .map(String::from),
        b"",
        CLIENT_TIMEOUT,
    );
    assert!(out.success(), "{}", out.all());
    assert!(out.stdout.ends_with("\n200"), "{}", out.all());
}

#[test]
fn a_single_certificate_is_the_default() {
    let be = backend();
    let s = https(&be, &certificates(&[cert("a.test")]));
    let a = cert_serial("a.test.crt");
    for sni in [Some("a.test"), Some("other.test"), None] {
        let h = SClient::new(tls_addr(&s), sni).run();
        assert!(h.ok(), "SNI {sni:?}: {h}");
        assert_eq!(h.peer_serial(), a, "SNI {sni:?}: {h}");
    }
}

// ---------------------------------------------------------------- ALPN

#[test]
fn alpn_settles_on_http11() {
    let be = backend();
    let s = https(
        &be,
        &format!("{}alpn = [\"h2\", \"http/1.1\"]\n", sni_certs()),
    );
    for offer in ["h2,http/1.1", "http/1.1", "http/1.1,h2"] {
        let h = SClient::new(tls_addr(&s), Some("a.test")).alpn(offer).run();
        assert!(h.ok(), "ALPN {offer}: {h}");
        assert_eq!(h.alpn.as_deref(), Some("http/1.1"), "ALPN {offer}: {h}");
        assert_eq!(h.http_status, Some(200), "ALPN {offer}: {h}");
    }
    let h = SClient::new(tls_addr(&s), Some("a.test")).run();
    assert!(h.ok(), "no ALPN: {h}");
    assert_eq!(h.alpn, None, "a client offering nothing gets nothing: {h}");
    assert_eq!(h.http_status, Some(200), "no ALPN: {h}");
    // curl offers h2 and http/1.1 unless told --http1.1.
    for extra in [&[][..], &["--http1.1"][..]] {
        let r = Curl::new(tls_addr(&s), "a.test", "/v").args(extra).run();
        assert!(r.ok(), "curl {extra:?}: {r}");
        assert_eq!(r.status, 200, "curl {extra:?}: {r}");
        assert_eq!(r.http_version, "1.1", "curl {extra:?}: {r}");
    }
}

#[test]
fn alpn_without_http11_fails_the_handshake() {
    let be = backend();
    let s = https(
        &be,
        &format!("{}alpn = [\"h2\", \"http/1.1\"]\n", sni_certs()),
    );
    for offer in ["h2", "spdy/3.1"] {
        let h = SClient::new(tls_addr(&s), Some("a.test")).alpn(offer).run();
        assert!(!h.ok(), "ALPN {offer} alone must fail: {h}");
        assert!(
            h.out.all().contains("no application protocol"),
            "the alert should be no_application_protocol: {h}"
        );
    }
    assert_eq!(be.request_count(), 0);
    metrics_until(&s, "two no_application_protocol failures", |t| {
        failures(t, "https", "no_application_protocol") == 2.0
    });
}

// ---------------------------------------------------------------- versions

#[test]
fn tls10_and_tls11_are_refused() {
    let be = backend();
    let s = https(&be, &sni_certs());
    for v in ["-tls1", "-tls1_1"] {
        // SECLEVEL=0 lets this client offer the old versions; the refusal must be the server's.
        let h = SClient::new(tls_addr(&s), Some("a.test"))
            .args(&[v, "-cipher", "DEFAULT@SECLEVEL=0"])
            .run();
        assert!(!h.ok(), "{v} must be refused: {h}");
        // rustls answers a TLS 1.0/1.1 ClientHello (it has no signature_algorithms) with
        // handshake_failure; the metric below must still call it protocol_version.
        let all = h.out.all();
        assert!(
            all.contains("alert protocol version") || all.contains("alert handshake failure"),
            "{v}: refused by the server's alert: {h}"
        );
    }
    assert_eq!(be.request_count(), 0);
    metrics_until(&s, "two protocol_version failures", |t| {
        failures(t, "https", "protocol_version") == 2.0
            && metric_where(t, HANDSHAKES, &[("listener", "https")]) == 0.0
    });
}

#[test]
fn tls12_and_tls13_are_accepted() {
    let be = backend();
    let s = https(&be, &format!("{}min_version = \"1.2\"\n", sni_certs()));
    for (flag, want) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let h = SClient::new(tls_addr(&s), Some("a.test"))
            .verify()
            .args(&[flag])
            .run();
        assert!(h.ok(), "{flag}: {h}");
        assert_eq!(h.version, want, "{flag}: {h}");
        assert_eq!(h.http_status, Some(200), "{flag}: {h}");
    }
    for args in [
        &["--tlsv1.2", "--tls-max", "1.2"][..],
        &["--tlsv1.3", "--tls-max", "1.3"][..],
    ] {
        let r = Curl::new(tls_addr(&s), "a.test", "/v").args(args).run();
        assert!(r.ok(), "curl {args:?}: {r}");
        assert_eq!((r.status, r.verify), (200, 0), "curl {args:?}: {r}");
    }
    metrics_until(&s, "two handshakes at each version", |t| {
        metric_where(t, HANDSHAKES, &[("listener", "https"), ("version", "1.2")]) == 2.0
            && metric_where(t, HANDSHAKES, &[("listener", "https"), ("version", "1.3")]) == 2.0
    });
}

#[test]
fn min_version_13_refuses_12() {
    let be = backend();
    let s = https(&be, &format!("{}min_version = \"1.3\"\n", sni_certs()));
    let h = SClient::new(tls_addr(&s), Some("a.test"))
        .args(&["-tls1_2"])
        .run();
    assert!(!h.ok(), "TLS 1.2 must be refused: {h}");
    let r = Curl::new(tls_addr(&s), "a.test", "/v")
        .args(&["--tlsv1.2", "--tls-max", "1.2"])
        .run();
    assert!(!r.ok() && r.status == 0, "curl at 1.2 must fail: {r}");
    let h = SClient::new(tls_addr(&s), Some("a.test"))
        .args(&["-tls1_3"])
        .run();
    assert!(h.ok(), "TLS 1.3 is fine: {h}");
    assert_eq!(h.version, "TLSv1.3");
    assert_eq!(
        be.request_count(),
        1,
        "only the TLS 1.3 request got through"
    );
    metrics_until(&s, "two protocol_version failures", |t| {
        failures(t, "https", "protocol_version") == 2.0
    });
}

// ---------------------------------------------------------------- resumption

fn resumes(flag: &str, version: &str) {
    let be = backend();
    let s = https(&be, &sni_certs());
    let dir = temp_dir();
    let sess = dir.path().join("session.pem");
    let first = SClient::new(tls_addr(&s), Some("a.test"))
        .verify()
        .args(&[flag])
        .sess_out(&sess)
        .run();
    assert!(first.ok(), "{first}");
    assert!(!first.resumed, "a first handshake is new: {first}");
    assert_eq!(first.http_status, Some(200));
    assert!(sess.exists(), "s_client saved no session: {first}");
    let second = SClient::new(tls_addr(&s), Some("a.test"))
        .verify()
        .args(&[flag])
        .sess_in(&sess)
        .run();
    assert!(second.ok(), "{second}");
    assert!(
        second.resumed,
        "the second handshake should resume: {second}"
    );
    assert_eq!(second.version, format!("TLSv{version}"));
    assert_eq!(second.http_status, Some(200), "{second}");
    metrics_until(&s, "one new and one resumed handshake", |t| {
        let at = |resumed| {
            metric_where(
                t,
                HANDSHAKES,
                &[
                    ("listener", "https"),
                    ("version", version),
                    ("resumed", resumed),
                ],
            )
        };
        at("false") == 1.0 && at("true") == 1.0
    });
}

#[test]
fn tls12_sessions_resume() {
    resumes("-tls1_2", "1.2");
}

#[test]
fn tls13_sessions_resume() {
    resumes("-tls1_3", "1.3");
}

/// With two workers, connections land on either (SO_REUSEPORT hashes the client port), so a
/// session set up on one is resumed on both: tickets are the process's, not a worker's.
#[test]
fn sessions_resume_on_every_worker() {
    let be = backend();
    let s = Sluice::start(&config_with(
        "workers = 2\nlog_level = \"info\"\nshutdown_timeout = \"2s\"",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n{}\n{}{}",
            tls_listener("https", &sni_certs()),
            upstream("app", &[be.addr()], ""),
            catch_all("app")
        ),
    ));
    let dir = temp_dir();
    for (flag, version) in [("-tls1_2", "1.2"), ("-tls1_3", "1.3")] {
        let sess = dir.path().join(format!("session-{version}.pem"));
        let first = SClient::new(tls_addr(&s), Some("a.test"))
            .args(&[flag])
            .sess_out(&sess)
            .run();
        assert!(first.ok() && !first.resumed, "{first}");
        let tries = 8;
        for i in 0..tries {
            let again = SClient::new(tls_addr(&s), Some("a.test"))
                .args(&[flag])
                .sess_in(&sess)
                .run();
            assert!(again.ok(), "{version} try {i}: {again}");
            assert!(again.resumed, "{version} try {i} was not resumed: {again}");
        }
        metrics_until(&s, &format!("{tries} resumed at {version}"), |t| {
            metric_where(
                t,
                HANDSHAKES,
                &[
                    ("listener", "https"),
                    ("version", version),
                    ("resumed", "true"),
                ],
            ) == tries as f64
        });
    }
    // 18 connections, each worker took some (else this test proved nothing).
    metrics_until(&s, "both workers accepted connections", |t| {
        (0..2).all(|w| {
            metric_value(
                t,
                "sluice_connections_accepted_total",
                &format!("worker=\"{w}\""),
            )
            .is_some_and(|n| n > 0.0)
        })
    });
}

// ---------------------------------------------------------------- key types

#[test]
fn rsa_ecdsa_and_ed25519_keys_all_serve() {
    let be = backend();
    let s = https(
        &be,
        &certificates(&[
            cert("rsa.test"),
            cert("ecdsa.test"),
            cert_default("default"),
        ]),
    );
    for (name, file, sig) in [
        ("rsa.test", "rsa.test.crt", "RSA"),
        ("ecdsa.test", "ecdsa.test.crt", "ECDSA"),
        ("default.test", "default.crt", "ed25519"),
    ] {
        for flag in ["-tls1_2", "-tls1_3"] {
            let h = SClient::new(tls_addr(&s), Some(name))
                .verify()
                .args(&[flag])
                .run();
            assert!(h.ok(), "{name} {flag}: {h}");
            assert_eq!(h.peer_serial(), cert_serial(file), "{name} {flag}: {h}");
            assert!(
                h.peer_sig.as_deref().is_some_and(|t| t.contains(sig)),
                "{name} {flag}: signed with {sig}? {h}"
            );
            assert_eq!(h.http_status, Some(200), "{name} {flag}: {h}");
        }
        let r = Curl::new(tls_addr(&s), name, "/k").run();
        assert_eq!((r.status, r.verify), (200, 0), "{name}: {r}");
    }
}

// ---------------------------------------------------------------- reloads

/// sluice serving `site.crt`/`site.key` in `dir` (a copy of a.test's) on `https`.
fn reloadable(be: &Backend, dir: &Path) -> Sluice {
    let crt = install(dir, "a.test.crt", "site.crt");
    let key = install(dir, "a.test.key", "site.key");
    https(be, &certificates(&[cert_at(&crt, &key, false)]))
}

/// Puts PKI cert `name` (NAME.crt + NAME.key) in place of site.crt/site.key.
fn replace_site(dir: &Path, name: &str) {
    install(dir, &format!("{name}.key"), "site.key");
    install(dir, &format!("{name}.crt"), "site.crt");
}

fn served_serial(s: &Sluice) -> String {
    let h = SClient::new(tls_addr(s), Some("a.test")).verify().run();
    assert!(h.ok(), "{h}");
    h.peer_serial()
}

#[test]
fn sighup_reloads_the_certificate_and_open_connections_keep_working() {
    let be = backend();
    let dir = temp_dir();
    let s = reloadable(&be, dir.path());
    let v1 = cert_serial("a.test.crt");
    let v2 = cert_serial("a.test.v2.crt");
    let mut keep = PyTlsClient::connect(tls_addr(&s), "a.test");
    assert_eq!(keep.serial, v1);
    assert_eq!(keep.get("/before"), Ok((200, "ok /before".into())));

    replace_site(dir.path(), "a.test.v2");
    assert_eq!(s.reload(), Reload::Applied, "expected `config reloaded`");

    assert_eq!(
        keep.get("/after"),
        Ok((200, "ok /after".into())),
        "the connection opened before the reload must keep answering"
    );
    let mut now = String::new();
    assert!(
        eventually(Duration::from_secs(3), || {
            now = served_serial(&s);
            now == v2
        }),
        "a new handshake should see a.test.v2 ({v2}), got {now}"
    );
    let listed = tls_certs(&s, "https");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(json_serial(&listed[0]), v2, "GET /tls after the reload");
    assert_eq!(
        keep.get("/still"),
        Ok((200, "ok /still".into())),
        "and it keeps answering"
    );
}

#[test]
fn a_broken_certificate_on_reload_keeps_the_old_one() {
    let be = backend();
    let dir = temp_dir();
    let mut s = reloadable(&be, dir.path());
    let v1 = cert_serial("a.test.crt");
    assert_eq!(served_serial(&s), v1);
    install(dir.path(), "bad.crt", "site.crt");

    let rejected = s.stderr_log().count("reload rejected");
    let r = Conn::connect(admin(&s)).request("POST", "/reload", &[], b"");
    assert!(r.status == 202 || r.status == 200, "POST /reload: {r}");
    assert!(
        eventually(Duration::from_secs(5), || s
            .stderr_log()
            .count("reload rejected")
            > rejected),
        "a reload with a broken certificate must be rejected; stderr:\n{}",
        s.stderr_text()
    );
    assert!(s.is_running(), "a bad reload must not stop sluice");
    let line = s
        .stderr_log()
        .lines()
        .into_iter()
        .rfind(|l| l.contains("reload rejected"))
        .unwrap_or_default();
    assert!(
        line.contains("site.crt") || line.contains("certificates[0]"),
        "the rejection should say which certificate: {line}"
    );
    assert_eq!(admin_json(&s, "/status")["config_generation"], 1);
    assert_eq!(served_serial(&s), v1, "the old certificate keeps serving");
    assert_eq!(json_serial(&tls_certs(&s, "https")[0]), v1, "GET /tls");
    let r = Curl::new(tls_addr(&s), "a.test", "/x").run();
    assert_eq!((r.status, r.verify), (200, 0), "{r}");

    // Fixed, the next reload takes.
    replace_site(dir.path(), "a.test.v2");
    assert_eq!(s.reload(), Reload::Applied);
    let v2 = cert_serial("a.test.v2.crt");
    let mut now = String::new();
    assert!(
        eventually(Duration::from_secs(3), || {
            now = served_serial(&s);
            now == v2
        }),
        "after the fix, a.test.v2 ({v2}) should serve, got {now}"
    );
}

// ---------------------------------------------------------------- mTLS

fn mtls_tls(client_auth: &str, extra: &str) -> String {
    format!(
        "{}client_ca = \"{}\"\nclient_auth = \"{client_auth}\"\n{extra}",
        certificates(&[cert("a.test")]),
        pki_file("client-ca.crt")
    )
}

#[test]
fn mtls_required_accepts_only_verified_client_certificates() {
    let be = backend();
    let s = https(&be, &mtls_tls("required", ""));
    for who in ["alice", "bob"] {
        let r = Curl::new(tls_addr(&s), "a.test", "/m").cert(who).run();
        assert_eq!((r.status, r.verify), (200, 0), "{who}: {r}");
    }
    assert_eq!(be.request_count(), 2);
    let r = Curl::new(tls_addr(&s), "a.test", "/m").run();
    assert!(
        !r.ok() && r.status == 0,
        "no client cert must be refused: {r}"
    );
    let r = Curl::new(tls_addr(&s), "a.test", "/m")
        .cert("mallory")
        .run();
    assert!(
        !r.ok() && r.status == 0,
        "a cert from another CA must be refused: {r}"
    );
    // At TLS 1.2 the refusal ends the handshake itself.
    let h = SClient::new(tls_addr(&s), Some("a.test"))
        .args(&["-tls1_2"])
        .run();
    assert!(!h.ok(), "TLS 1.2 without a cert: {h}");
    let h = SClient::new(tls_addr(&s), Some("a.test"))
        .args(&["-tls1_2"])
        .cert("mallory")
        .run();
    assert!(!h.ok(), "TLS 1.2 with mallory's cert: {h}");
    assert_eq!(be.request_count(), 2, "nothing refused reaches the backend");
    metrics_until(&s, "two no_certificate and two bad_certificate", |t| {
        failures(t, "https", "no_certificate") == 2.0
            && failures(t, "https", "bad_certificate") == 2.0
    });
}

#[test]
fn mtls_optional_lets_clients_without_a_certificate_through() {
    let be = backend();
    let s = https(&be, &mtls_tls("optional", ""));
    let r = Curl::new(tls_addr(&s), "a.test", "/anon").run();
    assert_eq!((r.status, r.body.as_str()), (200, "ok /anon"), "{r}");
    let r = Curl::new(tls_addr(&s), "a.test", "/alice")
        .cert("alice")
        .run();
    assert_eq!((r.status, r.body.as_str()), (200, "ok /alice"), "{r}");
}

fn mtls_consumers(be: &Backend, consumers: &str, allow: &str) -> Sluice {
    gateway(
        be,
        &format!(
            "{}\n{consumers}\n",
            tls_listener("https", &mtls_tls("optional", ""))
        ),
        &format!("[routes.r]\npath = \"/*\"\nupstream = \"app\"\nauth = [\"mtls\"]\n{allow}\n"),
    )
}

#[test]
fn an_mtls_identity_is_a_consumer_checked_by_the_allow_list() {
    let be = backend();
    let s = mtls_consumers(
        &be,
        "[consumers.alice]\nmtls = { san = [\"alice.clients.test\"], subject = [] }\n\n\
         [consumers.bob]\nmtls = { san = [], subject = [\"CN=bob\"] }\n",
        "allow = [\"alice\"]",
    );
    let r = Curl::new(tls_addr(&s), "a.test", "/in").cert("alice").run();
    assert_eq!(r.status, 200, "alice is allowed: {r}");
    assert_eq!(
        be.last_request().header("x-consumer-id"),
        Some("alice"),
        "{}",
        be.last_request().head_text()
    );
    let seen = be.request_count();
    let r = Curl::new(tls_addr(&s), "a.test", "/in").cert("bob").run();
    assert_eq!(r.status, 403, "bob is a consumer but not allowed: {r}");
    let r = Curl::new(tls_addr(&s), "a.test", "/in").run();
    assert_eq!(r.status, 401, "no certificate, no identity: {r}");
    // Same subject and SAN as alice, from another CA: never alice.
    let r = Curl::new(tls_addr(&s), "a.test", "/in")
        .cert("mallory")
        .run();
    assert!(
        r.status == 0 || r.status == 401,
        "mallory must be refused: {r}"
    );
    assert_eq!(
        be.request_count(),
        seen,
        "no refused request reaches the backend"
    );
}

#[test]
fn idle_tls_connections_park_and_keep_their_session_and_identity() {
    // Past the 50 ms park delay a TLS connection gives back its task and buffers and waits in the
    // worker's parked table: the next request must find the same session (no new handshake) and
    // the same verified identity.
    let be = backend();
    let s = mtls_consumers(
        &be,
        "[consumers.alice]\nmtls = { san = [\"alice.clients.test\"], subject = [] }\n",
        "allow = [\"alice\"]",
    );
    let mut alice = PyTlsClient::connect_as(tls_addr(&s), "a.test", "alice");
    let mut anon = PyTlsClient::connect(tls_addr(&s), "a.test");
    assert_eq!(alice.get("/one"), Ok((200, "ok /one".into())));
    assert_eq!(anon.get("/one").map(|r| r.0), Ok(401));
    metrics_until(&s, "both connections parked", |t| {
        metric_where(t, "sluice_worker_parked_connections", &[]) == 2.0
            && metric_where(t, HANDSHAKES, &[("listener", "https")]) == 2.0
    });
    for round in 0..3 {
        assert_eq!(
            alice.get(&format!("/again{round}")),
            Ok((200, format!("ok /again{round}"))),
            "round {round}"
        );
        assert_eq!(
            be.last_request().header("x-consumer-id"),
            Some("alice"),
            "the identity survives parking"
        );
        assert_eq!(anon.get("/again").map(|r| r.0), Ok(401), "round {round}");
        thread::sleep(Duration::from_millis(150));
    }
    metrics_until(&s, "no new handshake after parking", |t| {
        metric_where(t, "sluice_worker_parked_connections", &[]) == 2.0
            && metric_where(t, HANDSHAKES, &[("listener", "https")]) == 2.0
    });
}

#[test]
fn mtls_subjects_and_uri_sans_name_consumers() {
    let be = backend();
    // Spacing and attribute-name case do not matter; values are exact ("CN=Bob" is not bob).
    let s = mtls_consumers(
        &be,
        "[consumers.by_subject]\nmtls = { san = [], subject = [\" cn = alice ,  o = Sluice Test \"] }\n\n\
         [consumers.not_bob]\nmtls = { san = [], subject = [\"CN=Bob\"] }\n",
        "",
    );
    let r = Curl::new(tls_addr(&s), "a.test", "/s").cert("alice").run();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        be.last_request().header("x-consumer-id"),
        Some("by_subject")
    );
    let r = Curl::new(tls_addr(&s), "a.test", "/s").cert("bob").run();
    assert_eq!(r.status, 401, "CN=bob matches no consumer: {r}");
    drop(s);

    let s = mtls_consumers(
        &be,
        "[consumers.spiffe]\nmtls = { san = [\"spiffe://sluice.test/alice\"], subject = [] }\n",
        "",
    );
    let r = Curl::new(tls_addr(&s), "a.test", "/u").cert("alice").run();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(be.last_request().header("x-consumer-id"), Some("spiffe"));
}

#[test]
fn mtls_subject_values_and_order_are_exact() {
    let be = backend();
    // alice is CN=alice,O=Sluice Test: none of these is her.
    let s = mtls_consumers(
        &be,
        "[consumers.squashed]\nmtls = { san = [], subject = [\"CN=alice,O=SluiceTest\"] }\n\n\
         [consumers.upper]\nmtls = { san = [], subject = [\"CN=ALICE,O=Sluice Test\"] }\n\n\
         [consumers.reversed]\nmtls = { san = [], subject = [\"O=Sluice Test,CN=alice\"] }\n\n\
         [consumers.partial]\nmtls = { san = [], subject = [\"CN=alice\"] }\n",
        "",
    );
    let r = Curl::new(tls_addr(&s), "a.test", "/s").cert("alice").run();
    assert_eq!(
        r.status,
        401,
        "alice matched {:?}: {r}",
        be.requests()
            .last()
            .and_then(|q| q.header("x-consumer-id").map(str::to_string))
    );
    assert_eq!(be.request_count(), 0);
}

#[test]
fn identity_headers_reach_the_backend_and_client_copies_do_not() {
    let be = backend();
    let s = https(
        &be,
        &mtls_tls(
            "optional",
            "identity_headers = { subject = \"x-client-subject\", san = \"x-client-san\" }\n",
        ),
    );
    let spoofs = [
        "x-client-subject: CN=admin",
        "X-Client-San: DNS:admin.clients.test",
    ];
    let r = Curl::new(tls_addr(&s), "a.test", "/id")
        .cert("alice")
        .header(spoofs[0])
        .header(spoofs[1])
        .run();
    assert_eq!(r.status, 200, "{r}");
    let seen = be.last_request();
    let subject = seen.header_all("x-client-subject");
    assert_eq!(subject.len(), 1, "{}", seen.head_text());
    assert!(
        subject[0].contains("CN=alice") && subject[0].contains("O=Sluice Test"),
        "{}",
        seen.head_text()
    );
    let san = seen.header_all("x-client-san");
    assert_eq!(san.len(), 1, "{}", seen.head_text());
    assert!(
        san[0].contains("alice.clients.test") && san[0].contains("spiffe://sluice.test/alice"),
        "{}",
        seen.head_text()
    );
    assert!(!seen.head_text().contains("admin"), "{}", seen.head_text());

    let r = Curl::new(tls_addr(&s), "a.test", "/anon")
        .header(spoofs[0])
        .header(spoofs[1])
        .run();
    assert_eq!(r.status, 200, "{r}");
    let seen = be.last_request();
    assert!(
        !seen.has_header("x-client-subject") && !seen.has_header("x-client-san"),
        "no certificate, no identity headers:\n{}",
        seen.head_text()
    );
}

// ---------------------------------------------------------------- forwarded proto

#[test]
fn requests_from_a_tls_listener_are_forwarded_as_https() {
    let be = backend();
    let s = https(&be, &sni_certs());
    let r = Curl::new(tls_addr(&s), "a.test", "/p")
        .header("X-Forwarded-Proto: http")
        .run();
    assert_eq!(r.status, 200, "{r}");
    let seen = be.last_request();
    assert_eq!(
        seen.header_all("x-forwarded-proto"),
        vec!["https"],
        "{}",
        seen.head_text()
    );
    // The plain listener next to it still says http.
    let r = http_get(s.addrs()[0], "/plain", &[("X-Forwarded-Proto", "https")]);
    assert_eq!(r.status, 200);
    assert_eq!(
        be.last_request().header_all("x-forwarded-proto"),
        vec!["http"]
    );
}

// ---------------------------------------------------------------- bodies over the record layer

/// Bodies far larger than a TLS record (16 KiB) cross intact both ways.
#[test]
fn large_bodies_cross_tls_intact() {
    let big = pattern_bytes(3 * 1024 * 1024 + 17, 7);
    let want_down = sha256_hex(&big);
    let be = Backend::start(move |r| {
        if r.method == "POST" {
            Reply::ok(sha256_hex(&r.body))
        } else {
            Reply::ok(big.clone())
        }
    });
    let s = https(&be, &sni_certs());
    let dir = temp_dir();
    let up = pattern_bytes(2 * 1024 * 1024 + 5, 11);
    let up_path = dir.path().join("up.bin");
    std::fs::write(&up_path, &up).unwrap();
    let up_arg = format!("@{}", up_path.display());
    for v in [&["--tlsv1.2", "--tls-max", "1.2"][..], &["--tlsv1.3"][..]] {
        let r = Curl::new(tls_addr(&s), "a.test", "/up")
            .args(v)
            .args(&["--data-binary", &up_arg])
            .run();
        assert_eq!(r.status, 200, "upload {v:?}: {r}");
        assert_eq!(r.body, sha256_hex(&up), "upload {v:?}");

        let down_path = dir.path().join("down.bin");
        let r = Curl::new(tls_addr(&s), "a.test", "/down")
            .args(v)
            .args(&["-o", down_path.to_str().unwrap()])
            .run();
        assert_eq!(r.status, 200, "download {v:?}: {r}");
        let got = std::fs::read(&down_path).unwrap();
        assert_eq!(got.len(), 3 * 1024 * 1024 + 17, "download {v:?}");
        assert_eq!(sha256_hex(&got), want_down, "download {v:?}");
    }
}

// ---------------------------------------------------------------- failures and timeouts

/// Reads from `c` until the peer closes (EOF or reset) or `limit` after `since` passes; returns how
/// long after `since` that was (None if still open) and what came (a TLS alert at most).
fn wait_closed(c: &mut TcpStream, since: Instant, limit: Duration) -> (Option<Duration>, Vec<u8>) {
    let t = since;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while t.elapsed() < limit {
        let left = limit
            .saturating_sub(t.elapsed())
            .max(Duration::from_millis(1));
        let _ = c.set_read_timeout(Some(left));
        match c.read(&mut buf) {
            Ok(0) => return (Some(t.elapsed()), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return (Some(t.elapsed()), got),
        }
    }
    (None, got)
}

#[test]
fn handshake_failures_are_counted_by_reason() {
    let be = backend();
    let s = gateway(
        &be,
        &format!(
            "{}\n{}",
            tls_listener("https", &sni_certs()),
            tls_listener("mtls", &mtls_tls("required", ""))
        ),
        "",
    );
    let (tls, mtls) = (s.addrs()[1], s.addrs()[2]);
    // protocol_version
    let h = SClient::new(tls, Some("a.test"))
        .args(&["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"])
        .run();
    assert!(!h.ok(), "{h}");
    // no_application_protocol
    let h = SClient::new(tls, Some("a.test")).alpn("h2").run();
    assert!(!h.ok(), "{h}");
    // handshake: plain HTTP to the TLS port
    let mut c = TcpStream::connect(tls).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .unwrap();
    let (closed, _) = wait_closed(&mut c, Instant::now(), Duration::from_secs(5));
    assert!(
        closed.is_some(),
        "plain HTTP on the TLS port must be dropped"
    );
    // closed: gone before a ClientHello, and in the middle of one
    drop(TcpStream::connect(tls).unwrap());
    let mut c = TcpStream::connect(tls).unwrap();
    c.write_all(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ])
    .unwrap();
    drop(c);
    // no_certificate and bad_certificate on the mTLS listener
    let r = Curl::new(mtls, "a.test", "/").run();
    assert_eq!(r.status, 0, "{r}");
    let r = Curl::new(mtls, "a.test", "/").cert("mallory").run();
    assert_eq!(r.status, 0, "{r}");
    assert_eq!(be.request_count(), 0);

    let want = [
        ("https", "protocol_version", 1.0),
        ("https", "no_application_protocol", 1.0),
        ("https", "handshake", 1.0),
        ("https", "closed", 2.0),
        ("mtls", "no_certificate", 1.0),
        ("mtls", "bad_certificate", 1.0),
    ];
    metrics_until(&s, &format!("failures {want:?}"), |t| {
        want.iter()
            .all(|(l, reason, n)| failures(t, l, reason) == *n)
    });
    let t = common::metrics::scrape(admin(&s));
    assert_eq!(failures(&t, "https", "timeout"), 0.0);
    assert_eq!(failures(&t, "https", "io"), 0.0);
    assert_eq!(
        metric_where(&t, HANDSHAKES, &[]),
        0.0,
        "no handshake completed"
    );
    // A good handshake still works on both.
    let r = Curl::new(tls, "a.test", "/").run();
    assert_eq!(r.status, 200, "{r}");
    let r = Curl::new(mtls, "a.test", "/").cert("alice").run();
    assert_eq!(r.status, 200, "{r}");
}

#[test]
fn a_silent_tls_client_is_closed_after_header_timeout() {
    let be = backend();
    let s = gateway(
        &be,
        &format!(
            "[http]\nheader_timeout = \"1s\"\n\n{}",
            tls_listener("https", &sni_certs())
        ),
        "",
    );
    let since = Instant::now();
    let mut silent = TcpStream::connect(tls_addr(&s)).unwrap();
    let mut partial = TcpStream::connect(tls_addr(&s)).unwrap();
    // A record header announcing 512 bytes of ClientHello, then the start of it.
    partial
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .unwrap();
    for (what, c) in [
        ("silent", &mut silent),
        ("partial ClientHello", &mut partial),
    ] {
        let (closed, got) = wait_closed(c, since, Duration::from_secs(5));
        let took = closed.unwrap_or_else(|| panic!("{what}: still open after 5s"));
        assert!(
            took >= Duration::from_millis(800) && took <= Duration::from_millis(2500),
            "{what}: closed after {took:?}, want about the 1s header_timeout"
        );
        assert!(
            got.is_empty() || got[0] == 0x15,
            "{what}: at most an alert before the close, got {got:?}"
        );
    }
    metrics_until(&s, "two timeouts", |t| {
        failures(t, "https", "timeout") == 2.0
    });
    let r = Curl::new(tls_addr(&s), "a.test", "/").run();
    assert_eq!(r.status, 200, "{r}");
}

// ---------------------------------------------------------------- admin and config

#[test]
fn admin_tls_lists_the_certificates_in_force() {
    let be = backend();
    let s = https(&be, &sni_certs());
    let certs = tls_certs(&s, "https");
    assert_eq!(certs.len(), 3, "{certs:?}");
    for (names, file, default) in [
        (vec!["a.test"], "a.test.crt", false),
        (vec!["*.b.test"], "wild.b.test.crt", false),
        (vec!["default.test"], "default.crt", true),
    ] {
        let c = certs
            .iter()
            .find(|c| c["names"] == serde_json::json!(names))
            .unwrap_or_else(|| panic!("no certificate for {names:?} in {certs:?}"));
        assert_eq!(c["default"], default, "{c}");
        assert_eq!(json_serial(c), cert_serial(file), "{c}");
        assert_eq!(c["not_after"], cert_not_after(file), "{c}");
        assert_eq!(c["source"], "file", "{c}");
    }
}

/// Starts sluice on `tls` for listener `https`; it must refuse to start, saying `needles`.
fn refuses_to_start(tls: &str, needles: &[&str]) {
    let dir = temp_dir();
    let cfg = config(&format!(
        "{}\n[routes.r]\npath = \"/*\"\nrespond = {{ status = 200, body = \"x\" }}\n",
        tls_listener("https", tls)
    ));
    let path = dir.write("sluice.toml", &cfg);
    let out = run(&["-c", path.to_str().unwrap()], &[], dir.path());
    assert!(!out.status.success(), "started on:\n{cfg}\n{}", out.all());
    for n in needles {
        assert!(
            out.all().contains(n),
            "the error should mention {n:?}:\n{}",
            out.all()
        );
    }
}

#[test]
fn two_certificates_without_a_default_are_refused() {
    // Which one would a client with an unknown name or no SNI get?
    refuses_to_start(
        &certificates(&[cert("a.test"), cert("wild.b.test")]),
        &["listeners.https.tls", "default"],
    );
}

#[test]
fn bad_tls_config_is_refused_naming_the_problem() {
    // TLS 1.0/1.1 cannot be asked for.
    refuses_to_start(
        &format!("{}min_version = \"1.1\"\n", sni_certs()),
        &["min_version"],
    );
    // A file that is not a certificate, and one that is not there.
    refuses_to_start(
        &certificates(&[cert_at(
            &pki_file("bad.crt"),
            &pki_file("a.test.key"),
            false,
        )]),
        &["bad.crt"],
    );
    refuses_to_start(
        &certificates(&[cert_at(
            &pki_file("missing.crt"),
            &pki_file("a.test.key"),
            false,
        )]),
        &["missing.crt"],
    );
    // A key that does not belong to the certificate.
    refuses_to_start(
        &certificates(&[cert_at(
            &pki_file("a.test.crt"),
            &pki_file("bob.key"),
            false,
        )]),
        &["a.test"],
    );
}

// ---------------------------------------------------------------- review fixes

/// Routes are not tied to listeners: a client of a plain listener (or of a TLS listener without
/// identity headers) must not pass a forged identity header to an upstream that trusts them.
#[test]
fn identity_headers_forged_on_another_listener_are_dropped() {
    let be = backend();
    let s = gateway(
        &be,
        &tls_listener(
            "mtls",
            &mtls_tls(
                "optional",
                "identity_headers = { subject = \"x-client-subject\", san = \"x-client-san\" }\n",
            ),
        ),
        "",
    );
    let plain = s.addrs()[0];
    let r = http_get(
        plain,
        "/forged",
        &[
            ("x-client-subject", "CN=alice,O=Sluice Test"),
            ("x-client-san", "DNS:alice.clients.test"),
        ],
    );
    assert_eq!(r.status, 200);
    let seen = be.last_request();
    assert!(
        !seen.has_header("x-client-subject") && !seen.has_header("x-client-san"),
        "{}",
        seen.head_text()
    );
}

/// A session from a listener without client certificates must not resume on one that requires
/// them: the resumed handshake would skip the certificate check.
#[test]
fn sessions_do_not_resume_across_listeners() {
    let be = backend();
    let s = gateway(
        &be,
        &format!(
            "{}\n{}",
            tls_listener("open", &certificates(&[cert("a.test")])),
            tls_listener("mtls", &mtls_tls("required", ""))
        ),
        "",
    );
    let (open, mtls) = (s.addrs()[1], s.addrs()[2]);
    for flag in ["-tls1_2", "-tls1_3"] {
        let dir = temp_dir();
        let sess = dir.path().join("session.pem");
        let first = SClient::new(open, Some("a.test"))
            .verify()
            .args(&[flag])
            .sess_out(&sess)
            .run();
        assert!(first.ok(), "{first}");
        // The same listener resumes it...
        let again = SClient::new(open, Some("a.test"))
            .verify()
            .args(&[flag])
            .sess_in(&sess)
            .run();
        assert!(again.ok() && again.resumed, "{again}");
        // ...the mTLS one does not, and without a certificate refuses.
        let other = SClient::new(mtls, Some("a.test"))
            .verify()
            .args(&[flag])
            .sess_in(&sess)
            .run();
        assert!(!other.resumed, "{flag}: resumed across listeners: {other}");
        assert!(
            !other.ok() || other.http_status != Some(200),
            "{flag}: no certificate passed: {other}"
        );
    }
}
