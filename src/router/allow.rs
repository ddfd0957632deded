//! The `Allow` list of a 405: after a lookup found no route, which methods routes matching the host,
//! path, headers and query would have taken. It walks every branch the lookup could have taken
//! (every host class that applies, every literal, `{param}` and `*` way down the trie) and collects
//! the methods of the routes found there. It runs only after a miss, so the plain lookup pays nothing
//! for it; it allocates, which a 404 or 405 may.

use super::compile::{CompiledRoute, RouteTable, Trie};
use super::lookup::{normalize_host, query_param, RouteInput};

impl RouteTable {
    /// After `lookup` returned None: writes `allow: GET, POST\r\n` into `out` and returns true when
    /// routes match everything but the method (then the answer is 405, RFC 9110 §15.5.6), else
    /// returns false (404). Methods are listed as configured, in route file order, each once.
    pub fn allow_header<R: RouteInput>(
        &self,
        host: Option<&[u8]>,
        path: &[u8],
        req: &R,
        out: &mut Vec<u8>,
    ) -> bool {
        let path: &[u8] = if path.is_empty() { b"/" } else { path };
        let mut found: Vec<u32> = Vec::new();
        let mut lower = [0u8; 256];
        if let Some(h) = host.and_then(|h| normalize_host(h, &mut lower)) {
            if let Some(trie) = self.exact_hosts.get(h) {
                collect(trie, 0, path, 1, &mut found);
            }
            for (suffix, trie) in &self.suffix_hosts {
                if h.len() > suffix.len() && h.ends_with(suffix) {
                    collect(trie, 0, path, 1, &mut found);
                }
            }
        }
        collect(&self.any_host, 0, path, 1, &mut found);
        found.sort_unstable();
        found.dedup();
        let mut methods: Vec<&[u8]> = Vec::new();
        for r in found {
            let route = &self.routes[r as usize];
            if !matches_besides_method(route, req) {
                continue;
            }
            for m in &route.methods {
                if !methods.contains(&&**m) {
                    methods.push(m);
                }
            }
        }
        if methods.is_empty() {
            return false;
        }
        out.extend_from_slice(b"allow: ");
        for (i, m) in methods.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(m);
        }
        out.extend_from_slice(b"\r\n");
        true
    }
}

/// Every route whose pattern matches `path` from `node` (at segment start `pos`), whatever its
/// matchers say: the lookup's walk without its early return.
fn collect(trie: &Trie, node: usize, path: &[u8], pos: usize, found: &mut Vec<u32>) {
    let n = &trie.nodes[node];
    if pos > path.len() {
        found.extend_from_slice(&n.exact);
        found.extend_from_slice(&n.tail);
        return;
    }
    let end = memchr::memchr(b'/', &path[pos..]).map_or(path.len(), |i| pos + i);
    let seg = &path[pos..end];
    for (lit, child) in &n.literals {
        if &**lit == seg {
            collect(trie, *child as usize, path, end + 1, found);
        }
    }
    if let Some(child) = n.param {
        if !seg.is_empty() {
            collect(trie, child as usize, path, end + 1, found);
        }
    }
    found.extend_from_slice(&n.tail);
}

/// The route's header and query matchers accept the request (its method is not asked).
fn matches_besides_method<R: RouteInput>(r: &CompiledRoute, req: &R) -> bool {
    let headers = r
        .headers
        .iter()
        .all(|(name, want)| match (req.header(name), want) {
            (None, _) => false,
            (Some(v), Some(w)) => crate::http1::head::trim(v) == &**w,
            (Some(_), None) => true,
        });
    let query = r
        .query
        .iter()
        .all(|(key, want)| match (query_param(req.query(), key), want) {
            (None, _) => false,
            (Some(v), Some(w)) => v == &**w,
            (Some(_), None) => true,
        });
    headers && query
}

#[cfg(test)]
mod tests {
    use super::super::lookup::tests::table;
    use super::super::lookup::RouteInput;
    use super::*;

    struct Req(&'static [u8], Option<&'static [u8]>);
    impl RouteInput for Req {
        fn method(&self) -> &[u8] {
            self.0
        }
        fn header(&self, n: &[u8]) -> Option<&[u8]> {
            (n == b"x-v").then_some(self.1).flatten()
        }
        fn query(&self) -> Option<&[u8]> {
            None
        }
    }

    fn allow(t: &RouteTable, host: Option<&str>, path: &str, req: &Req) -> Option<String> {
        assert!(t
            .lookup(host.map(str::as_bytes), path.as_bytes(), req)
            .is_none());
        let mut out = Vec::new();
        t.allow_header(host.map(str::as_bytes), path.as_bytes(), req, &mut out)
            .then(|| String::from_utf8(out).unwrap())
    }

    #[test]
    fn methods_of_every_route_on_the_path_in_file_order() {
        let t = table(
            "[routes.get]\npath = \"/x\"\nmethods = [\"GET\"]\nupstream = \"u\"\n\
             [routes.item]\npath = \"/{id}\"\nmethods = [\"PUT\", \"GET\"]\nupstream = \"u\"\n\
             [routes.tail]\npath = \"/x/*\"\nmethods = [\"DELETE\"]\nupstream = \"u\"\n\
             [routes.other]\npath = \"/y\"\nmethods = [\"PATCH\"]\nupstream = \"u\"\n\
             [routes.host]\nhost = \"*.example.com\"\npath = \"/x\"\nmethods = [\"OPTIONS\"]\nupstream = \"u\"\n",
        );
        let post = Req(b"POST", None);
        assert_eq!(
            allow(&t, None, "/x", &post).as_deref(),
            Some("allow: GET, PUT, DELETE\r\n")
        );
        assert_eq!(
            allow(&t, Some("a.example.com"), "/x", &post).as_deref(),
            Some("allow: GET, PUT, DELETE, OPTIONS\r\n")
        );
        assert_eq!(allow(&t, None, "/z/q", &post), None);
        assert_eq!(
            allow(&t, None, "/x/q", &post).as_deref(),
            Some("allow: DELETE\r\n")
        );
    }

    #[test]
    fn routes_whose_other_matchers_fail_are_not_offered() {
        let t = table(
            "[routes.v]\npath = \"/x\"\nmethods = [\"GET\"]\nmatch_headers = { \"x-v\" = \"2\" }\nupstream = \"u\"\n",
        );
        assert_eq!(allow(&t, None, "/x", &Req(b"POST", None)), None);
        assert_eq!(allow(&t, None, "/x", &Req(b"POST", Some(b"1"))), None);
        assert_eq!(
            allow(&t, None, "/x", &Req(b"POST", Some(b"2"))).as_deref(),
            Some("allow: GET\r\n")
        );
    }
}
