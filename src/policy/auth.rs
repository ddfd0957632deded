//! Authentication: the route's methods (`auth = [...]`) tried in order. Every method whose credential
//! the request carries is checked; the first that verifies names the consumer, and the credential it
//! used is marked for removal before the upstream. When none verifies the answer is 401 with one
//! `WWW-Authenticate` challenge per method (one Bearer challenge for all token methods), or 503 when
//! a method could not decide. Bearer tokens are checked by a JWT verifier or an introspection
//! endpoint; either way the token's claims name the caller (`token_caller`). Runs after the route is
//! known and before access rules.

use super::api_key;
use super::basic;
use super::hasher::Verdict;
use super::introspection::{self, Answer};
use super::{Input, Outcome};
use crate::config::consumer::AuthMethod;
use crate::http1::head::{trim, RequestHead};
use crate::metrics::{AuthMark, AuthOutcome};
use crate::pipeline::ctx::{Credential, Ctx, Identity};
use crate::policy::jwt::{Claims, JwtError};
use crate::respond::{PolicyError, ProxyError};
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What one method made of the request.
enum Tried {
    /// Its credential is absent.
    Absent,
    /// Verified (ext_auth names no consumer).
    Ok(Option<Identity>, Credential),
    /// The auth service could not be asked and the route lets the request through anyway.
    FailedOpen,
    /// Answered for the client (the auth service's refusal).
    Respond(std::rc::Rc<super::ext_auth::Response>),
    /// Present and refused.
    Failed(AuthOutcome),
    /// Needs a check off the worker first.
    Defer(super::Deferred),
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The consumer `pick` finds, in the file's table, else the runtime one; disabled consumers fail.
fn find(
    input: &Input<'_>,
    ctx: &Ctx,
    pick: impl Fn(&super::consumers::ConsumerSet) -> Option<u32>,
) -> Option<(Identity, bool)> {
    if let Some(i) = pick(&ctx.gen.consumers) {
        let disabled = ctx.gen.consumers.get(i).is_some_and(|e| e.disabled);
        return Some((Identity::File(i), disabled));
    }
    if !input.auth.has_runtime() {
        return None;
    }
    let set = input.auth.runtime();
    let i = pick(&set)?;
    let entry = set.get(i)?;
    // A reload added a file consumer of this name: the file's wins, and the runtime one's credentials
    // stop working, so one name never stands for two consumers with two plans or quotas.
    if ctx.gen.consumers.by_name(&entry.name).is_some() {
        return None;
    }
    let disabled = entry.disabled;
    Some((Identity::Runtime(set, i), disabled))
}

fn try_api_key(input: &Input<'_>, ctx: &Ctx) -> Tried {
    match api_key::presented(input.head, &ctx.gen.config.api_key) {
        api_key::Presented::None => Tried::Absent,
        api_key::Presented::Malformed => Tried::Failed(AuthOutcome::Invalid),
        api_key::Presented::Key(d, cred) => {
            let now = now_unix();
            match find(input, ctx, |s| api_key::lookup(s, &d, now)) {
                Some((_, true)) => Tried::Failed(AuthOutcome::Disabled),
                Some((id, false)) => Tried::Ok(Some(id), cred),
                None => Tried::Failed(AuthOutcome::Invalid),
            }
        }
    }
}

fn try_basic(input: &Input<'_>, ctx: &Ctx) -> Tried {
    let mut buf = basic::buffer();
    let (user, password) = match basic::presented(input.head, &mut buf) {
        basic::Presented::None => return Tried::Absent,
        basic::Presented::Malformed => return Tried::Failed(AuthOutcome::Invalid),
        basic::Presented::Credential { user, password } => (user, password),
    };
    let (id, check) = match find(input, ctx, |s| s.by_user(user)) {
        None => return Tried::Failed(AuthOutcome::Invalid),
        Some((_, true)) => return Tried::Failed(AuthOutcome::Disabled),
        Some((id, false)) => {
            let check = match &id {
                Identity::File(i) => {
                    basic::check(input.auth, &ctx.gen.consumers, *i, user, password)
                }
                Identity::Runtime(set, i) => basic::check(input.auth, set, *i, user, password),
                Identity::Anonymous(_) => basic::Check::NoPassword,
            };
            (id, check)
        }
    };
    match check {
        basic::Check::NoPassword => Tried::Failed(AuthOutcome::Invalid),
        basic::Check::Cached => Tried::Ok(Some(id), Credential::Authorization),
        basic::Check::Hash { cred, hash_id, job } => match ctx.verdicts.hash(&cred) {
            Some(v) => match v {
                Verdict::Match => {
                    input.auth.basic_remember(cred, hash_id);
                    Tried::Ok(Some(id), Credential::Authorization)
                }
                Verdict::Mismatch => Tried::Failed(AuthOutcome::Invalid),
                Verdict::Busy => Tried::Failed(AuthOutcome::Unavailable),
            },
            None => Tried::Defer(super::Deferred::Hash { cred, job }),
        },
    }
}

/// The consumer the connection's verified client certificate names (by SAN, then subject). The
/// certificate was verified in the handshake, against the listener's `client_ca`.
fn try_mtls(input: &Input<'_>, ctx: &Ctx) -> Tried {
    let Some(id) = ctx.peer_identity.as_deref() else {
        return Tried::Absent;
    };
    match find(input, ctx, |s| s.by_certificate(id)) {
        Some((_, true)) => Tried::Failed(AuthOutcome::Disabled),
        Some((who, false)) => Tried::Ok(Some(who), Credential::None),
        None => Tried::Failed(AuthOutcome::Invalid),
    }
}

/// The longest consumer claim taken as an anonymous identity's name.
const MAX_ANONYMOUS_NAME: usize = 256;

fn jwt_outcome(e: &JwtError) -> AuthOutcome {
    match e {
        JwtError::Malformed(_) => AuthOutcome::Malformed,
        JwtError::AlgNotAllowed => AuthOutcome::AlgNotAllowed,
        JwtError::NoKeys => AuthOutcome::NoKeys,
        JwtError::UnknownKid => AuthOutcome::UnknownKid,
        JwtError::BadSignature => AuthOutcome::BadSignature,
        JwtError::Expired => AuthOutcome::Expired,
        JwtError::NotYetValid => AuthOutcome::NotYetValid,
        JwtError::MissingExp => AuthOutcome::MissingExp,
        JwtError::BadIssuer => AuthOutcome::BadIssuer,
        JwtError::BadAudience => AuthOutcome::BadAudience,
    }
}

/// The request's bearer token (RFC 6750 §2.1), trimmed: `Ok(None)` without a Bearer credential,
/// `Err` when `Authorization` is sent more than once.
fn bearer(head: &RequestHead) -> Result<Option<&[u8]>, ()> {
    match super::authorization::authorization(head) {
        None => Ok(None),
        Some(Err(())) => Err(()),
        Some(Ok(v)) => Ok(super::authorization::scheme_value(v, b"bearer").map(trim)),
    }
}

/// The caller a checked token (a verified JWT, an active introspection answer) names: the consumer
/// its consumer claim names, in the file's table or the runtime one, else an anonymous identity known
/// by the claim's value. Its claims go to the access rules.
fn token_caller(input: &Input<'_>, ctx: &mut Ctx, claims: &Rc<Claims>) -> Tried {
    let Some(name) = claims.consumer() else {
        return Tried::Failed(AuthOutcome::Malformed);
    };
    // The name goes into a header upstream and the log: nothing a header value cannot hold.
    if name.is_empty()
        || name.len() > MAX_ANONYMOUS_NAME
        || !name.bytes().all(|b| (0x21..0x7f).contains(&b))
    {
        return Tried::Failed(AuthOutcome::Malformed);
    }
    let found = find(input, ctx, |s| s.by_name(name));
    ctx.claims = Some(claims.clone());
    match found {
        Some((_, true)) => Tried::Failed(AuthOutcome::Disabled),
        Some((id, false)) => Tried::Ok(Some(id), Credential::Authorization),
        None => Tried::Ok(
            Some(Identity::Anonymous(claims.clone())),
            Credential::Authorization,
        ),
    }
}

/// A bearer token (RFC 6750 §2.1) checked by JWT verifier `verifier`, through the worker's cache.
fn try_jwt(input: &Input<'_>, ctx: &mut Ctx, verifier: u16) -> Tried {
    let token = match bearer(input.head) {
        Ok(Some(t)) => t,
        Ok(None) => return Tried::Absent,
        Err(()) => return Tried::Failed(AuthOutcome::Malformed),
    };
    match input
        .worker
        .verify_jwt(&ctx.gen, verifier as usize, token, now_unix())
    {
        Ok(claims) => token_caller(input, ctx, &claims),
        Err(e) => Tried::Failed(jwt_outcome(&e)),
    }
}

/// A bearer token asked about at introspection endpoint `auth` (index in `Config::auth`): this
/// request's answer if the endpoint was asked for it, else the worker's cache, else a call to make.
/// A cache hit allocates nothing.
fn try_introspection(input: &Input<'_>, ctx: &mut Ctx, auth: u16) -> Tried {
    let token = match bearer(input.head) {
        Ok(Some(t)) => t,
        Ok(None) => return Tried::Absent,
        Err(()) => return Tried::Failed(AuthOutcome::Malformed),
    };
    let (key, cached) = {
        let cache = input.auth.introspection.borrow();
        match introspection::cached(&cache, ctx.gen.generation, auth, token, Instant::now()) {
            Some(l) => l,
            None => return Tried::Failed(AuthOutcome::Malformed),
        }
    };
    let answer = match (cached, ctx.verdicts.introspection(&key)) {
        (Some(a), _) => a,
        (None, Some(a)) => a.clone(),
        (None, None) => {
            // `cached` admitted only b64token characters: ASCII.
            let Ok(token) = std::str::from_utf8(token) else {
                return Tried::Failed(AuthOutcome::Malformed);
            };
            return Tried::Defer(super::Deferred::Introspect {
                auth,
                key,
                token: token.to_owned(),
            });
        }
    };
    match answer {
        // The endpoint said active, but the token's own expiry is past (a cached answer never
        // outlives it; a fresh one may come from a lenient or skewed endpoint).
        Answer::Active(c) if now_unix() >= c.exp() => Tried::Failed(AuthOutcome::Expired),
        Answer::Active(c) => token_caller(input, ctx, &c),
        Answer::Inactive => Tried::Failed(AuthOutcome::Invalid),
        Answer::Unavailable => Tried::Failed(AuthOutcome::Unavailable),
    }
}

/// An external auth service's decision: from this request's deferred check, else the worker's cache,
/// else a deferred check to make.
fn try_ext_auth(input: &Input<'_>, ctx: &mut Ctx, auth: u16) -> Tried {
    let Some(crate::config::AuthKind::ExtAuth(cfg)) =
        ctx.gen.config.auth.get(auth as usize).map(|a| &a.kind)
    else {
        return Tried::Failed(AuthOutcome::Unavailable);
    };
    let decision = match ctx.verdicts.ext_auth(auth) {
        Some(decision) => decision.clone(),
        None => {
            let key = super::ext_auth::cache_key(cfg, auth, input.head);
            let cached =
                key.and_then(|k| input.auth.ext.borrow().get(&k, std::time::Instant::now()));
            match cached {
                Some(d) => Some(d),
                None => return Tried::Defer(super::Deferred::ExtAuth { auth, key }),
            }
        }
    };
    match decision.as_deref() {
        Some(super::ext_auth::Decision::Allow { copy }) => {
            ctx.upstream_edits.add.extend_from_slice(copy);
            ctx.ext_strip = Some(auth);
            Tried::Ok(None, Credential::Authorization)
        }
        Some(super::ext_auth::Decision::Deny(r)) => Tried::Respond(r.clone()),
        None => match input.route {
            Some(r) if r.access.failure_mode_allow => {
                ctx.ext_strip = Some(auth);
                Tried::FailedOpen
            }
            _ => Tried::Failed(AuthOutcome::Unavailable),
        },
    }
}

/// The authentication policy.
pub fn authenticate(input: &Input<'_>, ctx: &mut Ctx) -> Outcome {
    let Some(route) = input.route else {
        return Outcome::Continue;
    };
    let methods = &route.access.auth;
    let Some(&first) = methods.first() else {
        return Outcome::Continue;
    };
    let mut failed: Option<(AuthMethod, AuthOutcome)> = None;
    for &m in methods {
        let tried = match m {
            AuthMethod::ApiKey => try_api_key(input, ctx),
            AuthMethod::Basic => try_basic(input, ctx),
            AuthMethod::Mtls => try_mtls(input, ctx),
            AuthMethod::Jwt { verifier, .. } => try_jwt(input, ctx, verifier),
            AuthMethod::ExtAuth { auth } => try_ext_auth(input, ctx, auth),
            AuthMethod::Introspection { auth } => try_introspection(input, ctx, auth),
        };
        match tried {
            Tried::Absent => {}
            Tried::FailedOpen => {
                ctx.rec.auth = Some(AuthMark {
                    method: m.index(),
                    outcome: AuthOutcome::Unavailable,
                });
                return Outcome::Continue;
            }
            Tried::Respond(r) => {
                ctx.rec.auth = Some(AuthMark {
                    method: m.index(),
                    outcome: if r.status == 403 {
                        AuthOutcome::Denied
                    } else {
                        AuthOutcome::Invalid
                    },
                });
                return Outcome::Respond(r);
            }
            Tried::Ok(id, cred) => {
                ctx.identity = id;
                ctx.credential = cred;
                ctx.rec.auth = Some(AuthMark {
                    method: m.index(),
                    outcome: AuthOutcome::Ok,
                });
                return Outcome::Continue;
            }
            Tried::Failed(o) => {
                // Claims of a token that did not name an admitted caller must not reach the rules.
                ctx.claims = None;
                // A method that could not decide outranks one that refused: it might have admitted
                // the caller, so the answer is 503 (try again), not 401 (your credential is wrong).
                match failed {
                    Some((_, AuthOutcome::Unavailable)) => {}
                    Some(_) if o != AuthOutcome::Unavailable => {}
                    _ => failed = Some((m, o)),
                }
            }
            Tried::Defer(d) => return Outcome::Defer(d),
        }
    }
    let (m, outcome) = failed.unwrap_or((first, AuthOutcome::Missing));
    ctx.rec.auth = Some(AuthMark {
        method: m.index(),
        outcome,
    });
    if outcome == AuthOutcome::Unavailable {
        return Outcome::Reject(ProxyError::Policy(PolicyError::AuthUnavailable));
    }
    let token_refused = matches!(
        failed,
        Some((AuthMethod::Jwt { .. } | AuthMethod::Introspection { .. }, _))
    );
    let mut bearer_sent = false;
    for &m in methods {
        // One Bearer challenge however many token methods the route has (a JWT verifier and an
        // introspection endpoint side by side, during a migration).
        let bearer = matches!(m, AuthMethod::Jwt { .. } | AuthMethod::Introspection { .. });
        if !(bearer && bearer_sent) {
            challenge(ctx, m, token_refused);
        }
        bearer_sent |= bearer;
    }
    Outcome::Reject(ProxyError::Policy(PolicyError::Unauthenticated))
}

/// Adds the `WWW-Authenticate` challenge of method `m` (RFC 9110 §11.6.1).
fn challenge(ctx: &mut Ctx, m: AuthMethod, token_refused: bool) {
    match m {
        AuthMethod::ApiKey => {
            let header = ctx.gen.config.api_key.header.clone();
            ctx.downstream_edits
                .add
                .extend_from_slice(b"www-authenticate: ApiKey realm=\"sluice\", header=\"");
            ctx.downstream_edits
                .add
                .extend_from_slice(header.as_bytes());
            ctx.downstream_edits.add.extend_from_slice(b"\"\r\n");
        }
        AuthMethod::Basic => ctx.downstream_edits.push(
            b"www-authenticate",
            b"Basic realm=\"sluice\", charset=\"UTF-8\"",
        ),
        // The service's own challenge goes with its 401; without an answer there is none to give.
        // A certificate is asked for in the handshake, not by a header.
        AuthMethod::ExtAuth { .. } | AuthMethod::Mtls => {}
        // RFC 6750 §3: `invalid_token` once a token was sent and refused.
        AuthMethod::Jwt { .. } | AuthMethod::Introspection { .. } => ctx.downstream_edits.push(
            b"www-authenticate",
            if token_refused {
                b"Bearer realm=\"sluice\", error=\"invalid_token\""
            } else {
                b"Bearer realm=\"sluice\""
            },
        ),
    }
}
