//! A route's header rules (`request_headers`, `response_headers` = `{ add, set, remove }`) and the
//! response headers that name the backend's software, hidden by default (`fingerprint`).
//!
//! Values are templates (`"{consumer}"`, `"tenant-{consumer}"`, `{{`/`}}` for literal braces), parsed
//! once per config off the workers into literal and variable segments: writing a rule on the hot path
//! copies bytes into the caller's reused output buffer and allocates nothing. A route without rules pays
//! one `is_empty()`.
//!
//! Protocol-neutral: rules render against `Vars`, a view of the request that any connection driver can
//! fill, and write field lines (`name: value\r\n`), the form the policies' header edits already use; an
//! HTTP/2 encoder can walk `fields()` and `Template::render` instead. This file imports nothing from the
//! crate: config validation calls into it, so any import back would be a cycle. It must never see a
//! socket or a connection.

/// A value a template can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `{consumer}`: the authenticated consumer's name (empty when none).
    Consumer,
    /// `{consumer_groups}`: its groups, comma-separated.
    ConsumerGroups,
    /// `{route}`: the route's name.
    Route,
    /// `{client}`: the client address, as `trusted_proxies` decided it.
    Client,
    /// `{request_id}`: the request id (also sent as `X-Request-Id`).
    RequestId,
    /// `{host}`: the request's Host as received (empty when it had none).
    Host,
    /// `{method}`: the request method.
    Method,
    /// `{path}`: the canonical path the route matched (before `strip_prefix`/`rewrite_path`), no query.
    Path,
}

/// Every variable by its name in a template.
pub const VARS: [(&str, Var); 8] = [
    ("consumer", Var::Consumer),
    ("consumer_groups", Var::ConsumerGroups),
    ("route", Var::Route),
    ("client", Var::Client),
    ("request_id", Var::RequestId),
    ("host", Var::Host),
    ("method", Var::Method),
    ("path", Var::Path),
];

/// What a request offers the templates. Every piece was validated on the way in (consumer names and
/// token claims have no control characters, the head passed the parser, ids are safe characters), so
/// a rendered value is always a valid field value.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vars<'a> {
    pub consumer: &'a [u8],
    pub consumer_groups: &'a [u8],
    pub route: &'a [u8],
    pub client: &'a [u8],
    pub request_id: &'a [u8],
    pub host: &'a [u8],
    pub method: &'a [u8],
    pub path: &'a [u8],
}

impl Vars<'_> {
    fn get(&self, v: Var) -> &[u8] {
        match v {
            Var::Consumer => self.consumer,
            Var::ConsumerGroups => self.consumer_groups,
            Var::Route => self.route,
            Var::Client => self.client,
            Var::RequestId => self.request_id,
            Var::Host => self.host,
            Var::Method => self.method,
            Var::Path => self.path,
        }
    }
}

/// Why a template does not parse. Built at config time only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown variable {{{0}}} (known: {{consumer}}, {{consumer_groups}}, {{route}}, {{client}}, {{request_id}}, {{host}}, {{method}}, {{path}}; write {{{{ and }}}} for literal braces)")]
    UnknownVariable(String),
    #[error("'{{' is not closed (write {{{{ for a literal brace)")]
    Unclosed,
    #[error("'}}' without '{{' (write }}}} for a literal brace)")]
    StrayClose,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(Box<[u8]>),
    Var(Var),
}

/// A parsed value template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    segs: Box<[Seg]>,
}

impl Template {
    /// Parses `{name}` variables and `{{` / `}}` literal braces. Whether the literal text is a valid
    /// field value is the caller's check (it knows which key to name).
    pub fn parse(s: &str) -> Result<Template, TemplateError> {
        let mut segs = Vec::new();
        let mut lit = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'{' if b.get(i + 1) == Some(&b'{') => {
                    lit.push(b'{');
                    i += 2;
                }
                b'}' if b.get(i + 1) == Some(&b'}') => {
                    lit.push(b'}');
                    i += 2;
                }
                b'}' => return Err(TemplateError::StrayClose),
                b'{' => {
                    let close = s[i + 1..].find('}').ok_or(TemplateError::Unclosed)? + i + 1;
                    let name = &s[i + 1..close];
                    let var = VARS
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| *v)
                        .ok_or_else(|| TemplateError::UnknownVariable(name.to_string()))?;
                    if !lit.is_empty() {
                        segs.push(Seg::Lit(std::mem::take(&mut lit).into()));
                    }
                    segs.push(Seg::Var(var));
                    i = close + 1;
                }
                c => {
                    lit.push(c);
                    i += 1;
                }
            }
        }
        if !lit.is_empty() {
            segs.push(Seg::Lit(lit.into()));
        }
        Ok(Template { segs: segs.into() })
    }

    /// Appends the value for `vars` to `out`.
    #[inline]
    pub fn render(&self, out: &mut Vec<u8>, vars: &Vars<'_>) {
        for s in self.segs.iter() {
            match s {
                Seg::Lit(l) => out.extend_from_slice(l),
                Seg::Var(v) => out.extend_from_slice(vars.get(*v)),
            }
        }
    }
}

