//! Parquet's RLE/bit-packing hybrid encoding of dictionary keys: a run of
//! one repeated key as (count, key), anything else bit-packed eight keys
//! at a time.

use tollgate_schema::compact::put_varint;

/// A repeat shorter than this is cheaper bit-packed than as its own run.
const MIN_REPEAT: usize = 16;

/// The bits a key up to `max` takes (0 for a dictionary of one value).
pub fn bit_width(max: u32) -> u8 {
    (u32::BITS - max.leading_zeros()) as u8
}

/// Appends `keys`, each below `1 << width`, in the hybrid encoding (without
/// a length prefix, as a data page holds it after its bit-width byte).
pub fn encode(keys: &[u32], width: u8, out: &mut Vec<u8>) {
    let mut literal_start = 0;
    let mut i = 0;
    while i < keys.len() {
        let key = keys[i];
        let run_end = i + keys[i..].iter().take_while(|&&k| k == key).count();
        if run_end - i >= MIN_REPEAT {
            // A bit-packed run holds a multiple of eight keys: the repeat
            // lends it the keys that complete its last group.
            let packed = i - literal_start;
            let repeat_start = i + (8 - packed % 8) % 8;
            if repeat_start > literal_start {
                bit_pack(&keys[literal_start..repeat_start], width, out);
            }
            put_varint(((run_end - repeat_start) as u64) << 1, out);
            let bytes = usize::from(width).div_ceil(8);
            out.extend_from_slice(&key.to_le_bytes()[..bytes]);
            literal_start = run_end;
        }
        i = run_end;
    }
    if literal_start < keys.len() {
        bit_pack(&keys[literal_start..], width, out);
    }
}

/// One bit-packed run; the last group is padded with zeros (a reader
/// stops at the page's value count).
fn bit_pack(keys: &[u32], width: u8, out: &mut Vec<u8>) {
    let groups = keys.len().div_ceil(8);
    put_varint(((groups as u64) << 1) | 1, out);
    let width = u32::from(width);
    let mut bits = 0u64;
    let mut filled = 0u32;
    for &key in keys {
        bits |= u64::from(key) << filled;
        filled += width;
        while filled >= 8 {
            out.push(bits as u8);
            bits >>= 8;
            filled -= 8;
        }
    }
    let padding = (groups * 8 - keys.len()) as u32 * width + filled;
    for _ in 0..padding.div_ceil(8) {
        out.push(bits as u8);
        bits >>= 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoder written from the format's description, independent of the
    /// encoder's run choices.
    fn decode(mut bytes: &[u8], width: u8, count: usize) -> Vec<u32> {
        let mut keys = Vec::new();
        while keys.len() < count {
            let mut header = 0u64;
            let mut shift = 0;
            loop {
                let byte = bytes[0];
                bytes = &bytes[1..];
                header |= u64::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            if header & 1 == 0 {
                let len = usize::from(width).div_ceil(8);
                let mut value = [0u8; 4];
                value[..len].copy_from_slice(&bytes[..len]);
                bytes = &bytes[len..];
                keys.extend(std::iter::repeat_n(
                    u32::from_le_bytes(value),
                    (header >> 1) as usize,
                ));
            } else {
                let values = (header >> 1) as usize * 8;
                let len = values * usize::from(width) / 8;
                let (packed, rest) = bytes.split_at(len);
                bytes = rest;
                for v in 0..values {
                    let mut key = 0u32;
                    for b in 0..usize::from(width) {
                        let bit = v * usize::from(width) + b;
                        key |= u32::from((packed[bit / 8] >> (bit % 8)) & 1) << b;
                    }
                    keys.push(key);
                }
            }
        }
        assert!(bytes.is_empty(), "{} bytes left over", bytes.len());
        keys.truncate(count);
        keys
    }

    fn round_trip(keys: &[u32]) {
        let width = bit_width(keys.iter().copied().max().unwrap_or(0));
        let mut out = Vec::new();
        encode(keys, width, &mut out);
        assert_eq!(decode(&out, width, keys.len()), keys, "width {width}");
    }

    #[test]
    fn runs_and_literals_of_every_alignment_round_trip() {
        for literal in 0..20u32 {
            for repeat in [0, 1, 15, 16, 17, 40] {
                for max in [0, 1, 7, 255, 256, 70_000, u32::MAX] {
                    let mut keys: Vec<u32> =
                        (0..literal).map(|k| (k * 7919) % (max / 2 + 1)).collect();
                    keys.extend(std::iter::repeat_n(max, repeat));
                    keys.extend((0..literal).map(|k| k % (max / 3 + 1)));
                    round_trip(&keys);
                }
            }
        }
    }

    #[test]
    fn a_long_repeat_becomes_one_run() {
        let keys = vec![3u32; 10_000];
        let mut out = Vec::new();
        encode(&keys, 2, &mut out);
        // Header varint(20000) takes 3 bytes, the key 1.
        assert_eq!(out.len(), 4);
        round_trip(&keys);
    }

    #[test]
    fn widths_fit_their_maximum() {
        assert_eq!(bit_width(0), 0);
        assert_eq!(bit_width(1), 1);
        assert_eq!(bit_width(255), 8);
        assert_eq!(bit_width(256), 9);
        assert_eq!(bit_width(u32::MAX), 32);
    }
}
