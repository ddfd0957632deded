//! Endpoint names: resolved at load through `[dns] servers`, re-resolved when the record's TTL runs out,
//! and the new address reaches the workers without a reload.

mod common;

use common::{client::http_get, config, eventually, Sluice};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// A minimal origin answering every request with `body` (keep-alive, no request bodies).
fn origin(listener: TcpListener, body: &'static str, stop: Arc<AtomicBool>) {
    listener.set_nonblocking(true).expect("nonblocking");
    thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Ok((mut s, _)) = listener.accept() else {
                thread::sleep(Duration::from_millis(5));
                continue;
            };
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
}

/// A DNS server that answers A queries for any name with 127.0.0.<octet>, TTL 1 s; octet 0 = NXDOMAIN.
fn fake_dns(octet: Arc<AtomicU8>, stop: Arc<AtomicBool>) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind dns");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let addr = sock.local_addr().expect("dns addr");
    thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::SeqCst) {
            let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if n < 12 {
                continue;
            }
            // Question: name labels from byte 12, then qtype and qclass.
            let mut i = 12;
            while i < n && buf[i] != 0 {
                i += 1 + buf[i] as usize;
            }
            let qend = i + 5;
            if qend > n {
                continue;
            }
            let qtype = u16::from_be_bytes([buf[i + 1], buf[i + 2]]);
            let mut resp = buf[..qend].to_vec();
            resp[2] = 0x81;
            let o = octet.load(Ordering::SeqCst);
            resp[3] = if o == 0 { 0x83 } else { 0x80 };
            resp[4..12].copy_from_slice(&[0, 1, 0, (qtype == 1 && o != 0) as u8, 0, 0, 0, 0]);
            if qtype == 1 && o != 0 {
                resp.extend_from_slice(&[
                    0xc0,
                    12,
                    0,
                    1,
                    0,
                    1,
                    0,
                    0,
                    0,
                    1,
                    0,
                    4,
                    127,
                    0,
                    0,
                    octet.load(Ordering::SeqCst),
                ]);
            }
            let _ = sock.send_to(&resp, peer);
        }
    });
    addr
}

#[test]
fn endpoint_name_follows_dns_changes_on_ttl() {
    let stop = Arc::new(AtomicBool::new(false));
    let a = TcpListener::bind("127.0.0.1:0").expect("bind a");
    let port = a.local_addr().expect("addr").port();
    let b = TcpListener::bind(("127.0.0.2", port)).expect("bind 127.0.0.2 on the same port");
    origin(a, "from-a", stop.clone());
    origin(b, "from-b", stop.clone());
    let octet = Arc::new(AtomicU8::new(1));
    let dns = fake_dns(octet.clone(), stop.clone());

    let sluice = Sluice::start(&config(&format!(
        "[dns]\nservers = [\"{dns}\"]\nmin_ttl = \"1s\"\nmax_ttl = \"10s\"\n\n\
         [upstreams.app]\nendpoints = [\"backend.sluice-test:{port}\"]\n\n\
         [routes.all]\npath = \"/*\"\nupstream = \"app\"\n"
    )));
    let r = http_get(sluice.addr(), "/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"from-a");

    octet.store(2, Ordering::SeqCst);
    let moved = eventually(Duration::from_secs(8), || {
        http_get(sluice.addr(), "/", &[]).body == b"from-b"
    });
    stop.store(true, Ordering::SeqCst);
    assert!(
        moved,
        "traffic did not follow the DNS change; log:\n{}",
        sluice.stderr_text()
    );
    assert!(sluice.stderr_text().contains("endpoint addresses changed"));
}

#[test]
fn unresolvable_name_fails_check_naming_the_key() {
    let stop = Arc::new(AtomicBool::new(false));
    // A server that says the name does not exist.
    let octet = Arc::new(AtomicU8::new(0));
    let dns = fake_dns(octet, stop.clone());
    let dir = common::temp_dir();
    let path = dir.write(
        "bad.toml",
        &config(&format!(
            "[dns]\nservers = [\"{dns}\"]\n[upstreams.app]\nendpoints = [\"127.0.0.1:1\", \"missing.sluice-test:80\"]\n"
        )),
    );
    let out = common::run(
        &["--check", "-c", path.to_str().expect("utf-8 path")],
        &[],
        dir.path(),
    );
    stop.store(true, Ordering::SeqCst);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        out.all().contains("upstreams.app.endpoints[1]"),
        "{}",
        out.all()
    );
    assert!(
        out.all().contains("cannot resolve missing.sluice-test"),
        "{}",
        out.all()
    );
}
