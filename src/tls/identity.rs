//! What a verified client certificate says of its holder: its subject and its subject alternative
//! names, as text, and how a consumer's `mtls = { subject, san }` is compared with them.

use crate::config::tls::normalise_subject;

/// What a verified client certificate says of its holder, for the policy chain to map to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The certificate's subject distinguished name, as text (RFC 4514).
    pub subject: Box<str>,
    /// Its subject alternative names (DNS names, URIs, e-mail addresses), as text.
    pub sans: Box<[Box<str>]>,
}

/// The identity in a leaf certificate (DER) that rustls verified; None if it does not parse.
pub fn of(der: &[u8]) -> Option<PeerIdentity> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let mut parts = Vec::new();
    for rdn in cert.subject().iter() {
        for a in rdn.iter() {
            let name = x509_parser::objects::oid2abbrev(a.attr_type(), registry)
                .map(str::to_string)
                .unwrap_or_else(|_| a.attr_type().to_id_string());
            let value = a.as_str().ok()?;
            parts.push(format!("{name}={value}"));
        }
    }
    let mut sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => sans.push(d.to_ascii_lowercase().into_boxed_str()),
                GeneralName::URI(u) => sans.push((*u).into()),
                GeneralName::RFC822Name(e) => sans.push((*e).into()),
                _ => {}
            }
        }
    }
    Some(PeerIdentity {
        subject: normalise_subject(&parts.join(",")).into_boxed_str(),
        sans: sans.into_boxed_slice(),
    })
}

#[cfg(test)]
mod tests {
    use super::normalise_subject;

    #[test]
    fn subjects_compare_in_one_spelling() {
        assert_eq!(
            normalise_subject("cn = alice, O=Sluice Test"),
            "CN=alice,O=Sluice Test"
        );
        assert_ne!(normalise_subject("CN=alice"), normalise_subject("CN=Alice"));
    }
}
