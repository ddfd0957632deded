//! `[acme]` and `[listeners.NAME.acme]`: automatic certificates (ACME, RFC 8555). `[acme]` says which
//! CA directory to order from, as whom, where certificates are kept and when they are renewed; each
//! listener's `acme.names` says which names to obtain. Parsing and validation only: the ACME thread
//! (`control::acme`) does the work, and the TLS certificate loader reads the files `cert_files` names.

use super::check::{http_url, nonzero, Ctx};
use super::units;
use super::ConfigError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[acme]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeToml {
    /// The CA's directory URL (RFC 8555 §7.1.1).
    pub directory: String,
    /// Contact for the account (`mailto:` is added).
    pub email: Option<String>,
    /// Folder of certificates, keys and the account, under the state directory when relative.
    #[serde(default = "dflt::storage")]
    pub storage: String,
    /// PEM file of roots trusted for the directory's HTTPS instead of the built-in (Mozilla) roots.
    pub ca: Option<PathBuf>,
    /// Renew when less than this is left before `notAfter`.
    #[serde(default = "dflt::renew_before", deserialize_with = "units::duration")]
    pub renew_before: Duration,
    /// "http-01" (default) or "tls-alpn-01".
    #[serde(default = "dflt::challenge")]
    pub challenge: String,
    /// Wait before the first retry of a failed order; doubles after each failure.
    #[serde(default = "dflt::retry", deserialize_with = "units::duration")]
    pub retry: Duration,
    /// The most a retry waits.
    #[serde(default = "dflt::retry_max", deserialize_with = "units::duration")]
    pub retry_max: Duration,
    /// How often the stored certificates' expiry is checked.
    #[serde(default = "dflt::check_interval", deserialize_with = "units::duration")]
    pub check_interval: Duration,
    /// The most one order may take, from new order to certificate.
    #[serde(default = "dflt::order_timeout", deserialize_with = "units::duration")]
    pub order_timeout: Duration,
}

/// `[listeners.NAME.acme]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerAcmeToml {
    /// DNS names to obtain and renew a certificate for (one certificate per name).
    pub names: Vec<String>,
}

/// How the CA is shown control of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// RFC 8555 §8.3: a file under `/.well-known/acme-challenge/` on port 80.
    Http01,
    /// RFC 8737: a self-signed certificate served for ALPN `acme-tls/1` on port 443.
    TlsAlpn01,
}

