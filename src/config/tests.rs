//! Validation tests over whole documents.

use super::*;
use std::time::Duration;

fn parse(s: &str) -> Result<Config, ConfigError> {
    super::parse(s, Source::File("t.toml".into()))
}

const MIN: &str = "[listeners.a]\nlisten = \"127.0.0.1:0\"\n";

#[test]
fn minimal_contract_config_loads() {
    let c = parse(
        "workers = 1\n[listeners.main]\nlisten = \"127.0.0.1:0\"\n[http]\nheader_timeout = \"5s\"\n\
         [upstreams.backend]\nendpoints = [\"127.0.0.1:9\"]\nresponse_timeout = \"5s\"\n\
         [routes.all]\npath = \"/*\"\nupstream = \"backend\"\n",
    )
    .unwrap();
    assert_eq!(c.workers, Some(1));
    assert_eq!(c.upstreams[0].response_timeout, Duration::from_secs(5));
}

#[test]
fn unknown_key_is_named() {
    let e = parse(&format!("{MIN}[http]\nheader_timout = \"5s\"\n")).unwrap_err();
    assert_eq!(e.key, "http.header_timout");
    assert!(e.message.contains("header_timout"), "{e}");
}

#[test]
fn bad_weight_names_key() {
    let e = parse(&format!(
        "{MIN}[upstreams.api]\nendpoints = [\"127.0.0.1:1\", {{ address = \"127.0.0.1:2\", weight = 0 }}]\n"
    ))
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "t.toml: upstreams.api.endpoints[1].weight: expected 1..=1000, got 0"
    );
}

#[test]
fn unknown_upstream_in_route() {
    let e = parse(&format!(
        "{MIN}[routes.r]\npath = \"/\"\nupstream = \"nope\"\n"
    ))
    .unwrap_err();
    assert_eq!(e.key, "routes.r.upstream");
}

#[test]
fn duration_needs_unit() {
    let e = parse(&format!("{MIN}[http]\nidle_timeout = \"5\"\n")).unwrap_err();
    assert_eq!(e.key, "http.idle_timeout");
}

#[test]
fn subset_size() {
    let up = |extra: &str| {
        parse(&format!(
            "{MIN}[upstreams.api]\nendpoints = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n{extra}\n"
        ))
    };
    assert_eq!(up("").unwrap().upstreams[0].subset_size, None);
    assert_eq!(
        up("subset_size = 1").unwrap().upstreams[0].subset_size,
        Some(1)
    );
    let e = up("subset_size = 0").unwrap_err();
    assert_eq!(e.key, "upstreams.api.subset_size");
    assert!(e.message.starts_with("expected at least 1, got 0"), "{e}");
    let e = up("subset_size = -1").unwrap_err();
    assert_eq!(e.key, "upstreams.api.subset_size");
    let e = up("subset_size = 1\nbalancer = \"consistent_hash\"").unwrap_err();
    assert_eq!(e.key, "upstreams.api.subset_size");
    let e = up("subset_size = 1\nsticky = {}").unwrap_err();
    assert_eq!(e.key, "upstreams.api.subset_size");
}

#[test]
fn text_only_reads_no_secret_file_and_resolves_no_name() {
    let text_only = |s: &str| super::parse_text_only(s, Source::File("t.toml".into()));
    let path = std::env::temp_dir().join(format!("sluice-secret-{}", std::process::id()));
    std::fs::write(&path, "s3cret\n").unwrap();
    let admin = format!(
        "{MIN}[admin]\nlisten = \"127.0.0.1:0\"\ntoken = {{ file = {:?} }}\n",
        path.display().to_string()
    );
    let read = parse(&admin);
    let refused = text_only(&admin);
    std::fs::remove_file(&path).unwrap();
    let token = read.unwrap().admin.unwrap().token.unwrap();
    assert_eq!(token.expose(), "s3cret");
    let e = refused.unwrap_err();
    assert_eq!(e.key, "admin.token");
    assert!(e.message.contains("not read"), "{e}");
    // `/dev/zero` would never finish reading: it is refused before any open.
    let e = text_only(&format!(
        "{MIN}[admin]\nlisten = \"127.0.0.1:0\"\ntoken = {{ file = \"/dev/zero\" }}\n"
    ))
    .unwrap_err();
    assert_eq!(e.key, "admin.token");

    for (text, key) in [
        (
            "[listeners.a]\nlisten = \"localhost:0\"\n",
            "listeners.a.listen",
        ),
        (
            &format!("{MIN}[admin]\nlisten = \"example.com:9901\"\n"),
            "admin.listen",
        ),
        (
            &format!("{MIN}[dns]\nservers = [\"ns.example:53\"]\n"),
            "dns.servers[0]",
        ),
    ] {
        let e = text_only(text).unwrap_err();
        assert_eq!(e.key, key);
        assert!(e.message.contains("not resolved"), "{e}");
    }
    // Literals, env secrets and endpoint names (resolved later, by the snapshot) still pass.
    let c = text_only(&format!(
        "{MIN}[admin]\nlisten = \"[::1]:9901\"\ntoken = \"inline\"\n\
         [upstreams.u]\nendpoints = [\"backend.internal:80\", \"10.0.0.1:80\"]\n"
    ))
    .unwrap();
    assert_eq!(c.upstreams[0].endpoints[0].host, "backend.internal");
    assert!(c.upstreams[0].endpoints[0].literal.is_none());
}

