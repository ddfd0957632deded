//! Who a request is from: the connection's peer, or, when the peer is one of its listener's
//! `trusted_proxies`, the client that X-Forwarded-For names. Resolved once per request, before any
//! policy runs; allow lists, the access log, the X-Forwarded-For sent upstream and client-IP hashing
//! all read this one answer, so they can never disagree about who is calling.
//!
//! The chain is read from the right, like nginx's `real_ip_recursive on`: each entry that is itself a
//! trusted proxy passes the question one hop further left, and the first entry that is not names the
//! client. Entries left of it were written by the client or by proxies nobody vouches for, so they
//! are never believed. An entry that is not an address stops the walk at the last address that was
//! (a trusted proxy), so garbage cannot promote a spoofed entry behind it. Nothing here allocates.

use crate::cidr::IpList;
use crate::http1::head::{trim, HeaderKind, RequestHead};
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// What a connection knows about where it came from (the same for every request on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The peer's address.
    pub ip: IpAddr,
    /// Index of the listener that accepted it, in `Config::listeners`.
    pub listener: u16,
    /// It came over TLS (`X-Forwarded-Proto: https` upstream).
    pub tls: bool,
}

/// Longest text of an address: `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`.
const TEXT_MAX: usize = 45;

/// The resolved client of one request.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// The client's address (IPv4-mapped IPv6 given as IPv4).
    pub ip: IpAddr,
    /// The listener the request came in on (index into `Config::listeners`).
    pub listener: u16,
    /// The connection is TLS.
    pub tls: bool,
    /// When X-Forwarded-For named the client: where in the received chain it stands, as (which
    /// X-Forwarded-For field line, counted from 0; the byte just after the entry in that line's
    /// trimmed value). The chain sent upstream ends there, so it ends in the client.
    pub forwarded: Option<(u16, u32)>,
    text: [u8; TEXT_MAX],
    text_len: u8,
}

impl Default for Client {
    fn default() -> Client {
        Client {
            ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            listener: 0,
            tls: false,
            forwarded: None,
            text: [0; TEXT_MAX],
            text_len: 0,
        }
    }
}

impl Client {
    /// The client of a request from `peer` (its address also as `peer_text`), given the listener's
    /// trusted proxies. With none configured this is a copy of the peer and reads no header.
    pub fn resolve(peer: Peer, peer_text: &str, trusted: &IpList, head: &RequestHead) -> Client {
        let mut c = Client {
            ip: peer.ip.to_canonical(),
            listener: peer.listener,
            tls: peer.tls,
            ..Client::default()
        };
        if trusted.is_empty() || !trusted.contains(c.ip) {
            c.set_text(peer_text);
            return c;
        }
        let (ip, forwarded) = walk_xff(c.ip, trusted, head);
        c.ip = ip;
        c.forwarded = forwarded;
        if forwarded.is_some() {
            let mut w = TextBuf {
                buf: &mut c.text,
                len: 0,
            };
            // An address always fits (see `TEXT_MAX`); a failure would leave a shorter text, not a panic.
            let _ = write!(w, "{ip}");
            c.text_len = w.len as u8;
        } else {
            c.set_text(peer_text);
        }
        c
    }

    /// The client's address as text, in bytes: what the hot path copies (X-Forwarded-For, the
    /// access log, client-IP hashing), with no UTF-8 check per request.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text[..self.text_len as usize]
    }

    /// The client's address as text.
    pub fn text(&self) -> &str {
        // Written only from `&str` or `Display` output, cut at a char boundary by `TextBuf`.
        std::str::from_utf8(&self.text[..self.text_len as usize]).unwrap_or("")
    }

    fn set_text(&mut self, s: &str) {
        let n = s.len().min(TEXT_MAX);
        self.text[..n].copy_from_slice(&s.as_bytes()[..n]);
        self.text_len = n as u8;
    }
}

/// Writes into a fixed buffer; refuses (rather than cuts) what does not fit.
struct TextBuf<'a> {
    buf: &'a mut [u8; TEXT_MAX],
    len: usize,
}

impl Write for TextBuf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > TEXT_MAX {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Walks the X-Forwarded-For chain from the right, starting from a trusted `peer`: the client and,
/// when it came from the chain, where it stands in it.
fn walk_xff(peer: IpAddr, trusted: &IpList, head: &RequestHead) -> (IpAddr, Option<(u16, u32)>) {
    let mut found = (peer, None);
    let count = head
        .headers
        .iter()
        .filter(|h| h.kind == HeaderKind::XForwardedFor)
        .count();
    let lines = head
        .headers
        .iter()
        .rev()
        .filter(|h| h.kind == HeaderKind::XForwardedFor);
    for (back, h) in lines.enumerate() {
        let line = (count - 1 - back) as u16;
        let value = trim(head.header(h).1);
        let mut end = value.len();
        loop {
            let start = memchr::memrchr(b',', &value[..end]).map_or(0, |i| i + 1);
            let entry = trim(&value[start..end]);
            if !entry.is_empty() {
                let Some(ip) = parse_entry(entry) else {
                    return found;
                };
                // Where the entry ends within the value (spaces before the next comma excluded).
                let offset = entry.as_ptr() as usize - value.as_ptr() as usize;
                found = (ip, Some((line, (offset + entry.len()) as u32)));
                if !trusted.contains(ip) {
                    return found;
                }
            }
            if start == 0 {
                break;
            }
            end = start - 1;
        }
    }
    found
}

/// One X-Forwarded-For entry: an address, optionally with a port (`1.2.3.4:5`, `[::1]:5`) or in
/// brackets (`[::1]`), as proxies write them.
fn parse_entry(e: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(e).ok()?;
    let ip = match s.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => match s.parse::<SocketAddr>() {
            Ok(sa) => sa.ip(),
            Err(_) => s.strip_prefix('[')?.strip_suffix(']')?.parse().ok()?,
        },
    };
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::Limits;
    use bytes::BytesMut;

