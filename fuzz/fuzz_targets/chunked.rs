//! `ChunkedDecoder` fed one body whole, in pieces cut where the input says, and byte by byte.
//! "The same" means: the concatenated data callbacks, the outcome (done after N bytes, need more,
//! or the same `ChunkError`) and `data_bytes()` agree. A feed that is neither done nor failed
//! consumes its whole piece; once done, a feed consumes nothing and yields no data. A plain,
//! non-streaming decoder of the same grammar, written here, must agree with all of them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::http1::chunked::{ChunkError, ChunkedDecoder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The terminating blank line ended after this many bytes of the body input.
    Done(usize),
    NeedMore,
    Failed(ChunkError),
}

/// Feeds `pieces` in order, as a connection would until the body ends or breaks.
fn feed<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> (Outcome, Vec<u8>) {
    let mut d = ChunkedDecoder::new();
    let mut data = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        match d.feed(piece, |s| data.extend_from_slice(s)) {
            Err(e) => {
                assert!(!d.is_done());
                assert_eq!(d.data_bytes(), data.len() as u64);
                return (Outcome::Failed(e), data);
            }
            Ok(p) => {
                assert!(p.consumed <= piece.len());
                assert_eq!(p.done, d.is_done());
                consumed += p.consumed;
                if p.done {
                    assert_eq!(d.data_bytes(), data.len() as u64);
                    let before = data.len();
                    let after = d.feed(b"0\r\n\r\n", |s| data.extend_from_slice(s));
                    let p2 = after.expect("a feed after the end failed");
                    assert!(p2.done && p2.consumed == 0 && data.len() == before);
                    return (Outcome::Done(consumed), data);
                }
                assert_eq!(
                    p.consumed,
                    piece.len(),
                    "an unfinished body left bytes unread"
                );
            }
        }
    }
    assert!(!d.is_done());
    assert_eq!(d.data_bytes(), data.len() as u64);
    (Outcome::NeedMore, data)
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

/// The grammar the decoder implements (RFC 9112 §7.1, strict), over the whole input at once.
fn reference(input: &[u8]) -> (Outcome, Vec<u8>) {
    let mut out = Vec::new();
    let mut i = 0;
    macro_rules! need {
        () => {
            if i >= input.len() {
                return (Outcome::NeedMore, out);
            }
        };
    }
    macro_rules! fail {
        ($e:ident) => {
            return (Outcome::Failed(ChunkError::$e), out)
        };
    }
    // Ends on CR LF at `i`; else the error the decoder gives for this line.
    macro_rules! crlf {
        ($e:ident) => {
            need!();
            if input[i] != b'\r' {
                fail!($e);
            }
            i += 1;
            need!();
            if input[i] != b'\n' {
                fail!($e);
            }
            i += 1;
        };
    }
    loop {
        // chunk-size = 1*HEXDIG, at most 16 digits.
        let mut size = 0u64;
        let mut digits = 0;
        loop {
            need!();
            match hex(input[i]) {
                Some(_) if digits == 16 => fail!(Overflow),
                Some(v) => {
                    size = size << 4 | v;
                    digits += 1;
                    i += 1;
                }
                None if digits == 0 => fail!(BadSize),
                None => break,
            }
        }
        // chunk-ext: from ';' or BWS up to CR, at most 4096 bytes with its first.
        match input[i] {
            b';' | b' ' | b'\t' => {
                let mut ext = 1;
                i += 1;
                loop {
                    need!();
                    match input[i] {
                        b'\r' => break,
                        b'\n' => fail!(BareLineEnding),
                        b'\t' | 0x20..=0x7e | 0x80..=0xff => {
                            ext += 1;
                            if ext > 4096 {
                                fail!(ExtensionTooLong);
                            }
                            i += 1;
                        }
                        _ => fail!(BadSize),
                    }
                }
            }
            b'\r' => {}
            b'\n' => fail!(BareLineEnding),
            _ => fail!(BadSize),
        }
        crlf!(BareLineEnding);
        if size == 0 {
            break;
        }
        let take = (input.len() - i).min(usize::try_from(size).unwrap_or(usize::MAX));
        out.extend_from_slice(&input[i..i + take]);
        i += take;
        if (take as u64) < size {
            return (Outcome::NeedMore, out);
        }
        crlf!(MissingCrlf);
    }
    // trailer-section: field lines (no NUL after the first byte, 16 KiB in all), then CR LF.
    let mut trailer = 0;
    loop {
        need!();
        match input[i] {
            b'\r' => {
                i += 1;
                need!();
                if input[i] != b'\n' {
                    fail!(BareLineEnding);
                }
                return (Outcome::Done(i + 1), out);
            }
            b'\n' => fail!(BareLineEnding),
            _ => {
                loop {
                    trailer += 1;
                    if trailer > 16 * 1024 {
                        fail!(TrailersTooLarge);
                    }
                    i += 1;
                    need!();
                    match input[i] {
                        b'\r' => break,
                        b'\n' | 0 => fail!(BareLineEnding),
                        _ => {}
                    }
                }
                crlf!(BareLineEnding);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Layout: a count byte, that many u16 cut points, then the body.
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let cuts_len = (count as usize % 8) * 2;
    if rest.len() < cuts_len {
        return;
    }
    let (raw_cuts, body) = rest.split_at(cuts_len);
    let mut cuts: Vec<usize> = raw_cuts
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]) as usize % (body.len() + 1))
        .collect();
    cuts.sort_unstable();
    cuts.push(body.len());

    let whole = feed(std::iter::once(body));
    let mut at = 0;
    let pieces = cuts.iter().map(|&c| {
        let p = &body[at..c];
        at = c;
        p
    });
    assert_eq!(feed(pieces), whole, "cut at {cuts:?}");
    if count & 0x80 != 0 {
        assert_eq!(feed(body.chunks(1)), whole, "byte by byte");
    }
    assert_eq!(reference(body), whole, "the reference decoder disagrees");
});
