//! The call to an introspection endpoint (RFC 7662 §2.1): `POST` of
//! `token=...&token_type_hint=access_token` as `application/x-www-form-urlencoded`, sluice
//! authenticating as an OAuth client (RFC 6749 §2.3.1: HTTP Basic of the form-urlencoded id and
//! secret, or both in the body), read back as JSON (RFC 7662 §2.2). The HTTP client (ureq) blocks,
//! so calls run on a small pool of `sluice-introspect` threads (`offload`): a worker only queues the
//! job and awaits the answer. The queue is bounded (full = 503) and every call has a deadline, counted
//! from when it was queued, so a slow endpoint never holds a request longer than `timeout`.

use crate::config::introspection::{ClientAuth, Introspection};
use crate::config::{AuthKind, Config};
use crate::policy::jwt::verify::numeric_date;
use crate::policy::jwt::Claims;
use crate::policy::offload::{Pool, Refused};
use base64::Engine;
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Threads making calls. Each mostly waits on the network, so more than the CPUs is fine; they bound
/// how many calls are in flight at once, across workers and verifiers.
const THREADS: usize = 4;

/// Calls that may wait for a thread; beyond this a token is answered 503 at once.
const QUEUE: usize = 256;

/// Largest answer read.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// What the worker allows beyond `timeout` for the answer to come back from the pool thread (the
/// thread enforces the deadline itself; this only covers the hand-over).
const GRACE: Duration = Duration::from_millis(200);

/// Why a call gave no usable answer. Each is "unavailable" to the client (503, fail closed); the text
/// is for the log and `GET /auth`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntrospectError {
    /// The queue is full or no thread runs.
    #[error("introspection queue full")]
    Busy,
    /// No answer within the verifier's timeout (queueing included).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connect, TLS, or I/O failed (built only on a failure, off the worker).
    #[error("{0}")]
    Transport(String),
    /// Not 200: 401 and 403 mean the endpoint refused sluice's client credentials.
    #[error("endpoint answered HTTP {0}")]
    Status(u16),
    /// 200 without an introspection response.
    #[error("not an introspection response: {0}")]
    BadAnswer(&'static str),
    /// The job named no introspection verifier of its config (a bug).
    #[error("no such introspection verifier")]
    NoVerifier,
}

/// What the endpoint said of a token.
#[derive(Debug)]
pub enum Reply {
    /// `active: true`, with its members as claims.
    Active(Claims),
    /// `active: false`.
    Inactive,
}

/// One call: verifier `auth` of `config`, for `token`, to be answered by `deadline`.
pub struct Job {
    pub config: Arc<Config>,
    /// Index in `config.auth`.
    pub auth: usize,
    pub token: String,
    pub deadline: Instant,
}

static POOL: OnceLock<Option<Pool<Job, Result<Reply, IntrospectError>>>> = OnceLock::new();

fn pool() -> Option<&'static Pool<Job, Result<Reply, IntrospectError>>> {
    POOL.get_or_init(|| {
        // One agent for the pool: its connections to the endpoint are kept alive and shared.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A redirect would carry the client credentials and the token somewhere else.
            .max_redirects(0)
            .build()
            .into();
        Pool::start("sluice-introspect", THREADS, QUEUE, move |job: Job| {
            call(&agent, &job)
        })
    })
    .as_ref()
}

/// Asks the endpoint about `job.token` on the pool, awaiting the answer without blocking the worker;
/// gives up `timeout` (plus a hand-over grace) after being called.
pub async fn introspect(job: Job, timeout: Duration) -> Result<Reply, IntrospectError> {
    let Some(pool) = pool() else {
        return Err(IntrospectError::Busy);
    };
    match monoio::time::timeout(timeout + GRACE, pool.run(job)).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(Refused::Full | Refused::Gone)) => Err(IntrospectError::Busy),
        Err(_) => Err(IntrospectError::Timeout(timeout)),
    }
}

/// Makes the call on the calling thread (a pool thread).
fn call(agent: &ureq::Agent, job: &Job) -> Result<Reply, IntrospectError> {
    let Some(AuthKind::Introspection(cfg)) = job.config.auth.get(job.auth).map(|a| &a.kind) else {
        return Err(IntrospectError::NoVerifier);
    };
    let left = job.deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        // It waited in the queue past its deadline; the request has been answered already.
        return Err(IntrospectError::Timeout(cfg.timeout));
    }
    let (body, authorization) = request(cfg, &job.token);
    let mut req = agent
        .post(&cfg.endpoint)
        .config()
        .timeout_global(Some(left))
        .build()
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json");
    if let Some(a) = &authorization {
        req = req.header("authorization", a);
    }
    let mut resp = req.send(body.as_bytes()).map_err(|e| match e {
        ureq::Error::Timeout(_) => IntrospectError::Timeout(cfg.timeout),
        e => IntrospectError::Transport(e.to_string()),
    })?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(IntrospectError::Status(status));
    }
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::Timeout(_) => IntrospectError::Timeout(cfg.timeout),
            e => IntrospectError::Transport(e.to_string()),
        })?;
    parse(&bytes, &cfg.consumer_claim)
}

