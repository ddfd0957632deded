//! TLS to upstreams: an upstream group's rustls `ClientConfig` (roots from `ca` or the system's store,
//! the client certificate, ALPN, TLS 1.2 and 1.3, and the verifier `verify = false` asks for), and the
//! name each endpoint is verified against. Built on the main thread with the snapshot (the system
//! store is read there, never on a worker); each worker then takes a copy with its own resumption
//! cache (`for_worker`), so session resumption never crosses cores. Never dials: `upstream::client`
//! does, with `tls::stream` for the handshake and the record layer.

use crate::config::tls::UpstreamTls;
use crate::config::Upstream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Sessions a worker remembers per upstream group for resumption (rustls's default size).
const RESUMPTION_NAMES: usize = 256;

/// An upstream group's TLS: the config and the verification name of each `endpoints` entry.
#[derive(Debug, Clone)]
pub struct Connector {
    /// The group's name, for logs.
    pub upstream: Arc<str>,
    config: Arc<ClientConfig>,
    /// By `endpoints` index; a single entry when `server_name` names them all.
    names: Arc<[Name]>,
}

#[derive(Debug)]
struct Name {
    name: ServerName<'static>,
    /// What pools this name's connections apart from others to the same address: a hash of the name
    /// and of everything the session is made of (roots, verification, client certificate, ALPN). Equal
    /// across reloads of the same settings, so a reload keeps warm TLS connections; never 0 (plain).
    pool_key: u64,
}

/// Why an upstream's TLS cannot be built: the key to name and what is wrong.
#[derive(Debug)]
pub struct BuildError {
    pub key: String,
    pub message: String,
}

/// The system's trust store, read at most once per snapshot build and only when some upstream with
/// `tls` has no `ca`.
#[derive(Default)]
pub struct SystemRoots(Option<Result<Arc<RootCertStore>, String>>);

impl SystemRoots {
    fn get(&mut self) -> Result<Arc<RootCertStore>, String> {
        self.0.get_or_insert_with(load_system_roots).clone()
    }
}

fn load_system_roots() -> Result<Arc<RootCertStore>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (_, unusable) = store.add_parsable_certificates(found.certs);
    if store.is_empty() {
        let why = match found.errors.first() {
            Some(e) => format!(": {e}"),
            None if unusable > 0 => format!(": none of its {unusable} certificates is usable"),
            None => String::new(),
        };
        return Err(format!(
            "no `ca` is set and the system trust store has no certificates{why}; set `ca` to a PEM bundle of the CAs to trust"
        ));
    }
    Ok(Arc::new(store))
}

impl Connector {
    /// Builds upstream `u`'s TLS from its loaded settings `t`.
    pub fn build(
        u: &Upstream,
        t: &UpstreamTls,
        system: &mut SystemRoots,
    ) -> Result<Connector, BuildError> {
        let base = format!("upstreams.{}.tls", u.name);
        let err = |key: &str, message: String| BuildError {
            key: format!("{base}{key}"),
            message,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .map_err(|e| err("", e.to_string()))?;
        // Without verification no roots are needed, so an empty system store is no error then.
        let roots = match (&t.ca, t.verify) {
            (_, false) => None,
            (Some(r), true) => Some(r.clone()),
            (None, true) => Some(system.get().map_err(|m| err(".ca", m))?),
        };
        let builder = if let Some(roots) = &roots {
            builder.with_root_certificates(roots.clone())
        } else {
            tracing::warn!(upstream = %u.name, "upstream TLS verification is off (verify = false): any certificate is accepted");
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                    provider.signature_verification_algorithms,
                )))
        };
        let mut config = match &t.client {
            Some(ck) => builder.with_client_cert_resolver(Arc::new(ClientCert(ck.clone()))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = t.alpn.clone();
        let session = session_hash(t, roots.as_deref());
        let mut names = Vec::new();
        let mut add = |text: &str, key: &str| -> Result<(), BuildError> {
            let name = ServerName::try_from(text.to_owned()).map_err(|_| {
                err(
                    key,
                    format!("{text:?} is not a DNS name or an IP address to verify against"),
                )
            })?;
            let mut h = std::hash::DefaultHasher::new();
            session.hash(&mut h);
            text.hash(&mut h);
            names.push(Name {
                name,
                pool_key: h.finish().max(1),
            });
            Ok(())
        };
        match &t.server_name {
            Some(n) => add(n, ".server_name")?,
            None => {
                for e in &u.endpoints {
                    add(&e.host, ".server_name")?;
                }
            }
        }
        Ok(Connector {
            upstream: Arc::from(u.name.as_str()),
            config: Arc::new(config),
            names: names.into(),
        })
    }

    /// One worker's copy, with its own session cache for resumption.
    pub fn for_worker(&self) -> Connector {
        let mut c = (*self.config).clone();
        c.resumption = Resumption::in_memory_sessions(RESUMPTION_NAMES);
        Connector {
            upstream: self.upstream.clone(),
            config: Arc::new(c),
            names: self.names.clone(),
        }
    }

    fn name(&self, entry: u32) -> Option<&Name> {
        let i = if self.names.len() == 1 {
            0
        } else {
            entry as usize
        };
        self.names.get(i)
    }

    /// The pool key of connections to endpoints of `entry` (see `Name::pool_key`).
    pub fn pool_key(&self, entry: u32) -> u64 {
        self.name(entry).map_or(u64::MAX, |n| n.pool_key)
    }

    /// The name endpoints of `entry` are verified against (and sent as SNI, when it is a DNS name).
    pub fn server_name(&self, entry: u32) -> Option<&ServerName<'static>> {
        self.name(entry).map(|n| &n.name)
    }

    /// A new client session for an endpoint of `entry`.
    pub fn session(&self, entry: u32) -> Result<ClientConnection, rustls::Error> {
        let name = self
            .name(entry)
            .ok_or_else(|| rustls::Error::General("no server name for this endpoint".into()))?;
        ClientConnection::new(self.config.clone(), name.name.clone())
    }
}

