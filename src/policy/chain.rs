//! Which policies run, and in what order: the stage lists as named steps, and per listener and per
//! route the steps that apply at all, decided once per config with the snapshot, off the workers. A
//! route or listener without, say, IP rules never runs the IP policy, and one with no step that
//! applies runs none: a policy that is off costs nothing per request.
//!
//! Only names and predicates over the compiled config live here, so the snapshot can hold the
//! result without depending on what the policies need to run (the worker, the request context);
//! `policy::step` maps each name to its policy.

use crate::config::Listener;
use crate::router::CompiledRoute;

/// A policy of the chain, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The listener's `ip_allow` / `ip_deny`.
    ListenerIp,
    /// The route's `ip_allow` / `ip_deny`.
    RouteIp,
    /// The route's CORS rules.
    Cors,
    /// The route's `max_body_bytes` against a declared Content-Length.
    BodySize,
    /// The route's `auth` methods.
    Auth,
    /// The route's `allow`, `require_scopes`, `require_claims`, and the consumer's plan's `allow`.
    Acl,
    /// The route's `rate_limit` and the consumer's plan's `limits`.
    RateLimit,
    /// The consumer's quota.
    Quota,
}

/// Steps before routing, in order.
pub const PRE_ROUTE: &[Step] = &[Step::ListenerIp];

/// Steps once the route is known, in order.
// IP rules first: a refused client learns nothing else. CORS next, so the rejections after it carry
// the headers a browser script needs to read them. Then body size, authentication, access rules.
pub const ROUTE: &[Step] = &[
    Step::RouteIp,
    Step::Cors,
    Step::BodySize,
    Step::Auth,
    Step::Acl,
    Step::RateLimit,
    Step::Quota,
];

const _: () = assert!(PRE_ROUTE.len() <= 32 && ROUTE.len() <= 32);

fn listener_applies(step: Step, l: &Listener) -> bool {
    match step {
        Step::ListenerIp => !l.ip.is_empty(),
        _ => false,
    }
}

/// `plans`: the config has plans or consumer quotas (or runtime consumers, which may name plans), so
/// an authenticated route may be held to a consumer's limits and quota.
fn route_applies(step: Step, r: &CompiledRoute, plans: bool) -> bool {
    match step {
        Step::RateLimit => !r.rate_limit.is_empty() || (plans && !r.access.auth.is_empty()),
        Step::Quota => plans && !r.access.auth.is_empty(),
        Step::RouteIp => !r.ip.is_empty(),
        Step::Cors => r.cors.is_some(),
        Step::BodySize => true,
        // Access rules judge the authenticated caller; without authentication there is none.
        Step::Auth | Step::Acl => !r.access.auth.is_empty(),
        Step::ListenerIp => false,
    }
}

/// The steps of one stage's list that apply to one listener or route: bit `i` is step `i`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Chain(u32);

impl Chain {
    fn of(steps: &[Step], applies: impl Fn(Step) -> bool) -> Chain {
        Chain(
            steps
                .iter()
                .enumerate()
                .filter(|(_, s)| applies(**s))
                .fold(0, |bits, (i, _)| bits | 1 << i),
        )
    }

    /// The steps that apply, in order.
    pub fn steps(self, list: &'static [Step]) -> impl Iterator<Item = Step> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if let Some(s) = list.get(i) {
                    return Some(*s);
                }
            }
            None
        })
    }
}

/// The chains of one config: per listener (PRE_ROUTE) and per route (ROUTE), by index.
#[derive(Debug, Clone, Default)]
pub struct Chains {
    listeners: Box<[Chain]>,
    routes: Box<[Chain]>,
}

impl Chains {
    /// The chains of `listeners` and `routes` (in `Config::listeners` and `RouteTable::routes` order);
    /// `plans` as for `route_applies`.
    pub fn compile(listeners: &[Listener], routes: &[CompiledRoute], plans: bool) -> Chains {
        Chains {
            listeners: listeners
                .iter()
                .map(|l| Chain::of(PRE_ROUTE, |s| listener_applies(s, l)))
                .collect(),
            routes: routes
                .iter()
                .map(|r| Chain::of(ROUTE, |s| route_applies(s, r, plans)))
                .collect(),
        }
    }

    /// Listener `i`'s chain; an index from another generation names none, so nothing applies.
    pub fn listener(&self, i: usize) -> Chain {
        self.listeners.get(i).copied().unwrap_or_default()
    }

    /// Route `i`'s chain (likewise).
    pub fn route(&self, i: usize) -> Chain {
        self.routes.get(i).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_come_in_list_order_and_only_those_set() {
        let c = Chain(0b10101);
        assert_eq!(
            c.steps(ROUTE).collect::<Vec<_>>(),
            [Step::RouteIp, Step::BodySize, Step::Acl]
        );
        assert_eq!(Chain::default().steps(ROUTE).count(), 0);
        // Bits past the list name nothing.
        assert_eq!(Chain(1 << 31).steps(ROUTE).count(), 0);
    }

    #[test]
    fn a_plain_route_runs_only_the_body_size_check() {
        let cfg = crate::config::parse(
            "[listeners.a]\nlisten = \"127.0.0.1:0\"\n[routes.r]\npath = \"/*\"\nrespond = { status = 200 }\n\
             [routes.s]\npath = \"/s/*\"\nrespond = { status = 200 }\nip_allow = [\"10.0.0.0/8\"]\n",
            crate::config::Source::File("t.toml".into()),
        )
        .expect("config");
        let table = crate::router::RouteTable::compile(&cfg);
        let chains = Chains::compile(&cfg.listeners, &table.routes, false);
        assert_eq!(chains.listener(0), Chain(0));
        let at = |name: &str| {
            let i = table
                .routes
                .iter()
                .position(|r| r.name == name)
                .expect("route");
            chains.route(i).steps(ROUTE).collect::<Vec<_>>()
        };
        assert_eq!(at("r"), [Step::BodySize]);
        assert_eq!(at("s"), [Step::RouteIp, Step::BodySize]);
        assert_eq!(chains.route(99), Chain(0));
    }
}
