//! The end of every request, whatever it was: its record counted into the generation it started on,
//! and its access log line (sampled, formatted into the worker's log buffer, shipped by the control
//! side). Also for requests whose head did not parse: they are logged with an empty request line.

use crate::access_log::{format_json, format_template, LogFields};
use crate::http1::head::RequestHead;
use crate::metrics::{ErrorKind, RequestRecord};
use crate::worker::{Gen, Worker};

/// Counts `rec` and writes its access log line.
#[allow(clippy::too_many_arguments)]
pub fn finish(
    w: &Worker,
    gen: &Gen,
    head: &RequestHead,
    rec: &RequestRecord,
    request_id: &[u8],
    traceparent: &[u8],
    client: &[u8],
    consumer: Option<&str>,
) {
    let upstream_fault = matches!(
        rec.reason.error_kind(),
        Some(ErrorKind::UpstreamConnect | ErrorKind::UpstreamTimeout | ErrorKind::UpstreamReset)
    );
    gen.record(rec, upstream_fault, consumer);
    if gen.config.access_log.is_none() {
        return;
    }
    let names = gen.names(rec);
    let fields = LogFields {
        head,
        rec,
        request_id,
        traceparent,
        client,
        route: names.route,
        upstream: names.upstream,
        endpoint: names.endpoint,
        worker: w.id,
        consumer,
        auth: rec
            .auth
            .map(|a| (gen.auth_method(a.method), a.outcome.as_str())),
    };
    w.log_request(gen, rec, |out, template| match template {
        Some(t) => format_template(out, t, &fields),
        None => format_json(out, &fields),
    });
}
