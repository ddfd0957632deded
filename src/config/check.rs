//! Rules shared by every table: the validation context (which file, what validation may touch),
//! and checks of durations, ranges, socket addresses, URLs, tokens and header values.

use super::ConfigError;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// What validation may touch besides the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// Reads `{ file = .. }` secrets and resolves host names in listen, admin and DNS server
    /// addresses: what `parse` and `load_file` do.
    World,
    /// Neither: such a secret or address is a validation error, so arbitrary text cannot block on a
    /// file (`/dev/zero`) or the resolver. For the fuzz target. `{ env = .. }` is still read (process
    /// memory only); endpoint names are only checked here either way (`Snapshot::build` resolves them).
    TextOnly,
}
/// Upstream index by name. Names are unique (they are TOML table keys).
pub(super) type UpstreamIndex<'a> = std::collections::HashMap<&'a str, usize, ahash::RandomState>;

pub(super) struct Ctx {
    pub(super) file: String,
    pub(super) reach: Reach,
}
impl Ctx {
    pub(super) fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            key: key.into(),
            message: message.into(),
        }
    }
}
pub(super) fn nonzero(cx: &Ctx, key: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        Err(cx.err(key, "expected a duration greater than 0"))
    } else {
        Ok(d)
    }
}
pub(super) fn range(cx: &Ctx, key: &str, v: u64, lo: u64, hi: u64) -> Result<u64, ConfigError> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(cx.err(key, format!("expected {lo}..={hi}, got {v}")))
    }
}
pub(super) fn socket_addr(cx: &Ctx, key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    if cx.reach == Reach::TextOnly {
        return Err(cx.err(
            key,
            format!(
                "expected \"ip:port\" (names are not resolved in text-only validation), got {s:?}"
            ),
        ));
    }
    // Names such as "localhost:8080" are resolved once, at load time.
    match s.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| cx.err(key, format!("{s:?} resolves to no address"))),
        Err(_) => Err(cx.err(
            key,
            format!("expected \"ip:port\" or \"host:port\", got {s:?}"),
        )),
    }
}
/// RFC 9110 token characters.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
pub(super) fn header_value_ok(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}
/// An `http://` or `https://` URL with a host: what sluice itself fetches from or posts to.
pub(super) fn http_url(cx: &Ctx, key: &str, s: &str) -> Result<(), ConfigError> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !s.contains(char::is_whitespace) => {
            Ok(())
        }
        _ => Err(cx.err(
            key,
            format!("expected an http:// or https:// URL, got {s:?}"),
        )),
    }
}

/// A consumer or group name: what may appear in an `allow` list, a header and a metric label.
pub fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}
