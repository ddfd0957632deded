//! `tls = { .. }` on a listener (termination, SNI certificates, mTLS) and on an upstream (TLS to the
//! endpoints). Certificates and keys are read and checked here, at load and on every reload, so a
//! bad file fails the reload (the old generation keeps serving) and never reaches a worker. Paths are
//! relative to the working directory, like `[state] path`.

use super::check::{Ctx, Reach};
use super::ConfigError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use std::sync::Arc;

/// A listener's `tls` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsToml {
    #[serde(default)]
    pub certificates: Vec<CertificateToml>,
    #[serde(default = "dflt::min_version")]
    pub min_version: String,
    #[serde(default = "dflt::alpn")]
    pub alpn: Vec<String>,
    /// PEM bundle of the CAs client certificates must chain to (mTLS).
    pub client_ca: Option<String>,
    /// `required` or `optional` (with `client_ca`).
    pub client_auth: Option<String>,
    /// Session tickets (stateless resumption); the per-worker session cache is separate.
    #[serde(default = "dflt::yes")]
    pub session_tickets: bool,
    /// Entries of each worker's session-id cache (0 = none).
    #[serde(default = "dflt::session_cache")]
    pub session_cache: usize,
    /// Headers that carry a verified client certificate's identity upstream.
    #[serde(default)]
    pub identity_headers: IdentityHeadersToml,
}

/// `{ cert, key, default }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateToml {
    pub cert: String,
    pub key: String,
    #[serde(default)]
    pub default: bool,
}

/// `identity_headers = { subject, san }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityHeadersToml {
    pub subject: Option<String>,
    pub san: Option<String>,
}

/// An upstream's `tls` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsToml {
    /// SNI and the name the endpoint's certificate must carry (default: the endpoint's host).
    pub server_name: Option<String>,
    /// PEM bundle of CAs to trust; absent: the system's roots.
    pub ca: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    /// Verification of the endpoint's certificate; only `false` written out turns it off.
    #[serde(default = "dflt::yes")]
    pub verify: bool,
    #[serde(default = "dflt::alpn_upstream")]
    pub alpn: Vec<String>,
}

/// A certificate and its key as loaded, with what the SNI resolver and `GET /tls` need.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// DNS names from the leaf's subject alternative names, lowercase (`*.b.test` for a wildcard).
    pub names: Vec<String>,
    pub default: bool,
    /// The leaf's notAfter, Unix seconds.
    pub not_after: i64,
    /// The leaf's serial number, hex.
    pub serial: String,
    /// `file`, or `acme` for a certificate the ACME client stored.
    pub source: &'static str,
    /// Where it was read from.
    pub cert_path: String,
}

/// How a listener treats client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Required,
    Optional,
}

/// A listener's TLS, validated and loaded.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub certificates: Vec<LoadedCert>,
    /// TLS 1.3 only.
    pub tls13_only: bool,
    /// ALPN protocols offered, in preference order (`h2` is kept out until HTTP/2 lands).
    pub alpn: Vec<Vec<u8>>,
    /// Whether the config asked for `h2` (offered once HTTP/2 is served).
    pub wants_h2: bool,
    pub client_ca: Option<(Arc<rustls::RootCertStore>, ClientAuth)>,
    pub session_tickets: bool,
    pub session_cache: usize,
    /// Lowercase header names; a client's own copies are removed before the request goes upstream.
    pub subject_header: Option<String>,
    pub san_header: Option<String>,
    /// Also negotiate ALPN `acme-tls/1`: the listener answers ACME TLS-ALPN-01 validations.
    pub acme_alpn: bool,
    /// Sessions resume only where this is the same: the listener's name, its client
    /// authentication mode and a digest of its `client_ca` bundle. A ticket or session id issued on
    /// a listener without client certificates (or with other CAs, or before a reload that changed
    /// them) must not skip the client-certificate check of another.
    pub resumption_key: String,
}

/// An upstream's TLS, validated and loaded.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub server_name: Option<String>,
    /// None: the system's roots (webpki-roots are not bundled; see `tls::client`).
    pub ca: Option<Arc<rustls::RootCertStore>>,
    pub client: Option<Arc<CertifiedKey>>,
    pub verify: bool,
    pub alpn: Vec<Vec<u8>>,
}

fn read_file(cx: &Ctx, key: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    if cx.reach == Reach::TextOnly {
        return Err(cx.err(key, "files are not read in text-only validation"));
    }
    std::fs::read(path).map_err(|e| cx.err(key, format!("cannot read {path:?}: {e}")))
}

