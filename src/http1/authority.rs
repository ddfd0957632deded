//! The syntax of a request's authority (the Host header, or the authority of an absolute-form
//! target): `uri-host [ ":" port ]` of RFC 3986 §3.2.2 and §3.2.3. The head parser refuses anything
//! else with 400, so the router, the policies and the upstream never see a host that could be read
//! two ways (`a/b`, `exa mple`, `[::1`, a port past 65535). A pure check: no allocation.

use std::net::Ipv6Addr;

/// True when `value` is a valid `uri-host[:port]`, or empty.
///
/// - An empty value is allowed: RFC 9112 §3.2 has a client send `Host:` empty when the target URI
///   has no authority. An empty host before a port (`:80`) is not (RFC 9110 §4.2.1).
/// - `reg-name` is unreserved characters and sub-delims (which covers IPv4 addresses). A
///   percent-encoded reg-name, which RFC 3986 allows, is refused: no client needs one, and it would
///   spell one host two ways past the router's host match.
/// - An IP literal is an IPv6 address in brackets; IPvFuture and zone identifiers are refused.
/// - The port is digits up to 65535; an empty port after `:` is allowed (RFC 3986 `port = *DIGIT`).
pub fn valid(value: &[u8]) -> bool {
    if value.is_empty() {
        return true;
    }
    let port = if value[0] == b'[' {
        let Some(close) = memchr::memchr(b']', value) else {
            return false;
        };
        let literal = std::str::from_utf8(&value[1..close])
            .ok()
            .and_then(|s| s.parse::<Ipv6Addr>().ok());
        if literal.is_none() {
            return false;
        }
        match &value[close + 1..] {
            [] => return true,
            [b':', port @ ..] => port,
            _ => return false,
        }
    } else {
        // One pass over the reg-name up to the first byte that is not one: every request has a
        // Host, so this runs per request and must not scan twice.
        let host_len = value
            .iter()
            .position(|&b| !REG_NAME[usize::from(b)])
            .unwrap_or(value.len());
        match &value[host_len..] {
            _ if host_len == 0 => return false,
            [] => return true,
            [b':', port @ ..] => port,
            _ => return false,
        }
    };
    port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= 65535
}

/// RFC 3986 §2.3 unreserved and §2.2 sub-delims: the characters of a reg-name (without escapes),
/// as a table so the host scan is one load and one branch per byte.
static REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::valid;

    #[test]
    fn hosts_that_are_uri_hosts() {
        for h in [
            "",
            "localhost",
            "example.com",
            "Example.COM.",
            "api.example.com:8080",
            "127.0.0.1",
            "127.0.0.1:0",
            "a:65535",
            "a:",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::ffff:192.0.2.1]",
            "xn--bcher-kva.example",
            "a_b",
        ] {
            assert!(valid(h.as_bytes()), "{h:?}");
        }
    }

    #[test]
    fn hosts_that_are_not() {
        for h in [
            "exa mple",
            "a:99999",
            "a:65536",
            "a:123456",
            "a:8o",
            "[::1",
            "::1",
            "[::1]x",
            "[::1]:99999",
            "[fe80::1%25eth0]",
            "[v1.x]",
            "[example.com]",
            "a/b",
            "a@b",
            "a:1:2",
            ":80",
            "%61.example",
            "a\tb",
            "caf\u{e9}",
        ] {
            assert!(!valid(h.as_bytes()), "{h:?}");
        }
    }
}