/// The form body and, for `client_secret_basic`, the `Authorization` value of a call for `token`.
pub fn request(cfg: &Introspection, token: &str) -> (String, Option<String>) {
    let mut body = String::with_capacity(token.len() + 64);
    body.push_str("token=");
    form_urlencode(token, &mut body);
    body.push_str("&token_type_hint=access_token");
    let secret = cfg.client_secret.expose();
    let authorization = match cfg.auth_method {
        ClientAuth::Basic => {
            // RFC 6749 §2.3.1: id and secret are form-urlencoded before they are joined and encoded.
            let mut pair = String::with_capacity(cfg.client_id.len() + secret.len() + 1);
            form_urlencode(&cfg.client_id, &mut pair);
            pair.push(':');
            form_urlencode(secret, &mut pair);
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        }
        ClientAuth::Post => {
            body.push_str("&client_id=");
            form_urlencode(&cfg.client_id, &mut body);
            body.push_str("&client_secret=");
            form_urlencode(secret, &mut body);
            None
        }
    };
    (body, authorization)
}

/// Reads an introspection response (RFC 7662 §2.2): a JSON object whose `active` is a boolean; an
/// active token's `exp`, when present, must be a NumericDate.
pub fn parse(body: &[u8], consumer_claim: &str) -> Result<Reply, IntrospectError> {
    let Ok(Value::Object(all)) = serde_json::from_slice::<Value>(body) else {
        return Err(IntrospectError::BadAnswer("not a JSON object"));
    };
    match all.get("active") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Ok(Reply::Inactive),
        _ => return Err(IntrospectError::BadAnswer("no boolean \"active\"")),
    }
    let exp = match all.get("exp") {
        None => u64::MAX,
        Some(v) => numeric_date(v).ok_or(IntrospectError::BadAnswer("exp is not a number"))?,
    };
    Ok(Reply::Active(Claims::from_object(all, consumer_claim, exp)))
}

/// The application/x-www-form-urlencoded byte serializer (WHATWG URL §5.2, which RFC 6749 Appendix B
/// refers to): `*-._`, digits and letters as they are, space as `+`, every other byte `%XX`.
pub fn form_urlencode(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        match b {
            b'*' | b'-' | b'.' | b'_' | b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(method: &str) -> Introspection {
        let c = crate::config::parse(
            &format!(
                "[listeners.a]\nlisten = \"127.0.0.1:0\"\n[auth.idp]\ntype = \"introspection\"\nendpoint = \"https://id.example/i\"\nclient_id = \"gate way\"\nclient_secret = \"p@ss:w/rd\"\nauth_method = \"{method}\"\n"
            ),
            crate::config::Source::Embedded,
        )
        .unwrap();
        let AuthKind::Introspection(i) = &c.auth[0].kind else {
            panic!("not introspection");
        };
        i.clone()
    }

    #[test]
    fn form_encoding_follows_the_whatwg_serializer() {
        let mut s = String::new();
        form_urlencode("a b+c&d=é*-._~", &mut s);
        assert_eq!(s, "a+b%2Bc%26d%3D%C3%A9*-._%7E");
    }

    #[test]
    fn client_credentials_go_in_basic_or_the_body() {
        let (body, auth) = request(&cfg("client_secret_basic"), "tok/en+1=");
        assert_eq!(body, "token=tok%2Fen%2B1%3D&token_type_hint=access_token");
        let b64 = base64::engine::general_purpose::STANDARD.encode("gate+way:p%40ss%3Aw%2Frd");
        assert_eq!(auth, Some(format!("Basic {b64}")));
        let (body, auth) = request(&cfg("client_secret_post"), "t");
        assert_eq!(
            body,
            "token=t&token_type_hint=access_token&client_id=gate+way&client_secret=p%40ss%3Aw%2Frd"
        );
        assert_eq!(auth, None);
    }

    #[test]
    fn answers_parse_or_fail_closed() {
        let Ok(Reply::Active(c)) = parse(
            br#"{"active":true,"sub":"alice","exp":1900000000,"scope":"a b"}"#,
            "sub",
        ) else {
            panic!("active");
        };
        assert_eq!(c.consumer(), Some("alice"));
        assert_eq!(c.exp(), 1_900_000_000);
        assert!(c.has_scope("b"));
        let Ok(Reply::Active(c)) = parse(br#"{"active":true,"username":"bob"}"#, "username") else {
            panic!("active");
        };
        assert_eq!((c.consumer(), c.exp()), (Some("bob"), u64::MAX));
        assert!(matches!(
            parse(br#"{"active":false}"#, "sub"),
            Ok(Reply::Inactive)
        ));
        for bad in [
            &b"not json"[..],
            b"[1]",
            br#"{"sub":"a"}"#,
            br#"{"active":"true"}"#,
            br#"{"active":true,"exp":"soon"}"#,
        ] {
            assert!(
                matches!(parse(bad, "sub"), Err(IntrospectError::BadAnswer(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