impl Challenge {
    /// As written in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// `[acme]` with every listener's names, validated.
#[derive(Debug, Clone)]
pub struct Acme {
    pub directory: String,
    /// `mailto:` contact, if an email was given.
    pub contact: Option<String>,
    /// The state directory (the folder of `[state] path`).
    pub state_dir: PathBuf,
    /// `storage` as written.
    pub storage: String,
    pub ca: Option<PathBuf>,
    pub renew_before: Duration,
    pub challenge: Challenge,
    pub retry: Duration,
    pub retry_max: Duration,
    pub check_interval: Duration,
    pub order_timeout: Duration,
    /// Every listener's names, lowercased, each once, in file order.
    pub names: Vec<String>,
}

impl Acme {
    /// The folder the certificates, keys and account live in.
    pub fn dir(&self) -> PathBuf {
        self.state_dir.join(&self.storage)
    }
    /// The certificate and key files of `name`.
    pub fn files(&self, name: &str) -> (PathBuf, PathBuf) {
        cert_files(&self.state_dir, &self.storage, name)
    }
}

/// Where the certificate (PEM chain, leaf first) and key (PKCS#8 PEM) of `name` are kept:
/// `<state_dir>/<storage>/<name>.crt` and `.key` (`storage` may be absolute).
pub fn cert_files(state_dir: &Path, storage: &str, name: &str) -> (PathBuf, PathBuf) {
    let dir = state_dir.join(storage);
    (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    )
}

/// The certificates stored for `names` (a listener's `acme.names`), loaded for its TLS. A name not
/// issued yet is skipped; so is one whose files do not load (logged: the ACME thread orders anew),
/// so that a damaged store never stops a start or a reload.
pub(super) fn stored_certs(
    cx: &Ctx,
    acme: Option<&Acme>,
    names: &[String],
) -> Vec<super::tls::LoadedCert> {
    let Some(acme) = acme else { return Vec::new() };
    if cx.reach == super::check::Reach::TextOnly {
        return Vec::new();
    }
    let mut out = Vec::new();
    for n in names {
        let name = n.to_ascii_lowercase();
        let (crt, key) = acme.files(&name);
        if !crt.exists() {
            continue;
        }
        let (Some(c), Some(k)) = (crt.to_str(), key.to_str()) else {
            continue;
        };
        let loaded = super::tls::certified_key(c, k).and_then(|(ck, chain)| {
            let leaf = chain.first().ok_or("empty chain")?;
            let facts = super::tls::leaf_facts(leaf)?;
            Ok(super::tls::LoadedCert {
                key: ck,
                names: facts.names,
                default: false,
                not_after: facts.not_after,
                serial: facts.serial,
                source: "acme",
                cert_path: c.to_string(),
            })
        });
        match loaded {
            Ok(l) => out.push(l),
            Err(e) => {
                tracing::warn!(name = %name, path = %crt.display(), error = %e, "stored ACME certificate not loaded")
            }
        }
    }
    out
}

/// The state directory of a `[state] path`: the database file's folder.
pub fn state_dir(state: &Path) -> PathBuf {
    match state.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A DNS name a CA can issue for (RFC 1035 §2.3.1 labels, RFC 5890 A-labels): at least two labels of
/// letters, digits and inner hyphens, at most 63 bytes each and 253 in all, a top-level label that is
/// not all digits (so not an IP address). Wildcards need DNS-01, which sluice does not do.
pub fn dns_name_ok(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    labels.len() >= 2
        && labels.iter().all(label_ok)
        && labels
            .last()
            .is_some_and(|t| !t.bytes().all(|b| b.is_ascii_digit()))
}

/// What `acme` needs of a `[listeners.NAME]` table.
pub(super) struct ListenerAcme<'a> {
    pub name: &'a str,
    pub acme: Option<&'a ListenerAcmeToml>,
    /// The listener terminates TLS.
    pub tls: bool,
}

/// Validates `[acme]` with the listeners' `acme` tables; `state` is `[state] path`.
pub(super) fn acme(
    cx: &Ctx,
    raw: Option<AcmeToml>,
    listeners: &[ListenerAcme<'_>],
    state: Option<&Path>,
) -> Result<Option<Acme>, ConfigError> {
    let mut names: Vec<String> = Vec::new();
    let mut first_key = None;
    for l in listeners {
        let lname = l.name;
        let Some(a) = l.acme else { continue };
        let key = format!("listeners.{lname}.acme.names");
        if a.names.is_empty() {
            return Err(cx.err(key, "expected at least one DNS name"));
        }
        let mut own: Vec<String> = Vec::new();
        for (i, n) in a.names.iter().enumerate() {
            let lower = n.to_ascii_lowercase();
            if lower.starts_with("*.") {
                return Err(cx.err(
                    format!("{key}[{i}]"),
                    format!("wildcard names need the dns-01 challenge, which sluice does not do; got {n:?}"),
                ));
            }
            if !dns_name_ok(&lower) {
                return Err(cx.err(
                    format!("{key}[{i}]"),
                    format!("expected a DNS name like \"api.example.com\", got {n:?}"),
                ));
            }
            if own.contains(&lower) {
                return Err(cx.err(format!("{key}[{i}]"), format!("{n:?} is listed twice")));
            }
            own.push(lower.clone());
            if !names.contains(&lower) {
                names.push(lower);
            }
        }
        first_key.get_or_insert(key);
    }
    let Some(raw) = raw else {
        return match first_key {
            Some(key) => Err(cx.err(
                key,
                "names to obtain certificates for need an [acme] table (directory, email)",
            )),
            None => Ok(None),
        };
    };
    if names.is_empty() {
        return Err(cx.err(
            "acme",
            "no listener names a certificate to obtain: add `acme = { names = [\"api.example.com\"] }` to a [listeners.NAME] table",
        ));
    }
    let Some(state) = state else {
        return Err(cx.err(
            "acme",
            "needs [state] path: certificates, keys and the ACME account are kept in the state directory",
        ));
    };
    http_url(cx, "acme.directory", &raw.directory)?;
    let contact = match raw.email {
        None => None,
        Some(e) => {
            let ok = e.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && !domain.is_empty() && !e.contains(char::is_whitespace)
            });
            if !ok || e.contains([',', '?', '/']) {
                return Err(cx.err(
                    "acme.email",
                    format!("expected an address like \"ops@example.com\", got {e:?}"),
                ));
            }
            Some(format!("mailto:{e}"))
        }
    };
    if raw.storage.is_empty() {
        return Err(cx.err("acme.storage", "expected a folder, got \"\""));
    }
    let challenge = match raw.challenge.as_str() {
        "http-01" => Challenge::Http01,
        "tls-alpn-01" => Challenge::TlsAlpn01,
        other => {
            return Err(cx.err(
                "acme.challenge",
                format!("expected \"http-01\" or \"tls-alpn-01\", got {other:?}"),
            ))
        }
    };
    // Where the CA's validator connects: port 80 in plain HTTP, or port 443 with TLS.
    match challenge {
        Challenge::Http01 if listeners.iter().all(|l| l.tls) => {
            return Err(cx.err(
                "acme.challenge",
                "http-01 is answered on a plain HTTP listener (port 80) and every listener has tls: add one, or use \"tls-alpn-01\"",
            ))
        }
        Challenge::TlsAlpn01 | Challenge::Http01 => {}
    }
    let renew_before = nonzero(cx, "acme.renew_before", raw.renew_before)?;
    let retry = nonzero(cx, "acme.retry", raw.retry)?;
    let retry_max = nonzero(cx, "acme.retry_max", raw.retry_max)?;
    if retry_max < retry {
        return Err(cx.err(
            "acme.retry_max",
            format!("expected at least retry ({retry:?}), got {retry_max:?}"),
        ));
    }
    let check_interval = nonzero(cx, "acme.check_interval", raw.check_interval)?;
    let order_timeout = nonzero(cx, "acme.order_timeout", raw.order_timeout)?;
    // The names are the certificates of the listener that lists them: one without tls serves none.
    if let Some(ListenerAcme { name: lname, .. }) =
        listeners.iter().find(|l| l.acme.is_some() && !l.tls)
    {
        return Err(cx.err(
            format!("listeners.{lname}.acme.names"),
            "the certificates are served by the listener that lists the names, and it has no tls: add `tls = {}` to it",
        ));
    }
    Ok(Some(Acme {
        directory: raw.directory,
        contact,
        state_dir: state_dir(state),
        storage: raw.storage,
        ca: raw.ca,
        renew_before,
        challenge,
        retry,
        retry_max,
        check_interval,
        order_timeout,
        names,
    }))
}

