//! Property test through the real binary: for any method, path, query,
//! end-to-end headers, body and framing (Content-Length or chunked with any
//! chunk size), the backend sees exactly what the client sent, and the
//! response comes back intact on the same keep-alive connection.

mod common;

use common::client::chunked;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

#[derive(Debug, Clone)]
struct Case {
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunk: Option<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);
    // `.` and `..` segments are normalised away before forwarding (tests/path_normalise.rs): a
    // round trip compares what was sent, so they are left out here.
    let segment = "[a-zA-Z0-9._~-]{1,10}".prop_filter("a dot segment", |s| s != "." && s != "..");
    let path = (
        prop::collection::vec(segment, 1..4),
        prop::option::of("[a-z]{1,5}=[a-zA-Z0-9%]{0,8}"),
    )
        .prop_map(|(segs, q)| {
            let mut p = format!("/{}", segs.join("/"));
            if let Some(q) = q {
                p.push('?');
                p.push_str(&q);
            }
            p
        });
    let value = "[!-~]{1,12}( [!-~]{1,12}){0,3}";
    let headers = prop::collection::vec(value, 0..6).prop_map(|vs| {
        vs.into_iter()
            .enumerate()
            .map(|(i, v)| (format!("x-p-{i}"), v))
            .collect::<Vec<_>>()
    });
    let body = prop::collection::vec(any::<u8>(), 0..20_000);
    let chunk = prop::option::of(1usize..5_000);
    (method, path, headers, body, chunk).prop_map(|(method, path, headers, body, chunk)| Case {
        method,
        path,
        headers,
        body,
        chunk,
    })
}

fn encode(c: &Case) -> Vec<u8> {
    let mut out = format!("{} {} HTTP/1.1\r\nHost: prop.test\r\n", c.method, c.path).into_bytes();
    for (k, v) in &c.headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    match c.chunk {
        Some(n) => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            out.extend_from_slice(&chunked(&c.body, n));
        }
        None => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", c.body.len()).as_bytes());
            out.extend_from_slice(&c.body);
        }
    }
    out
}

#[test]
fn any_request_round_trips_through_sluice() {
    let be = Backend::start(|r| Reply::ok(sha256_hex(&r.body)).header("x-method", &r.method));
    let sl = Sluice::start(&simple_config(&[be.addr()], "", ""));
    // TestRunner::run takes an Fn: the connection lives in a RefCell.
    let conn = std::cell::RefCell::new(Conn::connect(sl.addr()));
    let dirty = std::cell::Cell::new(false);
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |c| {
        let mut conn = conn.borrow_mut();
        if dirty.replace(true) {
            // The previous case failed midway: start clean for shrinking.
            *conn = Conn::connect(sl.addr());
        }
        let before = be.request_count();
        let w = conn.send_in_background(encode(&c));
        let r = conn
            .read_response()
            .map_err(|e| TestCaseError::fail(format!("reading response: {e}")))?;
        w.join()
            .unwrap()
            .map_err(|e| TestCaseError::fail(format!("writing request: {e}")))?;
        prop_assert_eq!(r.status, 200, "{}", r);
        prop_assert_eq!(r.body_str(), sha256_hex(&c.body));
        prop_assert_eq!(r.header("x-method"), Some(c.method));
        prop_assert_eq!(be.request_count(), before + 1);
        let seen = be.last_request();
        prop_assert_eq!(&seen.method, c.method);
        prop_assert_eq!(&seen.path, &c.path);
        prop_assert_eq!(seen.header("host"), Some("prop.test"));
        for (k, v) in &c.headers {
            prop_assert_eq!(
                seen.header_all(k),
                vec![v.as_str()],
                "header {}:\n{}",
                k,
                seen.head_text()
            );
        }
        prop_assert_eq!(seen.body.len(), c.body.len());
        prop_assert!(seen.body == c.body, "body differs");
        if r.says_close() {
            *conn = Conn::connect(sl.addr());
        }
        dirty.set(false);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The backend derives its answer from the path: `/r/SEED/LEN/MODE/CHUNK`
/// (MODE 0 = Content-Length, 1 = chunked in CHUNK-byte pieces, 2 = close-delimited).
fn derived_reply(r: &Request) -> Reply {
    let parts: Vec<usize> = r
        .path
        .split('/')
        .skip(2)
        .filter_map(|p| p.parse().ok())
        .collect();
    let [seed, len, mode, chunk] = parts[..] else {
        return Reply::new(400, "bad path");
    };
    let body = pattern_bytes(len, seed as u64);
    let reply = match mode {
        0 => Reply::ok(body),
        1 => {
            let pieces: Vec<&[u8]> = body.chunks(chunk.max(1)).collect();
            Reply::chunked(&pieces)
        }
        _ => Reply::close_delimited(body),
    };
    reply.header("x-seed", &seed.to_string())
}

#[test]
fn any_response_round_trips_through_sluice() {
    let be = Backend::start(derived_reply);
    let sl = Sluice::start(&simple_config(&[be.addr()], "", ""));
    let conn = std::cell::RefCell::new(Conn::connect(sl.addr()));
    let dirty = std::cell::Cell::new(false);
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (0usize..1_000_000, 0usize..50_000, 0usize..3, 1usize..8_000);
    let result = runner.run(&strategy, |(seed, len, mode, chunk)| {
        let mut conn = conn.borrow_mut();
        if dirty.replace(true) {
            *conn = Conn::connect(sl.addr());
        }
        let r = conn.request("GET", &format!("/r/{seed}/{len}/{mode}/{chunk}"), &[], b"");
        prop_assert_eq!(r.status, 200, "{}", r);
        let want_seed = seed.to_string();
        prop_assert_eq!(r.header("x-seed"), Some(want_seed.as_str()));
        prop_assert_eq!(r.body.len(), len);
        prop_assert!(r.body == pattern_bytes(len, seed as u64), "body differs");
        if r.says_close() || r.framing == common::client::Framing::Close {
            *conn = Conn::connect(sl.addr());
        }
        dirty.set(false);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
