//! TLS at the edge: listeners' sessions with rustls, each worker running its own on its own ring.
//! `server` builds a listener's rustls config, `resolve` picks its certificate by SNI, `stream` runs
//! the handshake and the record layer over a monoio socket, `identity` reads a verified client
//! certificate, and `serve` here turns an accepted socket into an HTTP/1.1 connection over TLS.

pub mod identity;
pub mod resolve;
pub mod server;
pub mod stream;

use crate::conn::h1;
use crate::worker::Worker;
use rustls::sign::CertifiedKey;
use rustls::ServerConnection;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;
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

    fn of(e: &HandshakeError) -> Failure {
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

/// One listener's handshake counts on one worker, since start.
#[derive(Debug, Clone, Default)]
pub struct TlsCounts {
    pub listener: Arc<str>,
    /// By (TLS 1.2, 1.3) x (full, resumed).
    pub handshakes: [[u64; 2]; 2],
    /// By `Failure::ALL`.
    pub failures: [u64; 8],
}

/// Failures logged per worker per second at most; the rest are only counted.
const LOGS_PER_SECOND: u32 = 5;

/// Serves one accepted connection of a TLS listener: the handshake (bounded by `header_timeout`),
/// then HTTP/1.1 over the session until it closes.
pub async fn serve(
    w: Rc<Worker>,
    mut stream: monoio::net::TcpStream,
    peer: SocketAddr,
    listener: u16,
    config: Arc<rustls::ServerConfig>,
) {
    let _conn = w.begin_connection();
    let gen = w.snapshot();
    let name: Arc<str> = gen
        .config
        .listeners
        .get(usize::from(listener))
        .map_or_else(|| Arc::from("-"), |l| Arc::from(l.name.as_str()));
    let deadline = Instant::now() + gen.http.header_timeout;
    drop(gen);
    let mut conn = match ServerConnection::new(config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(worker = w.id, error = %e, "cannot start a TLS session");
            return;
        }
    };
    let mut inbuf = bytes::BytesMut::new();
    if let Err(e) = stream::handshake(&mut stream, &mut conn, &mut inbuf, deadline).await {
        let f = Failure::of(&e);
        w.count_tls(&name, |c| c.failures[f as usize] += 1);
        if w.tls_log_allowed(LOGS_PER_SECOND) {
            tracing::info!(worker = w.id, client = %peer, listener = %name, reason = f.label(), error = %e, "TLS handshake failed");
        }
        return;
    }
    let v13 = conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    w.count_tls(&name, |c| {
        c.handshakes[usize::from(v13)][usize::from(resumed)] += 1
    });
    let identity = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| identity::of(leaf.as_ref()))
        .map(Rc::new);
    let (rd, wr) = stream::split(stream, conn, inbuf);
    h1::serve_tls(&w, rd, wr, peer, listener, identity).await;
}
