//! Streaming, strict decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1).
//! It never buffers: it walks bytes as they arrive, reports data slices, and says where the message ends,
//! so a proxy can pass chunked bytes through unchanged or de-chunk them. Anything ambiguous is an error:
//! bare LF, non-hex sizes, "0x" prefixes, signs, overflow, whitespace before the size, missing CRLF after data.

use crate::hex;

/// Why a chunked body was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The chunk-size line is malformed.
    #[error("invalid chunk size line")]
    BadSize,
    /// The chunk size does not fit in 64 bits.
    #[error("chunk size overflows")]
    Overflow,
    /// A line ended with LF alone, or CR was not followed by LF.
    #[error("bare CR or LF in chunked framing")]
    BareLineEnding,
    /// Data was not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    MissingCrlf,
    /// Trailer section too large.
    #[error("chunked trailers too large")]
    TrailersTooLarge,
    /// A chunk extension too long.
    #[error("chunk extension too long")]
    ExtensionTooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SizeStart,
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

const MAX_EXT_BYTES: u32 = 4096;
const MAX_TRAILER_BYTES: u32 = 16 * 1024;

/// Decoder state; one per body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u8,
    ext_bytes: u32,
    trailer_bytes: u32,
    data_bytes: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Progress of one `feed` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input that belong to this body.
    pub consumed: usize,
    /// The terminating empty line was seen.
    pub done: bool,
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::SizeStart,
            size: 0,
            digits: 0,
            ext_bytes: 0,
            trailer_bytes: 0,
            data_bytes: 0,
        }
    }

    /// Total decoded payload bytes so far.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// True once the whole body has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Walks `input`, calling `on_data` for each payload slice; stops at the end of the body.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<Progress, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => break,
                State::SizeStart | State::Size => {
                    if let Some(v) = hex::digit(b) {
                        if self.digits >= 16 {
                            return Err(ChunkError::Overflow);
                        }
                        self.size = (self.size << 4) | v as u64;
                        self.digits += 1;
                        self.state = State::Size;
                    } else if self.state == State::SizeStart {
                        return Err(ChunkError::BadSize);
                    } else {
                        match b {
                            b';' | b' ' | b'\t' => {
                                self.state = State::Ext;
                                self.ext_bytes = 1;
                            }
                            b'\r' => self.state = State::SizeLf,
                            b'\n' => return Err(ChunkError::BareLineEnding),
                            _ => return Err(ChunkError::BadSize),
                        }
                    }
                    i += 1;
                }
                State::Ext => {
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b'\n' => return Err(ChunkError::BareLineEnding),
                        b'\t' | 0x20..=0x7e | 0x80..=0xff => {
                            self.ext_bytes += 1;
                            if self.ext_bytes > MAX_EXT_BYTES {
                                return Err(ChunkError::ExtensionTooLong);
                            }
                        }
                        _ => return Err(ChunkError::BadSize),
                    }
                    i += 1;
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BareLineEnding);
                    }
                    i += 1;
                    if self.size == 0 {
                        self.state = State::TrailerLineStart;
                    } else {
                        self.state = State::Data;
                    }
                }
                State::Data => {
                    let avail = (input.len() - i) as u64;
                    let take = avail.min(self.size) as usize;
                    on_data(&input[i..i + take]);
                    i += take;
                    self.size -= take as u64;
                    self.data_bytes += take as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::MissingCrlf);
                    }
                    self.state = State::DataLf;
                    i += 1;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::MissingCrlf);
                    }
                    self.state = State::SizeStart;
                    self.digits = 0;
                    self.size = 0;
                    i += 1;
                }
                State::TrailerLineStart => {
                    match b {
                        b'\r' => self.state = State::FinalLf,
                        b'\n' => return Err(ChunkError::BareLineEnding),
                        _ => {
                            self.state = State::TrailerLine;
                            self.bump_trailer()?;
                        }
                    }
                    i += 1;
                }
                State::TrailerLine => {
                    match b {
                        b'\r' => self.state = State::TrailerLf,
                        b'\n' | 0 => return Err(ChunkError::BareLineEnding),
                        _ => self.bump_trailer()?,
                    }
                    i += 1;
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BareLineEnding);
                    }
                    self.state = State::TrailerLineStart;
                    i += 1;
                }
                State::FinalLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BareLineEnding);
                    }
                    self.state = State::Done;
                    i += 1;
                }
            }
        }
        Ok(Progress {
            consumed: i,
            done: self.state == State::Done,
        })
    }

    fn bump_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            Err(ChunkError::TrailersTooLarge)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(input: &[u8]) -> Result<(Vec<u8>, Progress), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let p = d.feed(input, |s| out.extend_from_slice(s))?;
        Ok((out, p))
    }

    #[test]
    fn simple() {
        let (out, p) =
            decode(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT").unwrap();
        assert_eq!(out, b"hello world");
        assert!(p.done);
        assert_eq!(p.consumed, 40);
    }

    #[test]
    fn rejects_ambiguous() {
        for bad in [
            &b"0x5\r\nhello\r\n0\r\n\r\n"[..],
            b"-1\r\n",
            b" 5\r\nhello\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"\r\n",
            b"11111111111111111\r\n",
            b"0\r\n\n",
            b"5\r\nhello\n0\r\n\r\n",
        ] {
            assert!(
                decode(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn partial_feeds() {
        let msg = b"a\r\n0123456789\r\n0\r\n\r\n";
        for split in 0..msg.len() {
            let mut d = ChunkedDecoder::new();
            let mut out = Vec::new();
            let p1 = d.feed(&msg[..split], |s| out.extend_from_slice(s)).unwrap();
            assert_eq!(p1.consumed, split);
            let p2 = d.feed(&msg[split..], |s| out.extend_from_slice(s)).unwrap();
            assert!(p2.done);
            assert_eq!(out, b"0123456789");
        }
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&data);
        }

        #[test]
        fn round_trip(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..64), 0..8)) {
            let mut enc = Vec::new();
            let mut want = Vec::new();
            for c in &chunks {
                enc.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                enc.extend_from_slice(c);
                enc.extend_from_slice(b"\r\n");
                want.extend_from_slice(c);
            }
            enc.extend_from_slice(b"0\r\n\r\n");
            let (out, p) = decode(&enc).unwrap();
            prop_assert!(p.done);
            prop_assert_eq!(p.consumed, enc.len());
            prop_assert_eq!(out, want);
        }
    }
}
