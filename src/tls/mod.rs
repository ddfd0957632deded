//! TLS: what the ACME thread shares with workers for challenges (`challenge`).

pub mod challenge;
