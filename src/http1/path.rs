//! Request-target path normalisation: the one canonical spelling of a path that route matching and
//! every policy see, so an access rule on `/admin/*` cannot be dodged by writing `/%61dmin/x`,
//! `/./admin/x`, `/x/../admin/x`, `/%2e%2e/admin` or `//admin/x`. A pure codec (bytes in, bytes out
//! into the caller's reusable buffer): it imports nothing else of sluice, and once that buffer has
//! grown to the longest path of its connection it never allocates.
//!
//! The steps, in one pass over the segments (RFC 3986 §6.2.2):
//! 1. percent-decoding of unreserved characters only (ALPHA DIGIT `-` `.` `_` `~`, §2.3 and
//!    §6.2.2.2); every other escape stays encoded with its hex digits in uppercase (§6.2.2.1), so
//!    `%2f` and `%2F` are one spelling. An encoded `/` therefore stays `%2F` and never separates
//!    segments: whether it may pass at all is the caller's decision, once it knows the route.
//! 2. dot-segment removal (§5.2.4) on the decoded segments, so `%2e%2e` is `..`; a `..` at the root
//!    stays at the root (`/../admin` is `/admin`), as §5.2.4 step 2C prescribes.
//! 3. optionally, merging of empty segments (`//` is `/`); not in RFC 3986, but what origin servers
//!    commonly do (nginx `merge_slashes`), so a proxy that matched `//admin` literally would let it
//!    reach what the origin serves as `/admin`. Merging happens before dots are resolved:
//!    `/a//../b` is `/b`.
//!
//! Refused outright: a `%` not followed by two hex digits (no second spelling of one byte can then
//! hide behind a double decode), and an encoded NUL, which no route may allow.

use crate::hex;
use memchr::memmem;

/// Why a path has no canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%` not followed by two hex digits (RFC 3986 §2.1).
    #[error("malformed percent-encoding in path")]
    BadEscape,
    /// `%00`.
    #[error("encoded NUL in path")]
    EncodedNul,
    /// `%2F` on a route that does not allow it. `normalise` never returns this: only the caller
    /// knows the route.
    #[error("encoded slash in path")]
    EncodedSlash,
}

/// What `normalise` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canonical {
    /// The path was canonical already; nothing was written (the common case, and nearly free).
    AsIs,
    /// The canonical path is in the output buffer.
    Rewritten {
        /// It holds an encoded slash (`%2F`).
        encoded_slash: bool,
    },
}

impl Canonical {
    /// The canonical path: `path` itself, or what `normalise` wrote into `out`.
    pub fn path<'a>(self, path: &'a [u8], out: &'a [u8]) -> &'a [u8] {
        match self {
            Canonical::AsIs => path,
            Canonical::Rewritten { .. } => out,
        }
    }

    /// The canonical path holds an encoded slash.
    pub fn encoded_slash(self) -> bool {
        matches!(
            self,
            Canonical::Rewritten {
                encoded_slash: true
            }
        )
    }
}

/// Normalises `path` (an origin-form path, without the query). When it is canonical already the
/// answer is `AsIs` and `out` is untouched; otherwise the canonical path is written into `out`
/// (cleared first). A path that does not start with `/` (`*`, or the empty path of
/// `http://host`) is left as it is.
pub fn normalise(
    path: &[u8],
    merge_slashes: bool,
    out: &mut Vec<u8>,
) -> Result<Canonical, PathError> {
    if path.first() != Some(&b'/') || is_canonical(path, merge_slashes) {
        return Ok(Canonical::AsIs);
    }
    rewrite(path, merge_slashes, out)?;
    // Every `%` in the output starts a canonical (uppercase) escape, so a plain search is exact.
    let encoded_slash = memmem::find(out, b"%2F").is_some();
    Ok(Canonical::Rewritten { encoded_slash })
}