/// One side's rules, compiled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderRules {
    /// Names whose received fields do not pass (`set` and `remove`), compared case-insensitively.
    drop: Box<[Box<[u8]>]>,
    /// Fields written after the received ones: the `set` rules, then the `add` rules, in file order.
    fields: Box<[(Box<[u8]>, Template)]>,
}

impl HeaderRules {
    /// Rules from validated parts: names are tokens that `reserved` allows, templates parsed.
    pub fn new(
        set: Vec<(String, Template)>,
        add: Vec<(String, Template)>,
        remove: Vec<String>,
    ) -> HeaderRules {
        let drop = set
            .iter()
            .map(|(n, _)| n.as_bytes().into())
            .chain(remove.iter().map(|n| n.as_bytes().into()))
            .collect();
        let fields = set
            .into_iter()
            .chain(add)
            .map(|(n, t)| (n.into_bytes().into_boxed_slice(), t))
            .collect();
        HeaderRules { drop, fields }
    }

    /// No rule at all: the only thing a route without rules pays for.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.drop.is_empty() && self.fields.is_empty()
    }

    /// Whether a received field named `name` is dropped (a `set` replaces it, a `remove` removes it).
    #[inline]
    pub fn drops(&self, name: &[u8]) -> bool {
        self.drop
            .iter()
            .any(|d| d.len() == name.len() && d.eq_ignore_ascii_case(name))
    }

    /// The fields the rules write, with their value templates.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &Template)> {
        self.fields.iter().map(|(n, t)| (&**n, t))
    }

    /// Appends the rules' fields as `name: value\r\n` lines. A field whose value renders empty (say
    /// `{consumer}` on a request without one) is left out rather than sent empty, as nginx does.
    pub fn write_fields(&self, out: &mut Vec<u8>, vars: &Vars<'_>) {
        for (name, t) in self.fields.iter() {
            let start = out.len();
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            let value_at = out.len();
            t.render(out, vars);
            if out.len() == value_at {
                out.truncate(start);
            } else {
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Appends the field lines of `lines` (`name: value\r\n` each, as policies write them) that the
    /// rules do not drop, so a `set` or `remove` also reaches headers a policy added.
    pub fn copy_kept(&self, out: &mut Vec<u8>, lines: &[u8]) {
        let mut rest = lines;
        while !rest.is_empty() {
            let end = memchr::memmem::find(rest, b"\r\n").map_or(rest.len(), |i| i + 2);
            let line = &rest[..end];
            let name = memchr::memchr(b':', line).map_or(line, |i| &line[..i]);
            if !self.drops(name) {
                out.extend_from_slice(line);
            }
            rest = &rest[end..];
        }
    }
}

/// Response headers that name the software behind the gateway, removed from upstream responses unless
/// the route sets `hide_backend = false`. `Via` is not among them: it is protocol information a proxy
/// chain relies on to find loops (RFC 9110 §7.6.3), not a product banner.
pub const FINGERPRINTS: [&str; 6] = [
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
    "x-runtime",
    "x-backend-server",
];

/// Whether `name` is one of `FINGERPRINTS` (any case). Matched on the length first: runs for every
/// upstream response header.
#[inline]
pub fn fingerprint(name: &[u8]) -> bool {
    let eq = |s: &[u8]| name.eq_ignore_ascii_case(s);
    match name.len() {
        6 => eq(b"server"),
        9 => eq(b"x-runtime"),
        12 => eq(b"x-powered-by"),
        16 => eq(b"x-aspnet-version") || eq(b"x-backend-server"),
        19 => eq(b"x-aspnetmvc-version"),
        _ => false,
    }
}

/// Which message a rule edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The request sent upstream.
    Request,
    /// The response sent to the client.
    Response,
}

/// Why a rule may not name `name` on `side`, if it may not. Framing and hop-by-hop headers belong to
/// each connection, and a rule that wrote them could desynchronise a peer (RFC 9110 §7.6.1, RFC 9112
/// §6); the others sluice sets itself and a backend relies on them being sluice's.
pub fn reserved(name: &str, side: Side) -> Option<&'static str> {
    const FRAMING: [&str; 9] = [
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "keep-alive",
        "te",
        "trailer",
        "proxy-connection",
        "proxy-authorization",
    ];
    const REQUEST_OWN: [&str; 7] = [
        "host",
        "expect",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
        "traceparent",
    ];
    let is = |list: &[&str]| list.iter().any(|n| n.eq_ignore_ascii_case(name));
    if is(&FRAMING) {
        return Some("framing and hop-by-hop headers are set per connection by sluice itself");
    }
    match side {
        Side::Request if is(&REQUEST_OWN) => {
            Some("set by sluice itself on every upstream request (use host_rewrite for Host)")
        }
        Side::Response if name.eq_ignore_ascii_case("x-request-id") => {
            Some("set by sluice itself on every response")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            consumer: b"alice",
            consumer_groups: b"gold,beta",
            route: b"api",
            client: b"203.0.113.7",
            request_id: b"rid",
            host: b"api.example.com",
            method: b"GET",
            path: b"/v1/x",
        }
    }

    fn render(t: &str) -> String {
        let mut out = Vec::new();
        Template::parse(t).unwrap().render(&mut out, &vars());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn templates_render_every_variable_and_literal_braces() {
        assert_eq!(render("plain"), "plain");
        assert_eq!(render(""), "");
        assert_eq!(
            render(
                "{consumer}/{consumer_groups}/{route}/{client}/{request_id}/{host}/{method}/{path}"
            ),
            "alice/gold,beta/api/203.0.113.7/rid/api.example.com/GET//v1/x"
        );
        assert_eq!(render("{{consumer}} = {consumer}"), "{consumer} = alice");
        assert_eq!(render("a}}b{{"), "a}b{");
    }

    #[test]
    fn bad_templates_say_why() {
        assert_eq!(
            Template::parse("{tenant}"),
            Err(TemplateError::UnknownVariable("tenant".into()))
        );
        assert_eq!(
            Template::parse("{}"),
            Err(TemplateError::UnknownVariable(String::new()))
        );
        assert_eq!(Template::parse("x{consumer"), Err(TemplateError::Unclosed));
        assert_eq!(Template::parse("x}"), Err(TemplateError::StrayClose));
        assert!(TemplateError::UnknownVariable("t".into())
            .to_string()
            .contains("{consumer}"));
    }

    fn rules() -> HeaderRules {
        let t = |s: &str| Template::parse(s).unwrap();
        HeaderRules::new(
            vec![("X-Route".into(), t("{route}"))],
            vec![
                ("X-Tenant".into(), t("{consumer}")),
                ("X-Lit".into(), t("1")),
            ],
            vec!["X-Debug".into()],
        )
    }

    #[test]
    fn set_and_remove_drop_received_fields_and_set_then_add_are_written() {
        let r = rules();
        assert!(!r.is_empty());
        assert!(HeaderRules::default().is_empty());
        assert!(r.drops(b"x-route") && r.drops(b"X-DEBUG"));
        assert!(!r.drops(b"x-tenant") && !r.drops(b"x-debu"));
        let mut out = Vec::new();
        r.write_fields(&mut out, &vars());
        assert_eq!(out, b"X-Route: api\r\nX-Tenant: alice\r\nX-Lit: 1\r\n");
        // No consumer: the field that would be empty is left out.
        out.clear();
        let none = Vars {
            consumer: b"",
            ..vars()
        };
        r.write_fields(&mut out, &none);
        assert_eq!(out, b"X-Route: api\r\nX-Lit: 1\r\n");
    }

    #[test]
    fn copy_kept_filters_policy_lines() {
        let mut out = Vec::new();
        rules().copy_kept(
            &mut out,
            b"vary: Origin\r\nx-debug: 1\r\nX-Route: old\r\naccess-control-allow-origin: *\r\n",
        );
        assert_eq!(out, b"vary: Origin\r\naccess-control-allow-origin: *\r\n");
    }

    #[test]
    fn fingerprints_match_their_list_in_any_case() {
        for n in FINGERPRINTS {
            assert!(fingerprint(n.as_bytes()), "{n}");
            assert!(fingerprint(n.to_ascii_uppercase().as_bytes()), "{n}");
        }
        for n in ["via", "date", "content-type", "servers", "x-request-id"] {
            assert!(!fingerprint(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn framing_and_own_headers_are_reserved() {
        for n in [
            "Content-Length",
            "transfer-encoding",
            "Connection",
            "Upgrade",
        ] {
            assert!(reserved(n, Side::Request).is_some(), "{n}");
            assert!(reserved(n, Side::Response).is_some(), "{n}");
        }
        assert!(reserved("Host", Side::Request).is_some());
        assert!(reserved("Host", Side::Response).is_none());
        assert!(reserved("X-Request-Id", Side::Response).is_some());
        assert!(reserved("Authorization", Side::Request).is_none());
        assert!(reserved("Cache-Control", Side::Response).is_none());
    }
}