/// What two sessions must share to be interchangeable in the pool.
fn session_hash(t: &UpstreamTls, roots: Option<&RootCertStore>) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    t.verify.hash(&mut h);
    t.alpn.hash(&mut h);
    if let Some(roots) = roots {
        for r in &roots.roots {
            r.subject.as_ref().hash(&mut h);
            r.subject_public_key_info.as_ref().hash(&mut h);
        }
    }
    match &t.client {
        Some(ck) => {
            for c in &ck.cert {
                c.as_ref().hash(&mut h);
            }
        }
        None => 0u8.hash(&mut h),
    }
    h.finish()
}

/// The client certificate, offered whenever the server asks for one.
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// `verify = false`: any certificate chain and name are accepted, but the handshake's signatures are
/// still checked against the presented certificate, so the session is at least with whoever holds its
/// key (no passive decryption, no tampering with the handshake).
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(toml: &str) -> Upstream {
        let cfg = crate::config::parse(
            &format!("[listeners.a]\nlisten = \"127.0.0.1:0\"\n{toml}"),
            crate::config::Source::Embedded,
        )
        .unwrap();
        cfg.upstreams[0].clone()
    }

    #[test]
    fn names_come_from_server_name_or_each_endpoint() {
        let u = upstream(
            "[upstreams.u]\nendpoints = [\"10.0.0.5:443\", \"10.0.0.6:443\"]\ntls = { verify = false, server_name = \"app.internal\" }\n",
        );
        let mut sys = SystemRoots(Some(Ok(Arc::new(RootCertStore::empty()))));
        let c = Connector::build(&u, u.tls.as_ref().unwrap(), &mut sys).unwrap();
        for e in 0..2 {
            assert_eq!(
                c.server_name(e),
                Some(&ServerName::try_from("app.internal").unwrap())
            );
        }
        assert_eq!(c.pool_key(0), c.pool_key(1));

        let u = upstream(
            "[upstreams.u]\nendpoints = [\"10.0.0.5:443\", \"10.0.0.6:443\"]\ntls = { verify = false }\n",
        );
        let c = Connector::build(&u, u.tls.as_ref().unwrap(), &mut sys).unwrap();
        assert_eq!(
            c.server_name(1),
            Some(&ServerName::try_from("10.0.0.6").unwrap())
        );
        assert_ne!(c.pool_key(0), c.pool_key(1));
        assert_ne!(c.pool_key(0), 0);
        assert!(c.session(0).is_ok());
    }

    #[test]
    fn pool_keys_follow_the_settings_not_the_build() {
        let toml = "[upstreams.u]\nendpoints = [\"10.0.0.5:443\"]\ntls = { verify = false, server_name = \"a.test\" }\n";
        let mut sys = SystemRoots(Some(Ok(Arc::new(RootCertStore::empty()))));
        let u = upstream(toml);
        let a = Connector::build(&u, u.tls.as_ref().unwrap(), &mut sys).unwrap();
        let b = Connector::build(&u, u.tls.as_ref().unwrap(), &mut sys).unwrap();
        assert_eq!(a.pool_key(0), b.pool_key(0));
        assert_eq!(a.pool_key(0), a.for_worker().pool_key(0));
        let u2 = upstream(&toml.replace("a.test", "b.test"));
        let c = Connector::build(&u2, u2.tls.as_ref().unwrap(), &mut sys).unwrap();
        assert_ne!(a.pool_key(0), c.pool_key(0));
    }

    #[test]
    fn an_empty_system_store_without_ca_names_the_key() {
        let u = upstream("[upstreams.u]\nendpoints = [\"10.0.0.5:443\"]\ntls = {}\n");
        let mut sys = SystemRoots(Some(Err("no certificates".into())));
        let e = Connector::build(&u, u.tls.as_ref().unwrap(), &mut sys).unwrap_err();
        assert_eq!(e.key, "upstreams.u.tls.ca");
    }
}
