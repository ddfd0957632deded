//! CIDR lists (`ip_allow`, `ip_deny`, `trusted_proxies`): parsed once at config validation into
//! sorted, merged address ranges per family, and matched on the request path by a binary search that
//! never allocates. IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`), in a list or in a request, are
//! taken as the IPv4 address they carry, so one rule covers a client however its stack spells it.

use std::net::IpAddr;

/// A set of addresses: inclusive ranges, sorted, non-overlapping and non-adjacent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpList {
    v4: Box<[(u32, u32)]>,
    v6: Box<[(u128, u128)]>,
}

/// An entry that is neither an address nor a CIDR network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected an address or a CIDR network like \"10.0.0.0/8\" or \"2001:db8::/32\", got {0:?}"
)]
pub struct BadCidr(pub String);

impl IpList {
    /// Parses entries like `"10.0.0.0/8"`, `"2001:db8::/32"` or a bare address (one host). Host bits
    /// set under the prefix (`"10.1.2.3/8"`) are ignored, as nginx does, rather than refused.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<IpList, BadCidr> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for e in entries {
            let (addr, prefix) = match e.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (e, None),
            };
            let bad = || BadCidr(e.to_string());
            let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix: u32 = match prefix {
                None => max,
                // Digits only: `u32::from_str` would take a leading '+'.
                Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse().map_err(|_| bad())?
                }
                Some(_) => return Err(bad()),
            };
            if prefix > max {
                return Err(bad());
            }
            match addr {
                IpAddr::V4(a) => v4.push(range_v4(u32::from(a), prefix)),
                IpAddr::V6(a) => match a.to_ipv4_mapped() {
                    // `::ffff:10.0.0.0/104` is 10.0.0.0/8; a shorter prefix reaches beyond the
                    // mapped block, so it stays IPv6 (and also covers all of IPv4).
                    Some(m) if prefix >= 96 => v4.push(range_v4(u32::from(m), prefix - 96)),
                    _ => {
                        let (lo, hi) = range_v6(u128::from(a), prefix);
                        const MAPPED: u128 = 0xffff << 32;
                        if lo <= MAPPED && hi >= MAPPED | 0xffff_ffff {
                            v4.push((0, u32::MAX));
                        }
                        v6.push((lo, hi));
                    }
                },
            }
        }
        Ok(IpList {
            v4: merge(v4).into_boxed_slice(),
            v6: merge(v6).into_boxed_slice(),
        })
    }

    /// Whether the list has no entry (then it is never consulted).
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether `ip` is in the list.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }
}

/// An allow list and a deny list, as a listener or a route holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRules {
    /// When not empty, only these addresses are admitted.
    pub allow: IpList,
    /// Never admitted, even when also in `allow`.
    pub deny: IpList,
}

impl IpRules {
    /// Whether neither list has an entry (the usual case: then nothing is checked).
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether `ip` may pass: not denied, and allowed when there is an allow list. Deny wins, so an
    /// operator can carve an address out of an allowed network.
    pub fn admits(&self, ip: IpAddr) -> bool {
        !self.deny.contains(ip) && (self.allow.is_empty() || self.allow.contains(ip))
    }
}

fn range_v4(a: u32, prefix: u32) -> (u32, u32) {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    (a & mask, (a & mask) | !mask)
}

fn range_v6(a: u128, prefix: u32) -> (u128, u128) {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    (a & mask, (a & mask) | !mask)
}

/// Sorts ranges and merges those that overlap or touch.
fn merge<T: Ord + Copy + num_step::Step>(mut r: Vec<(T, T)>) -> Vec<(T, T)> {
    r.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(r.len());
    for (lo, hi) in r {
        match out.last_mut() {
            Some(last) if last.1 >= lo || last.1.next() == Some(lo) => {
                last.1 = last.1.max(hi);
            }
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn find<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    // The first range starting after x; the one before it is the only one that can hold x.
    let i = ranges.partition_point(|&(lo, _)| lo <= x);
    i > 0 && ranges[i - 1].1 >= x
}

/// The successor of an integer, for merging adjacent ranges.
mod num_step {
    pub trait Step: Sized {
        fn next(self) -> Option<Self>;
    }
    impl Step for u32 {
        fn next(self) -> Option<u32> {
            self.checked_add(1)
        }
    }
    impl Step for u128 {
        fn next(self) -> Option<u128> {
            self.checked_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(e: &[&str]) -> IpList {
        IpList::parse(e.iter().copied()).unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_networks_and_hosts() {
        let l = list(&["10.0.0.0/8", "192.0.2.7", "198.51.100.0/24"]);
        for yes in ["10.0.0.0", "10.255.255.255", "192.0.2.7", "198.51.100.200"] {
            assert!(l.contains(ip(yes)), "{yes}");
        }
        for no in [
            "9.255.255.255",
            "11.0.0.0",
            "192.0.2.6",
            "192.0.2.8",
            "198.51.101.0",
        ] {
            assert!(!l.contains(ip(no)), "{no}");
        }
        assert!(list(&["0.0.0.0/0"]).contains(ip("255.255.255.255")));
        assert!(!list(&["0.0.0.0/0"]).contains(ip("::1")));
    }

    #[test]
    fn host_bits_under_the_prefix_are_ignored() {
        assert!(list(&["10.1.2.3/8"]).contains(ip("10.200.0.1")));
    }

    #[test]
    fn ipv6_networks() {
        let l = list(&["2001:db8::/32", "::1"]);
        assert!(l.contains(ip("2001:db8:ffff::1")));
        assert!(l.contains(ip("::1")));
        assert!(!l.contains(ip("2001:db9::")));
        assert!(!l.contains(ip("::2")));
        assert!(!l.contains(ip("127.0.0.1")));
        assert!(list(&["::/0"]).contains(ip("fe80::1")));
    }

    #[test]
    fn v4_mapped_v6_is_v4() {
        // A mapped client matches an IPv4 rule...
        let l = list(&["192.0.2.0/24"]);
        assert!(l.contains(ip("::ffff:192.0.2.9")));
        assert!(!l.contains(ip("::ffff:192.0.3.9")));
        // ...and a mapped rule matches an IPv4 client.
        let m = list(&["::ffff:10.0.0.0/104"]);
        assert!(m.contains(ip("10.9.9.9")));
        assert!(m.contains(ip("::ffff:10.9.9.9")));
        assert!(!m.contains(ip("11.0.0.1")));
        // A v6 prefix wide enough to cover the mapped block covers all of IPv4.
        assert!(list(&["::/0"]).contains(ip("1.2.3.4")));
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge() {
        let l = list(&["10.0.0.0/25", "10.0.0.128/25", "10.0.0.0/24", "10.0.0.5"]);
        assert_eq!(l.v4.len(), 1);
        assert!(l.contains(ip("10.0.0.255")));
        assert!(!l.contains(ip("10.0.1.0")));
    }

    #[test]
    fn deny_wins_over_allow() {
        let r = IpRules {
            allow: list(&["10.0.0.0/8"]),
            deny: list(&["10.0.0.66"]),
        };
        assert!(r.admits(ip("10.0.0.1")));
        assert!(!r.admits(ip("10.0.0.66")));
        assert!(!r.admits(ip("192.0.2.1")));
        assert!(IpRules::default().admits(ip("192.0.2.1")));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "host",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "1.2.3.4:80",
        ] {
            assert!(IpList::parse([bad]).is_err(), "{bad:?}");
        }
        assert!(list(&[]).is_empty());
    }
}
