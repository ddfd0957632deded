//! Connection drivers: each turns a client's bytes into requests and hands every request to the
//! pipeline, which answers through the driver's `Downstream`. HTTP/1.1 over TCP (with idle parking) or over
//! TLS (`crate::tls`); HTTP/2 streams come here too.

pub mod accept;
pub mod h1;
pub mod park;
pub mod tls;
pub mod wire;

pub use accept::start;
