//! Command-line handling: which config to load (file, embedded default, or the `proxy` quick mode),
//! `--check`, logging set-up. Errors are printed here, at the edge, with their context.

use crate::config::{self, Config, ConfigError, RouteAction, Source};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "A thread-per-core API gateway and reverse proxy on io_uring"
)]
pub struct Args {
    /// Configuration file (TOML). Without it, the embedded default config runs.
    #[arg(short = 'c', long = "config", global = true)]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print a summary, and exit (1 on error).
    #[arg(long)]
    pub check: bool,
    /// Quick modes that need no file.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Proxy everything from one address to one backend.
    Proxy {
        /// Address to listen on, e.g. 127.0.0.1:8080.
        #[arg(long)]
        listen: String,
        /// Backend address, e.g. 127.0.0.1:9000.
        #[arg(long)]
        to: String,
        /// Worker count (default: one per CPU).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Live terminal view of a running sluice (per-core, per-route, per-endpoint), from its admin API.
    Top {
        /// The admin listener, e.g. 127.0.0.1:9901.
        #[arg(long)]
        admin: String,
        /// Bearer token, when the admin API has one (default: $SLUICE_ADMIN_TOKEN, which `ps` does not show).
        #[arg(long)]
        token: Option<String>,
        /// Time between polls, e.g. 1s or 500ms.
        #[arg(long, default_value = "1s", value_parser = parse_interval)]
        interval: std::time::Duration,
        /// Print one plain-text frame (after two polls one interval apart) and exit.
        #[arg(long)]
        once: bool,
    },
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = config::units::parse_duration(s)?;
    if d < std::time::Duration::from_millis(100) {
        return Err(format!("interval {s:?} is below 100ms"));
    }
    Ok(d)
}

fn quick_config(listen: &str, to: &str, workers: Option<usize>) -> Result<Config, ConfigError> {
    let mut t = toml::Table::new();
    t.insert(
        "workers".into(),
        match workers {
            Some(n) => toml::Value::Integer(n as i64),
            None => toml::Value::String("auto".into()),
        },
    );
    let mut l = toml::Table::new();
    l.insert("listen".into(), listen.into());
    t.insert(
        "listeners".into(),
        toml::Value::Table(
            [("main".to_string(), toml::Value::Table(l))]
                .into_iter()
                .collect(),
        ),
    );
    let mut u = toml::Table::new();
    u.insert("endpoints".into(), toml::Value::Array(vec![to.into()]));
    t.insert(
        "upstreams".into(),
        toml::Value::Table(
            [("backend".to_string(), toml::Value::Table(u))]
                .into_iter()
                .collect(),
        ),
    );
    let mut r = toml::Table::new();
    r.insert("path".into(), "/*".into());
    r.insert("upstream".into(), "backend".into());
    t.insert(
        "routes".into(),
        toml::Value::Table(
            [("all".to_string(), toml::Value::Table(r))]
                .into_iter()
                .collect(),
        ),
    );
    config::parse(&t.to_string(), Source::CommandLine)
}

fn load(args: &Args) -> Result<Config, ConfigError> {
    match (&args.command, &args.config) {
        (
            Some(Command::Proxy {
                listen,
                to,
                workers,
            }),
            _,
        ) => quick_config(listen, to, *workers),
        // `top` never gets here (run() hands it over first).
        (None | Some(Command::Top { .. }), Some(path)) => config::load_file(path),
        (None | Some(Command::Top { .. }), None) => {
            config::parse(config::DEFAULT_TOML, Source::Embedded)
        }
    }
}

/// A one-screen summary for `--check`. Secrets are never printed.
pub fn summary(cfg: &Config) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "{}: ok", cfg.source.label());
    let _ = writeln!(
        s,
        "workers: {}  driver: {}",
        cfg.workers.map_or("auto".to_string(), |n| n.to_string()),
        cfg.driver
    );
    if let Some(a) = &cfg.admin {
        let _ = writeln!(
            s,
            "admin: {}{}",
            a.listen,
            if a.token.is_some() {
                " (token set)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(s, "listeners:");
    for l in &cfg.listeners {
        let _ = writeln!(s, "  {:<16} {}", l.name, l.addr);
    }
    let _ = writeln!(s, "upstreams:");
    for u in &cfg.upstreams {
        let eps: Vec<String> = u
            .endpoints
            .iter()
            .map(|e| {
                if e.weight == 1 {
                    format!("{}:{}", e.host, e.port)
                } else {
                    format!("{}:{}*{}", e.host, e.port, e.weight)
                }
            })
            .collect();
        let tls = match &u.tls {
            None => String::new(),
            Some(t) if !t.verify => " tls (verify = false)".to_string(),
            Some(t) => match &t.server_name {
                Some(n) => format!(" tls ({n})"),
                None => " tls".to_string(),
            },
        };
        let _ = writeln!(
            s,
            "  {:<16} {} [{}]{}{tls}",
            u.name,
            u.balancer,
            eps.join(", "),
            if u.health_check.is_some() {
                " health-checked"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(s, "routes:");
    for r in &cfg.routes {
        let host = match &r.host {
            config::HostPattern::Any => "*".to_string(),
            config::HostPattern::Exact(h) => h.clone(),
            config::HostPattern::Suffix(h) => format!("*{h}"),
        };
        let action = match &r.action {
            RouteAction::Respond(d) => format!("respond {}", d.status),
            RouteAction::Proxy(t) => {
                let names: Vec<String> = t
                    .iter()
                    .map(|t| cfg.upstreams[t.upstream].name.clone())
                    .collect();
                format!("-> {}", names.join(" | "))
            }
        };
        let methods = r
            .methods
            .as_ref()
            .map(|m| m.join(","))
            .unwrap_or_else(|| "ANY".into());
        let mut access = String::new();
        if !r.access.auth.is_empty() {
            let all = crate::config::consumer::method_names(cfg);
            let names: Vec<&str> = r
                .access
                .auth
                .iter()
                .filter_map(|m| all.get(m.index() as usize).map(|n| &**n))
                .collect();
            let _ = write!(access, " auth={}", names.join(","));
        }
        if let Some(allow) = &r.access.allow {
            let _ = write!(access, " allow={}", allow.join(","));
        }
        // What a route changes about what passes through it, named by its keys.
        for (on, key) in [
            (!r.request_headers.is_empty(), " request_headers"),
            (!r.response_headers.is_empty(), " response_headers"),
            (!r.hide_backend, " hide_backend=false"),
            (r.intercept_errors, " intercept_errors"),
        ] {
            if on {
                access.push_str(key);
            }
        }
        let _ = writeln!(
            s,
            "  {:<16} {host} {methods} {} {action}{access}",
            r.name, r.path
        );
    }
    if !cfg.consumers.is_empty() {
        let _ = writeln!(s, "consumers: {} in the file", cfg.consumers.len());
    }
    if let Some(p) = &cfg.state {
        let _ = writeln!(s, "state: {} (runtime consumers)", p.display());
    }
    s
}

fn init_logging(level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init();
}

/// Runs the command line; returns the process exit code.
pub fn run(args: Args) -> i32 {
    if let Some(Command::Top {
        admin,
        token,
        interval,
        once,
    }) = &args.command
    {
        return crate::top::run(&crate::top::Options {
            admin: admin.clone(),
            token: token
                .clone()
                .or_else(|| std::env::var("SLUICE_ADMIN_TOKEN").ok()),
            interval: *interval,
            once: *once,
        });
    }
    let cfg = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e}");
            return 1;
        }
    };
    if args.check {
        // Resolve names and compile routes too, so --check catches what a start would.
        let cfg = std::sync::Arc::new(cfg);
        if let Err(e) = crate::snapshot::Snapshot::build(cfg.clone(), 0) {
            eprintln!("sluice: {e}");
            return 1;
        }
        if let Err(e) = crate::server::plan_cpus(&cfg) {
            eprintln!("sluice: {e}");
            return 1;
        }
        if let Some(p) = &cfg.state {
            if let Err(e) = crate::control::consumers::ConsumerStore::check(p) {
                eprintln!("sluice: {e}");
                return 1;
            }
        }
        print!("{}", summary(&cfg));
        return 0;
    }
    init_logging(&cfg.log_level);
    match crate::server::run(cfg) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("sluice: {e}");
            1
        }
    }
}