/// Defaults, one function per key.
mod dflt {
    use std::time::Duration;
    pub fn storage() -> String {
        "acme".into()
    }
    pub fn renew_before() -> Duration {
        Duration::from_secs(30 * 86_400)
    }
    pub fn challenge() -> String {
        "http-01".into()
    }
    pub fn retry() -> Duration {
        Duration::from_secs(60)
    }
    pub fn retry_max() -> Duration {
        Duration::from_secs(6 * 3600)
    }
    pub fn check_interval() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn order_timeout() -> Duration {
        Duration::from_secs(120)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Source};

    const BASE: &str = "[routes.r]\npath = \"/*\"\nrespond = { status = 200 }\n";

    fn load(extra: &str) -> Result<crate::config::Config, ConfigError> {
        parse(&format!("{BASE}{extra}"), Source::Embedded)
    }

    #[test]
    fn dns_names() {
        assert!(dns_name_ok("api.example.com"));
        assert!(dns_name_ok("a-b.x1.test"));
        assert!(!dns_name_ok("localhost"));
        assert!(!dns_name_ok("127.0.0.1"));
        assert!(!dns_name_ok("-a.example.com"));
        assert!(!dns_name_ok("a..example.com"));
        assert!(!dns_name_ok("a.example.com."));
        assert!(!dns_name_ok("a_b.example.com"));
        assert!(!dns_name_ok(&format!("{}.com", "a".repeat(64))));
    }

