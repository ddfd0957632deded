//! Consumers created at runtime through the admin API: the SQLite store that keeps them across
//! restarts (`store`), the admin endpoints that change them (`api`), and the table every worker gets
//! after each committed change. Lives on the control thread (the main thread opens the store before
//! any worker starts); a worker never touches the database.

pub mod api;
pub mod store;

pub use store::{ConsumerStore, StoreError};
