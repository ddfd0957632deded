//! A request's key for one limit: its parts (`config::limits::KeyPart`) written one after another
//! into a reusable buffer, each behind a tag byte and its length, so no two different part lists
//! can spell the same key (`"a" + "bc"` and `"ab" + "c"` differ).

use crate::config::limits::KeyPart;
use crate::http1::head::RequestHead;
use std::net::IpAddr;

/// What a key may be made of.
pub struct KeyInput<'a> {
    pub head: &'a RequestHead,
    /// The authenticated consumer's name.
    pub consumer: Option<&'a str>,
    /// The client, as `trusted_proxies` decided it.
    pub client: IpAddr,
    pub route: &'a str,
}

/// The longest header value taken into a key; longer ones are cut (the cut value still keys, so a
/// client cannot make one key per request by padding).
const MAX_PART: usize = 256;

fn push(out: &mut Vec<u8>, tag: u8, v: &[u8]) {
    let v = &v[..v.len().min(MAX_PART)];
    out.push(tag);
    out.push(v.len() as u8);
    out.push((v.len() >> 8) as u8);
    out.extend_from_slice(v);
}

fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip.to_canonical() {
        IpAddr::V4(a) => push(out, b'4', &a.octets()),
        IpAddr::V6(a) => push(out, b'6', &a.octets()),
    }
}

/// Writes the key of `parts` for `input` into `out` (cleared first).
pub fn build(parts: &[KeyPart], input: &KeyInput<'_>, out: &mut Vec<u8>) {
    out.clear();
    for p in parts {
        match p {
            // A request without a consumer is keyed by its client instead, like Kong's fallback,
            // so unauthenticated callers do not share one bucket.
            KeyPart::Consumer => match input.consumer {
                Some(c) => push(out, b'c', c.as_bytes()),
                None => push_ip(out, input.client),
            },
            KeyPart::Ip => push_ip(out, input.client),
            KeyPart::Route => push(out, b'r', input.route.as_bytes()),
            KeyPart::Header(h) => push(out, b'h', input.head.get(h.as_bytes()).unwrap_or(b"")),
        }
    }
}

/// The key as text for logs and metrics labels: the readable parts joined with '|'.
pub fn display(key: &[u8]) -> String {
    let mut s = String::new();
    let mut rest = key;
    while rest.len() >= 3 {
        let tag = rest[0];
        let len = usize::from(rest[1]) | usize::from(rest[2]) << 8;
        let Some(v) = rest.get(3..3 + len) else { break };
        if !s.is_empty() {
            s.push('|');
        }
        match tag {
            b'4' if v.len() == 4 => {
                s.push_str(&std::net::Ipv4Addr::new(v[0], v[1], v[2], v[3]).to_string())
            }
            b'6' => {
                if let Ok(o) = <[u8; 16]>::try_from(v) {
                    s.push_str(&std::net::Ipv6Addr::from(o).to_string())
                }
            }
            _ => s.push_str(&String::from_utf8_lossy(v)),
        }
        rest = &rest[3 + len..];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cannot_run_into_each_other_and_display_reads_back() {
        let head = RequestHead::default();
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let mut a = Vec::new();
        let mut b = Vec::new();
        let input = |c: &'static str, r: &'static str| KeyInput {
            head: &head,
            consumer: Some(c),
            client: ip,
            route: r,
        };
        build(
            &[KeyPart::Consumer, KeyPart::Route],
            &input("a", "bc"),
            &mut a,
        );
        build(
            &[KeyPart::Consumer, KeyPart::Route],
            &input("ab", "c"),
            &mut b,
        );
        assert_ne!(a, b);
        build(
            &[KeyPart::Consumer, KeyPart::Ip],
            &input("alice", "x"),
            &mut a,
        );
        assert_eq!(display(&a), "alice|192.0.2.7");
        let anon = KeyInput {
            consumer: None,
            ..input("x", "x")
        };
        build(&[KeyPart::Consumer], &anon, &mut b);
        assert_eq!(display(&b), "192.0.2.7");
    }
}
