//! Route lookup: host class, then a backtracking walk of the path trie (literal, then `{param}`, then `*`),
//! then method/header/query matchers at the leaf. Allocation-free: captures live in a fixed array.

use super::compile::{CompiledRoute, Piece, RouteTable, Trie};
use super::MAX_PARAMS;

/// What the matchers need from a request, independent of the HTTP version.
pub trait RouteInput {
    fn method(&self) -> &[u8];
    /// First value of a header, by lowercase name.
    fn header(&self, lower_name: &[u8]) -> Option<&[u8]>;
    /// Raw query string (after '?').
    fn query(&self) -> Option<&[u8]>;
}

/// A successful lookup: the route and what the pattern captured (offsets into the path).
#[derive(Debug, Clone, Copy)]
pub struct Match {
    /// Index into `RouteTable::routes`.
    pub route: u32,
    params: [(u32, u32); MAX_PARAMS],
    nparams: u8,
    tail: Option<(u32, u32)>,
}

impl Match {
    /// The n-th captured parameter.
    pub fn param<'a>(&self, path: &'a [u8], n: usize) -> &'a [u8] {
        if n >= self.nparams as usize {
            return b"";
        }
        let (s, e) = self.params[n];
        &path[s as usize..e as usize]
    }
    /// What the trailing `*` matched (no leading slash).
    pub fn tail<'a>(&self, path: &'a [u8]) -> &'a [u8] {
        self.tail
            .map_or(b"", |(s, e)| &path[s as usize..e as usize])
    }
}

struct Walk<'a, R: RouteInput> {
    routes: &'a [CompiledRoute],
    path: &'a [u8],
    req: &'a R,
    m: Match,
}

impl RouteTable {
    /// Finds the route for a request. `host` may carry a port; `path` excludes the query.
    pub fn lookup<R: RouteInput>(
        &self,
        host: Option<&[u8]>,
        path: &[u8],
        req: &R,
    ) -> Option<Match> {
        let path: &[u8] = if path.is_empty() { b"/" } else { path };
        let mut w = Walk {
            routes: &self.routes,
            path,
            req,
            m: Match {
                route: 0,
                params: [(0, 0); MAX_PARAMS],
                nparams: 0,
                tail: None,
            },
        };
        let mut lower = [0u8; 256];
        if let Some(h) = host.and_then(|h| normalize_host(h, &mut lower)) {
            if let Some(trie) = self.exact_hosts.get(h) {
                if let Some(m) = w.find(trie) {
                    return Some(m);
                }
            }
            for (suffix, trie) in &self.suffix_hosts {
                if h.len() > suffix.len() && h.ends_with(suffix) {
                    if let Some(m) = w.find(trie) {
                        return Some(m);
                    }
                }
            }
        }
        w.find(&self.any_host)
    }
}

/// Lowercases the host and drops the port, into `out`. None if it does not fit.
pub(super) fn normalize_host<'a>(h: &[u8], out: &'a mut [u8; 256]) -> Option<&'a [u8]> {
    let h = if h.first() == Some(&b'[') {
        let end = memchr::memchr(b']', h)?;
        &h[..=end]
    } else {
        match memchr::memrchr(b':', h) {
            Some(c) => &h[..c],
            None => h,
        }
    };
    let h = h.strip_suffix(b".").unwrap_or(h);
    if h.len() > out.len() {
        return None;
    }
    for (o, b) in out.iter_mut().zip(h) {
        *o = b.to_ascii_lowercase();
    }
    Some(&out[..h.len()])
}

