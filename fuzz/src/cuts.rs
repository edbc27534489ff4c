//! Seeded cuts: how a harness splits its input into the pieces a receive
//! path would see (reads of any size, empty ones included).
//!
//! The seed is a hash of the input itself, so the fuzzer explores cut
//! patterns by mutating bytes and a stored input replays with exactly the
//! cuts it was found with.

/// A small deterministic generator (SplitMix64) seeded from an input.
#[derive(Debug, Clone)]
pub struct Cuts {
    state: u64,
}

impl Cuts {
    /// The generator for `input` (FNV-1a of its bytes).
    pub fn for_input(input: &[u8]) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in input {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self { state: hash }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The length of the next piece: often tiny (inside a header), sometimes
    /// a typical read, now and then empty or large.
    pub fn next_length(&mut self) -> usize {
        let bits = self.next_u64();
        let rest = (bits >> 8) as usize;
        match bits % 16 {
            0 => 0,
            1..=6 => 1 + rest % 8,
            7..=11 => 1 + rest % 64,
            12..=14 => 1 + rest % 2048,
            _ => 1 + rest % 65_536,
        }
    }

    /// `input` split into consecutive pieces (concatenated, they are `input`).
    pub fn split<'a>(&mut self, input: &'a [u8]) -> Vec<&'a [u8]> {
        let mut pieces = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let (piece, after) = rest.split_at(self.next_length().min(rest.len()));
            pieces.push(piece);
            rest = after;
        }
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::Cuts;

    #[test]
    fn pieces_concatenate_to_the_input_and_depend_on_it() {
        let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let pieces = Cuts::for_input(&input).split(&input);
        assert!(pieces.len() > 10, "a 200 kB input is cut into many pieces");
        assert_eq!(pieces.concat(), input);
        assert_eq!(Cuts::for_input(&input).split(&input), pieces);
        let mut other = input.clone();
        other[0] ^= 1;
        let other_lengths: Vec<usize> = Cuts::for_input(&other)
            .split(&other)
            .iter()
            .map(|piece| piece.len())
            .collect();
        let lengths: Vec<usize> = pieces.iter().map(|piece| piece.len()).collect();
        assert_ne!(lengths, other_lengths, "another input, other cuts");
    }
}
