//! The consumer endpoints of the admin API: `/consumers`, `/consumers/NAME`, `/consumers/NAME/keys`,
//! `/consumers/NAME/keys/ID[/rotate]`. Each change is committed to the store before it is answered;
//! the caller (admin.rs) then sends every worker the new table. A key is shown once, at issue; only its
//! SHA-256 digest is kept, and no answer ever carries a key digest. File consumers are listed but
//! read-only (409).

use super::store::{ConsumerChange, ConsumerRow, ConsumerStore, StoreError};
use crate::config::consumer::{name_ok, Consumer};
use crate::config::limits::{Plan, QuotaSpec, QuotaToml};
use base64::Engine;
use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Read;

/// An answer: status, JSON body, and whether the runtime table changed (so workers need the new one).
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub changed: bool,
}

fn answer(status: u16, body: Value) -> Answer {
    Answer {
        status,
        body,
        changed: false,
    }
}

fn changed(status: u16, body: Value) -> Answer {
    Answer {
        status,
        body,
        changed: true,
    }
}

fn err(status: u16, msg: &str) -> Answer {
    answer(status, json!({ "error": msg, "status": status }))
}

fn field_err(field: &str, msg: &str) -> Answer {
    answer(
        400,
        json!({ "error": format!("{field}: {msg}"), "field": field, "status": 400 }),
    )
}

/// `POST /consumers`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    metadata: IndexMap<String, String>,
    #[serde(default)]
    disabled: bool,
    /// A `[plans.NAME]` of the config.
    plan: Option<String>,
    /// Its own quota fields, over the plan's.
    quota: Option<QuotaToml>,
}

/// Reads a field that may be absent (leave it), `null` (remove it) or a value.
fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `PATCH /consumers/NAME`: absent fields stay as they are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    groups: Option<Vec<String>>,
    metadata: Option<IndexMap<String, String>>,
    disabled: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    plan: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    quota: Option<Option<QuotaToml>>,
}

/// Checks a plan name against the config's plans and a quota's fields.
fn check_plan(
    plans: &[Plan],
    plan: Option<&str>,
    quota: Option<&QuotaToml>,
) -> Result<Option<QuotaSpec>, Answer> {
    if let Some(p) = plan {
        if !plans.iter().any(|x| x.name == p) {
            return Err(field_err("plan", "no such plan in the config"));
        }
    }
    match quota {
        None => Ok(None),
        Some(q) => QuotaSpec::from_toml(q)
            .map(Some)
            .map_err(|(f, msg)| match f {
                Some(f) => field_err(&format!("quota.{f}"), &msg),
                None => field_err("quota", &msg),
            }),
    }
}

/// `POST /consumers/NAME/keys/ID/rotate`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    grace: String,
}

/// Parses a JSON body; the error names the field (serde's path, or the unknown field itself).
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Answer> {
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    let de = &mut serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner().to_string();
        let path = e.path().to_string();
        // serde names an unknown or missing field only in its message: `unknown field `x``.
        let named = inner
            .split('`')
            .nth(1)
            .filter(|_| inner.starts_with("unknown field") || inner.starts_with("missing field"));
        // The path already ends at an unknown field; a missing one is named only in the message.
        let field = match named {
            Some(f) if path == "." => f.to_string(),
            Some(f) if !path.ends_with(f) => format!("{path}.{f}"),
            _ => path,
        };
        if e.inner().is_syntax() || e.inner().is_eof() {
            answer(
                400,
                json!({ "error": format!("invalid JSON: {inner}"), "status": 400 }),
            )
        } else {
            field_err(&field, &inner)
        }
    })
}

fn check_groups(groups: &[String]) -> Result<(), Answer> {
    match groups.iter().position(|g| !name_ok(g)) {
        Some(i) => Err(field_err(
            &format!("groups[{i}]"),
            "expected 1-128 of A-Z a-z 0-9 - _ . @",
        )),
        None => Ok(()),
    }
}

