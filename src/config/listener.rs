//! `[listeners.NAME]`: the addresses sluice accepts on.

use super::check::{socket_addr, Ctx};
use super::ConfigError;
use indexmap::IndexMap;
use serde::Deserialize;
use std::net::SocketAddr;

/// `[listeners.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerToml {
    /// Address to bind; port 0 picks a free port once for all workers.
    pub listen: String,
}

/// A client listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Table name.
    pub name: String,
    /// Bind address (port may be 0).
    pub addr: SocketAddr,
}

/// Validates the `[listeners.NAME]` tables: at least one, no address twice (port 0 excepted).
pub(super) fn listeners(
    cx: &Ctx,
    raw: &IndexMap<String, ListenerToml>,
) -> Result<Vec<Listener>, ConfigError> {
    if raw.is_empty() {
        return Err(cx.err(
            "listeners",
            "expected at least one [listeners.NAME] table with `listen = \"ip:port\"`",
        ));
    }
    let mut listeners = Vec::new();
    for (name, l) in raw {
        let key = format!("listeners.{name}.listen");
        let addr = socket_addr(cx, &key, &l.listen)?;
        if addr.port() != 0 && listeners.iter().any(|o: &Listener| o.addr == addr) {
            return Err(cx.err(key, format!("address {addr} is used by another listener")));
        }
        listeners.push(Listener {
            name: name.clone(),
            addr,
        });
    }
    Ok(listeners)
}
