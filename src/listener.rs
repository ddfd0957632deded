//! Listening sockets: one SO_REUSEPORT socket per worker per configured address, all bound by the main
//! thread before any worker starts, so a port 0 is resolved once and shared, and the kernel spreads
//! connections across workers. Connections never move between threads after accept.

use crate::config::Listener;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;

/// Accept backlog per socket (capped by net.core.somaxconn).
const BACKLOG: i32 = 4096;

fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    // Linux copies TCP_NODELAY to every accepted socket, which saves a setsockopt per connection.
    s.set_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// Binds every listener once per worker. Returns the bound addresses (ports resolved) and, per worker,
/// its sockets in listener order.
pub fn bind_all(
    listeners: &[Listener],
    workers: usize,
) -> io::Result<(Vec<SocketAddr>, Vec<Vec<std::net::TcpListener>>)> {
    let mut per_worker: Vec<Vec<std::net::TcpListener>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for l in listeners {
        let first = bind_one(l.addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("listener {}: cannot bind {}: {e}", l.name, l.addr),
            )
        })?;
        let actual = first.local_addr()?;
        per_worker[0].push(first);
        for sockets in per_worker.iter_mut().skip(1) {
            sockets.push(bind_one(actual).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("listener {}: cannot bind {actual}: {e}", l.name),
                )
            })?);
        }
        bound.push(actual);
    }
    Ok((bound, per_worker))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The accept loop relies on this: it no longer sets TCP_NODELAY per connection on Linux.
    #[cfg(target_os = "linux")]
    #[test]
    fn accepted_sockets_inherit_nodelay() {
        let l = bind_one("127.0.0.1:0".parse().unwrap()).unwrap();
        l.set_nonblocking(false).unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        assert!(s.nodelay().unwrap());
    }
}
