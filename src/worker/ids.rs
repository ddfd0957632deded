//! Ids: the per-worker generator of request and span ids, and the ids of one request (its request id
//! and W3C trace context), kept on the stack.

use crate::hex::hex_into;
use crate::http1::head::{HeaderKind, RequestHead};
use std::cell::Cell;

/// Unique ids for one worker: a seed that differs per process start and worker, and a counter.
pub struct IdGen {
    seed: u64,
    counter: Cell<u64>,
}

impl IdGen {
    /// The generator of worker `worker`.
    pub fn new(worker: usize) -> IdGen {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        IdGen {
            seed: time ^ (std::process::id() as u64).rotate_left(32) ^ ((worker as u64) << 56),
            counter: Cell::new(0),
        }
    }

    /// Writes a fresh 32-hex-digit request id.
    pub fn next_request_id(&self, buf: &mut [u8; 32]) {
        let n = self.counter.get().wrapping_add(1);
        self.counter.set(n);
        // Mix the counter so ids do not look sequential, but stay unique (an odd multiplier is a bijection).
        let lo = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        hex_into(&mut buf[..16], self.seed);
        hex_into(&mut buf[16..], lo);
    }

    /// A fresh span id for trace context (unique per worker; mixed so it does not look sequential).
    pub fn next_span_id(&self) -> u64 {
        let n = self.counter.get().wrapping_add(1);
        self.counter.set(n);
        let x = (n ^ self.seed).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        (x ^ (x >> 32)) | 1
    }
}

/// Request id and W3C trace context of one request, kept on the stack.
pub struct Ids {
    id: [u8; 128],
    id_len: u8,
    traceparent: [u8; 55],
}

fn is_lower_hex(v: &[u8]) -> bool {
    v.iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// A W3C traceparent of version 00 with non-zero ids (W3C Trace Context §3.2).
fn valid_traceparent(v: &[u8]) -> bool {
    v.len() == 55
        && &v[..3] == b"00-"
        && v[35] == b'-'
        && v[52] == b'-'
        && is_lower_hex(&v[3..35])
        && is_lower_hex(&v[36..52])
        && is_lower_hex(&v[53..55])
        && v[3..35].iter().any(|&b| b != b'0')
        && v[36..52].iter().any(|&b| b != b'0')
}

impl Ids {
    /// Takes the client's X-Request-Id when it is sane, else a fresh one; continues the client's trace
    /// with a new span of ours, or starts one whose trace id is the request id.
    pub fn new(w: &IdGen, head: &RequestHead) -> Ids {
        let mut ids = Ids {
            id: [0u8; 128],
            id_len: 0,
            traceparent: *b"00-00000000000000000000000000000000-0000000000000000-01",
        };
        let client_id = head
            .headers
            .iter()
            .find(|h| h.kind == HeaderKind::RequestId)
            .map(|h| head.header(h).1)
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 128
                    && v.iter()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(b))
            });
        let mut fresh = [0u8; 32];
        match client_id {
            Some(v) => {
                ids.id[..v.len()].copy_from_slice(v);
                ids.id_len = v.len() as u8;
            }
            None => {
                w.next_request_id(&mut fresh);
                ids.id[..32].copy_from_slice(&fresh);
                ids.id_len = 32;
            }
        }
        let incoming = head
            .headers
            .iter()
            .find(|h| h.kind == HeaderKind::TraceParent)
            .map(|h| head.header(h).1)
            .filter(|v| valid_traceparent(v));
        match incoming {
            Some(tp) => {
                ids.traceparent.copy_from_slice(tp);
            }
            None => {
                if client_id.is_none() {
                    ids.traceparent[3..35].copy_from_slice(&fresh);
                } else {
                    w.next_request_id(&mut fresh);
                    ids.traceparent[3..35].copy_from_slice(&fresh);
                }
            }
        }
        // Our own span: the upstream sees sluice as its parent.
        hex_into(&mut ids.traceparent[36..52], w.next_span_id());
        ids
    }

    /// The request id.
    pub fn id(&self) -> &[u8] {
        &self.id[..self.id_len as usize]
    }

    /// The traceparent sent upstream.
    pub fn traceparent(&self) -> &[u8] {
        &self.traceparent
    }

    /// The trace id (32 hex digits).
    pub fn trace_id(&self) -> &[u8] {
        &self.traceparent[3..35]
    }
}
