//! Builds the route table from validated routes. Runs on the main thread at load and reload; never on a worker.

use crate::cidr::IpRules;
use crate::config::{Config, Cors, ForwardPath, HostPattern, Matcher, RouteAction, SplitTarget};
use crate::policy::headers::HeaderRules;
use bytes::Bytes;
use std::collections::HashMap;

/// A piece of a `rewrite_path` template.
#[derive(Debug, Clone)]
pub enum Piece {
    /// Literal bytes.
    Lit(Box<[u8]>),
    /// The n-th `{param}` of the path pattern.
    Param(usize),
    /// What the trailing `*` matched.
    Tail,
}

/// A direct response, pre-serialised.
#[derive(Debug, Clone)]
pub struct Direct {
    pub status: u16,
    /// "name: value\r\n" lines.
    pub headers: Bytes,
    pub body: Bytes,
}

/// What a matched route does, in worker form.
#[derive(Debug, Clone)]
pub enum Action {
    /// Forward to one of these targets (indexes into the upstream list).
    Proxy(Vec<SplitTarget>),
    /// Answer directly.
    Respond(Direct),
}

/// A route in worker form.
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    /// Route name (metrics label).
    pub name: String,
    /// Allowed methods; empty = any.
    pub methods: Vec<Box<[u8]>>,
    /// Header matchers (lowercase names).
    pub headers: Vec<(Box<[u8]>, Option<Box<[u8]>>)>,
    /// Query matchers.
    pub query: Vec<(Box<[u8]>, Option<Box<[u8]>>)>,
    pub action: Action,
    /// Prefix to strip.
    pub strip_prefix: Option<Box<[u8]>>,
    /// Path template.
    pub rewrite: Option<Vec<Piece>>,
    /// Host sent upstream.
    pub host_rewrite: Option<Box<[u8]>>,
    /// Body limit for this route.
    pub max_body_bytes: u64,
    /// Index of this route in file order.
    pub order: usize,
    /// Authentication and access rules.
    pub access: crate::config::consumer::RouteAccess,
    /// `%2F` in the path is let through (else 400).
    pub allow_encoded_slash: bool,
    /// Which spelling of the path goes upstream.
    pub forward_path: ForwardPath,
    /// Client allow and deny lists (`policy::ip`).
    pub ip: IpRules,
    /// CORS rules (`policy::cors`); boxed, as most routes have none.
    pub cors: Option<Box<Cors>>,
    /// Header rules for the upstream request (`policy::headers`); empty costs one check.
    pub request_headers: HeaderRules,
    /// Header rules for the upstream's response.
    pub response_headers: HeaderRules,
    /// Upstream `Server`, `X-Powered-By`, ... are removed from responses.
    pub hide_backend: bool,
    /// An upstream 5xx is answered with sluice's JSON error instead of its body.
    pub intercept_errors: bool,
    /// The route's own rate limits (indices into `Config::limits`).
    pub rate_limit: Box<[usize]>,
}

impl CompiledRoute {
    /// Whether either side has header rules (their template variables are gathered only then).
    #[inline]
    pub fn has_header_rules(&self) -> bool {
        !self.request_headers.is_empty() || !self.response_headers.is_empty()
    }

    /// More matchers = more specific; used to order routes that share a path.
    fn specificity(&self) -> usize {
        (!self.methods.is_empty()) as usize + self.headers.len() + self.query.len()
    }
}

/// A trie node. Children are few per node, so a linear scan beats hashing.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub(super) literals: Vec<(Box<[u8]>, u32)>,
    pub(super) param: Option<u32>,
    /// Routes whose pattern ends exactly here, most specific first.
    pub(super) exact: Vec<u32>,
    /// Routes whose pattern ends with `/*` here.
    pub(super) tail: Vec<u32>,
}

/// A path trie for one host class.
#[derive(Debug, Clone)]
pub struct Trie {
    pub(super) nodes: Vec<Node>,
}

impl Default for Trie {
    fn default() -> Self {
        Trie {
            nodes: vec![Node::default()],
        }
    }
}

impl Trie {
    fn insert(&mut self, pattern: &str, route: u32, tail: bool) {
        let mut node = 0usize;
        let mut segs = pattern[1..].split('/').peekable();
        while let Some(seg) = segs.next() {
            if tail && segs.peek().is_none() {
                break; // the final `*` is the tail, not a node
            }
            let next = if seg.starts_with('{') && seg.ends_with('}') {
                match self.nodes[node].param {
                    Some(p) => p as usize,
                    None => {
                        self.nodes.push(Node::default());
                        let id = self.nodes.len() - 1;
                        self.nodes[node].param = Some(id as u32);
                        id
                    }
                }
            } else {
                match self.nodes[node]
                    .literals
                    .iter()
                    .find(|(l, _)| &**l == seg.as_bytes())
                {
                    Some((_, id)) => *id as usize,
                    None => {
                        self.nodes.push(Node::default());
                        let id = self.nodes.len() - 1;
                        self.nodes[node]
                            .literals
                            .push((seg.as_bytes().into(), id as u32));
                        id
                    }
                }
            };
            node = next;
        }
        if tail {
            self.nodes[node].tail.push(route);
        } else {
            self.nodes[node].exact.push(route);
        }
    }

