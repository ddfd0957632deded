//! One certificate from the CA (RFC 8555 §7.4): the account (created once, then read back from
//! `account.json`), a new order for one name, its challenge answered (HTTP-01 by the workers' pipeline,
//! TLS-ALPN-01 by their SNI resolver, both through `tls::challenge`), finalisation with a fresh key's
//! CSR, and the chain. Blocking: runs on the ACME thread only, every wait bounded by the order deadline.

use super::client::UreqClient;
use super::{store, AcmeError};
use crate::config::acme::{Acme, Challenge};
use crate::tls::challenge;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The account file: the directory it belongs to, and instant-acme's credentials.
#[derive(Serialize, Deserialize)]
struct AccountFile {
    directory: String,
    credentials: AccountCredentials,
}

/// A certificate just issued.
pub struct Issued {
    /// PEM chain, leaf first, as the CA sent it.
    pub chain: String,
    /// The new key, PKCS#8 PEM.
    pub key_pem: String,
}

/// The account of `cfg.directory`: read from `account.json` when it was made for this directory,
/// else registered (agreeing to the CA's terms) and written there.
pub fn account(cfg: &Acme, client: &UreqClient) -> Result<Account, AcmeError> {
    let dir = cfg.dir();
    store::ensure_dir(&dir)?;
    let path = dir.join("account.json");
    let builder = || Account::builder_with_http(Box::new(client.clone()));
    match std::fs::read(&path) {
        Ok(bytes) => {
            let file: AccountFile =
                serde_json::from_slice(&bytes).map_err(|source| AcmeError::AccountFile {
                    path: path.clone(),
                    source,
                })?;
            if file.directory == cfg.directory {
                return Ok(pollster::block_on(
                    builder().from_credentials(file.credentials),
                )?);
            }
            tracing::info!(path = %path.display(), old = %file.directory, new = %cfg.directory, "ACME directory changed: registering a new account");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(AcmeError::Io { path, source }),
    }
    let contact: Vec<&str> = cfg.contact.iter().map(String::as_str).collect();
    let (account, credentials) = pollster::block_on(builder().create(
        &NewAccount {
            contact: &contact,
            terms_of_service_agreed: true,
            only_return_existing: false,
        },
        cfg.directory.clone(),
        None,
    ))?;
    let file = AccountFile {
        directory: cfg.directory.clone(),
        credentials,
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|source| AcmeError::AccountFile {
        path: path.clone(),
        source,
    })?;
    store::write_atomic(&path, &json)?;
    tracing::info!(directory = %cfg.directory, id = account.id(), "ACME account registered");
    Ok(account)
}

/// Waits `delay` unless that passes `deadline`.
fn pause(delay: Duration, deadline: Instant, timeout: Duration) -> Result<(), AcmeError> {
    let now = Instant::now();
    if now + delay > deadline {
        return Err(AcmeError::Timeout(timeout));
    }
    std::thread::sleep(delay);
    Ok(())
}

/// Orders a certificate for `name` and waits for it, at most `cfg.order_timeout`.
pub fn issue(cfg: &Acme, account: &Account, name: &str) -> Result<Issued, AcmeError> {
    let deadline = Instant::now() + cfg.order_timeout;
    let ids = [Identifier::Dns(name.to_string())];
    let mut order = pollster::block_on(account.new_order(&NewOrder::new(&ids)))?;
    // Answers stay up until the order is done either way (dropping one withdraws it).
    let mut answers = Vec::new();
    {
        let mut authzs = order.authorizations();
        while let Some(a) = pollster::block_on(authzs.next()) {
            let mut a = a?;
            match a.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::Authorization {
                        name: name.to_string(),
                        status: format!("{other:?}"),
                    })
                }
            }
            let kind = match cfg.challenge {
                Challenge::Http01 => ChallengeType::Http01,
                Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            };
            let mut ch = a
                .challenge(kind)
                .ok_or(AcmeError::NoChallenge(cfg.challenge.as_str()))?;
            let ka = ch.key_authorization();
            answers.push(match cfg.challenge {
                Challenge::Http01 => challenge::set_http(&ch.token, ka.as_str()),
                Challenge::TlsAlpn01 => {
                    let ck = challenge::alpn_certified_key(name, ka.digest().as_ref())?;
                    challenge::set_alpn(name, Arc::new(ck))
                }
            });
            pollster::block_on(ch.set_ready())?;
        }
    }
    // RFC 8555 §7.1.6: pending -> ready once every authorization is valid.
    let mut delay = Duration::from_millis(100);
    loop {
        let state = pollster::block_on(order.refresh())?;
        match state.status {
            OrderStatus::Ready | OrderStatus::Valid | OrderStatus::Processing => break,
            OrderStatus::Invalid => return Err(AcmeError::Invalid(why_invalid(&mut order))),
            OrderStatus::Pending => {}
        }
        pause(delay, deadline, cfg.order_timeout)?;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    drop(answers);
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    if order.state().status == OrderStatus::Ready {
        pollster::block_on(order.finalize_csr(csr.der()))?;
    }
    let mut delay = Duration::from_millis(100);
    let chain = loop {
        if let Some(chain) = pollster::block_on(order.certificate())? {
            break chain;
        }
        pause(delay, deadline, cfg.order_timeout)?;
        delay = (delay * 2).min(Duration::from_secs(2));
    };
    Ok(Issued {
        chain,
        key_pem: key.serialize_pem(),
    })
}

/// The problems of an invalid order: the order's own, else its challenges'.
fn why_invalid(order: &mut instant_acme::Order) -> String {
    if let Some(p) = &order.state().error {
        return p.to_string();
    }
    let mut out = Vec::new();
    let mut authzs = order.authorizations();
    while let Some(Ok(mut a)) = pollster::block_on(authzs.next()) {
        if pollster::block_on(a.refresh()).is_err() {
            continue;
        }
        for c in &a.challenges {
            if let Some(p) = &c.error {
                out.push(p.to_string());
            }
        }
    }
    if out.is_empty() {
        "the CA gave no reason".into()
    } else {
        out.join("; ")
    }
}