impl<R: RouteInput> Walk<'_, R> {
    fn find(&mut self, trie: &Trie) -> Option<Match> {
        self.m.nparams = 0;
        self.m.tail = None;
        if self.walk(trie, 0, 1) {
            Some(self.m)
        } else {
            None
        }
    }

    /// `pos` is the start of the next segment; `pos > path.len()` means no segments remain.
    fn walk(&mut self, trie: &Trie, node: usize, pos: usize) -> bool {
        let n = &trie.nodes[node];
        if pos > self.path.len() {
            if self.pick(&n.exact) {
                return true;
            }
            self.m.tail = Some((self.path.len() as u32, self.path.len() as u32));
            return self.pick(&n.tail);
        }
        let end = memchr::memchr(b'/', &self.path[pos..]).map_or(self.path.len(), |i| pos + i);
        let seg = &self.path[pos..end];
        for (lit, child) in &n.literals {
            if &**lit == seg && self.walk(trie, *child as usize, end + 1) {
                return true;
            }
        }
        if let Some(child) = n.param {
            let k = self.m.nparams as usize;
            if !seg.is_empty() && k < MAX_PARAMS {
                self.m.params[k] = (pos as u32, end as u32);
                self.m.nparams += 1;
                if self.walk(trie, child as usize, end + 1) {
                    return true;
                }
                self.m.nparams -= 1;
            }
        }
        if !n.tail.is_empty() {
            self.m.tail = Some((pos as u32, self.path.len() as u32));
            return self.pick(&n.tail);
        }
        false
    }

    fn pick(&mut self, candidates: &[u32]) -> bool {
        for &r in candidates {
            if accepts(&self.routes[r as usize], self.req) {
                self.m.route = r;
                return true;
            }
        }
        false
    }
}

fn accepts<R: RouteInput>(r: &CompiledRoute, req: &R) -> bool {
    if !r.methods.is_empty() && !r.methods.iter().any(|m| &**m == req.method()) {
        return false;
    }
    for (name, want) in &r.headers {
        match (req.header(name), want) {
            (None, _) => return false,
            (Some(v), Some(w)) if crate::http1::head::trim(v) != &**w => return false,
            _ => {}
        }
    }
    for (key, want) in &r.query {
        match (query_param(req.query(), key), want) {
            (None, _) => return false,
            (Some(v), Some(w)) if v != &**w => return false,
            _ => {}
        }
    }
    true
}

/// Finds `key` in a raw query string; values are compared undecoded.
pub fn query_param<'a>(query: Option<&'a [u8]>, key: &[u8]) -> Option<&'a [u8]> {
    for pair in query?.split(|&b| b == b'&') {
        let (k, v) = match memchr::memchr(b'=', pair) {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        if k == key {
            return Some(v);
        }
    }
    None
}

