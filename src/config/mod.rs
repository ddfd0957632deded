//! Configuration: TOML text -> the types serde reads (`*Toml`, as written, with defaults) -> the
//! validated `Config` the rest of sluice uses. Loading never panics: every problem becomes a
//! `ConfigError` that names the file and the key.
//!
//! The layout rule: **a table is one file**, holding its file type (`XxxToml`, serde, `deny_unknown_fields`,
//! its defaults in a private `dflt` module), its validated type, and its rules (a `fn` from one to the
//! other that names the exact key of every error). `document.rs` holds the top-level keys and runs the
//! tables in order, then the checks across tables; `check.rs` the rules every table shares. A new table
//! (consumers, auth, limits, TLS) is a new file here plus one line in `document.rs`.

mod check;
mod document;

mod admin;
pub mod consumer;
pub mod ext_auth;
mod auth;
pub mod introspection;
mod cors;
mod dns;
mod headers;
mod http;
pub mod limits;
mod listener;
pub mod monitoring;
mod route;
pub mod tls;
mod upstream;
pub mod usage;

pub mod secret;
pub mod units;

pub use admin::Admin;
pub use auth::{Auth, AuthKind, Jwt, KeySource, ASYMMETRIC as JWT_ASYMMETRIC};
pub use check::is_token;
use check::Reach;
pub use cors::Cors;
pub use dns::Dns;
pub use document::{validate, Config, ConfigToml, Driver};
pub use http::Http;
pub use listener::Listener;
pub use route::{
    path_params, ForwardPath, HostPattern, Matcher, Respond, Route, RouteAction, SplitTarget,
};
pub use upstream::{Balancer, EndpointSpec, HashOn, HealthCheck, Sticky, Upstream};

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Most `{param}` captures one route path may have (the router keeps captures on the stack).
pub const MAX_PARAMS: usize = 8;

/// The embedded default configuration, used when sluice runs with no arguments.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// A configuration problem, printed as `FILE: KEY: MESSAGE`.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}{sep}{message}", sep = if key.is_empty() { "" } else { ": " })]
pub struct ConfigError {
    /// The file, or "<embedded default>" / "<command line>".
    pub file: String,
    /// Dotted key path, e.g. `upstreams.app.endpoints[2].weight`.
    pub key: String,
    /// What was expected and what was found.
    pub message: String,
}

/// Where a configuration came from; reloads re-read `File`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on disk.
    File(PathBuf),
    /// The compiled-in default.
    Embedded,
    /// Built from command-line flags.
    CommandLine,
}

impl Source {
    /// How the source is named in messages.
    pub fn label(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Embedded => "<embedded default>".into(),
            Source::CommandLine => "<command line>".into(),
        }
    }
}

/// Reads and validates a file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        key: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, Source::File(path.to_path_buf()))
}

/// Parses and validates TOML text from `source`.
pub fn parse(text: &str, source: Source) -> Result<Config, ConfigError> {
    parse_in(text, source, Reach::World)
}

/// `parse` that touches nothing but the text: a `{ file = .. }` secret, or a listen, admin or DNS
/// server address that is not an IP literal, is a validation error instead of a read or a lookup.
/// For the fuzz target (`fuzz/fuzz_targets/config.rs`), where arbitrary text must not block.
pub fn parse_text_only(text: &str, source: Source) -> Result<Config, ConfigError> {
    parse_in(text, source, Reach::TextOnly)
}

fn parse_in(text: &str, source: Source, reach: Reach) -> Result<Config, ConfigError> {
    let label = source.label();
    let syntax = |inner: toml::de::Error, key: String| {
        let mut message = inner.message().to_string();
        if let Some(span) = inner.span() {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            message.push_str(&format!(" (line {line})"));
        }
        ConfigError {
            file: label.clone(),
            key: if key == "." { String::new() } else { key },
            message,
        }
    };
    let de = toml::Deserializer::parse(text).map_err(|e| syntax(e, String::new()))?;
    // Tracking the key path costs a third of deserialising a large config, so it is done only to name the
    // key of an error, on a second pass.
    let raw = match ConfigToml::deserialize(de) {
        Ok(raw) => raw,
        Err(plain) => {
            let again = toml::Deserializer::parse(text).map_err(|e| syntax(e, String::new()))?;
            return Err(
                match serde_path_to_error::deserialize::<_, ConfigToml>(again) {
                    Err(e) => {
                        let key = e.path().to_string();
                        syntax(e.into_inner(), key)
                    }
                    Ok(_) => syntax(plain, String::new()),
                },
            );
        }
    };
    document::validate_in(raw, source, reach)
}

#[cfg(test)]
mod tests;
