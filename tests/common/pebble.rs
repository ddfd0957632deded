//! A local ACME CA for tests: Debian's `pebble`, with `pebble-challtestsrv` as its DNS server
//! (every name resolves to 127.0.0.1, no AAAA), on loopback ports picked here. Pebble's own HTTPS
//! certificate is made by the test (rcgen) under a test root that sluice is told to trust (`ca`).
//! Both processes are killed and reaped on drop; their output goes to files in the temp dir.

use super::{eventually, temp_dir, TempDir};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Where Debian installs them.
pub const PEBBLE: &str = "/usr/bin/pebble";
pub const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";

/// True when pebble is installed; tests print SKIPPED otherwise.
pub fn available() -> bool {
    std::path::Path::new(PEBBLE).exists() && std::path::Path::new(CHALLTESTSRV).exists()
}

/// A free loopback port (bound, then released: the caller binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running pebble and its DNS server.
pub struct Pebble {
    dir: TempDir,
    pebble: Option<Child>,
    dns: Option<Child>,
    /// ACME directory port.
    pub port: u16,
    /// Management port (roots, intermediates).
    pub management: u16,
    /// The root pebble's own HTTPS certificate chains to (PEM file).
    pub tls_root: PathBuf,
    config: PathBuf,
    dns_addr: SocketAddr,
}

impl Pebble {
    /// Starts challtestsrv and pebble; pebble validates HTTP-01 on `http_port` and TLS-ALPN-01 on
    /// `tls_port` of 127.0.0.1. Waits (≤10 s) until both listen.
    pub fn start(http_port: u16, tls_port: u16) -> Pebble {
        let dir = temp_dir();
        // Pebble's HTTPS certificate: a test root and a leaf for 127.0.0.1 and localhost.
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "sluice test root for pebble");
        let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).expect("ca cert");
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("leaf params")
            .signed_by(&key, &ca)
            .expect("leaf cert");
        let tls_root = dir.write("root.pem", &ca.pem());
        let cert = dir.write("cert.pem", &leaf.pem());
        let key = dir.write("key.pem", &key.serialize_pem());
        let port = free_port();
        let management = free_port();
        let dns_port = free_port();
        let dns_mgmt = free_port();
        let config = dir.write(
            "pebble.json",
            &serde_json::json!({
                "pebble": {
                    "listenAddress": format!("127.0.0.1:{port}"),
                    "managementListenAddress": format!("127.0.0.1:{management}"),
                    "certificate": cert,
                    "privateKey": key,
                    "httpPort": http_port,
                    "tlsPort": tls_port,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": false
                }
            })
            .to_string(),
        );
        let dns_addr: SocketAddr = format!("127.0.0.1:{dns_port}").parse().expect("addr");
        let out = |name: &str| {
            Stdio::from(std::fs::File::create(dir.path().join(name)).expect("log file"))
        };
        let dns = Command::new(CHALLTESTSRV)
            .args([
                "-dns01",
                &dns_addr.to_string(),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{dns_mgmt}"),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdin(Stdio::null())
            .stdout(out("challtestsrv.out"))
            .stderr(out("challtestsrv.err"))
            .spawn()
            .expect("spawn pebble-challtestsrv");
        let mut p = Pebble {
            dir,
            pebble: None,
            dns: Some(dns),
            port,
            management,
            tls_root,
            config,
            dns_addr,
        };
        assert!(
            eventually(Duration::from_secs(10), || TcpStream::connect((
                "127.0.0.1",
                dns_mgmt
            ))
            .is_ok()),
            "challtestsrv did not start: {}",
            p.logs()
        );
        p.start_ca();
        p
    }

    /// Starts (or starts again) the CA itself; a new pebble has new roots and forgets accounts.
    pub fn start_ca(&mut self) {
        let out = |name: &str| {
            Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join(name))
                    .expect("log file"),
            )
        };
        let child = Command::new(PEBBLE)
            .arg("-config")
            .arg(&self.config)
            .arg("-dnsserver")
            .arg(self.dns_addr.to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(out("pebble.out"))
            .stderr(out("pebble.err"))
            .spawn()
            .expect("spawn pebble");
        self.pebble = Some(child);
        let port = self.port;
        assert!(
            eventually(Duration::from_secs(10), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "pebble did not start: {}",
            self.logs()
        );
    }

    /// Stops the CA (the DNS server stays): orders fail from now on.
    pub fn stop_ca(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The ACME directory URL.
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    fn agent(&self) -> ureq::Agent {
        let pem = std::fs::read(&self.tls_root).expect("root");
        let root = ureq::tls::Certificate::from_pem(&pem).expect("root pem");
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![root])))
                    .build(),
            )
            .build()
            .into()
    }

    /// The root pebble issues under (PEM), from its management interface.
    pub fn issuing_root(&self) -> String {
        self.agent()
            .get(&format!("https://127.0.0.1:{}/roots/0", self.management))
            .call()
            .expect("GET /roots/0")
            .body_mut()
            .read_to_string()
            .expect("root body")
    }

    /// Pebble's and challtestsrv's output so far.
    pub fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!(
            "--- pebble\n{}{}\n--- challtestsrv\n{}{}",
            read("pebble.out"),
            read("pebble.err"),
            read("challtestsrv.out"),
            read("challtestsrv.err")
        )
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop_ca();
        if let Some(mut c) = self.dns.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}