/// Reads a PEM chain (leaf first).
pub(super) fn certs(
    cx: &Ctx,
    key: &str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read_file(cx, key, path)?;
    let chain: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    match chain {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => Err(cx.err(key, format!("{path:?} holds no PEM certificate"))),
        Err(e) => Err(cx.err(key, format!("{path:?}: not a PEM certificate: {e}"))),
    }
}

/// Reads a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) and makes a signing key of it.
fn signing_key(
    cx: &Ctx,
    key: &str,
    path: &str,
) -> Result<Arc<dyn rustls::sign::SigningKey>, ConfigError> {
    let pem = read_file(cx, key, path)?;
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| cx.err(key, format!("{path:?}: not a PEM private key: {e}")))?;
    rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| cx.err(key, format!("{path:?}: unsupported key: {e}")))
}

/// A certificate chain with its key, checked to belong together.
pub fn certified_key(
    cert_path: &str,
    key_path: &str,
) -> Result<(Arc<CertifiedKey>, Vec<CertificateDer<'static>>), String> {
    let cx = Ctx {
        file: String::new(),
        reach: Reach::World,
    };
    let chain = certs(&cx, "cert", cert_path).map_err(|e| e.message)?;
    let signer = signing_key(&cx, "key", key_path).map_err(|e| e.message)?;
    let ck = CertifiedKey::new(chain.clone(), signer);
    ck.keys_match()
        .map_err(|e| format!("{key_path:?} is not the key of {cert_path:?}: {e}"))?;
    Ok((Arc::new(ck), chain))
}

/// What the SNI resolver and `GET /tls` read off a leaf.
pub struct LeafFacts {
    pub names: Vec<String>,
    pub not_after: i64,
    pub serial: String,
}

/// Reads the DNS names (SAN), notAfter and serial of a leaf certificate.
pub fn leaf_facts(der: &[u8]) -> Result<LeafFacts, String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("cannot parse: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    Ok(LeafFacts {
        names,
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string().replace(':', ""),
    })
}

fn load_cert(
    cx: &Ctx,
    base: &str,
    c: &CertificateToml,
    source: &'static str,
) -> Result<LoadedCert, ConfigError> {
    let (key, chain) = certified_key(&c.cert, &c.key).map_err(|m| cx.err(base, m))?;
    let facts = leaf_facts(&chain[0]).map_err(|m| cx.err(format!("{base}.cert"), m))?;
    if facts.names.is_empty() && !c.default {
        return Err(cx.err(
            format!("{base}.cert"),
            format!(
                "{:?} names no DNS name in its subject alternative names; mark it `default = true` or use a certificate with SAN entries",
                c.cert
            ),
        ));
    }
    Ok(LoadedCert {
        key,
        names: facts.names,
        default: c.default,
        not_after: facts.not_after,
        serial: facts.serial,
        source,
        cert_path: c.cert.clone(),
    })
}