fn check_metadata(m: &IndexMap<String, String>) -> Result<(), Answer> {
    match m.keys().find(|k| k.is_empty() || k.len() > 128) {
        Some(k) => Err(field_err(
            &format!("metadata.{k}"),
            "keys must be 1-128 bytes",
        )),
        None => Ok(()),
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `n` bytes from the OS's random source.
fn random(out: &mut [u8]) -> std::io::Result<()> {
    std::fs::File::open("/dev/urandom")?.read_exact(out)
}

/// A new key, its digest and a fresh id: `sk_` + 32 random bytes in URL-safe base64.
fn new_key(store: &ConsumerStore) -> Result<(String, String, [u8; 32]), Answer> {
    let mut secret = [0u8; 32];
    let mut id = [0u8; 8];
    for _ in 0..4 {
        if random(&mut secret).and_then(|()| random(&mut id)).is_err() {
            return Err(err(500, "no randomness from the OS"));
        }
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        match store.key_id_taken(&id) {
            Ok(false) => {
                let key = format!(
                    "sk_{}",
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
                );
                let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
                return Ok((id, key, digest));
            }
            Ok(true) => continue,
            Err(e) => return Err(store_failed(&e)),
        }
    }
    Err(err(500, "could not pick a free key id"))
}

fn store_failed(e: &StoreError) -> Answer {
    tracing::error!(error = %e, "state database write failed; the change was not applied");
    err(500, "state database write failed; nothing changed")
}

fn runtime_json(c: &ConsumerRow) -> Value {
    json!({
        "name": c.name,
        "source": "runtime",
        "groups": c.groups,
        "metadata": c.metadata,
        "disabled": c.disabled,
        "created": c.created,
        "plan": c.plan,
        "quota": c.quota.as_ref().map(QuotaSpec::to_json),
        "keys": c.keys.iter().map(|k| json!({
            "id": k.id,
            "created": k.created,
            "expires": k.expires,
        })).collect::<Vec<_>>(),
    })
}

fn file_json(c: &Consumer) -> Value {
    json!({
        "name": c.name,
        "source": "file",
        "groups": c.groups,
        "metadata": c.metadata.iter().cloned().collect::<IndexMap<String, String>>(),
        "disabled": false,
        "api_keys": c.api_keys.len(),
        "basic": c.basic.is_some(),
        "plan": c.plan,
        "quota": c.quota.as_ref().map(QuotaSpec::to_json),
    })
}

/// Answers a request under `/consumers`; None if the path is not one of these endpoints.
pub fn handle(
    store: &mut ConsumerStore,
    file: &[Consumer],
    plans: &[Plan],
    method: &[u8],
    path: &str,
    body: &[u8],
) -> Option<Answer> {
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let is_file = |n: &str| file.iter().any(|c| c.name == n);
    let read_only = || err(409, "consumers defined in the config file are read-only");
    Some(match (method, parts.as_slice()) {
        (b"GET", ["consumers"]) => {
            let mut list: Vec<Value> = file.iter().map(file_json).collect();
            list.extend(store.rows().map(runtime_json));
            answer(200, json!({ "consumers": list }))
        }
        (b"POST", ["consumers"]) => create(store, file, plans, body),
        (_, ["consumers"]) => err(405, "method not allowed"),
        (b"GET", ["consumers", name]) => {
            match (file.iter().find(|c| c.name == *name), store.get(name)) {
                (Some(c), _) => answer(200, file_json(c)),
                (None, Some(c)) => answer(200, runtime_json(c)),
                (None, None) => err(404, "unknown consumer"),
            }
        }
        (b"PATCH" | b"DELETE", ["consumers", name]) if is_file(name) => read_only(),
        (b"PATCH", ["consumers", name]) => patch(store, plans, name, body),
        (b"DELETE", ["consumers", name]) => match store.delete(name) {
            Ok(true) => {
                tracing::info!(consumer = name, "consumer deleted through the admin API");
                changed(200, json!({ "deleted": name }))
            }
            Ok(false) => err(404, "unknown consumer"),
            Err(e) => store_failed(&e),
        },
        (_, ["consumers", _]) => err(405, "method not allowed"),
        (_, ["consumers", name, "keys", ..]) if is_file(name) => read_only(),
        (b"POST", ["consumers", name, "keys"]) => issue(store, name),
        (_, ["consumers", _, "keys"]) => err(405, "method not allowed"),
        (b"DELETE", ["consumers", name, "keys", id]) => {
            if store.get(name).is_none() {
                return Some(err(404, "unknown consumer"));
            }
            match store.revoke(name, id) {
                Ok(true) => {
                    tracing::info!(
                        consumer = name,
                        key = id,
                        "key revoked through the admin API"
                    );
                    changed(200, json!({ "revoked": id }))
                }
                Ok(false) => err(404, "unknown key"),
                Err(e) => store_failed(&e),
            }
        }
        (_, ["consumers", _, "keys", _]) => err(405, "method not allowed"),
        (b"POST", ["consumers", name, "keys", id, "rotate"]) => rotate(store, name, id, body),
        (_, ["consumers", _, "keys", _, "rotate"]) => err(405, "method not allowed"),
        _ => return None,
    })
}

fn create(store: &mut ConsumerStore, file: &[Consumer], plans: &[Plan], body: &[u8]) -> Answer {
    let b: CreateBody = match parse(body) {
        Ok(b) => b,
        Err(a) => return a,
    };
    if !name_ok(&b.name) {
        return field_err("name", "expected 1-128 of A-Z a-z 0-9 - _ . @");
    }
    if let Err(a) = check_groups(&b.groups).and_then(|()| check_metadata(&b.metadata)) {
        return a;
    }
    let quota = match check_plan(plans, b.plan.as_deref(), b.quota.as_ref()) {
        Ok(q) => q,
        Err(a) => return a,
    };
    if file.iter().any(|c| c.name == b.name) || store.get(&b.name).is_some() {
        return err(409, "a consumer with this name exists");
    }
    let change = ConsumerChange {
        groups: Some(b.groups),
        metadata: Some(b.metadata),
        disabled: Some(b.disabled),
        plan: Some(b.plan),
        quota: Some(quota),
    };
    match store.create(&b.name, change, now_unix()) {
        Ok(c) => {
            tracing::info!(consumer = %c.name, "consumer created through the admin API");
            changed(201, runtime_json(c))
        }
        Err(e) => store_failed(&e),
    }
}

fn patch(store: &mut ConsumerStore, plans: &[Plan], name: &str, body: &[u8]) -> Answer {
    if store.get(name).is_none() {
        return err(404, "unknown consumer");
    }
    let b: PatchBody = match parse(body) {
        Ok(b) => b,
        Err(a) => return a,
    };
    if let Some(g) = &b.groups {
        if let Err(a) = check_groups(g) {
            return a;
        }
    }
    if let Some(m) = &b.metadata {
        if let Err(a) = check_metadata(m) {
            return a;
        }
    }
    let plan = b.plan.as_ref().and_then(|p| p.as_deref());
    let quota = match check_plan(plans, plan, b.quota.as_ref().and_then(|q| q.as_ref())) {
        Ok(q) => q,
        Err(a) => return a,
    };
    let change = ConsumerChange {
        groups: b.groups,
        metadata: b.metadata,
        disabled: b.disabled,
        quota: b.quota.map(|q| q.and(quota)),
        plan: b.plan,
    };
    match store.update(name, change) {
        Ok(Some(c)) => {
            tracing::info!(consumer = name, "consumer changed through the admin API");
            changed(200, runtime_json(c))
        }
        Ok(None) => err(404, "unknown consumer"),
        Err(e) => store_failed(&e),
    }
}

fn issue(store: &mut ConsumerStore, name: &str) -> Answer {
    if store.get(name).is_none() {
        return err(404, "unknown consumer");
    }
    let (id, key, digest) = match new_key(store) {
        Ok(k) => k,
        Err(a) => return a,
    };
    let now = now_unix();
    match store.add_key(name, &id, digest, now) {
        Ok(true) => {
            tracing::info!(consumer = name, key = %id, "key issued through the admin API");
            changed(201, json!({ "id": id, "key": key, "created": now }))
        }
        Ok(false) => err(404, "unknown consumer"),
        Err(e) => store_failed(&e),
    }
}

/// When the rotated key stops working: `now + grace` in whole seconds (what a worker compares against,
/// rounded up so a grace is never cut short), None = at once. Rotating a key again during its grace
/// never extends its life past the expiry it already has.
fn old_expiry(current: Option<u64>, grace: std::time::Duration, now: u64) -> Option<u64> {
    let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    let asked = (secs > 0).then(|| now.saturating_add(secs))?;
    Some(current.map_or(asked, |t| t.min(asked)))
}

fn rotate(store: &mut ConsumerStore, name: &str, old: &str, body: &[u8]) -> Answer {
    let Some(c) = store.get(name) else {
        return err(404, "unknown consumer");
    };
    let now = now_unix();
    // A key whose grace is over is gone (its row waits for the purge): it cannot be rotated.
    let Some(current) = c
        .keys
        .iter()
        .find(|k| k.id == old && k.expires.is_none_or(|t| t > now))
        .map(|k| k.expires)
    else {
        return err(404, "unknown key");
    };
    let b: RotateBody = match parse(body) {
        Ok(b) => b,
        Err(a) => return a,
    };
    let grace = match crate::config::units::parse_duration(&b.grace) {
        Ok(g) => g,
        Err(e) => return field_err("grace", &e),
    };
    let expires = old_expiry(current, grace, now);
    let (id, key, digest) = match new_key(store) {
        Ok(k) => k,
        Err(a) => return a,
    };
    match store.rotate(name, old, &id, digest, now, expires) {
        Ok(true) => {
            tracing::info!(consumer = name, old = old, key = %id, grace = ?grace, "key rotated through the admin API");
            changed(
                201,
                json!({ "id": id, "key": key, "created": now, "old": { "id": old, "expires": expires } }),
            )
        }
        Ok(false) => err(404, "unknown key"),
        Err(e) => store_failed(&e),
    }
}

/// The endpoints when no `[state] path` is configured: the file's consumers can be read; anything
/// that would create runtime state answers 409, naming what is missing.
pub fn without_store(file: &[Consumer], method: &[u8], path: &str) -> Option<Answer> {
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Some(match (method, parts.as_slice()) {
        (b"GET", ["consumers"]) => answer(
            200,
            json!({ "consumers": file.iter().map(file_json).collect::<Vec<_>>() }),
        ),
        (b"GET", ["consumers", name]) => match file.iter().find(|c| c.name == *name) {
            Some(c) => answer(200, file_json(c)),
            None => err(404, "unknown consumer"),
        },
        (_, ["consumers", ..]) => err(
            409,
            "runtime consumers need a state database: set [state] path in the config",
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rotation_expiry_rounds_up_and_never_extends() {
        assert_eq!(old_expiry(None, Duration::ZERO, 100), None);
        assert_eq!(old_expiry(Some(150), Duration::ZERO, 100), None);
        assert_eq!(
            old_expiry(None, Duration::from_millis(1500), 100),
            Some(102)
        );
        assert_eq!(
            old_expiry(Some(150), Duration::from_secs(3600), 100),
            Some(150)
        );
        assert_eq!(
            old_expiry(Some(150), Duration::from_secs(10), 100),
            Some(110)
        );
    }

    #[test]
    fn errors_name_the_field() {
        let a = parse::<CreateBody>(br#"{"name": "x", "colour": 1}"#)
            .err()
            .unwrap();
        assert_eq!(a.body["field"], "colour");
        let a = parse::<CreateBody>(br#"{"groups": []}"#).err().unwrap();
        assert_eq!(a.body["field"], "name");
        let a = parse::<CreateBody>(br#"{"name": "x", "groups": ["a", 2]}"#)
            .err()
            .unwrap();
        assert_eq!(a.body["field"], "groups[1]");
        let a = parse::<CreateBody>(b"{").err().unwrap();
        assert_eq!(a.status, 400);
        assert!(a.body.get("field").is_none());
    }
}
