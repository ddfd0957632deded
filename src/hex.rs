//! Hexadecimal on the request path, without allocation or formatting machinery: lowercase digits of
//! integers into fixed-width slices (ids, cookies), and the value of one digit of either case
//! (percent-encoding, chunk sizes, key digests).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes the low `4 * out.len()` bits of `v` into `out`, most significant digit first.
pub fn hex_into(out: &mut [u8], v: u64) {
    let n = out.len();
    for (i, b) in out.iter_mut().enumerate() {
        let shift = (n - 1 - i) * 4;
        *b = DIGITS[if shift < 64 {
            ((v >> shift) & 0xf) as usize
        } else {
            0
        }];
    }
}

/// Lowercase hex of `bytes` (digests, signatures; off the request path).
pub fn encode(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        hex_into(pair, *b as u64);
    }
    // Only ASCII digits were written.
    String::from_utf8(out).unwrap_or_default()
}

/// The value of one hex digit, either case.
pub fn digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width() {
        let mut b = [0u8; 16];
        hex_into(&mut b, 0xdead_beef);
        assert_eq!(&b, b"00000000deadbeef");
        let mut b = [0u8; 4];
        hex_into(&mut b, 0x1_2345);
        assert_eq!(&b, b"2345");
    }

    #[test]
    fn digits_of_either_case() {
        let all: Vec<Option<u8>> = (0..=255u8).map(digit).collect();
        for (i, c) in b"0123456789abcdef".iter().enumerate() {
            assert_eq!(all[*c as usize], Some(i as u8));
            assert_eq!(all[c.to_ascii_uppercase() as usize], Some(i as u8));
        }
        assert_eq!(all.iter().filter(|d| d.is_some()).count(), 22);
    }
}
