//! Micro-benchmarks of the per-request CPU work: head parse, route lookup, endpoint pick, response-head
//! rewrite, chunked scan, path normalisation; and the pieces of a large config's reload.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sluice::config::{parse, Source};
use sluice::conn::h1::response::{write_head, Rewrite};
use sluice::http1::chunked::ChunkedDecoder;
use sluice::http1::head::{Limits, RequestHead, ResponseHead};
use sluice::http1::path;
use sluice::policy::headers::{HeaderRules, Template, Vars};
use sluice::router::RouteTable;
use sluice::snapshot::Snapshot;
use sluice::upstream::Group;
use std::sync::Arc;
use std::time::Instant;

const BROWSER: &[u8] = b"GET /static/app.js?v=3 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\nAccept: */*\r\nAccept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\nReferer: https://www.example.com/\r\nCookie: session=abc123; theme=dark\r\nConnection: keep-alive\r\n\r\n";

fn api_request() -> Vec<u8> {
    let mut r =
        b"POST /v1/orders/12345/items HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 0\r\n"
            .to_vec();
    for i in 0..27 {
        r.extend_from_slice(
            format!("X-Custom-Header-{i}: value-{i}-abcdefghijklmnop\r\n").as_bytes(),
        );
    }
    r.extend_from_slice(b"\r\n");
    r
}

const LIMITS: Limits = Limits {
    max_header_bytes: 65536,
    max_headers: 100,
    max_uri_bytes: 8192,
};

fn bench_parse(c: &mut Criterion) {
    let api = api_request();
    let mut head = RequestHead::default();
    let mut buf = BytesMut::with_capacity(16384);
    for (name, req) in [
        ("parse_browser_8_headers", BROWSER),
        ("parse_api_30_headers", &api[..]),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(req);
                black_box(head.parse(&mut buf, &LIMITS).unwrap());
            })
        });
    }
}

/// A typical upstream response head: 9 headers, one of them hop-by-hop.
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 23 Nov 2026 18:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 1234\r\nConnection: keep-alive\r\nCache-Control: private, max-age=60\r\nETag: \"5f3c-61a2b3c4d5e6f\"\r\nVary: Accept-Encoding\r\nX-Upstream-Time: 0.004\r\n\r\n";

fn bench_response(c: &mut Criterion) {
    let mut resp = ResponseHead::default();
    let mut buf = BytesMut::with_capacity(16384);
    let mut out = Vec::with_capacity(1024);
    c.bench_function("parse_response_9_headers", |b| {
        b.iter(|| {
            resp.release();
            buf.clear();
            buf.extend_from_slice(RESPONSE);
            black_box(resp.parse(&mut buf, false, 65536).unwrap());
        })
    });
    resp.release();
    buf.clear();
    buf.extend_from_slice(RESPONSE);
    resp.parse(&mut buf, false, 65536).unwrap();
    let rewrite = Rewrite {
        id: b"0123456789abcdef0123456789abcdef",
        set_cookie: None,
        extra: b"",
        rules: None,
        hide_backend: true,
        client_minor: 1,
        chunked: false,
        client_keep: true,
    };
    c.bench_function("rewrite_response_head_9_headers", |b| {
        b.iter(|| {
            write_head(&mut out, black_box(&resp), &rewrite);
            black_box(out.len())
        })
    });
    // The same head through a route with response rules: one set, one add with two variables, one remove.
    let t = |s: &str| Template::parse(s).unwrap();
    let rules = HeaderRules::new(
        vec![("Cache-Control".into(), t("no-store"))],
        vec![("X-Trace".into(), t("{route} {request_id}"))],
        vec!["X-Upstream-Time".into()],
    );
    let vars = Vars {
        route: b"api",
        request_id: b"0123456789abcdef0123456789abcdef",
        ..Vars::default()
    };
    let ruled = Rewrite {
        rules: Some((&rules, &vars)),
        ..rewrite
    };
    c.bench_function("rewrite_response_head_9_headers_rules", |b| {
        b.iter(|| {
            write_head(&mut out, black_box(&resp), &ruled);
            black_box(out.len())
        })
    });
}

fn many_routes() -> String {
    let mut s = String::from(
        "[listeners.a]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\nendpoints = [\"127.0.0.1:1\"]\n",
    );
    for i in 0..10_000 {
        s.push_str(&format!("[routes.r{i}]\nhost = \"h{}.example.com\"\npath = \"/api/v{}/items/{{id}}\"\nupstream = \"u\"\n", i % 1000, i / 1000));
    }
    s
}

fn bench_route(c: &mut Criterion) {
    let cfg = parse(&many_routes(), Source::Embedded).unwrap();
    let table = RouteTable::compile(&cfg);
    let mut head = RequestHead::default();
    let mut buf =
        BytesMut::from(&b"GET /api/v7/items/42 HTTP/1.1\r\nHost: h777.example.com\r\n\r\n"[..]);
    head.parse(&mut buf, &LIMITS).unwrap();
    c.bench_function("route_lookup_10k_routes", |b| {
        b.iter(|| black_box(table.lookup(head.host(), head.path(), &head).unwrap().route))
    });
}

