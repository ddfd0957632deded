//! What a verified client certificate says of its holder: its subject and its subject alternative
//! names, as text, and how a consumer's `mtls = { subject, san }` is compared with them.

use crate::config::tls::{escape_dn_value, normalise_subject};

/// What a verified client certificate says of its holder, for the policy chain to map to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The certificate's subject distinguished name, as text (RFC 4514).
    pub subject: Box<str>,
    /// Its subject alternative names, typed: `DNS:name` (lowercase), `URI:uri`, `email:address`.
    pub sans: Box<[Box<str>]>,
}

/// The identity in a leaf certificate (DER) that rustls verified; None if it does not parse.
pub fn of(der: &[u8]) -> Option<PeerIdentity> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let mut subject = String::new();
    for (i, rdn) in cert.subject().iter().enumerate() {
        if i > 0 {
            subject.push(',');
        }
        for (j, a) in rdn.iter().enumerate() {
            if j > 0 {
                subject.push('+');
            }
            let name = x509_parser::objects::oid2abbrev(a.attr_type(), registry)
                .map(str::to_string)
                .unwrap_or_else(|_| a.attr_type().to_id_string());
            // A value with `,` `+` `=` and the like is escaped, so no value can pass for several
            // attributes (`CN=alice\,O=Example` is one common name, not alice of Example).
            let value = escape_dn_value(a.as_str().ok()?);
            subject.push_str(&name);
            subject.push('=');
            subject.push_str(&value);
        }
    }
    // Typed, so a DNS name can never stand for an e-mail address or a URI a consumer lists.
    let mut sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => {
                    sans.push(format!("DNS:{}", d.to_ascii_lowercase()).into_boxed_str())
                }
                GeneralName::URI(u) => sans.push(format!("URI:{u}").into_boxed_str()),
                GeneralName::RFC822Name(e) => sans.push(format!("email:{e}").into_boxed_str()),
                _ => {}
            }
        }
    }
    Some(PeerIdentity {
        subject: normalise_subject(&subject).into_boxed_str(),
        sans: sans.into_boxed_slice(),
    })
}

#[cfg(test)]
mod tests {
    use super::{escape_dn_value, normalise_subject};

    #[test]
    fn an_escaped_comma_is_one_value() {
        assert_eq!(
            normalise_subject(&format!("CN={}", escape_dn_value("alice,O=Sluice Test"))),
            "CN=alice\\,O\\=Sluice Test"
        );
        assert_ne!(
            normalise_subject(&format!("CN={}", escape_dn_value("alice,O=Sluice Test"))),
            normalise_subject("CN=alice,O=Sluice Test")
        );
        assert_eq!(normalise_subject("cn=a + uid = b , o=x"), "CN=a+UID=b,O=x");
    }

    #[test]
    fn subjects_compare_in_one_spelling() {
        assert_eq!(
            normalise_subject("cn = alice, O=Sluice Test"),
            "CN=alice,O=Sluice Test"
        );
        assert_ne!(normalise_subject("CN=alice"), normalise_subject("CN=Alice"));
    }
}
