//! A small stub resolver that reports record TTLs, which the system resolver hides: /etc/hosts first,
//! then A and AAAA queries over UDP to `[dns] servers` (or /etc/resolv.conf's nameservers). Blocking:
//! called only on the main thread at load and on the DNS thread, never on a worker.

use crate::config::Dns;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

/// Addresses of a name and how long they may be cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Resolved addresses with the requested port.
    pub addrs: Vec<SocketAddr>,
    /// Re-resolve after this long (clamped to `[dns] min_ttl..=max_ttl`).
    pub ttl: Duration,
}

const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Resolves `host:port`.
pub fn resolve(host: &str, port: u16, cfg: &Dns) -> io::Result<Answer> {
    let clamp = |secs: u32| Duration::from_secs(secs as u64).clamp(cfg.min_ttl, cfg.max_ttl);
    if let Some(ips) = hosts_file(host) {
        return Ok(Answer {
            addrs: ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
            ttl: cfg.max_ttl,
        });
    }
    let servers = if cfg.servers.is_empty() {
        resolv_conf()
    } else {
        cfg.servers.clone()
    };
    let mut last_err = io::Error::new(
        io::ErrorKind::NotFound,
        format!("no DNS server answered for {host}"),
    );
    for server in &servers {
        let mut addrs = Vec::new();
        let mut min_ttl = u32::MAX;
        let mut answered = false;
        for qtype in [1u16, 28] {
            match query(*server, host, qtype) {
                Ok(recs) => {
                    answered = true;
                    for (ip, ttl) in recs {
                        min_ttl = min_ttl.min(ttl);
                        let a = SocketAddr::new(ip, port);
                        if !addrs.contains(&a) {
                            addrs.push(a);
                        }
                    }
                }
                Err(e) => last_err = e,
            }
        }
        if answered && !addrs.is_empty() {
            return Ok(Answer {
                addrs,
                ttl: clamp(min_ttl),
            });
        }
        if answered {
            last_err = io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} has no A or AAAA records"),
            );
        }
    }
    if cfg.servers.is_empty() {
        // No usable nameserver of our own: let the system resolver (nsswitch, mDNS, ...) try.
        let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
        if !addrs.is_empty() {
            return Ok(Answer {
                addrs,
                ttl: cfg.max_ttl,
            });
        }
    }
    Err(last_err)
}

fn hosts_file(host: &str) -> Option<Vec<IpAddr>> {
    let text = std::fs::read_to_string("/etc/hosts").ok()?;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut parts = line.split_whitespace();
        let Some(ip) = parts.next().and_then(|p| p.parse::<IpAddr>().ok()) else {
            continue;
        };
        if parts.any(|n| n.eq_ignore_ascii_case(host)) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    (!out.is_empty()).then_some(out)
}

fn resolv_conf() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Builds a recursive query for `name` of type `qtype`.
pub fn encode_query(id: u16, name: &str, qtype: u16) -> io::Result<Vec<u8>> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad DNS name {name:?}"),
            ));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    Ok(q)
}

fn query(server: SocketAddr, name: &str, qtype: u16) -> io::Result<Vec<(IpAddr, u32)>> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(QUERY_TIMEOUT))?;
    sock.connect(server)?;
    let id = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7)
        & 0xffff) as u16;
    sock.send(&encode_query(id, name, qtype)?)?;
    let mut buf = [0u8; 1500];
    loop {
        let n = sock.recv(&mut buf)?;
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            return parse_response(&buf[..n], qtype);
        }
    }
}

fn bad() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed DNS response")
}

fn skip_name(msg: &[u8], mut i: usize) -> io::Result<usize> {
    loop {
        let len = *msg.get(i).ok_or_else(bad)? as usize;
        if len == 0 {
            return Ok(i + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Ok(i + 2);
        }
        i += 1 + len;
    }
}

/// Extracts the A (qtype 1) or AAAA (28) records and their TTLs from a response.
pub fn parse_response(msg: &[u8], qtype: u16) -> io::Result<Vec<(IpAddr, u32)>> {
    if msg.len() < 12 {
        return Err(bad());
    }
    let rcode = msg[3] & 0x0f;
    if rcode == 3 {
        return Ok(Vec::new()); // NXDOMAIN
    }
    if rcode != 0 {
        return Err(io::Error::other(format!(
            "DNS server answered rcode {rcode}"
        )));
    }
    let qd = u16::from_be_bytes([msg[4], msg[5]]) as usize;
    let an = u16::from_be_bytes([msg[6], msg[7]]) as usize;
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(msg, i)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = skip_name(msg, i)?;
        let rec = msg.get(i..i + 10).ok_or_else(bad)?;
        let rtype = u16::from_be_bytes([rec[0], rec[1]]);
        let ttl = u32::from_be_bytes([rec[4], rec[5], rec[6], rec[7]]);
        let len = u16::from_be_bytes([rec[8], rec[9]]) as usize;
        let data = msg.get(i + 10..i + 10 + len).ok_or_else(bad)?;
        match (rtype, len) {
            (1, 4) if qtype == 1 => {
                out.push((IpAddr::from([data[0], data[1], data[2], data[3]]), ttl))
            }
            (28, 16) if qtype == 28 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                out.push((IpAddr::from(b), ttl));
            }
            _ => {}
        }
        i += 10 + len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_answer_with_compression() {
        let mut msg = encode_query(0x1234, "svc.test", 1).unwrap();
        msg[2] = 0x81;
        msg[3] = 0x80;
        msg[7] = 1; // ancount
        msg.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 1, 2, 3]);
        let recs = parse_response(&msg, 1).unwrap();
        assert_eq!(recs, vec![(IpAddr::from([10, 1, 2, 3]), 30)]);
    }

    #[test]
    fn truncated_is_an_error_not_a_panic() {
        let msg = encode_query(1, "a.b", 1).unwrap();
        for n in 0..msg.len() {
            let mut m = msg[..n].to_vec();
            if m.len() > 7 {
                m[7] = 3;
            }
            let _ = parse_response(&m, 1);
        }
    }
}
