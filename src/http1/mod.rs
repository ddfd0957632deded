//! HTTP/1.1 as a codec: strict head parsing, chunked framing, and the encoding of what sluice itself
//! writes (status lines, error bodies, reason phrases). Knows nothing of sockets, workers or routes.

pub mod chunked;
pub mod encode;
pub mod head;
