//! A listener's rustls `ServerConfig`: versions, ALPN, certificates by SNI, client certificates, and
//! resumption. Built once per config generation from the loaded material (`config::tls`) and shared;
//! each worker then takes a copy with its own session cache (`for_worker`), so resumption by session
//! id never crosses cores, while session tickets work on any worker (the ticket keys are the
//! process's, kept across reloads).

use super::resolve::Resolver;
use crate::config::tls::{ClientAuth, ListenerTls};
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::ServerConfig;
use std::sync::{Arc, OnceLock};

/// Ticket keys (rotated by rustls every few hours), one set for the process so a ticket issued by one
/// worker, or before a reload, resumes on any.
fn ticketer() -> Option<Arc<dyn ProducesTickets>> {
    static T: OnceLock<Option<Arc<dyn ProducesTickets>>> = OnceLock::new();
    T.get_or_init(|| match rustls::crypto::ring::Ticketer::new() {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(error = %e, "cannot make TLS ticket keys; resumption by ticket is off");
            None
        }
    })
    .clone()
}

/// The shared `ServerConfig` of a listener's TLS.
pub fn server_config(t: &ListenerTls) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = if t.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12, &rustls::version::TLS13]
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let builder = match &t.client_ca {
        None => builder.with_no_client_auth(),
        Some((roots, mode)) => {
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.clone(),
                provider,
            );
            let v = match mode {
                ClientAuth::Required => v,
                ClientAuth::Optional => v.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| e.to_string())?)
        }
    };
    let mut c = builder.with_cert_resolver(Arc::new(Resolver::new(&t.certificates)));
    c.alpn_protocols = t.alpn.clone();
    if t.session_tickets {
        if let Some(tk) = ticketer() {
            c.ticketer = tk;
        }
    }
    c.session_storage = sessions(0);
    Ok(Arc::new(c))
}

fn sessions(entries: usize) -> Arc<dyn StoresServerSessions> {
    if entries == 0 {
        Arc::new(rustls::server::NoServerSessionStorage {})
    } else {
        ServerSessionMemoryCache::new(entries)
    }
}

/// One worker's copy of `shared`, resuming session ids from `cache` (the worker's, kept across
/// reloads).
pub fn for_worker(
    shared: &ServerConfig,
    cache: &Arc<dyn StoresServerSessions>,
) -> Arc<ServerConfig> {
    let mut c = shared.clone();
    c.session_storage = cache.clone();
    Arc::new(c)
}

/// A worker's session-id cache for a listener with `entries` (0: none).
pub fn worker_cache(entries: usize) -> Arc<dyn StoresServerSessions> {
    sessions(entries)
}
