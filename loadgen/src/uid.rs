//! Unique UIDs of a fixed width, made without allocation on the send path.
//!
//! Every send patches the Study, Series and SOP Instance UIDs of a prepared
//! data set in place, so a new UID must have exactly the width of the slot
//! it replaces. [`UidGenerator`] writes `2.25.` followed by a decimal number
//! whose first digit is `1` (no leading zero, PS3.5 §9.1) and whose other
//! digits are a per-run random id and a per-process counter, zero-padded to
//! the slot width. Two runs collide only if their random ids collide.

use std::sync::atomic::{AtomicU64, Ordering};

/// The narrowest UID slot we rewrite: `2.25.1` + 19 counter digits + a few
/// run-id digits. A narrower slot in a real file is left unchanged.
pub const UID_SLOT_WIDTH_MIN: usize = 30;

/// The width of the UIDs written into synthetic data sets (even: no padding).
pub const SYNTHETIC_UID_WIDTH: usize = 44;

/// Hands out unique UID values of any width from [`UID_SLOT_WIDTH_MIN`] to 64.
#[derive(Debug)]
pub struct UidGenerator {
    run_id: u64,
    counter: AtomicU64,
}

impl UidGenerator {
    /// A generator whose UIDs carry `run_id` (random per run).
    pub fn new(run_id: u64) -> UidGenerator {
        UidGenerator {
            run_id,
            counter: AtomicU64::new(1),
        }
    }

    /// A fresh serial number (shared by all threads).
    pub fn next_serial(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes the UID for `serial` into `slot`, filling it exactly: UID
    /// characters, then one NUL pad byte when the slot width is odd (a UI
    /// value has even length). Returns false (slot untouched) when the slot
    /// is narrower than [`UID_SLOT_WIDTH_MIN`] or wider than 64.
    pub fn write(&self, serial: u64, slot: &mut [u8]) -> bool {
        let width = slot.len();
        if !(UID_SLOT_WIDTH_MIN..=64).contains(&width) {
            return false;
        }
        let text_width = width - (width % 2);
        let prefix = b"2.25.1";
        // Digits after the prefix: the counter (20 digits) at the end, the
        // run id (as many of its digits as fit) in between.
        let digits = text_width - prefix.len();
        let (head, tail) = slot.split_at_mut(prefix.len());
        head.copy_from_slice(prefix);
        let mut counter = serial;
        let mut run = self.run_id;
        for (position, byte) in tail.iter_mut().take(digits).rev().enumerate() {
            let digit = if position < 20 {
                let digit = counter % 10;
                counter /= 10;
                digit
            } else {
                let digit = run % 10;
                run /= 10;
                digit
            };
            *byte = b'0' + digit as u8;
        }
        if let Some(pad) = tail.get_mut(digits..) {
            pad.fill(0);
        }
        true
    }

    /// The UID for `serial` at `width` as a string (for commitment
    /// references and the history file); trailing NUL removed.
    pub fn to_string(&self, serial: u64, width: usize) -> String {
        let mut slot = vec![0u8; width];
        if !self.write(serial, &mut slot) {
            return String::new();
        }
        String::from_utf8_lossy(&slot)
            .trim_end_matches('\0')
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_valid_unique_and_fill_the_slot() {
        let generator = UidGenerator::new(987_654_321);
        let first = generator.to_string(1, 44);
        let second = generator.to_string(2, 44);
        assert_eq!(first.len(), 44);
        assert_ne!(first, second);
        assert!(first.starts_with("2.25.1"));
        sluice_net::uid::check_uid(first.as_bytes()).unwrap();
        let odd = generator.to_string(3, 45);
        assert_eq!(odd.len(), 44);
        let mut slot = [b'x'; 45];
        assert!(generator.write(3, &mut slot));
        assert_eq!(slot[44], 0);
        assert!(!generator.write(3, &mut [0u8; 10]));
    }

    #[test]
    fn different_runs_give_different_uids() {
        let a = UidGenerator::new(1).to_string(5, 44);
        let b = UidGenerator::new(2).to_string(5, 44);
        assert_ne!(a, b);
    }
}
