//! Builds a monoio runtime with the configured driver: io_uring with SINGLE_ISSUER and COOP_TASKRUN
//! (fewer interrupts of the worker), plain io_uring on older kernels, and
//! epoll where io_uring is not allowed (container seccomp profiles often forbid it).

use crate::config::Driver;
use std::future::Future;
use std::io;

/// Ring size: enough for a few thousand connections' in-flight operations.
const RING_ENTRIES: u32 = 4096;

/// Runs `make(driver_name)` to completion on a runtime of the chosen driver.
pub fn block_on<F, Fut>(driver: Driver, make: F) -> io::Result<Fut::Output>
where
    F: FnOnce(&'static str) -> Fut,
    Fut: Future,
{
    if driver != Driver::Epoll {
        let mut urb = io_uring::IoUring::builder();
        // No DEFER_TASKRUN: measured with the whole proxy (loadtest/run, same runs as nginx) it cost
        // latency at 64 connections (0.86x nginx's req/s with it, 1.00x without) and no CPU per request.
        urb.setup_single_issuer().setup_coop_taskrun();
        let tuned = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(RING_ENTRIES)
            .uring_builder(urb)
            .enable_timer()
            .build();
        match tuned {
            Ok(mut rt) => return Ok(rt.block_on(make("io_uring"))),
            Err(e) => {
                tracing::debug!(error = %e, "io_uring with SINGLE_ISSUER and COOP_TASKRUN unavailable")
            }
        }
        match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(RING_ENTRIES)
            .enable_timer()
            .build()
        {
            Ok(mut rt) => return Ok(rt.block_on(make("io_uring"))),
            Err(e) if driver == Driver::IoUring => return Err(e),
            Err(e) => tracing::info!(error = %e, "io_uring unavailable; falling back to epoll"),
        }
    }
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()?;
    Ok(rt.block_on(make("epoll")))
}
