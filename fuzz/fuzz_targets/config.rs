//! Config parsing and validation of arbitrary TOML text, through `parse_text_only`: a secret file
//! (`/dev/zero`) or a host name to resolve is a validation error there, so no input can block on
//! the file system or the network. No input may panic; a valid config satisfies the ranges the
//! workers rely on and compiles into a route table; the same text gives the same answer twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::config::{parse_text_only, Config, RouteAction, Source};
use sluice::http1::head::MAX_HEADERS_CAP;
use sluice::router::RouteTable;

fn check(c: &Config) {
    assert!(!c.listeners.is_empty());
    assert!(c.http.max_headers >= 1 && c.http.max_headers <= MAX_HEADERS_CAP);
    assert!(c.http.max_header_bytes >= 1024 && c.http.max_uri_bytes >= 16);
    assert!(c.dns.min_ttl <= c.dns.max_ttl);
    for u in &c.upstreams {
        assert!(!u.endpoints.is_empty());
        for e in &u.endpoints {
            assert!((1..=1000).contains(&e.weight));
        }
        assert!(u.max_connections >= 1 && u.retries <= 10);
        assert!((0.0..=1.0).contains(&u.retry_ratio));
    }
    for r in &c.routes {
        match &r.action {
            RouteAction::Proxy(targets) => {
                assert!(!targets.is_empty());
                assert!(targets.iter().all(|t| t.upstream < c.upstreams.len()));
            }
            RouteAction::Respond(resp) => assert!((200..=999).contains(&resp.status)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Config files are read as UTF-8; anything else is rejected before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = parse_text_only(text, Source::Embedded);
    match &first {
        Ok(c) => {
            check(c);
            let table = RouteTable::compile(c);
            let _ = format!("{c:?}{table:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let again = parse_text_only(text, Source::Embedded);
    match (&first, &again) {
        (Ok(_), Ok(_)) => {}
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("the same text validated differently: {first:?} then {again:?}"),
    }
});