fn bench_pick(c: &mut Criterion) {
    let cfg = parse(
        "[listeners.a]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\nendpoints = [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\", \"127.0.0.1:4\"]\nbalancer = \"least_request\"\n[upstreams.rr]\nendpoints = [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\", \"127.0.0.1:4\"]\n",
        Source::Embedded,
    )
    .unwrap();
    let snap = Snapshot::build(Arc::new(cfg), 1).unwrap();
    let now = Instant::now();
    let mut lr = Group::new(&snap.upstreams[0], 0, 1);
    let mut rr = Group::new(&snap.upstreams[1], 0, 1);
    c.bench_function("pick_least_request_4", |b| {
        b.iter(|| black_box(lr.pick(None, None, now)))
    });
    c.bench_function("pick_round_robin_4", |b| {
        b.iter(|| black_box(rr.pick(None, None, now)))
    });
}

/// The canonical path every request pays for (one scan, no copy), and a dirty one that takes the
/// rewrite (escapes of both cases, dot segments, a double slash) into a warm reusable buffer.
fn bench_path(c: &mut Criterion) {
    let mut out = Vec::with_capacity(256);
    let clean: &[u8] = b"/v1/orders/12345/items/.well-known/app.js";
    let dirty: &[u8] = b"/v1/%6Frders/./12345//items/%2e%2E/items/caf%c3%a9/app.js";
    c.bench_function("path_normalise_canonical", |b| {
        b.iter(|| black_box(path::normalise(black_box(clean), true, &mut out).unwrap()))
    });
    c.bench_function("path_normalise_dirty", |b| {
        b.iter(|| black_box(path::normalise(black_box(dirty), true, &mut out).unwrap()))
    });
}

fn bench_chunked(c: &mut Criterion) {
    let mut body = Vec::new();
    for _ in 0..16 {
        body.extend_from_slice(b"1000\r\n");
        body.extend_from_slice(&[b'x'; 4096]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    c.bench_function("chunked_scan_64k", |b| {
        b.iter(|| {
            let mut d = ChunkedDecoder::new();
            black_box(d.feed(&body, |_| ()).unwrap())
        })
    });
}

/// The stages of a reload of 10,000 routes over 1,000 hosts (the load test's `routes` scenario shape).
fn bench_reload(c: &mut Criterion) {
    let text = many_routes();
    let mut g = c.benchmark_group("reload_10k_routes");
    g.sample_size(10);
    g.bench_function("toml_deserialize", |b| {
        b.iter(|| black_box(toml::from_str::<sluice::config::ConfigToml>(&text).unwrap()))
    });
    g.bench_function("parse_and_validate", |b| {
        b.iter(|| black_box(parse(&text, Source::Embedded).unwrap()))
    });
    let cfg = Arc::new(parse(&text, Source::Embedded).unwrap());
    g.bench_function("compile_snapshot", |b| {
        b.iter(|| black_box(Snapshot::build(cfg.clone(), 2).unwrap()))
    });
    let snap = Snapshot::build(cfg.clone(), 2).unwrap();
    g.bench_function("clone_snapshot", |b| b.iter(|| black_box(snap.clone())));
    g.finish();
}

/// JWT checks: an uncached RS256 and ES256 verification (signature + claims) and a cache hit.
fn bench_jwt(c: &mut Criterion) {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use sluice::policy::jwt::JwtState;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/jwt");
    let cfg = parse(
        &format!(
            "[listeners.a]\nlisten = \"127.0.0.1:0\"\n[auth.corp]\ntype = \"jwt\"\njwks_file = \"{dir}/jwks.json\"\naudiences = [\"api\"]\n"
        ),
        Source::Embedded,
    )
    .unwrap();
    let snap = Snapshot::build(Arc::new(cfg), 1).unwrap();
    let v = &snap.jwt[0];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims =
        serde_json::json!({ "sub": "alice", "aud": "api", "exp": now + 3600, "scope": "a b" });
    let sign = |alg, kid: &str, key: &EncodingKey| {
        let mut h = Header::new(alg);
        h.kid = Some(kid.into());
        encode(&h, &claims, key).unwrap()
    };
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(format!("{dir}/rsa_private.pem")).unwrap())
        .unwrap();
    let ec = EncodingKey::from_ec_pem(&std::fs::read(format!("{dir}/ec256_private.pem")).unwrap())
        .unwrap();
    let rs256 = sign(Algorithm::RS256, "rsa1", &rsa);
    let es256 = sign(Algorithm::ES256, "ec1", &ec);
    c.bench_function("jwt_verify_rs256_uncached", |b| {
        b.iter(|| black_box(v.verify(rs256.as_bytes(), now).unwrap()))
    });
    c.bench_function("jwt_verify_es256_uncached", |b| {
        b.iter(|| black_box(v.verify(es256.as_bytes(), now).unwrap()))
    });
    let mut st = JwtState::default();
    st.verify(v, rs256.as_bytes(), now).unwrap();
    c.bench_function("jwt_verify_cached", |b| {
        b.iter(|| black_box(st.verify(v, rs256.as_bytes(), now).unwrap()))
    });
}

criterion_group!(
    benches,
    bench_jwt,
    bench_parse,
    bench_route,
    bench_pick,
    bench_response,
    bench_chunked,
    bench_path,
    bench_reload
);
criterion_main!(benches);
