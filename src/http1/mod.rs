//! HTTP/1.1 as a codec: strict head parsing, chunked framing, and the encoding of what sluice itself
//! writes (status lines, error bodies, reason phrases), request-target paths and hosts in their canonical
//! form. Knows nothing of sockets, workers or routes.

pub mod authority;
pub mod chunked;
pub mod encode;
pub mod head;
pub mod path;
