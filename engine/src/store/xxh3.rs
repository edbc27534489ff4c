//! XXH3, the one hash family of the stored bytes: the data set's XXH3-128
//! (the seal, the index's checksum, what `verify` recomputes) and the
//! XXH3-64 of a segment record's header and payload
//! (docs/on-disk-format.md). Seed 0 and the default secret, streaming:
//! fed the bytes in whatever pieces they arrive in, the digest the same.
//!
//! The implementation is `twox-hash`'s, which picks its SIMD kernel when it
//! runs (AVX2 where the CPU has it, else SSE2; NEON on aarch64) rather than
//! when it is compiled: a package is built for the x86-64 baseline, where
//! `xxhash-rust`, which every store so far was written with, is held to
//! SSE2. The digests are the reference's, bit for bit: the tests below
//! compare them with `xxhash-rust` over many lengths and streaming cuts and
//! with digests of the reference C implementation (`xxhsum`).

use twox_hash::{xxhash3_128, xxhash3_64};

/// The default secret, borrowed: the hashers below allocate nothing.
type DefaultSecret = &'static [u8; xxhash3_128::DEFAULT_SECRET_LENGTH];

/// Streaming XXH3-64 (seed 0, default secret).
#[derive(Clone)]
pub(crate) struct Xxh3_64(xxhash3_64::RawHasher<DefaultSecret>);

impl Default for Xxh3_64 {
    fn default() -> Self {
        Xxh3_64(xxhash3_64::RawHasher::new(
            xxhash3_64::SecretBuffer::default(),
        ))
    }
}

impl Xxh3_64 {
    /// A hasher with nothing fed yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes, in order.
    #[inline]
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        std::hash::Hasher::write(&mut self.0, bytes);
    }

    /// The digest of everything fed.
    pub(crate) fn digest(&self) -> u64 {
        std::hash::Hasher::finish(&self.0)
    }
}

/// Streaming XXH3-128 (seed 0, default secret).
#[derive(Clone)]
pub(crate) struct Xxh3_128(xxhash3_128::RawHasher<DefaultSecret>);

impl Default for Xxh3_128 {
    fn default() -> Self {
        Xxh3_128(xxhash3_128::RawHasher::new(
            xxhash3_128::SecretBuffer::default(),
        ))
    }
}

impl Xxh3_128 {
    /// Feeds the next bytes, in order.
    #[inline]
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }

    /// The digest of everything fed.
    pub(crate) fn digest(&self) -> u128 {
        self.0.finish_128()
    }
}

