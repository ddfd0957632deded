//! `[admin]`: the admin API's address and bearer token.

use super::check::{socket_addr, Ctx};
use super::secret::{resolve_at, Secret, SecretToml};
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
            Some(t) => Some(resolve_at(cx, "admin.token", t)?),
        },
    })
}
