//! sluice: a thread-per-core API gateway and reverse proxy on io_uring.
//! Modules in request-path order: config -> listener -> worker -> http1 -> router -> proxy -> upstream -> respond.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod access_log;
pub mod cli;
pub mod config;
pub mod control;
pub mod dns;
pub mod listener;
pub mod metrics;
pub mod msg;
pub mod panic;
pub mod runtime;
pub mod server;
pub mod snapshot;
pub mod sock;
pub mod worker;

pub mod conn;
pub mod hex;
pub mod http1;
pub mod io;
pub mod link;
pub mod proxy;
pub mod respond;
pub mod router;
pub mod sys;
pub mod top;
pub mod upstream;
