//! A connection on a TLS listener: the handshake (bounded by `header_timeout`, its failures counted
//! by reason and logged at a bounded rate), then HTTP/1.1 over the session (`h1::serve_tls`).

use super::{h1, park};
use crate::pipeline::downstream::PeerIdentity;
use crate::tls::{identity, stream, Failure};
use crate::worker::Worker;
use rustls::ServerConnection;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// Failures logged per worker per second at most; the rest are only counted.
const LOGS_PER_SECOND: u32 = 5;

/// Serves one accepted connection of a TLS listener until it closes.
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
    if conn.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) {
        // RFC 8737 §3: a TLS-ALPN-01 validation ends with the handshake; nothing is served on it.
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
    let parked = h1::serve_tls(&w, rd, wr, peer, listener, identity.clone(), true).await;
    park(&w, parked, peer, listener, identity).await;
}

/// A parked TLS connection's session: what `conn::park` holds for it.
struct Session {
    conn: ServerConnection,
    identity: Option<Rc<PeerIdentity>>,
}

/// Parks a TLS connection that went idle (`h1::serve_tls` gave its halves back).
async fn park(
    w: &Rc<Worker>,
    parked: Option<h1::TlsParked<ServerConnection>>,
    peer: SocketAddr,
    listener: u16,
    identity: Option<Rc<PeerIdentity>>,
) {
    let Some((rd, wr, idle_left)) = parked else {
        return;
    };
    // Guarded: taking the descriptor back from monoio panics if an operation still held it (none
    // does once the session parked), and such a bug must close this connection alone.
    let guarded = crate::panic::catch(std::pin::pin!(async move {
        let (stream, conn) = stream::unsplit(rd, wr)?;
        Some(park::Entry {
            fd: crate::sys::into_owned_fd(stream),
            peer,
            listener,
            session: Some(Box::new(Session { conn, identity })),
        })
    }))
    .await;
    match guarded {
        // Refused only where the kernel refuses the registration: the connection closes.
        Ok(Some(entry)) => drop(w.parking.park(entry, Instant::now() + idle_left)),
        Ok(None) => {}
        Err(p) => {
            w.count_panic();
            tracing::error!(worker = w.id, client = %peer, panic = %p, "panic parking a connection; closed it");
        }
    }
}

/// Serves a parked TLS connection that became readable, as a new task.
pub async fn resume(w: Rc<Worker>, entry: park::Entry) {
    let _conn = w.begin_connection();
    let Some(session) = entry.session.and_then(|s| s.downcast::<Session>().ok()) else {
        return;
    };
    if w.is_draining() || crate::sys::at_eof(entry.fd.as_raw_fd()) {
        return;
    }
    let tcp = match monoio::net::TcpStream::from_std(std::net::TcpStream::from(entry.fd)) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(worker = w.id, error = %e, "cannot resume a parked connection");
            return;
        }
    };
    let Session { conn, identity } = *session;
    let (rd, wr) = stream::split(tcp, conn, bytes::BytesMut::new());
    let parked = h1::serve_tls(
        &w,
        rd,
        wr,
        entry.peer,
        entry.listener,
        identity.clone(),
        false,
    )
    .await;
    park(&w, parked, entry.peer, entry.listener, identity).await;
}