    #[test]
    fn files_under_the_state_directory() {
        let (c, k) = cert_files(Path::new("/var/lib/sluice"), "acme/", "api.example.com");
        assert_eq!(c, Path::new("/var/lib/sluice/acme/api.example.com.crt"));
        assert_eq!(k, Path::new("/var/lib/sluice/acme/api.example.com.key"));
        let (c, _) = cert_files(Path::new("/var/lib/sluice"), "/etc/certs", "a.example.com");
        assert_eq!(c, Path::new("/etc/certs/a.example.com.crt"));
        assert_eq!(state_dir(Path::new("state.db")), Path::new("."));
        assert_eq!(state_dir(Path::new("/s/state.db")), Path::new("/s"));
    }

    #[test]
    fn a_full_table() {
        let c = load(
            "[state]\npath = \"/s/state.db\"\n\
             [acme]\ndirectory = \"https://acme.example/directory\"\nemail = \"ops@example.com\"\n\
             renew_before = \"10d\"\nchallenge = \"tls-alpn-01\"\nretry = \"1s\"\n\
             [listeners.a]\nlisten = \"127.0.0.1:0\"\ntls = {}\nacme = { names = [\"API.example.com\", \"b.example.com\"] }\n\
             [listeners.b]\nlisten = \"127.0.0.1:0\"\ntls = {}\nacme = { names = [\"b.example.com\"] }\n",
        )
        .unwrap();
        let a = c.acme.unwrap();
        assert_eq!(a.names, ["api.example.com", "b.example.com"]);
        assert_eq!(a.contact.as_deref(), Some("mailto:ops@example.com"));
        assert_eq!(a.challenge, Challenge::TlsAlpn01);
        assert_eq!(a.renew_before, Duration::from_secs(864_000));
        assert_eq!(a.dir(), Path::new("/s/acme"));
        assert_eq!(a.retry_max, Duration::from_secs(6 * 3600));
    }

    #[test]
    fn errors_name_the_key() {
        let listener = "[listeners.a]\nlisten = \"127.0.0.1:0\"\n";
        let acme = "[acme]\ndirectory = \"https://acme.example/dir\"\n";
        let state = "[state]\npath = \"s.db\"\n";
        let names = "acme = { names = [\"a.example.com\"] }\n";
        let cases = [
            (
                format!("{acme}{state}{listener}"),
                "acme: no listener names",
            ),
            (
                format!("{state}{listener}{names}"),
                "listeners.a.acme.names: names to obtain",
            ),
            (
                format!("{acme}{listener}{names}"),
                "acme: needs [state] path",
            ),
            (
                format!(
                    "{acme}{state}{listener}acme = {{ names = [\"a.example.com\", \"x_y\"] }}\n"
                ),
                "listeners.a.acme.names[1]: expected a DNS name",
            ),
            (
                format!("{acme}{state}{listener}acme = {{ names = [\"*.example.com\"] }}\n"),
                "listeners.a.acme.names[0]: wildcard",
            ),
            (
                format!("{acme}{state}{listener}acme = {{ names = [] }}\n"),
                "listeners.a.acme.names: expected at least one",
            ),
            (
                format!("{acme}email = \"nobody\"\n{state}{listener}{names}"),
                "acme.email: expected an address",
            ),
            (
                format!("{acme}challenge = \"dns-01\"\n{state}{listener}{names}"),
                "acme.challenge: expected",
            ),
            (
                format!("{acme}challenge = \"tls-alpn-01\"\n{state}{listener}{names}"),
                "listeners.a.acme.names: the certificates are served by the listener",
            ),
            (
                format!("{acme}{state}{listener}tls = {{}}\n{names}"),
                "acme.challenge: http-01 is answered on a plain HTTP listener",
            ),
            (
                format!("{acme}retry = \"1h\"\nretry_max = \"1m\"\n{state}{listener}{names}"),
                "acme.retry_max: expected at least retry",
            ),
            (
                format!("[acme]\ndirectory = \"ftp://x\"\n{state}{listener}{names}"),
                "acme.directory: expected an http",
            ),
            (
                format!("{acme}renew_before = \"0\"\n{state}{listener}{names}"),
                "acme.renew_before: expected a duration greater than 0",
            ),
        ];
        for (text, want) in cases {
            let e = load(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?} for\n{text}");
        }
    }
}
