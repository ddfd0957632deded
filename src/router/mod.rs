//! Routing: a trie per host class, compiled once per config off the workers (`compile`), and a lookup
//! that allocates nothing (`lookup`). Each worker owns its own clone of the compiled table.

mod allow;
mod compile;
mod lookup;
mod split;

pub use compile::*;
pub use lookup::*;
pub use split::choose_target;

/// Most `{param}` captures one path pattern may have; captures live on the stack. A config rule
/// (validation rejects more), so it is defined there.
pub use crate::config::MAX_PARAMS;
