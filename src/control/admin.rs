//! The admin API on the control thread: `GET /status` and `POST /reload` (JSON), behind an optional
//! bearer token. One request per connection; never on a worker. Later issues add metrics and endpoint control.

use crate::config::secret::Secret;
use crate::http1::head::{Limits, RequestHead};
use crate::http1::io::{read_more_timeout, write_vec, Timed};
use bytes::BytesMut;
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What the admin API reports; shared inside the control thread only.
pub struct AdminState {
    /// Start time.
    pub started: Instant,
    /// Worker count.
    pub workers: usize,
    /// Current config generation.
    pub generation: Rc<Cell<u64>>,
    /// Config source label.
    pub config: String,
    /// Bearer token.
    pub token: Option<Secret>,
}

/// Serves the admin listener until the runtime stops.
pub async fn serve(listener: std::net::TcpListener, state: Rc<AdminState>) {
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener unusable");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                monoio::spawn(handle(s, state.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn token_ok(head: &RequestHead, token: &Option<Secret>) -> bool {
    let Some(t) = token else { return true };
    let Some(v) = head.get(b"authorization") else {
        return false;
    };
    let Some(given) = v.strip_prefix(b"Bearer ") else {
        return false;
    };
    // Constant-time compare: the token is a secret.
    let want = t.expose().as_bytes();
    given.len() == want.len() && given.iter().zip(want).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
}

async fn handle(mut s: monoio::net::TcpStream, st: Rc<AdminState>) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut head = RequestHead::default();
    let limits = Limits {
        max_header_bytes: 16384,
        max_headers: 64,
        max_uri_bytes: 4096,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match head.parse(&mut buf, &limits) {
            Ok(Some(())) => break,
            Ok(None) => {}
            Err(_) => return reply(&mut s, 400, "{\"error\":\"bad request\"}").await,
        }
        match read_more_timeout(
            &mut s,
            &mut buf,
            4096,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await
        {
            Timed::Done(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
    if !token_ok(&head, &st.token) {
        return reply(&mut s, 401, "{\"error\":\"missing or wrong bearer token\"}").await;
    }
    match (head.method(), head.path()) {
        (b"GET", b"/status") => {
            let body = format!(
                "{{\"version\":\"{}\",\"uptime_seconds\":{},\"workers\":{},\"config_generation\":{},\"config\":{:?},\"pid\":{}}}",
                env!("CARGO_PKG_VERSION"),
                st.started.elapsed().as_secs(),
                st.workers,
                st.generation.get(),
                st.config,
                std::process::id()
            );
            reply(&mut s, 200, &body).await
        }
        (b"POST", b"/reload") => {
            // The main thread owns reloads; a SIGHUP to ourselves takes the same path as an operator's.
            match signal_hook::low_level::raise(signal_hook::consts::SIGHUP) {
                Ok(()) => reply(&mut s, 202, "{\"reload\":\"requested\"}").await,
                Err(_) => reply(&mut s, 500, "{\"error\":\"could not signal reload\"}").await,
            }
        }
        (_, b"/status") | (_, b"/reload") => {
            reply(&mut s, 405, "{\"error\":\"method not allowed\"}").await
        }
        _ => reply(&mut s, 404, "{\"error\":\"not found\"}").await,
    }
}

async fn reply(s: &mut monoio::net::TcpStream, status: u16, body: &str) {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        crate::router::reason(status),
        body.len()
    )
    .into_bytes();
    let _ = write_vec(s, &mut out).await;
}
