//! Picks a listener's certificate from the ClientHello's SNI: an exact name first, then a wildcard
//! one label deep (`*.b.test` serves `x.b.test`, never `b.test` or `y.x.b.test`), then the default.
//! Names are compared in lowercase without allocating; an absent or unknown SNI gets the default.

use crate::config::tls::LoadedCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

/// Longest DNS name.
const NAME_MAX: usize = 253;

/// A listener's certificates by name.
#[derive(Debug, Default)]
pub struct Resolver {
    exact: HashMap<Box<str>, Arc<CertifiedKey>, ahash::RandomState>,
    /// By the part after `*.`.
    wildcard: HashMap<Box<str>, Arc<CertifiedKey>, ahash::RandomState>,
    default: Option<Arc<CertifiedKey>>,
}

impl Resolver {
    /// The first certificate listed for a name wins, as in nginx.
    pub fn new(certs: &[LoadedCert]) -> Resolver {
        let mut r = Resolver::default();
        for c in certs {
            for n in &c.names {
                match n.strip_prefix("*.") {
                    Some(rest) => {
                        r.wildcard
                            .entry(rest.into())
                            .or_insert_with(|| c.key.clone());
                    }
                    None => {
                        r.exact
                            .entry(n.as_str().into())
                            .or_insert_with(|| c.key.clone());
                    }
                }
            }
            if c.default && r.default.is_none() {
                r.default = Some(c.key.clone());
            }
        }
        r
    }

    /// The certificate for `sni` (already lowercase or not).
    pub fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = sni else {
            return self.default.clone();
        };
        let mut buf = [0u8; NAME_MAX];
        if name.len() > NAME_MAX {
            return self.default.clone();
        }
        let lower = &mut buf[..name.len()];
        lower.copy_from_slice(name.as_bytes());
        lower.make_ascii_lowercase();
        // ASCII lowercasing keeps UTF-8 valid; SNI is ASCII anyway.
        let Ok(lower) = std::str::from_utf8(lower) else {
            return self.default.clone();
        };
        let lower = lower.trim_end_matches('.');
        if let Some(k) = self.exact.get(lower) {
            return Some(k.clone());
        }
        if let Some((_, parent)) = lower.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return Some(k.clone());
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(mut protocols) = hello.alpn() {
            if protocols.any(|p| p == crate::tls::ACME_TLS_ALPN) {
                // A TLS-ALPN-01 validation: only the challenge certificate answers it.
                return crate::tls::challenge_cert(hello.server_name());
            }
        }
        self.pick(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tag: u8) -> Arc<CertifiedKey> {
        let signer = rustls::crypto::ring::sign::any_supported_type(
            &rustls::pki_types::PrivateKeyDer::Pkcs8(rcgen_free_key().into()),
        )
        .expect("key");
        Arc::new(CertifiedKey::new(
            vec![rustls::pki_types::CertificateDer::from(vec![tag])],
            signer,
        ))
    }

    /// A fixed Ed25519 PKCS#8 key (RFC 8410 example).
    fn rcgen_free_key() -> Vec<u8> {
        let mut k = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        k.extend_from_slice(&[7u8; 32]);
        k
    }

    fn cert(names: &[&str], default: bool, tag: u8) -> LoadedCert {
        LoadedCert {
            key: key(tag),
            names: names.iter().map(|s| s.to_string()).collect(),
            default,
            not_after: 0,
            serial: String::new(),
            source: "file",
            cert_path: String::new(),
        }
    }

    fn tag(k: Option<Arc<CertifiedKey>>) -> Option<u8> {
        k.map(|k| k.cert[0].as_ref()[0])
    }

    #[test]
    fn exact_then_one_label_wildcard_then_default() {
        let r = Resolver::new(&[
            cert(&["a.test"], false, 1),
            cert(&["*.b.test"], false, 2),
            cert(&["default.test"], true, 3),
        ]);
        assert_eq!(tag(r.pick(Some("a.test"))), Some(1));
        assert_eq!(tag(r.pick(Some("A.Test"))), Some(1));
        assert_eq!(tag(r.pick(Some("a.test."))), Some(1));
        assert_eq!(tag(r.pick(Some("x.b.test"))), Some(2));
        assert_eq!(tag(r.pick(Some("b.test"))), Some(3));
        assert_eq!(tag(r.pick(Some("y.x.b.test"))), Some(3));
        assert_eq!(tag(r.pick(Some("nope.test"))), Some(3));
        assert_eq!(tag(r.pick(None)), Some(3));
        let long = "a".repeat(300);
        assert_eq!(tag(r.pick(Some(&long))), Some(3));
    }

    #[test]
    fn without_a_default_an_unknown_name_gets_nothing() {
        let r = Resolver::new(&[cert(&["a.test"], false, 1)]);
        assert_eq!(tag(r.pick(Some("b.test"))), None);
        assert_eq!(tag(r.pick(None)), None);
    }
}
