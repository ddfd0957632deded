//! Lowercase hexadecimal of integers into fixed-width byte slices, for ids and cookies on the request
//! path: no allocation, no formatting machinery.

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
}
