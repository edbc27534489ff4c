//! A bounded generational slab: the tables of connections, files and
//! operations. A key carries the slot's generation, so a stale id (a closed
//! connection, a completed operation) never reaches a reused slot.

/// A slot index plus the generation it was issued under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub index: u32,
    pub generation: u32,
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// Entries are stored inline in a `Vec`, which may move when it grows: code
/// that hands the kernel a pointer points into heap data an entry owns
/// (a `Box`, `Vec` or `CString`), never into the entry itself.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
    capacity_max: usize,
}

impl<T> Slab<T> {
    pub fn new(capacity_max: usize) -> Slab<T> {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            capacity_max,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_full(&self) -> bool {
        self.len >= self.capacity_max
    }

    /// Inserts, or gives the value back when the slab is at its maximum.
    pub fn insert(&mut self, value: T) -> Result<Key, T> {
        if self.is_full() {
            return Err(value);
        }
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let Ok(index) = u32::try_from(self.slots.len()) else {
                    return Err(value);
                };
                if index == u32::MAX {
                    return Err(value);
                }
                self.slots.push(Slot {
                    generation: 1,
                    value: None,
                });
                index
            }
        };
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return Err(value);
        };
        // The free list names only empty slots, and a generation is never 0
        // (a key of generation 0 could not be told from a zeroed one).
        debug_assert!(slot.value.is_none(), "free list named an occupied slot");
        debug_assert_ne!(slot.generation, 0, "slot generation 0");
        slot.value = Some(value);
        self.len += 1;
        debug_assert!(self.len <= self.capacity_max, "slab beyond its maximum");
        Ok(Key {
            index,
            generation: slot.generation,
        })
    }

    /// Generations compared only in their low `mask` bits (user_data keeps 24).
    fn matches(slot_generation: u32, key_generation: u32, mask: u32) -> bool {
        slot_generation & mask == key_generation & mask
    }

    pub fn get(&self, key: Key) -> Option<&T> {
        self.get_masked(key, u32::MAX)
    }

    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        self.get_mut_masked(key, u32::MAX)
    }

    pub fn get_masked(&self, key: Key, mask: u32) -> Option<&T> {
        let slot = self.slots.get(key.index as usize)?;
        if Self::matches(slot.generation, key.generation, mask) {
            slot.value.as_ref()
        } else {
            None
        }
    }

    pub fn get_mut_masked(&mut self, key: Key, mask: u32) -> Option<&mut T> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if Self::matches(slot.generation, key.generation, mask) {
            slot.value.as_mut()
        } else {
            None
        }
    }

    pub fn remove(&mut self, key: Key) -> Option<T> {
        self.remove_masked(key, u32::MAX)
    }

    pub fn remove_masked(&mut self, key: Key, mask: u32) -> Option<T> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if !Self::matches(slot.generation, key.generation, mask) {
            return None;
        }
        let value = slot.value.take()?;
        // A new generation, so every key issued for this value goes stale.
        slot.generation = slot.generation.wrapping_add(1).max(1);
        debug_assert!(self.len > 0, "slab length underflow");
        self.free.push(key.index);
        self.len -= 1;
        Some(value)
    }

    /// Keys of every occupied slot.
    pub fn keys(&self) -> Vec<Key> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.value.is_some())
            .filter_map(|(index, slot)| {
                Some(Key {
                    index: u32::try_from(index).ok()?,
                    generation: slot.generation,
                })
            })
            .collect()
    }

    /// Removes everything, returning the values (used at teardown).
    pub fn drain(&mut self) -> Vec<T> {
        let values = self
            .slots
            .iter_mut()
            .filter_map(|slot| slot.value.take())
            .collect();
        self.slots.clear();
        self.free.clear();
        self.len = 0;
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_key_misses_reused_slot() {
        let mut slab = Slab::new(4);
        let first = slab.insert("a").unwrap();
        assert_eq!(slab.remove(first), Some("a"));
        let second = slab.insert("b").unwrap();
        assert_eq!(first.index, second.index);
        assert_eq!(slab.get(first), None);
        assert_eq!(slab.get(second), Some(&"b"));
    }

    #[test]
    fn bounded() {
        let mut slab = Slab::new(2);
        slab.insert(1).unwrap();
        slab.insert(2).unwrap();
        assert_eq!(slab.insert(3), Err(3));
        assert_eq!(slab.len(), 2);
    }

    #[test]
    fn masked_generation_matches_low_bits() {
        let mut slab = Slab::new(2);
        let key = slab.insert(7).unwrap();
        let masked = Key {
            index: key.index,
            generation: key.generation & 0xff_ffff,
        };
        assert_eq!(slab.get_masked(masked, 0xff_ffff), Some(&7));
        assert_eq!(slab.remove_masked(masked, 0xff_ffff), Some(7));
    }
}