/// True when `path` needs no rewriting: no `%`, no `.` or `..` segment, and no `//` when merging.
/// One scan for `%` and `/`; only a `/` looks at the bytes after it.
fn is_canonical(path: &[u8], merge_slashes: bool) -> bool {
    // Most paths are short: a plain loop beats the vector search's set-up below this length.
    if path.len() < 64 {
        for (i, &b) in path.iter().enumerate() {
            if b == b'%' {
                return false;
            }
            if b == b'/' && !canonical_after_slash(&path[i + 1..], merge_slashes) {
                return false;
            }
        }
        return true;
    }
    for i in memchr::memchr2_iter(b'%', b'/', path) {
        if path[i] == b'%' || !canonical_after_slash(&path[i + 1..], merge_slashes) {
            return false;
        }
    }
    true
}

/// True when what follows a `/` starts neither a `.` or `..` segment nor, when merging, a `//`.
fn canonical_after_slash(rest: &[u8], merge_slashes: bool) -> bool {
    match rest {
        [b'/', ..] => !merge_slashes,
        [b'.'] | [b'.', b'/', ..] | [b'.', b'.'] | [b'.', b'.', b'/', ..] => false,
        _ => true,
    }
}

/// The slow path: decodes each segment into `out`, then drops or resolves it.
fn rewrite(path: &[u8], merge_slashes: bool, out: &mut Vec<u8>) -> Result<(), PathError> {
    debug_assert_eq!(path.first(), Some(&b'/'));
    out.clear();
    out.reserve(path.len());
    let mut segments = path[1..].split(|&b| b == b'/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        let start = out.len();
        out.push(b'/');
        decode_into(seg, out)?;
        match &out[start + 1..] {
            b"." => {
                out.truncate(start);
                // "/a/." is "/a/": the segment goes, the slash before it stays (§5.2.4 2B).
                if last {
                    out.push(b'/');
                }
            }
            b".." => {
                out.truncate(start);
                // Removes the last output segment and its slash; at the root there is none (§5.2.4 2C).
                let cut = memchr::memrchr(b'/', out).unwrap_or(0);
                out.truncate(cut);
                if last {
                    out.push(b'/');
                }
            }
            // An empty segment in the middle is a `//`; a trailing one is the path's final slash.
            b"" if merge_slashes && !last => out.truncate(start),
            _ => {}
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(())
}

/// Appends `seg` with unreserved escapes decoded and the others' hex digits uppercased.
fn decode_into(seg: &[u8], out: &mut Vec<u8>) -> Result<(), PathError> {
    let mut rest = seg;
    while let Some(i) = memchr::memchr(b'%', rest) {
        out.extend_from_slice(&rest[..i]);
        let (Some(hi), Some(lo)) = (
            rest.get(i + 1).copied().and_then(hex::digit),
            rest.get(i + 2).copied().and_then(hex::digit),
        ) else {
            return Err(PathError::BadEscape);
        };
        let byte = hi << 4 | lo;
        if byte == 0 {
            return Err(PathError::EncodedNul);
        }
        if is_unreserved(byte) {
            out.push(byte);
        } else {
            out.extend_from_slice(&[b'%', HEX_UPPER[hi as usize], HEX_UPPER[lo as usize]]);
        }
        rest = &rest[i + 3..];
    }
    out.extend_from_slice(rest);
    Ok(())
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The canonical path of `p`, or the error.
    fn canon(p: &str, merge: bool) -> Result<String, PathError> {
        let mut out = Vec::new();
        let c = normalise(p.as_bytes(), merge, &mut out)?;
        Ok(String::from_utf8_lossy(c.path(p.as_bytes(), &out)).into_owned())
    }

    #[test]
    fn canonical_paths_are_left_alone_and_not_copied() {
        for p in [
            "/",
            "/admin/x",
            "/a/b/",
            "/.well-known/acme",
            "/a/..b/c.",
            "/a/b..",
            "/...",
            "*",
            "",
        ] {
            let mut out = b"untouched".to_vec();
            assert_eq!(
                normalise(p.as_bytes(), true, &mut out),
                Ok(Canonical::AsIs),
                "{p}"
            );
            assert_eq!(out, b"untouched");
        }
        let mut out = Vec::new();
        assert_eq!(normalise(b"//a", false, &mut out), Ok(Canonical::AsIs));
    }

    #[test]
    fn unreserved_escapes_are_decoded_others_uppercased() {
        assert_eq!(canon("/%61dmin/x", true).unwrap(), "/admin/x");
        assert_eq!(canon("/%41%7e%2D%5f%2e", true).unwrap(), "/A~-_.");
        assert_eq!(canon("/a%2fb", true).unwrap(), "/a%2Fb");
        assert_eq!(canon("/a%20b%3a%c3%a9", true).unwrap(), "/a%20b%3A%C3%A9");
        // `%25` is a literal `%`: it stays encoded, and is never decoded twice.
        assert_eq!(canon("/%2541", true).unwrap(), "/%2541");
    }

    #[test]
    fn dot_segments_are_removed_after_decoding() {
        for (p, want) in [
            ("/./admin/x", "/admin/x"),
            ("/x/../admin/x", "/admin/x"),
            ("/%2e%2e/admin", "/admin"),
            ("/%2E%2e/admin", "/admin"),
            ("/.%2E/admin", "/admin"),
            ("/../admin", "/admin"),
            ("/../../../admin", "/admin"),
            ("/a/b/c/./../../g", "/a/g"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/..", "/"),
            ("/.", "/"),
            ("/a/./", "/a/"),
        ] {
            assert_eq!(canon(p, true).unwrap(), want, "{p}");
        }
    }

    #[test]
    fn slashes_merge_only_when_asked() {
        assert_eq!(canon("//admin/x", true).unwrap(), "/admin/x");
        assert_eq!(canon("/a//b///c//", true).unwrap(), "/a/b/c/");
        assert_eq!(canon("//", true).unwrap(), "/");
        assert_eq!(canon("/a//../b", true).unwrap(), "/b");
        assert_eq!(canon("//admin/x", false).unwrap(), "//admin/x");
        // Without merging, `..` removes the empty segment as RFC 3986 §5.2.4 does.
        assert_eq!(canon("/a//../b", false).unwrap(), "/a/b");
        assert_eq!(canon("//./admin", false).unwrap(), "//admin");
    }

    #[test]
    fn encoded_slash_is_reported_not_split() {
        let mut out = Vec::new();
        let c = normalise(b"/files/a%2fb", true, &mut out).unwrap();
        assert!(c.encoded_slash());
        assert_eq!(out, b"/files/a%2Fb");
        // Gone with its segment: nothing encoded remains.
        let c = normalise(b"/files/a%2Fb/../c", true, &mut out).unwrap();
        assert!(!c.encoded_slash());
        assert_eq!(out, b"/files/c");
        // `%252F` is a literal "%2F" spelled as text, not an encoded slash.
        let c = normalise(b"/%252F", true, &mut out).unwrap();
        assert!(!c.encoded_slash());
        assert!(!Canonical::AsIs.encoded_slash());
    }

    #[test]
    fn malformed_escapes_and_nul_are_refused() {
        for p in ["/a%", "/a%2", "/a%zz", "/a%2g/b", "/%%41", "/%4%31"] {
            assert_eq!(canon(p, true), Err(PathError::BadEscape), "{p}");
        }
        assert_eq!(canon("/admin/%00", true), Err(PathError::EncodedNul));
        assert_eq!(canon("/a%00b/../c", true), Err(PathError::EncodedNul));
    }

    #[test]
    fn the_fast_path_agrees_with_the_slow_one() {
        for p in ["/", "/a", "/a/b/", "/.x/..y/z.", "//a//b"] {
            for merge in [true, false] {
                if is_canonical(p.as_bytes(), merge) {
                    let mut out = Vec::new();
                    rewrite(p.as_bytes(), merge, &mut out).unwrap();
                    assert_eq!(out, p.as_bytes(), "{p} merge={merge}");
                }
            }
        }
    }

    /// Paths built from the pieces that matter: slashes, dots, escapes of both cases.
    fn tricky_path() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"/"[..]),
            Just(&b"//"[..]),
            Just(&b"."[..]),
            Just(&b".."[..]),
            Just(&b"%2e"[..]),
            Just(&b"%2E"[..]),
            Just(&b"%2f"[..]),
            Just(&b"%2F"[..]),
            Just(&b"%41"[..]),
            Just(&b"%7e"[..]),
            Just(&b"%25"[..]),
            Just(&b"%"[..]),
            Just(&b"2"[..]),
            Just(&b"e"[..]),
            Just(&b"a"[..]),
            Just(&b"admin"[..]),
            Just(&b"%c3%a9"[..]),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|ps| {
            let mut p = b"/".to_vec();
            for x in ps {
                p.extend_from_slice(x);
            }
            p
        })
    }

    fn any_path() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            tricky_path(),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(|mut v| {
                v.insert(0, b'/');
                v
            }),
        ]
    }

    proptest! {
        #[test]
        fn short_and_long_scans_agree(p in any_path(), merge in any::<bool>()) {
            // Padding with a canonical segment sends `p` through the vector scan; it starts with
            // `/`, so the join adds nothing to judge.
            let mut long = b"/".to_vec();
            long.extend_from_slice(&[b'a'; 70]);
            long.extend_from_slice(&p);
            prop_assert_eq!(is_canonical(&long, merge), is_canonical(&p, merge));
        }

        #[test]
        fn normalising_is_total_idempotent_and_canonical(p in any_path(), merge in any::<bool>()) {
            let mut out = Vec::new();
            let Ok(c) = normalise(&p, merge, &mut out) else {
                return Ok(());
            };
            let canon = c.path(&p, &out).to_vec();
            prop_assert_eq!(canon.first(), Some(&b'/'));
            // Idempotent: normalising the canonical form changes nothing.
            let mut again = Vec::new();
            let twice = normalise(&canon, merge, &mut again);
            prop_assert!(twice.is_ok());
            if let Ok(t) = twice {
                prop_assert_eq!(t.path(&canon, &again), &canon[..]);
                // Only an escape (which the fast path never inspects) can send it the slow way.
                prop_assert!(t == Canonical::AsIs || canon.contains(&b'%'));
            }
            prop_assert_eq!(c.encoded_slash(), memmem::find(&canon, b"%2F").is_some());
            if merge {
                prop_assert!(memmem::find(&canon, b"//").is_none(), "{:?}", canon);
            }
            for seg in canon.split(|&b| b == b'/') {
                prop_assert!(seg != b"." && seg != b"..", "{:?}", canon);
            }
            // What is left escaped is reserved, and spelled in uppercase.
            let mut i = 0;
            while let Some(at) = memchr::memchr(b'%', &canon[i..]) {
                let esc = &canon[i + at..i + at + 3];
                let byte = hex::digit(esc[1]).unwrap() << 4 | hex::digit(esc[2]).unwrap();
                prop_assert!(!is_unreserved(byte), "{:?}", canon);
                prop_assert!(!esc[1].is_ascii_lowercase() && !esc[2].is_ascii_lowercase());
                i += at + 3;
            }
        }

        #[test]
        fn the_fast_path_never_skips_a_rewrite(p in any_path(), merge in any::<bool>()) {
            if is_canonical(&p, merge) {
                let mut out = Vec::new();
                prop_assert!(rewrite(&p, merge, &mut out).is_ok());
                prop_assert_eq!(out, p);
            }
        }
    }
}
