//! `[admin]`: the admin API's address and bearer token.

use super::check::{socket_addr, Ctx, Reach};
use super::secret::{Secret, SecretToml};
use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToml {
    /// Address of the admin API.
    pub listen: String,
    /// Optional bearer token.
    pub token: Option<SecretToml>,
}

/// `[admin]`, validated.
#[derive(Debug)]
pub struct Admin {
    /// Bind address.
    pub listen: SocketAddr,
    /// Bearer token.
    pub token: Option<Secret>,
}

/// Validates `[admin]`.
pub(super) fn admin(cx: &Ctx, a: &AdminToml) -> Result<Admin, ConfigError> {
    Ok(Admin {
        listen: socket_addr(cx, "admin.listen", &a.listen)?,
        token: match &a.token {
            None => None,
            Some(SecretToml::File { file }) if cx.reach == Reach::TextOnly => {
                return Err(cx.err(
                    "admin.token",
                    format!("secret file {file:?} is not read in text-only validation"),
                ))
            }
            Some(t) => Some(Secret::resolve(t).map_err(|m| cx.err("admin.token", m))?),
        },
    })
}
