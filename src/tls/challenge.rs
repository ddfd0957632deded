//! ACME challenge answers, process-wide: written by the ACME thread (`control::acme`) while an order
//! is pending, read by workers only on a challenge's path. HTTP-01 (RFC 8555 §8.3): the pipeline
//! answers `GET /.well-known/acme-challenge/<token>` with the key authorization. TLS-ALPN-01
//! (RFC 8737): the SNI resolver serves `alpn_cert(name)` when the ClientHello offers ALPN
//! `acme-tls/1` and nothing else.
//!
//! A lock is taken only there: a plain request pays one prefix compare (and an atomic load when the
//! prefix matches), never the lock, and nothing here is ever held across an `.await`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// The path prefix of HTTP-01 answers (RFC 8555 §8.3).
pub const HTTP_PREFIX: &[u8] = b"/.well-known/acme-challenge/";
/// The ALPN protocol of TLS-ALPN-01 (RFC 8737 §6.2).
pub use super::ACME_TLS_ALPN;

/// Token -> key authorization.
static HTTP: RwLock<BTreeMap<String, String>> = RwLock::new(BTreeMap::new());
/// How many HTTP-01 tokens are set: a probe of the prefix with none set takes no lock.
static HTTP_COUNT: AtomicUsize = AtomicUsize::new(0);
/// Server name -> the TLS-ALPN-01 certificate.
static ALPN: RwLock<BTreeMap<String, Arc<CertifiedKey>>> = RwLock::new(BTreeMap::new());

/// Building a TLS-ALPN-01 certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    #[error("the key authorization digest is {0} bytes, expected 32 (SHA-256)")]
    Digest(usize),
    #[error("cannot make the TLS-ALPN-01 certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("rustls refused the TLS-ALPN-01 key: {0}")]
    Key(#[from] rustls::Error),
}

/// The key authorization to answer for HTTP-01 `token`, while its order is pending.
pub fn http_answer(token: &str) -> Option<String> {
    if HTTP_COUNT.load(Ordering::Acquire) == 0 {
        return None;
    }
    let map = HTTP.read().unwrap_or_else(|p| p.into_inner());
    map.get(token).cloned()
}

/// The TLS-ALPN-01 certificate for `server_name` (the SNI), while its order is pending.
pub fn alpn_cert(server_name: &str) -> Option<Arc<CertifiedKey>> {
    let map = ALPN.read().unwrap_or_else(|p| p.into_inner());
    if map.is_empty() {
        return None;
    }
    let lower = server_name.to_ascii_lowercase();
    map.get(&lower).cloned()
}

/// An answer in force; removed when dropped, so an order that fails half-way leaves nothing behind.
#[must_use = "the answer is withdrawn when this is dropped"]
pub struct Answer {
    kind: Kind,
}

enum Kind {
    Http(String),
    Alpn(String),
}

impl Drop for Answer {
    fn drop(&mut self) {
        match &self.kind {
            Kind::Http(token) => {
                let mut map = HTTP.write().unwrap_or_else(|p| p.into_inner());
                if map.remove(token).is_some() {
                    HTTP_COUNT.store(map.len(), Ordering::Release);
                }
            }
            Kind::Alpn(name) => {
                let mut map = ALPN.write().unwrap_or_else(|p| p.into_inner());
                map.remove(name);
            }
        }
    }
}

/// Answers HTTP-01 `token` with `key_authorization` until the returned guard drops.
pub fn set_http(token: &str, key_authorization: &str) -> Answer {
    let mut map = HTTP.write().unwrap_or_else(|p| p.into_inner());
    map.insert(token.to_string(), key_authorization.to_string());
    HTTP_COUNT.store(map.len(), Ordering::Release);
    Answer {
        kind: Kind::Http(token.to_string()),
    }
}

/// Serves `cert` for TLS-ALPN-01 on `name` until the returned guard drops.
pub fn set_alpn(name: &str, cert: Arc<CertifiedKey>) -> Answer {
    let name = name.to_ascii_lowercase();
    let mut map = ALPN.write().unwrap_or_else(|p| p.into_inner());
    map.insert(name.clone(), cert);
    Answer {
        kind: Kind::Alpn(name),
    }
}

/// The self-signed certificate of RFC 8737 §3: `name` as its only subjectAltName and the critical
/// acmeIdentifier extension holding the SHA-256 digest of the key authorization.
pub fn alpn_certified_key(name: &str, digest: &[u8]) -> Result<CertifiedKey, ChallengeError> {
    if digest.len() != 32 {
        return Err(ChallengeError::Digest(digest.len()));
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let cert = params.self_signed(&key)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)?;
    Ok(CertifiedKey::new(
        vec![CertificateDer::from(cert.der().to_vec())],
        signer,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers_last_as_long_as_their_guard() {
        assert_eq!(http_answer("tok-a"), None);
        let a = set_http("tok-a", "tok-a.thumb");
        assert_eq!(http_answer("tok-a").as_deref(), Some("tok-a.thumb"));
        assert_eq!(http_answer("tok-b"), None);
        drop(a);
        assert_eq!(http_answer("tok-a"), None);
    }

    #[test]
    fn alpn_certificate_carries_the_identifier() {
        let digest = [7u8; 32];
        let ck = alpn_certified_key("a.example.com", &digest).unwrap();
        let g = set_alpn("A.example.com", Arc::new(ck));
        let got = alpn_cert("a.EXAMPLE.com").unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&got.cert[0]).unwrap();
        // id-pe-acmeIdentifier, RFC 8737 §6.1: critical, an OCTET STRING of the digest.
        let ext = x
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .unwrap();
        assert!(ext.critical);
        assert_eq!(&ext.value[2..], &digest);
        drop(g);
        assert!(alpn_cert("a.example.com").is_none());
        assert!(matches!(
            alpn_certified_key("a.example.com", &[0; 20]),
            Err(ChallengeError::Digest(20))
        ));
    }
}
