//! HTTP/1.1: strict head parsing, chunked framing, owned-buffer I/O, and the downstream connection loop.

pub mod chunked;
pub mod conn;
pub mod head;
pub mod io;
pub mod park;
