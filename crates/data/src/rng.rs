//! Per-sample random streams: every random draw for sample `index` in epoch `epoch` comes from
//! one ChaCha8 stream seeded by `(seed, epoch, index)`, so output never depends on thread count
//! or scheduling. (`StdRng` is documented as non-portable across rand versions; ChaCha8 is fixed.)

use rand::SeedableRng;
pub use rand_chacha::ChaCha8Rng;

/// What a stream is for; different purposes of the same sample never share draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// The multi-crop augmentation of one sample.
    Augment = 1,
    /// The epoch's shuffle (index is unused, pass 0).
    Shuffle = 2,
    /// Choosing a replacement for a sample that failed to decode (`index` = failed position).
    Replace = 3,
    /// Anything else a caller needs (e.g. preview selection).
    Other = 4,
    /// One global crop's iBOT mask (`index = 2 · epoch position + view`).
    Mask = 5,
    /// Which of a batch's global crops get which iBOT mask ratio (`index = step · world size +
    /// rank`).
    MaskPlan = 6,
}

/// A ChaCha8 generator for `(seed, epoch, index, stream)`.
///
/// The 256-bit key is built from the four values with splitmix64 mixing so nearby tuples give
/// unrelated streams.
pub fn rng_for(seed: u64, epoch: u64, index: u64, stream: Stream) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
    for (i, v) in [epoch, index, stream as u64, seed].into_iter().enumerate() {
        s = splitmix64(s ^ v.wrapping_mul(0xD1B5_4A32_D192_ED03));
        key[i * 8..i * 8 + 8].copy_from_slice(&s.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn same_tuple_same_stream_different_tuple_different_stream() {
        let a: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(rng_for(0, 1, 2, Stream::Augment), |r, _| Some(r.random()))
            .collect();
        let b: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(rng_for(0, 1, 2, Stream::Augment), |r, _| Some(r.random()))
            .collect();
        assert_eq!(a, b);
        for (s, e, i, st) in [
            (1, 1, 2, Stream::Augment),
            (0, 2, 2, Stream::Augment),
            (0, 1, 3, Stream::Augment),
            (0, 1, 2, Stream::Shuffle),
        ] {
            let c: u64 = rng_for(s, e, i, st).random();
            assert_ne!(c, a[0]);
        }
    }
}