/// Writes the path to send upstream for a matched route into `out`.
pub fn upstream_path(route: &CompiledRoute, m: &Match, path: &[u8], out: &mut Vec<u8>) {
    let path: &[u8] = if path.is_empty() { b"/" } else { path };
    if let Some(pieces) = &route.rewrite {
        for p in pieces {
            match p {
                Piece::Lit(l) => out.extend_from_slice(l),
                Piece::Param(i) => out.extend_from_slice(m.param(path, *i)),
                Piece::Tail => out.extend_from_slice(m.tail(path)),
            }
        }
        return;
    }
    if let Some(prefix) = &route.strip_prefix {
        if let Some(rest) = path.strip_prefix(&**prefix) {
            if rest.is_empty() {
                out.push(b'/');
                return;
            }
            if rest[0] == b'/' {
                out.extend_from_slice(rest);
                return;
            }
        }
    }
    out.extend_from_slice(path);
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::{parse, Source};

    struct Req<'a> {
        method: &'a [u8],
        headers: &'a [(&'a [u8], &'a [u8])],
        query: Option<&'a [u8]>,
    }
    impl RouteInput for Req<'_> {
        fn method(&self) -> &[u8] {
            self.method
        }
        fn header(&self, n: &[u8]) -> Option<&[u8]> {
            self.headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
        }
        fn query(&self) -> Option<&[u8]> {
            self.query
        }
    }
    const GET: Req = Req {
        method: b"GET",
        headers: &[],
        query: None,
    };

    /// A table of `routes` (TOML) in front of one upstream `u`; the allow-list tests use it too.
    pub(in crate::router) fn table(routes: &str) -> RouteTable {
        let cfg = parse(
            &format!("[listeners.a]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\nendpoints = [\"127.0.0.1:1\"]\n{routes}"),
            Source::Embedded,
        )
        .unwrap();
        RouteTable::compile(&cfg)
    }

    fn name(t: &RouteTable, host: Option<&str>, path: &str, req: &Req) -> Option<String> {
        t.lookup(host.map(str::as_bytes), path.as_bytes(), req)
            .map(|m| t.routes[m.route as usize].name.clone())
    }

    #[test]
    fn precedence() {
        let t = table(
            "[routes.all]\npath = \"/*\"\nupstream = \"u\"\n\
             [routes.users]\npath = \"/users/{id}\"\nupstream = \"u\"\n\
             [routes.me]\npath = \"/users/me\"\nupstream = \"u\"\n\
             [routes.posts]\npath = \"/users/{id}/posts\"\nupstream = \"u\"\n\
             [routes.api]\npath = \"/api/*\"\nupstream = \"u\"\n\
             [routes.api_post]\npath = \"/api/*\"\nmethods = [\"POST\"]\nupstream = \"u\"\n\
             [routes.host]\nhost = \"a.example.com\"\npath = \"/*\"\nupstream = \"u\"\n\
             [routes.wild]\nhost = \"*.example.com\"\npath = \"/x\"\nupstream = \"u\"\n",
        );
        assert_eq!(name(&t, None, "/users/me", &GET).as_deref(), Some("me"));
        assert_eq!(name(&t, None, "/users/42", &GET).as_deref(), Some("users"));
        assert_eq!(
            name(&t, None, "/users/42/posts", &GET).as_deref(),
            Some("posts")
        );
        assert_eq!(
            name(&t, None, "/users/me/posts", &GET).as_deref(),
            Some("posts")
        );
        assert_eq!(name(&t, None, "/users/", &GET).as_deref(), Some("all"));
        assert_eq!(name(&t, None, "/api", &GET).as_deref(), Some("api"));
        assert_eq!(
            name(
                &t,
                None,
                "/api/x/y",
                &Req {
                    method: b"POST",
                    headers: &[],
                    query: None
                }
            )
            .as_deref(),
            Some("api_post")
        );
        assert_eq!(name(&t, None, "/apix", &GET).as_deref(), Some("all"));
        assert_eq!(
            name(&t, Some("A.Example.com:8080"), "/x", &GET).as_deref(),
            Some("host")
        );
        assert_eq!(
            name(&t, Some("b.example.com"), "/x", &GET).as_deref(),
            Some("wild")
        );
        assert_eq!(
            name(&t, Some("b.example.com"), "/y", &GET).as_deref(),
            Some("all")
        );
        assert_eq!(
            name(&t, Some("example.com"), "/x", &GET).as_deref(),
            Some("all")
        );
    }

    #[test]
    fn matchers_and_rewrite() {
        let t = table(
            "[routes.canary]\npath = \"/*\"\nmatch_headers = { \"x-canary\" = \"1\" }\nupstream = \"u\"\n\
             [routes.debug]\npath = \"/*\"\nmatch_query = { debug = \"*\" }\nupstream = \"u\"\n\
             [routes.v2]\npath = \"/old/{id}/*\"\nrewrite_path = \"/new/{id}/x/{*}\"\nupstream = \"u\"\n\
             [routes.strip]\npath = \"/v1/*\"\nstrip_prefix = \"/v1\"\nupstream = \"u\"\n",
        );
        let canary = Req {
            method: b"GET",
            headers: &[(b"x-canary", b"1")],
            query: None,
        };
        assert_eq!(name(&t, None, "/z", &canary).as_deref(), Some("canary"));
        let dbg = Req {
            method: b"GET",
            headers: &[],
            query: Some(b"a=1&debug"),
        };
        assert_eq!(name(&t, None, "/z", &dbg).as_deref(), Some("debug"));
        assert_eq!(name(&t, None, "/z", &GET), None);
        let m = t.lookup(None, b"/old/7/a/b", &GET).unwrap();
        let mut out = Vec::new();
        upstream_path(&t.routes[m.route as usize], &m, b"/old/7/a/b", &mut out);
        assert_eq!(out, b"/new/7/x/a/b");
        let m = t.lookup(None, b"/v1/users", &GET).unwrap();
        out.clear();
        upstream_path(&t.routes[m.route as usize], &m, b"/v1/users", &mut out);
        assert_eq!(out, b"/users");
        let m = t.lookup(None, b"/v1", &GET).unwrap();
        out.clear();
        upstream_path(&t.routes[m.route as usize], &m, b"/v1", &mut out);
        assert_eq!(out, b"/");
    }
}
