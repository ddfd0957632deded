//! `request_headers` / `response_headers = { add, set, remove }` on a route: validated and compiled
//! here, once per config, into the rules `policy::headers` writes on the hot path. Every error names the
//! route and the exact key (`routes.api.request_headers.set.X-Route`).

use super::check::{header_value_ok, is_token, Ctx};
use super::consumer::ConsumerHeaders;
use super::ConfigError;
use crate::policy::headers::{reserved, HeaderRules, Side, Template};
use indexmap::IndexMap;
use serde::Deserialize;

/// `{ add = { NAME = "template" }, set = { .. }, remove = [NAME, ..] }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRulesToml {
    /// Fields appended beside any received ones of the name.
    #[serde(default)]
    pub add: IndexMap<String, String>,
    /// Fields that replace every received one of the name (case-insensitive).
    #[serde(default)]
    pub set: IndexMap<String, String>,
    /// Names whose received fields are all dropped.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Validates `routes.NAME.<table>` for `side`; absent = no rules. The request side may not name the
/// consumer headers either: only sluice names the consumer, so a backend can trust them.
pub(super) fn header_rules(
    cx: &Ctx,
    base: &dyn Fn() -> String,
    table: &str,
    t: Option<HeaderRulesToml>,
    side: Side,
    consumer: &ConsumerHeaders,
) -> Result<HeaderRules, ConfigError> {
    let Some(t) = t else {
        return Ok(HeaderRules::default());
    };
    let mut seen: Vec<String> = Vec::new();
    let name_ok = |key: &dyn Fn() -> String, n: &str| -> Result<(), ConfigError> {
        if !is_token(n) {
            return Err(cx.err(
                key(),
                format!("expected a header name (letters, digits, !#$%&'*+-.^_`|~), got {n:?}"),
            ));
        }
        if let Some(why) = reserved(n, side) {
            return Err(cx.err(key(), format!("{n} cannot be set by a rule: {why}")));
        }
        if side == Side::Request
            && (n.eq_ignore_ascii_case(&consumer.id) || n.eq_ignore_ascii_case(&consumer.groups))
        {
            return Err(cx.err(
                key(),
                format!("{n} cannot be set by a rule: sluice names the consumer in it ([consumer_headers])"),
            ));
        }
        Ok(())
    };
    // A name twice in `set`/`remove` (or twice in `add`, in two spellings) is a mistake, never a plan.
    let once = |key: &dyn Fn() -> String, n: &str, list: &mut Vec<String>| {
        if list.iter().any(|s| s.eq_ignore_ascii_case(n)) {
            return Err(cx.err(key(), format!("{n} is named twice")));
        }
        list.push(n.to_string());
        Ok(())
    };
    let template = |key: &dyn Fn() -> String, v: &str| -> Result<Template, ConfigError> {
        if !header_value_ok(v) {
            return Err(cx.err(
                key(),
                "expected a header value: no CR, LF, NUL or other control characters",
            ));
        }
        Template::parse(v).map_err(|e| cx.err(key(), e.to_string()))
    };
    let mut set = Vec::with_capacity(t.set.len());
    for (n, v) in t.set {
        let key = || format!("{}.{table}.set.{n}", base());
        name_ok(&key, &n)?;
        once(&key, &n, &mut seen)?;
        let tpl = template(&key, &v)?;
        set.push((n, tpl));
    }
    let mut remove = Vec::with_capacity(t.remove.len());
    for (i, n) in t.remove.into_iter().enumerate() {
        let key = || format!("{}.{table}.remove[{i}]", base());
        name_ok(&key, &n)?;
        once(&key, &n, &mut seen)?;
        remove.push(n);
    }
    let mut added = Vec::new();
    let mut add = Vec::with_capacity(t.add.len());
    for (n, v) in t.add {
        let key = || format!("{}.{table}.add.{n}", base());
        name_ok(&key, &n)?;
        once(&key, &n, &mut added)?;
        let tpl = template(&key, &v)?;
        add.push((n, tpl));
    }
    Ok(HeaderRules::new(set, add, remove))
}