    /// `keys[i]` is route i's sort key: (more specific first, then file order).
    fn sort(&mut self, keys: &[(std::cmp::Reverse<usize>, usize)]) {
        let key = |r: &u32| keys[*r as usize];
        for n in &mut self.nodes {
            n.exact.sort_by_key(key);
            n.tail.sort_by_key(key);
        }
    }
}

/// The compiled routing table.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    pub(super) exact_hosts: HashMap<Box<[u8]>, Trie, ahash::RandomState>,
    /// `*.example.com` as ".example.com", longest suffix first.
    pub(super) suffix_hosts: Vec<(Box<[u8]>, Trie)>,
    pub(super) any_host: Trie,
    /// Routes by index.
    pub routes: Vec<CompiledRoute>,
}

fn matchers(ms: &[Matcher]) -> Vec<(Box<[u8]>, Option<Box<[u8]>>)> {
    ms.iter()
        .map(|m| {
            (
                m.name.as_bytes().into(),
                m.value.as_ref().map(|v| v.as_bytes().into()),
            )
        })
        .collect()
}

fn template(t: &str, pattern: &str) -> Vec<Piece> {
    let params: Vec<&str> = pattern[1..]
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect();
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}').map(|c| c + open) else {
            break;
        };
        if open > 0 {
            out.push(Piece::Lit(rest.as_bytes()[..open].into()));
        }
        let name = &rest[open + 1..close];
        if name == "*" {
            out.push(Piece::Tail);
        } else if let Some(i) = params.iter().position(|p| *p == name) {
            out.push(Piece::Param(i));
        }
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Lit(rest.as_bytes().into()));
    }
    out
}

impl RouteTable {
    /// Compiles the routes of a validated config.
    pub fn compile(cfg: &Config) -> RouteTable {
        let mut t = RouteTable {
            routes: Vec::with_capacity(cfg.routes.len()),
            ..RouteTable::default()
        };
        for (order, r) in cfg.routes.iter().enumerate() {
            let action = match &r.action {
                RouteAction::Proxy(targets) => Action::Proxy(targets.clone()),
                RouteAction::Respond(resp) => {
                    let mut h = String::new();
                    for (k, v) in &resp.headers {
                        h.push_str(k);
                        h.push_str(": ");
                        h.push_str(v);
                        h.push_str("\r\n");
                    }
                    Action::Respond(Direct {
                        status: resp.status,
                        headers: Bytes::from(h),
                        body: Bytes::from(resp.body.clone()),
                    })
                }
            };
            t.routes.push(CompiledRoute {
                name: r.name.clone(),
                methods: r
                    .methods
                    .iter()
                    .flatten()
                    .map(|m| m.as_bytes().into())
                    .collect(),
                headers: matchers(&r.match_headers),
                query: matchers(&r.match_query),
                action,
                strip_prefix: r.strip_prefix.as_ref().map(|s| s.as_bytes().into()),
                rewrite: r.rewrite_path.as_ref().map(|t| template(t, &r.path)),
                host_rewrite: r.host_rewrite.as_ref().map(|s| s.as_bytes().into()),
                max_body_bytes: r.max_body_bytes.unwrap_or(cfg.http.max_body_bytes),
                access: r.access.clone(),
                order,
                allow_encoded_slash: r.allow_encoded_slash,
                forward_path: r.forward_path,
                ip: r.ip.clone(),
                cors: r.cors.clone().map(Box::new),
                request_headers: r.request_headers.clone(),
                response_headers: r.response_headers.clone(),
                hide_backend: r.hide_backend,
                intercept_errors: r.intercept_errors,
                rate_limit: r.rate_limit.clone().into(),
            });
            let tail = r.path.ends_with("/*");
            let idx = order as u32;
            let trie = match &r.host {
                HostPattern::Any => &mut t.any_host,
                // Most routes share their host with others: look up before boxing a new key.
                HostPattern::Exact(h) => match t.exact_hosts.get_mut(h.as_bytes()) {
                    Some(trie) => trie,
                    None => t.exact_hosts.entry(h.as_bytes().into()).or_default(),
                },
                HostPattern::Suffix(s) => {
                    let pos = match t
                        .suffix_hosts
                        .iter()
                        .position(|(k, _)| &**k == s.as_bytes())
                    {
                        Some(p) => p,
                        None => {
                            t.suffix_hosts.push((s.as_bytes().into(), Trie::default()));
                            t.suffix_hosts.len() - 1
                        }
                    };
                    &mut t.suffix_hosts[pos].1
                }
            };
            trie.insert(&r.path, idx, tail);
        }
        t.suffix_hosts
            .sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        // Sort keys only: cloning every route to borrow them while the tries are sorted was a third of compile.
        let keys: Vec<_> = t
            .routes
            .iter()
            .map(|r| (std::cmp::Reverse(r.specificity()), r.order))
            .collect();
        t.any_host.sort(&keys);
        for trie in t.exact_hosts.values_mut() {
            trie.sort(&keys);
        }
        for (_, trie) in t.suffix_hosts.iter_mut() {
            trie.sort(&keys);
        }
        t
    }
}
