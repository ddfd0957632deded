//! instant-acme's HTTP client, on `ureq`: each request is made synchronously inside the future, which
//! is fine because only the ACME thread polls it (`pollster::block_on`), never a worker or the control
//! thread's runtime. No hyper, no tokio runtime.

use super::AcmeError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The largest ACME response read (a certificate chain, a directory, an order).
const MAX_RESPONSE_BYTES: u64 = 1 << 20;

/// ACME requests over ureq, trusting the built-in roots or those of `[acme] ca`.
#[derive(Clone)]
pub struct UreqClient {
    agent: ureq::Agent,
}

impl UreqClient {
    /// An agent whose every request ends within `timeout`.
    pub fn new(ca: Option<&Path>, timeout: Duration) -> Result<UreqClient, AcmeError> {
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // ACME answers problems with 4xx bodies (RFC 8555 §6.7): instant-acme reads them.
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca {
            let pem = std::fs::read(path).map_err(|source| AcmeError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let mut roots = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
                    roots.push(c);
                }
            }
            if roots.is_empty() {
                return Err(AcmeError::Roots(path.to_path_buf()));
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
                    .build(),
            );
        }
        Ok(UreqClient {
            agent: config.build().into(),
        })
    }
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> instant_acme::Error {
    instant_acme::Error::Other(Box::new(e))
}

impl HttpClient for UreqClient {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let agent = self.agent.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(c) => c.to_bytes(),
                Err(never) => match never {},
            };
            let req = http::Request::from_parts(parts, body.to_vec());
            let rsp = agent.run(req).map_err(other)?;
            let (parts, mut body) = rsp.into_parts();
            let bytes = body
                .with_config()
                .limit(MAX_RESPONSE_BYTES)
                .read_to_vec()
                .map_err(other)?;
            Ok(BytesResponse::from(http::Response::from_parts(
                parts,
                Full::new(Bytes::from(bytes)),
            )))
        })
    }
}
