//! Secrets in the config: a plain string, `{ env = "VAR" }` or `{ file = "path" }`.
//! The value is resolved at load time and never printed: `Debug` and `Display` show only where it came from.

use super::check::{Ctx, Reach};
use super::ConfigError;
use serde::Deserialize;
use std::fmt;

/// How a secret is written in TOML.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub enum SecretToml {
    /// Inline value (discouraged, but convenient for tests).
    Plain(String),
    /// Read from the environment.
    Env {
        /// Variable name.
        env: String,
    },
    /// Read from a file; surrounding whitespace is trimmed.
    File {
        /// Path to the file.
        file: String,
    },
}

impl fmt::Debug for SecretToml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretToml::Plain(_) => f.write_str("<inline secret>"),
            SecretToml::Env { env } => write!(f, "<secret from env {env}>"),
            SecretToml::File { file } => write!(f, "<secret from file {file}>"),
        }
    }
}

/// A resolved secret value; redacted in every printed form.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    origin: String,
}

impl Secret {
    /// Resolves the TOML form into the value.
    pub fn resolve(t: &SecretToml) -> Result<Secret, String> {
        match t {
            SecretToml::Plain(v) => Ok(Secret {
                value: v.clone(),
                origin: "inline".into(),
            }),
            SecretToml::Env { env } => std::env::var(env)
                .map(|value| Secret {
                    value,
                    origin: format!("env {env}"),
                })
                .map_err(|_| format!("environment variable {env} is not set")),
            SecretToml::File { file } => std::fs::read_to_string(file)
                .map(|v| Secret {
                    value: v.trim().to_string(),
                    origin: format!("file {file}"),
                })
                .map_err(|e| format!("cannot read secret file {file}: {e}")),
        }
    }

    /// The secret value itself; callers must not log it.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

/// Resolves the secret at `key`: an error names the key. A `{ file = .. }` secret is an error in
/// text-only validation, which must not touch the disk.
pub(super) fn resolve_at(cx: &Ctx, key: &str, t: &SecretToml) -> Result<Secret, ConfigError> {
    match t {
        SecretToml::File { file } if cx.reach == Reach::TextOnly => Err(cx.err(
            key,
            format!("secret file {file:?} is not read in text-only validation"),
        )),
        t => Secret::resolve(t).map_err(|m| cx.err(key, m)),
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<secret from {}>", self.origin)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<secret from {}>", self.origin)
    }
}
