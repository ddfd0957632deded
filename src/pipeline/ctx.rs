//! One request's context, from parsed head to record: its ids, its record, the generation it started
//! on (every timeout and limit it uses comes from there, whatever reloads happen meanwhile), and the
//! slots policies fill: the consumer and header edits toward the upstream and the client.

use super::client::Client;
use crate::http1::head::{Framing, Method, RequestHead, ResponseHead};
use crate::metrics::RequestRecord;
use crate::policy::consumers::{ConsumerSet, Entry};
use crate::policy::jwt::Claims;
use crate::worker::ids::Ids;
use crate::worker::{Gen, Worker};
use std::rc::Rc;

/// Header lines a policy adds, in field-line form (`name: value\r\n` each). Empty costs nothing: the
/// buffer allocates only when a policy first writes to it.
#[derive(Debug, Default)]
pub struct HeaderEdits {
    /// The lines to add.
    pub add: Vec<u8>,
}

impl HeaderEdits {
    /// Adds `name: value`.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        self.add.extend_from_slice(name);
        self.add.extend_from_slice(b": ");
        self.add.extend_from_slice(value);
        self.add.extend_from_slice(b"\r\n");
    }
}

/// Who is calling, once an authentication policy has said.
#[derive(Debug, Clone)]
pub enum Identity {
    /// A consumer of the file (an index into the generation's consumer table).
    File(u32),
    /// A consumer created at runtime, in the table it was found in.
    Runtime(Rc<ConsumerSet>, u32),
    /// A verified token whose consumer claim names no configured consumer: known by the claim's
    /// value, in no group, so no `allow` list admits it.
    Anonymous(Rc<Claims>),
}

impl Identity {
    /// The consumer's entry (None for an anonymous identity).
    pub fn entry<'a>(&'a self, gen: &'a Gen) -> Option<&'a Entry> {
        match self {
            Identity::File(i) => gen.consumers.get(*i),
            Identity::Runtime(set, i) => set.get(*i),
            Identity::Anonymous(_) => None,
        }
    }

    /// The name sent upstream and logged, and the groups joined with ','.
    pub fn names<'a>(&'a self, gen: &'a Gen) -> Option<(&'a str, &'a str)> {
        match self {
            Identity::Anonymous(c) => c.consumer().map(|n| (n, "")),
            _ => self.entry(gen).map(|e| (&*e.name, &*e.groups_header)),
        }
    }
}

/// Which credential authenticated the request: it is removed from the upstream request unless the
/// route forwards it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Credential {
    /// None was used.
    #[default]
    None,
    /// The API key header.
    KeyHeader,
    /// The API key query parameter.
    KeyQuery,
    /// The `Authorization` header (Basic, Bearer).
    Authorization,
}

/// Everything the pipeline knows about one request.
pub struct Ctx {
    /// The generation the request started on.
    pub gen: Rc<Gen>,
    /// Request id and trace context.
    pub ids: Ids,
    /// What happened, recorded once at the end.
    pub rec: RequestRecord,
    /// The connection may carry another request after this one (the client wants it and the worker
    /// is not draining).
    pub keep: bool,
    /// A HEAD request: every answer sluice writes itself carries the head (with the Content-Length a
    /// GET would get) and no body (RFC 9110 §9.3.2), or the client would read the body as the next
    /// response.
    pub head_request: bool,
    /// Who the request is from (the peer, or whom a trusted proxy's X-Forwarded-For names); set by
    /// `pipeline::handle` before any policy runs.
    pub client: Client,
    /// The verified client certificate's identity (mTLS), from the connection.
    pub peer_identity: Option<Rc<crate::pipeline::downstream::PeerIdentity>>,
    /// The authenticated consumer, if any.
    pub identity: Option<Identity>,
    /// The credential to strip before the upstream.
    pub credential: Credential,
    /// The external auth service (index in `Config::auth`) whose `copy_headers` the client may not
    /// send itself: they are removed from its request before the service's are added.
    pub ext_strip: Option<u16>,
    /// The claims of the token that authenticated the request, for scope and claim rules.
    pub claims: Option<Rc<Claims>>,
    /// The answers to the checks policies deferred (`policy::Outcome::Defer`), each under the key of
    /// what it answers (a credential's digest, an auth service).
    pub verdicts: crate::policy::deferral::Verdicts,
    /// Headers to add to the upstream request.
    pub upstream_edits: HeaderEdits,
    /// Headers to add to the response (and to a rejection).
    pub downstream_edits: HeaderEdits,
    /// The rate limits charged this request (a stage run again after a deferral must not charge
    /// them twice), and its quota.
    pub charged: Charged,
}

/// What of a request's limits was charged already.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charged {
    pub rate: bool,
    pub quota: bool,
    /// A bytes quota admitted the request: its period and the bytes reserved, settled with what the
    /// request moved once it is over.
    pub bytes: Option<(crate::config::limits::Period, u64)>,
    /// `RateLimit-*` fields were written into the response edits.
    pub headers: bool,
}

impl Ctx {
    /// The context of a request whose head `head` just parsed on worker `w`, on generation `gen`.
    pub fn new(w: &Worker, gen: Rc<Gen>, head: &RequestHead) -> Ctx {
        Ctx {
            gen,
            ids: Ids::new(&w.ids, head),
            rec: RequestRecord::new(head.bytes().len() as u64),
            keep: head.keep_alive && !w.is_draining(),
            head_request: head.method_kind() == Method::Head,
            identity: None,
            credential: Credential::None,
            verdicts: Default::default(),
            claims: None,
            ext_strip: None,
            client: Client::default(),
            peer_identity: None,
            upstream_edits: HeaderEdits::default(),
            downstream_edits: HeaderEdits::default(),
            charged: Charged::default(),
        }
    }

    /// A request body the pipeline did not read would be taken for the next request: after an answer
    /// that leaves it unread, the connection must close.
    pub fn close_after_unread_body(&self, head: &RequestHead) -> bool {
        !self.keep || head.body() != Framing::None
    }
}

/// What the connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Read the next request.
    KeepAlive,
    /// Close the connection.
    Close,
}

/// A connection's buffers that outlive each of its requests, so a request allocates none.
pub struct Buffers {
    /// The upstream request (head, and a body that came with it), kept for a retry.
    pub upstream_req: Vec<u8>,
    /// The upstream's response head (its header list keeps its capacity).
    pub resp: ResponseHead,
    /// The canonical path, when the received one was not (`http1::path`); empty until the first
    /// such request, then reused.
    pub path: Vec<u8>,
    /// Lent to each request as its response header edits (`RateLimit-*` on every response of a
    /// limited route), so writing them allocates nothing once it has grown.
    pub edits: Vec<u8>,
}

/// Room for a typical upstream request head, so the first request of a session does not grow it.
const REQUEST_HEAD_ROOM: usize = 512;

impl Buffers {
    /// A session's buffers.
    pub fn new() -> Buffers {
        Buffers {
            upstream_req: Vec::with_capacity(REQUEST_HEAD_ROOM),
            resp: ResponseHead::default(),
            path: Vec::new(),
            edits: Vec::new(),
        }
    }

    /// After a request: a buffer that a large request grew past `above` bytes is let go, so one big
    /// upload does not pin its memory for the rest of the session.
    pub fn shrink(&mut self, above: usize) {
        if self.upstream_req.capacity() > above {
            self.upstream_req = Vec::with_capacity(REQUEST_HEAD_ROOM);
        }
        if self.path.capacity() > above {
            self.path = Vec::new();
        }
        if self.edits.capacity() > above {
            self.edits = Vec::new();
        }
    }
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers::new()
    }
}
