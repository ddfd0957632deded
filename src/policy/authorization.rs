//! The `Authorization` header (RFC 9110 §11.6.2) as the Basic and Bearer methods read it: exactly
//! one, its scheme matched case-insensitively.

use crate::http1::head::RequestHead;

/// The request's single `Authorization` value: None if absent, Err if sent more than once.
pub fn authorization(head: &RequestHead) -> Option<Result<&[u8], ()>> {
    let mut found = None;
    for h in &head.headers {
        let (n, v) = head.header(h);
        if n.eq_ignore_ascii_case(b"authorization") {
            if found.is_some() {
                return Some(Err(()));
            }
            found = Some(v);
        }
    }
    found.map(Ok)
}

/// The credential after `scheme` (matched case-insensitively, RFC 9110 §11.1) in an
/// `Authorization` value.
pub fn scheme_value<'a>(v: &'a [u8], scheme_lower: &[u8]) -> Option<&'a [u8]> {
    let v = crate::http1::head::trim(v);
    if v.len() > scheme_lower.len()
        && v[..scheme_lower.len()].eq_ignore_ascii_case(scheme_lower)
        && v[scheme_lower.len()] == b' '
    {
        Some(&v[scheme_lower.len() + 1..])
    } else {
        None
    }
}
