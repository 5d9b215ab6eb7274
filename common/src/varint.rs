//! LEB128 unsigned varints, as the snapshot file and its write-id section store numbers.

/// Appends `v` in 1 to 10 bytes.
pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads one varint at `*pos`, moving `*pos` past it. `None` when the bytes end first or
/// the value does not fit a u64.
pub fn read(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if i == 9 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_overlong_or_cut_input() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
            let mut buf = Vec::new();
            put(&mut buf, v);
            let mut pos = 0;
            assert_eq!(read(&buf, &mut pos), Some(v));
            assert_eq!(pos, buf.len());
            let mut cut = 0;
            assert_eq!(read(&buf[..buf.len() - 1], &mut cut), None);
        }
        let mut pos = 0;
        assert_eq!(read(&[0xff; 9].iter().copied().chain([2]).collect::<Vec<_>>(), &mut pos), None, "over u64");
    }
}
