//! TLS at the edge: listeners' sessions with rustls, each worker running its own on its own ring.
//! `server` builds a listener's rustls config, `resolve` picks its certificate by SNI, `stream` runs
//! the handshake and the record layer over a monoio socket, `identity` reads a verified client
//! certificate. `conn::tls` turns an accepted socket into an HTTP/1.1 connection over TLS.

pub mod identity;
pub mod resolve;
pub mod server;
pub mod stream;

use rustls::sign::CertifiedKey;
use std::sync::Arc;
use stream::HandshakeError;

/// The ALPN protocol of an ACME TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The TLS-ALPN-01 certificate for `name` while a validation of it is under way.
pub fn challenge_cert(_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
    None
}

/// Why a handshake failed, as `sluice_tls_handshake_failures_total{reason}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Timeout,
    Closed,
    ProtocolVersion,
    NoCertificate,
    BadCertificate,
    NoApplicationProtocol,
    Handshake,
    Io,
}

impl Failure {
    pub const ALL: [Failure; 8] = [
        Failure::Timeout,
        Failure::Closed,
        Failure::ProtocolVersion,
        Failure::NoCertificate,
        Failure::BadCertificate,
        Failure::NoApplicationProtocol,
        Failure::Handshake,
        Failure::Io,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Closed => "closed",
            Failure::ProtocolVersion => "protocol_version",
            Failure::NoCertificate => "no_certificate",
            Failure::BadCertificate => "bad_certificate",
            Failure::NoApplicationProtocol => "no_application_protocol",
            Failure::Handshake => "handshake",
            Failure::Io => "io",
        }
    }

    pub fn of(e: &HandshakeError) -> Failure {
        use rustls::Error as E;
        match e {
            HandshakeError::Timeout => Failure::Timeout,
            HandshakeError::Closed => Failure::Closed,
            HandshakeError::Io(_) => Failure::Io,
            HandshakeError::OldVersion(_) => Failure::ProtocolVersion,
            HandshakeError::Tls(t) => match t {
                E::NoApplicationProtocol => Failure::NoApplicationProtocol,
                E::NoCertificatesPresented => Failure::NoCertificate,
                E::InvalidCertificate(_) => Failure::BadCertificate,
                E::PeerIncompatible(p) => {
                    use rustls::PeerIncompatible as P;
                    match p {
                        P::SupportedVersionsExtensionRequired
                        | P::Tls12NotOffered
                        | P::Tls12NotOfferedOrEnabled
                        | P::Tls13RequiredForQuic
                        | P::ServerTlsVersionIsDisabledByOurConfig => Failure::ProtocolVersion,
                        _ => Failure::Handshake,
                    }
                }
                _ => Failure::Handshake,
            },
        }
    }
}