fn roots(cx: &Ctx, key: &str, path: &str) -> Result<Arc<rustls::RootCertStore>, ConfigError> {
    let mut store = rustls::RootCertStore::empty();
    for c in certs(cx, key, path)? {
        store
            .add(c)
            .map_err(|e| cx.err(key, format!("{path:?}: not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(store))
}

/// Entries of a per-worker session cache at most (rustls allocates them up front).
const MAX_SESSION_CACHE: usize = 1_000_000;

/// Credentials a client sends: an identity header named so would let the client's own pass.
const CREDENTIAL_HEADERS: &[&str] = &["authorization", "cookie"];

fn header_name(cx: &Ctx, key: &str, name: &Option<String>) -> Result<Option<String>, ConfigError> {
    match name {
        None => Ok(None),
        Some(n) if super::is_token(n) => {
            let n = n.to_ascii_lowercase();
            let reserved =
                crate::policy::headers::reserved(&n, crate::policy::headers::Side::Request)
                    .or_else(|| {
                        CREDENTIAL_HEADERS
                            .contains(&n.as_str())
                            .then_some("a client's credential")
                    });
            if let Some(why) = reserved {
                return Err(cx.err(key, format!("{n:?}: {why}; choose another name")));
            }
            Ok(Some(n))
        }
        Some(n) => Err(cx.err(key, format!("expected a header name, got {n:?}"))),
    }
}

/// Validates and loads a listener's `tls`; `extra` are certificates found elsewhere (ACME's store);
/// with `acme_names` the listener may start with none (they are not issued yet).
pub(super) fn listener_tls(
    cx: &Ctx,
    listener: &str,
    t: &ListenerTlsToml,
    extra: Vec<LoadedCert>,
    acme_names: bool,
) -> Result<ListenerTls, ConfigError> {
    let base = format!("listeners.{listener}.tls");
    let mut certificates = Vec::new();
    for (i, c) in t.certificates.iter().enumerate() {
        certificates.push(load_cert(
            cx,
            &format!("{base}.certificates[{i}]"),
            c,
            "file",
        )?);
    }
    certificates.extend(extra);
    let defaults = certificates.iter().filter(|c| c.default).count();
    if certificates.is_empty() && !acme_names {
        return Err(cx.err(
            format!("{base}.certificates"),
            "expected at least one { cert, key } (or ACME names for this listener)",
        ));
    }
    if defaults > 1 {
        return Err(cx.err(
            format!("{base}.certificates"),
            "at most one certificate may be `default = true`",
        ));
    }
    if defaults == 0 && t.certificates.len() > 1 {
        return Err(cx.err(
            format!("{base}.certificates"),
            "several certificates and none is `default = true`: mark the one for an absent or unknown SNI",
        ));
    }
    if defaults == 0 {
        // One certificate (or, with ACME names only, the first obtained) serves every name, as
        // nginx's only `ssl_certificate` does.
        if let Some(c) = certificates.first_mut() {
            c.default = true;
        }
    }
    let tls13_only = match t.min_version.as_str() {
        "1.2" => false,
        "1.3" => true,
        v => {
            return Err(cx.err(
                format!("{base}.min_version"),
                format!(
                    "expected \"1.2\" or \"1.3\" (older versions are never offered), got {v:?}"
                ),
            ))
        }
    };
    let mut alpn = Vec::new();
    let mut wants_h2 = false;
    for (i, p) in t.alpn.iter().enumerate() {
        match p.as_str() {
            "h2" => wants_h2 = true,
            "http/1.1" => alpn.push(b"http/1.1".to_vec()),
            other => {
                return Err(cx.err(
                    format!("{base}.alpn[{i}]"),
                    format!("expected \"h2\" or \"http/1.1\", got {other:?}"),
                ))
            }
        }
    }
    if wants_h2 && alpn.is_empty() {
        return Err(cx.err(
            format!("{base}.alpn"),
            "\"h2\" alone: sluice serves HTTP/1.1 until HTTP/2 lands; add \"http/1.1\"",
        ));
    }
    let client_ca = match (&t.client_ca, t.client_auth.as_deref()) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(cx.err(
                format!("{base}.client_auth"),
                "needs `client_ca`, the CAs client certificates must chain to",
            ))
        }
        (Some(path), mode) => {
            let mode = match mode.unwrap_or("required") {
                "required" => ClientAuth::Required,
                "optional" => ClientAuth::Optional,
                m => {
                    return Err(cx.err(
                        format!("{base}.client_auth"),
                        format!("expected \"required\" or \"optional\", got {m:?}"),
                    ))
                }
            };
            Some((roots(cx, &format!("{base}.client_ca"), path)?, mode, path))
        }
    };
    let resumption_key = match &client_ca {
        None => format!("{listener}\0none"),
        Some((_, mode, path)) => {
            use sha2::Digest;
            let pem = read_file(cx, &format!("{base}.client_ca"), path)?;
            format!(
                "{listener}\0{mode:?}\0{}",
                crate::hex::encode(&sha2::Sha256::digest(&pem))
            )
        }
    };
    let client_ca = client_ca.map(|(r, m, _)| (r, m));
    let ih = &t.identity_headers;
    let subject_header = header_name(cx, &format!("{base}.identity_headers.subject"), &ih.subject)?;
    let san_header = header_name(cx, &format!("{base}.identity_headers.san"), &ih.san)?;
    if subject_header.is_some() && subject_header == san_header {
        return Err(cx.err(
            format!("{base}.identity_headers"),
            "`subject` and `san` must be different headers",
        ));
    }
    if t.session_cache > MAX_SESSION_CACHE {
        return Err(cx.err(
            format!("{base}.session_cache"),
            format!(
                "expected at most {MAX_SESSION_CACHE} entries, got {}",
                t.session_cache
            ),
        ));
    }
    if (subject_header.is_some() || san_header.is_some()) && client_ca.is_none() {
        return Err(cx.err(
            format!("{base}.identity_headers"),
            "needs `client_ca`: without client certificates there is no identity to pass",
        ));
    }
    Ok(ListenerTls {
        certificates,
        tls13_only,
        alpn,
        wants_h2,
        client_ca,
        session_tickets: t.session_tickets,
        session_cache: t.session_cache,
        subject_header,
        san_header,
        acme_alpn: false,
        resumption_key,
    })
}

/// Validates and loads an upstream's `tls`.
pub(super) fn upstream_tls(
    cx: &Ctx,
    upstream: &str,
    t: &UpstreamTlsToml,
) -> Result<UpstreamTls, ConfigError> {
    let base = format!("upstreams.{upstream}.tls");
    if let Some(n) = &t.server_name {
        if rustls::pki_types::ServerName::try_from(n.as_str()).is_err() {
            return Err(cx.err(
                format!("{base}.server_name"),
                format!("expected a DNS name or an IP address, got {n:?}"),
            ));
        }
    }
    let ca = match &t.ca {
        Some(p) => Some(roots(cx, &format!("{base}.ca"), p)?),
        None => None,
    };
    let client = match (&t.client_cert, &t.client_key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some(
            certified_key(c, k)
                .map_err(|m| cx.err(format!("{base}.client_cert"), m))?
                .0,
        ),
        _ => return Err(cx.err(base, "`client_cert` and `client_key` go together")),
    };
    let mut alpn = Vec::new();
    for (i, p) in t.alpn.iter().enumerate() {
        if p != "http/1.1" {
            return Err(cx.err(
                format!("{base}.alpn[{i}]"),
                format!("expected \"http/1.1\" (sluice speaks HTTP/1.1 to upstreams), got {p:?}"),
            ));
        }
        alpn.push(p.as_bytes().to_vec());
    }
    Ok(UpstreamTls {
        server_name: t.server_name.clone(),
        ca,
        client,
        verify: t.verify,
        alpn,
    })
}

/// A subject in one spelling: attributes in the order written, `NAME=value` joined by `,` (the
/// attributes of one multi-valued RDN by `+`), names upper-case, spaces around `=`, `,` and `+`
/// dropped. Values keep their RFC 4514 escapes (`\,` `\+` `\=` ...), which `tls::identity` writes
/// for such characters in a certificate, so `CN=a\,O=b` (one attribute) never equals `CN=a,O=b`.
pub fn normalise_subject(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut part = String::new();
    let mut escaped = false;
    let flush = |part: &mut String, out: &mut String, sep: Option<char>| {
        match split_unescaped(part, '=') {
            Some((n, v)) => {
                out.push_str(&n.trim().to_ascii_uppercase());
                out.push('=');
                out.push_str(trim_unescaped(v));
            }
            None => out.push_str(part.trim()),
        }
        if let Some(c) = sep {
            out.push(c);
        }
        part.clear();
    };
    for c in s.chars() {
        if escaped {
            part.push(c);
            escaped = false;
        } else if c == '\\' {
            part.push(c);
            escaped = true;
        } else if c == ',' || c == '+' {
            flush(&mut part, &mut out, Some(c));
        } else {
            part.push(c);
        }
    }
    flush(&mut part, &mut out, None);
    out
}

/// `s` split at the first `c` that is not escaped.
fn split_unescaped(s: &str, c: char) -> Option<(&str, &str)> {
    let mut escaped = false;
    for (i, ch) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if ch == '\\' {
            escaped = true;
        } else if ch == c {
            return Some((&s[..i], &s[i + c.len_utf8()..]));
        }
    }
    None
}

/// `v` without leading spaces and without trailing spaces that are not escaped.
fn trim_unescaped(v: &str) -> &str {
    let v = v.trim_start();
    let mut end = v.len();
    while end > 0 && v.as_bytes()[end - 1] == b' ' {
        // An odd run of backslashes before the space escapes it.
        let slashes = v.as_bytes()[..end - 1]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if slashes % 2 == 1 {
            break;
        }
        end -= 1;
    }
    &v[..end]
}

/// Escapes an attribute value as RFC 4514 §2.4 does, for `normalise_subject`'s spelling.
pub fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

mod dflt {
    pub fn min_version() -> String {
        "1.2".into()
    }
    pub fn alpn() -> Vec<String> {
        vec!["http/1.1".into()]
    }
    pub fn alpn_upstream() -> Vec<String> {
        vec!["http/1.1".into()]
    }
    pub fn yes() -> bool {
        true
    }
    pub fn session_cache() -> usize {
        4096
    }
}
