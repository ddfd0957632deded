//! Request body size: a declared Content-Length over the route's `max_body_bytes` is refused with 413
//! before any of the body is read (and before `100 Continue`). Chunked bodies have no declared size;
//! the forwarder counts them as they stream and stops at the same limit.

use super::{Input, Outcome};
use crate::http1::head::Framing;
use crate::pipeline::ctx::Ctx;
use crate::respond::ProxyError;

/// 413 for a Content-Length over the route's limit.
pub fn declared_length(input: &Input<'_>, _ctx: &mut Ctx) -> Outcome {
    match (input.head.body(), input.route) {
        (Framing::Length(n), Some(r)) if n > r.max_body_bytes => {
            Outcome::Reject(ProxyError::BodyTooLarge)
        }
        _ => Outcome::Continue,
    }
}