#[test]
fn path_patterns() {
    assert!(path_params("/a/{id}/*").is_ok());
    assert!(path_params("/a/*/b").is_err());
    assert!(path_params("a").is_err());
    assert!(path_params("/{a}/{a}").is_err());
}

#[test]
fn path_normalisation_keys() {
    let route = |extra: &str| {
        parse(&format!(
            "{MIN}[upstreams.u]\nendpoints = [\"127.0.0.1:1\"]\n[routes.r]\npath = \"/v1/*\"\nupstream = \"u\"\n{extra}"
        ))
    };
    let c = route("").unwrap();
    assert!(c.http.merge_slashes);
    assert!(!c.routes[0].allow_encoded_slash);
    assert_eq!(c.routes[0].forward_path, ForwardPath::Normalized);
    let c = route("allow_encoded_slash = true\nforward_path = \"as_received\"\n").unwrap();
    assert!(c.routes[0].allow_encoded_slash);
    assert_eq!(c.routes[0].forward_path, ForwardPath::AsReceived);
    assert!(route("forward_path = \"normalized\"\nstrip_prefix = \"/v1\"\n").is_ok());
    for (extra, names) in [
        ("forward_path = \"raw\"\n", "\"as_received\""),
        (
            "forward_path = \"as_received\"\nstrip_prefix = \"/v1\"\n",
            "strip_prefix",
        ),
        (
            "forward_path = \"as_received\"\nrewrite_path = \"/x/{*}\"\n",
            "rewrite_path",
        ),
    ] {
        let e = route(extra).unwrap_err();
        assert_eq!(e.key, "routes.r.forward_path", "{extra}");
        assert!(e.message.contains(names), "{e}");
    }
    let c = parse(&format!("{MIN}[http]\nmerge_slashes = false\n")).unwrap();
    assert!(!c.http.merge_slashes);
    for pattern in ["/%61dmin/*", "/a/../b", "/a/./b", "/a%2fb", "/a%zz"] {
        let e = parse(&format!(
            "{MIN}[upstreams.u]\nendpoints = [\"127.0.0.1:1\"]\n[routes.r]\npath = \"{pattern}\"\nupstream = \"u\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "routes.r.path", "{pattern}");
    }
}

#[test]
fn usage_needs_state_and_names_its_keys() {
    let e = parse(&format!("{MIN}[usage]\nflush_interval = \"1s\"\n")).unwrap_err();
    assert_eq!(e.key, "usage");
    assert!(e.message.contains("[state] path"), "{e}");
    let with_state = format!("{MIN}[state]\npath = \"/tmp/x.db\"\n");
    let c = parse(&format!("{with_state}[usage]\n")).unwrap();
    let u = c.usage.unwrap();
    assert_eq!(u.flush_interval, Duration::from_secs(1));
    assert_eq!(u.retention, Duration::from_secs(400 * 86400));
    assert!(u.billing.is_none());
    let e = parse(&format!("{with_state}[usage]\nflush_interval = \"0\"\n")).unwrap_err();
    assert_eq!(e.key, "usage.flush_interval");
    let e = parse(&format!(
        "{with_state}[usage]\nbilling_webhook = {{ url = \"http://b:1/u\", period = \"week\", secret = \"s\" }}\n"
    ))
    .unwrap_err();
    assert_eq!(e.key, "usage.billing_webhook.period");
    let e = parse(&format!(
        "{with_state}[usage]\nbilling_webhook = {{ url = \"ftp://b/u\", secret = \"s\" }}\n"
    ))
    .unwrap_err();
    assert_eq!(e.key, "usage.billing_webhook.url");
    let e = parse(&format!(
        "{with_state}[usage]\nretention = \"30d\"\nminute_retention = \"7d\"\nbilling_webhook = {{ url = \"http://127.0.0.1:9/usage\", period = \"month\", secret = \"s\" }}\n"
    ))
    .unwrap_err();
    assert_eq!(e.key, "usage.retention", "a month's rows must outlive it");
    let c = parse(&format!(
        "{with_state}[usage]\nretention = \"62d\"\nminute_retention = \"7d\"\nbilling_webhook = {{ url = \"http://127.0.0.1:9/usage\", period = \"month\", secret = \"s\" }}\n"
    ))
    .unwrap();
    let b = c.usage.unwrap().billing.unwrap();
    assert_eq!(b.period, crate::config::usage::BillingPeriod::Month);
    assert_eq!(b.hook.path, "/usage");
}
