//! A config snapshot compiled for workers: route table, upstream specs with resolved addresses, limits.
//! Built once per load or reload on the main thread; each worker receives its own clone (the route table
//! inside is shared, immutable) and never rebuilds it.

use crate::config::{Config, ConfigError, Http};
use crate::http1::head::Limits;
use crate::policy::chain::Chains;
use crate::policy::consumers::ConsumerSet;
use crate::policy::jwt::JwtVerifier;
use crate::router::RouteTable;
use crate::upstream::{EndpointAddr, UpstreamSpec};
use std::sync::Arc;

/// What a worker runs on.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Increments on every successful load.
    pub generation: u64,
    /// The validated config it came from.
    pub config: Arc<Config>,
    /// Downstream limits.
    pub http: Http,
    /// Parser limits.
    pub limits: Limits,
    /// Routes. Shared read-only between workers: with 10,000 routes a deep copy per worker was a
    /// measurable part of a reload, and nothing on a worker ever writes to the table.
    pub routes: Arc<RouteTable>,
    /// Upstream groups by index (same order as `config.upstreams`).
    pub upstreams: Vec<UpstreamSpec>,
    /// The file's consumers, compiled for lookups (shared read-only, like the routes).
    pub consumers: Arc<ConsumerSet>,
    /// JWT verifiers (`[auth.NAME]` of type jwt, in file order), keys read from files already.
    pub jwt: Arc<[JwtVerifier]>,
    /// Which policies apply to each listener and route.
    pub chains: Arc<Chains>,
    /// Each listener's rustls config (None: plain TCP), in listener order; workers take copies with
    /// their own session caches (`tls::server::for_worker`).
    pub tls: Arc<[Option<Arc<rustls::ServerConfig>>]>,
}

impl Snapshot {
    /// Compiles a validated config; resolves endpoint names once (blocking: never call on a worker).
    pub fn build(config: Arc<Config>, generation: u64) -> Result<Snapshot, ConfigError> {
        let mut upstreams = Vec::new();
        for u in &config.upstreams {
            let mut endpoints = Vec::new();
            for (i, e) in u.endpoints.iter().enumerate() {
                match e.literal {
                    Some(addr) => endpoints.push(EndpointAddr {
                        addr,
                        weight: e.weight,
                    }),
                    None => {
                        let answer =
                            crate::dns::resolve(&e.host, e.port, &config.dns).map_err(|err| {
                                ConfigError {
                                    file: config.source.label(),
                                    key: format!("upstreams.{}.endpoints[{i}]", u.name),
                                    message: format!("cannot resolve {}: {err}", e.host),
                                }
                            })?;
                        for addr in answer.addrs {
                            if !endpoints.iter().any(|x: &EndpointAddr| x.addr == addr) {
                                endpoints.push(EndpointAddr {
                                    addr,
                                    weight: e.weight,
                                });
                            }
                        }
                    }
                }
            }
            upstreams.push(UpstreamSpec {
                cfg: u.clone(),
                endpoints,
            });
        }
        for a in &config.auth {
            if let crate::config::AuthKind::Introspection(i) = &a.kind {
                if i.endpoint.starts_with("http://") {
                    // The client secret and every token cross the network in the clear.
                    tracing::warn!(verifier = %a.name, endpoint = %i.endpoint, "token introspection over plain HTTP; use https outside tests");
                }
            }
        }
        let mut jwt = Vec::new();
        for a in &config.auth {
            let crate::config::AuthKind::Jwt(j) = &a.kind else {
                continue;
            };
            let v = JwtVerifier::compile(&a.name, j, jwt.len(), generation).map_err(
                |(key, message)| ConfigError {
                    file: config.source.label(),
                    key: format!("auth.{}.{key}", a.name),
                    message,
                },
            )?;
            jwt.push(v);
        }
        let mut tls = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            tls.push(match &l.tls {
                None => None,
                Some(t) => {
                    Some(
                        crate::tls::server::server_config(t).map_err(|message| ConfigError {
                            file: config.source.label(),
                            key: format!("listeners.{}.tls", l.name),
                            message,
                        })?,
                    )
                }
            });
        }
        let routes = RouteTable::compile(&config);
        Ok(Snapshot {
            tls: tls.into(),
            generation,
            chains: Arc::new(Chains::compile(
                &config.listeners,
                &routes.routes,
                !config.plans.is_empty()
                    || config.consumers.iter().any(|c| c.quota.is_some())
                    || config.state.is_some(),
            )),
            jwt: jwt.into(),
            http: config.http.clone(),
            limits: Limits {
                max_header_bytes: config.http.max_header_bytes,
                max_headers: config.http.max_headers,
                max_uri_bytes: config.http.max_uri_bytes,
            },
            routes: Arc::new(routes),
            consumers: Arc::new(ConsumerSet::from_config(&config.consumers)),
            upstreams,
            config,
        })
    }

    /// The index in `jwt` of the verifier named `name`.
    pub fn jwt_index(&self, name: &str) -> Option<usize> {
        self.jwt.iter().position(|v| &*v.name == name)
    }
}
