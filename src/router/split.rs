//! A route's traffic split: the target whose header rule matches, else the next by weight (smooth
//! weighted round robin, the same as for endpoints, with per-route state each worker keeps).

use super::RouteInput;
use crate::config::SplitTarget;
use crate::upstream::balance::SmoothWrr;

/// The upstream group index for this request among `targets` (more than one).
pub fn choose_target(targets: &[SplitTarget], req: &impl RouteInput, wrr: &mut SmoothWrr) -> usize {
    for t in targets {
        if let Some(rule) = &t.when {
            if let Some(v) = req.header(rule.name.as_bytes()) {
                if rule
                    .value
                    .as_ref()
                    .is_none_or(|want| crate::http1::head::trim(v) == want.as_bytes())
                {
                    return t.upstream;
                }
            }
        }
    }
    wrr.next_weighted(targets.len(), |i| {
        Some(targets[i].weight).filter(|&w| w > 0)
    })
    .map_or(targets[0].upstream, |i| targets[i].upstream)
}
