//! sluice: a thread-per-core API gateway and reverse proxy on io_uring.
//!
//! Modules in the order a request meets them: the process starts (`cli`, `config`, `snapshot`,
//! `listener`, `server`), a worker accepts (`worker`), a connection driver reads a request (`conn`,
//! with the `http1` codec and `io`), the pipeline serves it (`pipeline`: `policy`, `router`, then
//! `forward` to an `upstream`, errors through `respond`), and its record is counted and logged
//! (`metrics`, `access_log`). The control thread (`control`, over `msg` and `link`) and `sluice top`
//! stay off the request path.
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod dns;
pub mod snapshot;
pub mod listener;
pub mod runtime;
pub mod server;
pub mod panic;
pub mod worker;

pub mod conn;
pub mod tls;
pub mod http1;
pub mod io;
pub mod sock;
pub mod sys;

pub mod pipeline;
pub mod cidr;
pub mod policy;
pub mod limit;
pub mod router;
pub mod forward;
pub mod upstream;
pub mod respond;
pub mod hex;

pub mod metrics;
pub mod usage;
pub mod access_log;

pub mod msg;
pub mod link;
pub mod control;
pub mod top;
