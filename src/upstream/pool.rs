//! Per-worker idle connection pools, keyed by endpoint address and TLS identity (`PoolKey`) so that a
//! reload keeps them warm. LIFO: the most recently used connection is the one least likely to have
//! been closed by the peer.

use super::wire::{UpRd, UpWr};
use crate::sock::SockWr;
use bytes::BytesMut;
use monoio::io::Splitable;
use monoio::net::TcpStream;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// What an idle connection is found by: the endpoint's address and what its TLS session is made of
/// (`tls::client::Connector::pool_key`; 0 for plain TCP). Two groups that reach one address with
/// different TLS settings, or one plainly and one over TLS, never take each other's connections.
pub type PoolKey = (SocketAddr, u64);

/// A connection to an upstream endpoint with its read buffer.
pub struct UpConn {
    /// Read half (split once, so request and response can flow at the same time).
    pub rd: UpRd,
    /// Write half (it also knows the descriptor, for the stale-connection peek).
    pub wr: UpWr,
    /// Bytes read from the upstream and not yet consumed.
    pub buf: BytesMut,
    pub addr: SocketAddr,
    /// The TLS part of its `PoolKey` (0: plain).
    pub tls: u64,
    /// Taken from the pool rather than freshly connected.
    pub reused: bool,
}

impl UpConn {
    /// Wraps a fresh plain connection.
    pub fn new(stream: TcpStream, addr: SocketAddr, buf: BytesMut) -> UpConn {
        let fd = stream.as_raw_fd();
        let (rd, wr) = stream.into_split();
        UpConn {
            rd: UpRd::Plain(rd),
            wr: UpWr::Plain(SockWr::new(wr, fd)),
            buf,
            addr,
            tls: 0,
            reused: false,
        }
    }

    /// Wraps a fresh TLS session whose pool key part is `tls`.
    pub fn tls(rd: UpRd, wr: UpWr, addr: SocketAddr, tls: u64, buf: BytesMut) -> UpConn {
        UpConn {
            rd,
            wr,
            buf,
            addr,
            tls,
            reused: false,
        }
    }

    /// Nothing of a response is left unread, above or below HTTP: it may wait for the next exchange.
    pub fn is_drained(&self) -> bool {
        self.buf.is_empty() && self.rd.is_drained()
    }
}

struct Idle {
    conn: UpConn,
    expires: Instant,
}

/// The idle connections to one address.
struct Slot {
    idle: Vec<Idle>,
    /// When the most recently returned connection expires. An empty slot is kept until then, so a
    /// busy endpoint (its one connection checked out whenever the sweeper runs) keeps its `Vec`
    /// instead of allocating a new one on the next `put`.
    until: Instant,
}

/// All idle upstream connections of one worker.
#[derive(Default)]
pub struct Pools {
    by_addr: HashMap<PoolKey, Slot, ahash::RandomState>,
    spare_bufs: Vec<BytesMut>,
}

impl Pools {
    /// Takes the freshest unexpired idle connection of `key`.
    pub fn take(&mut self, key: PoolKey, now: Instant) -> Option<UpConn> {
        let list = &mut self.by_addr.get_mut(&key)?.idle;
        while let Some(idle) = list.pop() {
            if idle.expires > now {
                let mut c = idle.conn;
                c.reused = true;
                return Some(c);
            }
        }
        None
    }

    /// Returns a connection for reuse; drops it when the pool for that address is full.
    pub fn put(&mut self, conn: UpConn, max_idle: usize, idle_timeout: Duration, now: Instant) {
        if max_idle == 0 || !conn.is_drained() {
            return;
        }
        let expires = now + idle_timeout;
        let slot = self
            .by_addr
            .entry((conn.addr, conn.tls))
            .or_insert_with(|| Slot {
                idle: Vec::new(),
                until: expires,
            });
        slot.until = slot.until.max(expires);
        if slot.idle.len() >= max_idle {
            return;
        }
        slot.idle.push(Idle { conn, expires });
    }

    /// Closes expired idle connections; called about once a second. Forgets an address once it
    /// has had nothing idle and nothing returned for a whole idle timeout (DNS changes, reloads).
    pub fn sweep(&mut self, now: Instant) {
        for slot in self.by_addr.values_mut() {
            slot.idle.retain(|i| i.expires > now);
        }
        self.by_addr
            .retain(|_, s| !s.idle.is_empty() || s.until > now);
        self.spare_bufs.truncate(16);
    }

    /// Idle connections of `key`.
    pub fn idle(&self, key: &PoolKey) -> usize {
        self.by_addr.get(key).map_or(0, |s| s.idle.len())
    }

    /// Total idle connections.
    pub fn total_idle(&self) -> usize {
        self.by_addr.values().map(|s| s.idle.len()).sum()
    }

    /// A read buffer for a new connection, recycled when possible.
    pub fn buffer(&mut self, capacity: usize) -> BytesMut {
        match self.spare_bufs.pop() {
            Some(mut b) => {
                b.clear();
                b.reserve(capacity);
                b
            }
            None => BytesMut::with_capacity(capacity),
        }
    }

    /// Keeps the buffer of a closed connection for the next one.
    pub fn recycle(&mut self, buf: BytesMut) {
        if self.spare_bufs.len() < 64 && buf.capacity() >= 4096 {
            self.spare_bufs.push(buf);
        }
    }
}