    fn head(xff: &[&str]) -> RequestHead {
        let mut raw = String::from("GET / HTTP/1.1\r\nhost: a\r\n");
        for v in xff {
            raw.push_str(&format!("x-forwarded-for: {v}\r\n"));
        }
        raw.push_str("\r\n");
        let mut buf = BytesMut::from(raw.as_bytes());
        let mut h = RequestHead::default();
        let limits = Limits {
            max_header_bytes: 16384,
            max_headers: 100,
            max_uri_bytes: 8192,
        };
        h.parse(&mut buf, &limits).unwrap().unwrap();
        h
    }

    fn resolve(peer: &str, trusted: &[&str], xff: &[&str]) -> Client {
        let list = IpList::parse(trusted.iter().copied()).unwrap();
        let p = Peer {
            ip: peer.parse().unwrap(),
            listener: 3,
            tls: false,
        };
        Client::resolve(p, peer, &list, &head(xff))
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_xff_says() {
        let c = resolve("203.0.113.5", &["10.0.0.0/8"], &["192.0.2.7"]);
        assert_eq!(
            (c.text(), c.forwarded, c.listener),
            ("203.0.113.5", None, 3)
        );
        // No trusted proxies at all: the header is not even read.
        let c = resolve("127.0.0.1", &[], &["192.0.2.7"]);
        assert_eq!(c.text(), "127.0.0.1");
    }

    #[test]
    fn trusted_peer_passes_to_the_rightmost_untrusted_entry() {
        let c = resolve("127.0.0.1", &["127.0.0.0/8"], &["192.0.2.7"]);
        assert_eq!((c.text(), c.forwarded), ("192.0.2.7", Some((0, 9))));
        // A chain of trusted hops: the first untrusted one from the right; spoofed left entries ignored.
        let c = resolve(
            "10.0.0.1",
            &["10.0.0.0/8"],
            &["6.6.6.6, 198.51.100.1", "10.1.1.1 , 10.2.2.2"],
        );
        assert_eq!((c.text(), c.forwarded), ("198.51.100.1", Some((0, 21))));
    }

    #[test]
    fn all_trusted_gives_the_leftmost() {
        let c = resolve("10.0.0.1", &["10.0.0.0/8"], &["10.0.0.9, 10.0.0.8"]);
        assert_eq!((c.text(), c.forwarded), ("10.0.0.9", Some((0, 8))));
    }

    #[test]
    fn garbage_stops_at_the_last_trusted_address() {
        let c = resolve("10.0.0.1", &["10.0.0.0/8"], &["6.6.6.6, unknown, 10.0.0.8"]);
        assert_eq!((c.text(), c.forwarded), ("10.0.0.8", Some((0, 26))));
        // Garbage right away: the peer it is.
        let c = resolve("10.0.0.1", &["10.0.0.0/8"], &["6.6.6.6, 1.2.3"]);
        assert_eq!((c.text(), c.forwarded), ("10.0.0.1", None));
        let c = resolve("10.0.0.1", &["10.0.0.0/8"], &[]);
        assert_eq!((c.text(), c.forwarded), ("10.0.0.1", None));
    }

    #[test]
    fn ports_brackets_mapped_and_empty_entries() {
        let t = &["10.0.0.0/8"];
        assert_eq!(
            resolve("10.0.0.1", t, &["192.0.2.7:4711"]).text(),
            "192.0.2.7"
        );
        assert_eq!(
            resolve("10.0.0.1", t, &["[2001:db8::1]:80"]).text(),
            "2001:db8::1"
        );
        assert_eq!(
            resolve("10.0.0.1", t, &["[2001:db8::1]"]).text(),
            "2001:db8::1"
        );
        assert_eq!(
            resolve("10.0.0.1", t, &["::ffff:192.0.2.7"]).text(),
            "192.0.2.7"
        );
        let c = resolve("10.0.0.1", t, &["192.0.2.7,, "]);
        assert_eq!((c.text(), c.forwarded), ("192.0.2.7", Some((0, 9))));
        // A mapped peer is matched as IPv4.
        let c = resolve("::ffff:10.0.0.1", t, &["2001:db8::9"]);
        assert_eq!(c.text(), "2001:db8::9");
    }

    #[test]
    fn ipv6_peer_and_longest_text() {
        let c = resolve(
            "::1",
            &["::1"],
            &["ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"],
        );
        assert_eq!(c.text(), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe");
        assert_eq!(
            c.ip,
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"
                .parse::<IpAddr>()
                .unwrap()
        );
    }
}