/// XXH3-128 of bytes held whole.
pub(crate) fn xxh3_128(bytes: &[u8]) -> u128 {
    xxhash3_128::Hasher::oneshot(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::Rng as _;
    use proptest::test_runner::{RngAlgorithm, TestRng};

    /// Random contents and cuts that a seed replays.
    fn rng(seed: u8) -> TestRng {
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32])
    }

    fn below(rng: &mut TestRng, n: usize) -> usize {
        (rng.next_u64() % n as u64) as usize
    }

    fn random_bytes(rng: &mut TestRng, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        rng.fill_bytes(&mut bytes);
        bytes
    }

    fn streamed_128(bytes: &[u8], cuts: &[usize]) -> u128 {
        let mut hasher = Xxh3_128::default();
        let mut from = 0;
        for cut in cuts.iter().copied().chain(std::iter::once(bytes.len())) {
            hasher.update(&bytes[from..cut]);
            from = cut;
        }
        hasher.digest()
    }

    fn streamed_64(bytes: &[u8], cuts: &[usize]) -> u64 {
        let mut hasher = Xxh3_64::new();
        let mut from = 0;
        for cut in cuts.iter().copied().chain(std::iter::once(bytes.len())) {
            hasher.update(&bytes[from..cut]);
            from = cut;
        }
        hasher.digest()
    }

    /// Up to `most` places to cut `len` bytes, in order (repeats give
    /// empty pieces, which the ingest path can also hand over).
    fn cuts(rng: &mut TestRng, len: usize, most: usize) -> Vec<usize> {
        let mut cuts: Vec<usize> = (0..below(rng, most + 1))
            .map(|_| below(rng, len + 1))
            .collect();
        cuts.sort_unstable();
        cuts
    }

    /// Both digests of `bytes` whole, streamed in random pieces and in
    /// pieces of the sizes the ingest path and `verify` feed, against
    /// `xxhash-rust`, which wrote every store so far.
    fn check_against_xxhash_rust(rng: &mut TestRng, bytes: &[u8]) {
        let len = bytes.len();
        let want_128 = xxhash_rust::xxh3::xxh3_128(bytes);
        let want_64 = xxhash_rust::xxh3::xxh3_64(bytes);
        assert_eq!(xxh3_128(bytes), want_128, "XXH3-128 of {len} bytes whole");
        assert_eq!(
            streamed_128(bytes, &[]),
            want_128,
            "XXH3-128 of {len} bytes"
        );
        assert_eq!(streamed_64(bytes, &[]), want_64, "XXH3-64 of {len} bytes");
        for _ in 0..4 {
            let cuts = cuts(rng, len, 12);
            assert_eq!(
                streamed_128(bytes, &cuts),
                want_128,
                "XXH3-128 of {len} bytes cut at {cuts:?}"
            );
            assert_eq!(
                streamed_64(bytes, &cuts),
                want_64,
                "XXH3-64 of {len} bytes cut at {cuts:?}"
            );
        }
        for piece in [1, 63, 64, 65, 255, 256, 257, 1024, 32 * 1024, 256 * 1024] {
            if piece < len && len / piece <= 4096 {
                let cuts: Vec<usize> = (piece..len).step_by(piece).collect();
                assert_eq!(
                    streamed_128(bytes, &cuts),
                    want_128,
                    "XXH3-128 of {len} bytes in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn digests_are_xxhash_rusts_for_short_inputs() {
        let mut rng = rng(1);
        for len in 0..=300 {
            let bytes = random_bytes(&mut rng, len);
            check_against_xxhash_rust(&mut rng, &bytes);
        }
    }

    #[test]
    fn digests_are_xxhash_rusts_from_1_kib_to_1_mib() {
        let mut rng = rng(2);
        // Every power of two and its neighbours (block and stripe edges),
        // then random lengths.
        let mut lens: Vec<usize> = (10..=20)
            .flat_map(|shift| [(1 << shift) - 1, 1 << shift, (1 << shift) + 1])
            .filter(|len| (1024..=1 << 20).contains(len))
            .collect();
        lens.extend((0..24).map(|_| 1024 + below(&mut rng, (1 << 20) - 1024 + 1)));
        for len in lens {
            let bytes = random_bytes(&mut rng, len);
            check_against_xxhash_rust(&mut rng, &bytes);
        }
    }

    #[test]
    fn digests_are_the_reference_implementations() {
        // `xxhsum -H2` (XXH128) and `xxhsum -H3` (XXH3-64) of xxHash 0.8.1,
        // the reference C implementation, over these bytes; the 128-bit
        // digest as it prints it, most significant byte first.
        let vectors: [(usize, u128, u64); 20] = [
            (0, 0x99aa06d3014798d86001c324468d497f, 0x2d06800538d394c2),
            (1, 0xa6cd5e9392000f6ac44bdff4074eecdb, 0xc44bdff4074eecdb),
            (3, 0x95c705060a313bf8a1c4a8259b827291, 0xa1c4a8259b827291),
            (4, 0xafbf64f9281b8de2fde8d93ae8794d8e, 0xbb4e3d89ee0b271d),
            (8, 0x2761698c33953c430234362aaf47b71a, 0x79d02238b80e37b1),
            (9, 0x0d39db6431d37a74895c8a562da51412, 0xf64cecc4271ff461),
            (16, 0x29be75b0bbbb5284aafffcec5df2cb27, 0x222e9aead6bddd51),
            (17, 0xdb7e8f77961e47fd878751509ecfdb8b, 0x47aad6b375eb4bba),
            (128, 0xba44fd018231af4cbbe087d879edcc78, 0x421a9c905c6e66ba),
            (129, 0x522c922743fd67f1b8075934107218e5, 0x9e2414800f83768a),
            (240, 0x4f49ccc8526aa7ad407883ea5ef95b9a, 0xb714c5fd22744964),
            (241, 0x50b62ee1ee6455a7bc424a2c480dd281, 0xbc424a2c480dd281),
            (255, 0x13c4fb2eb194824f155baa5891f7606f, 0x155baa5891f7606f),
            (256, 0x20d618055259b36c2d040b1ab40f0d78, 0x2d040b1ab40f0d78),
            (257, 0x06d2f2dce7891e45d0515fbec69efb50, 0xd0515fbec69efb50),
            (1023, 0xd34ef4f411b9a93e3071307bafa2f8f4, 0x3071307bafa2f8f4),
            (1024, 0x53bd178b75ab292e1fd15e7d36f5e1bc, 0x1fd15e7d36f5e1bc),
            (1025, 0xd1ad5f4a3cce4374fe08e5a874d23fd2, 0xfe08e5a874d23fd2),
            (
                40963,
                0xa9fc60d7e3337ccc5b76da6af6d9e943,
                0x5b76da6af6d9e943,
            ),
            (
                524295,
                0x2e915bc08320c05de7b1de3efaa9c872,
                0xe7b1de3efaa9c872,
            ),
        ];
        for (len, want_128, want_64) in vectors {
            let bytes: Vec<u8> = (0..len as u32)
                .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            assert_eq!(xxh3_128(&bytes), want_128, "XXH3-128 of {len} bytes");
            assert_eq!(
                streamed_128(&bytes, &[]),
                want_128,
                "XXH3-128 of {len} bytes"
            );
            assert_eq!(streamed_64(&bytes, &[]), want_64, "XXH3-64 of {len} bytes");
        }
    }
}
