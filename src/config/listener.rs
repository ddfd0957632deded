//! `[listeners.NAME]`: the addresses sluice accepts on, and who may connect through them: the
//! listener's IP allow and deny lists and the proxies whose X-Forwarded-For it believes.

use super::check::{socket_addr, Ctx};
use super::ConfigError;
use crate::cidr::{IpList, IpRules};
use indexmap::IndexMap;
use serde::Deserialize;
use std::net::SocketAddr;

/// `[listeners.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerToml {
    /// Address to bind; port 0 picks a free port once for all workers.
    pub listen: String,
    /// Peers whose X-Forwarded-For names the client (CIDR list).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Only these clients (CIDR list; empty = any).
    #[serde(default)]
    pub ip_allow: Vec<String>,
    /// Never these clients (CIDR list).
    #[serde(default)]
    pub ip_deny: Vec<String>,
    /// TLS termination.
    pub tls: Option<super::tls::ListenerTlsToml>,
}

/// A client listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Table name.
    pub name: String,
    /// Bind address (port may be 0).
    pub addr: SocketAddr,
    /// Peers whose X-Forwarded-For is believed.
    pub trusted_proxies: IpList,
    /// Allow and deny lists, checked against the resolved client before routing.
    pub ip: IpRules,
    /// TLS termination, certificates loaded.
    pub tls: Option<std::sync::Arc<super::tls::ListenerTls>>,
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
    if raw.len() > usize::from(u16::MAX) {
        return Err(cx.err("listeners", "at most 65535 listeners"));
    }
    let mut listeners = Vec::new();
    for (name, l) in raw {
        let key = format!("listeners.{name}.listen");
        let addr = socket_addr(cx, &key, &l.listen)?;
        if addr.port() != 0 && listeners.iter().any(|o: &Listener| o.addr == addr) {
            return Err(cx.err(key, format!("address {addr} is used by another listener")));
        }
        let base = || format!("listeners.{name}");
        let tls = match &l.tls {
            Some(t) => Some(std::sync::Arc::new(super::tls::listener_tls(
                cx,
                name,
                t,
                Vec::new(),
            )?)),
            None => None,
        };
        listeners.push(Listener {
            tls,
            name: name.clone(),
            addr,
            trusted_proxies: cidr_list(cx, &base, "trusted_proxies", &l.trusted_proxies)?,
            ip: IpRules {
                allow: cidr_list(cx, &base, "ip_allow", &l.ip_allow)?,
                deny: cidr_list(cx, &base, "ip_deny", &l.ip_deny)?,
            },
        });
    }
    Ok(listeners)
}

/// Parses one CIDR list; an error names the entry (`routes.api.ip_allow[2]`).
pub(super) fn cidr_list(
    cx: &Ctx,
    base: &dyn Fn() -> String,
    key: &str,
    entries: &[String],
) -> Result<IpList, ConfigError> {
    for (i, e) in entries.iter().enumerate() {
        if let Err(bad) = IpList::parse([e.as_str()]) {
            return Err(cx.err(format!("{}.{key}[{i}]", base()), bad.to_string()));
        }
    }
    IpList::parse(entries.iter().map(String::as_str))
        .map_err(|bad| cx.err(format!("{}.{key}", base()), bad.to_string()))
}
