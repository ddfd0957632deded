//! A connection on a TLS listener: the handshake (bounded by `header_timeout`, its failures counted
//! by reason and logged at a bounded rate), then HTTP/1.1 over the session (`h1::serve_tls`).

use super::h1;
use crate::tls::{identity, stream, Failure};
use crate::worker::Worker;
use rustls::ServerConnection;
use std::net::SocketAddr;
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
