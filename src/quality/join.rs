//! The bounded, age-ordered store that joins delayed labels to predictions by request id.
//!
//! Entries sit in a ring in insertion order (which is age order: the shard inserts with its own
//! monotonic clock) with a hash index from key to ring position. Taking an entry leaves a
//! tombstone that is skipped when the ring is popped and removed by compaction once tombstones
//! outnumber live entries, so every operation is amortised O(1).
//!
//! Bounds: at most `capacity` live entries. Inserting into a full store evicts the oldest entry;
//! entries older than the TTL leave at the next [`expire`](JoinStore::expire). Both are returned
//! to the caller so that it can count them.
//!
//! Keys are 128-bit hashes of (model version, request id) rather than the ids themselves: 16
//! bytes instead of a heap string per pending prediction. The chance that two of a million
//! pending ids collide is about 10⁻²⁷.

use std::{
    collections::{hash_map, HashMap, VecDeque},
    hash::{BuildHasherDefault, Hasher},
};

/// A 128-bit hash of (model id, request id).
pub type JoinKey = (u64, u64);

/// Keys are already uniform hashes: the index uses their first half as is instead of hashing
/// them again.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `JoinKey`; a correct fallback for anything else.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // The first half of the key: written first, kept.
        if self.0 == 0 {
            self.0 = n;
        }
    }
}

/// Why an entry left the store without being taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// Older than the TTL.
    Expired,
    /// Evicted, the oldest, to make room.
    Evicted,
}

#[derive(Debug)]
struct Entry<V> {
    key: JoinKey,
    /// Insertion time, milliseconds on the shard clock.
    at_ms: u64,
    /// `None` once taken (a tombstone).
    value: Option<V>,
}

/// Entries by key, oldest first, bounded in number and age.
#[derive(Debug)]
pub struct JoinStore<V> {
    ring: VecDeque<Entry<V>>,
    /// Absolute position of `ring[0]`; positions only grow, so stored ones stay valid.
    head: u64,
    index: HashMap<JoinKey, u64, BuildHasherDefault<KeyHasher>>,
    capacity: usize,
    ttl_ms: u64,
}

impl<V> JoinStore<V> {
    pub fn new(capacity: usize, ttl_ms: u64) -> Self {
        Self {
            ring: VecDeque::new(),
            head: 0,
            index: HashMap::default(),
            capacity,
            ttl_ms,
        }
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn contains(&self, key: &JoinKey) -> bool {
        self.index.contains_key(key)
    }

    pub fn get(&self, key: &JoinKey) -> Option<&V> {
        let position = *self.index.get(key)?;
        self.ring[(position - self.head) as usize].value.as_ref()
    }

    pub fn get_mut(&mut self, key: &JoinKey) -> Option<&mut V> {
        let position = *self.index.get(key)?;
        self.ring[(position - self.head) as usize].value.as_mut()
    }

    /// Stores `value` under `key` at `now_ms`. A key already present keeps its first value:
    /// `value` comes back as `Err`. When full, the oldest entry is evicted and returned.
    #[allow(clippy::type_complexity)]
    pub fn insert(
        &mut self,
        key: JoinKey,
        now_ms: u64,
        value: V,
    ) -> Result<Option<(JoinKey, V)>, V> {
        if self.capacity == 0 {
            return Ok(Some((key, value)));
        }
        // One lookup of the index while there is room (the usual case); a full store looks the
        // key up first, so that a duplicate evicts nothing.
        let evicted = if self.index.len() >= self.capacity {
            if self.index.contains_key(&key) {
                return Err(value);
            }
            self.pop_oldest()
        } else {
            None
        };
        let position = self.head + self.ring.len() as u64;
        match self.index.entry(key) {
            hash_map::Entry::Occupied(_) => return Err(value),
            hash_map::Entry::Vacant(slot) => slot.insert(position),
        };
        self.ring.push_back(Entry {
            key,
            at_ms: now_ms,
            value: Some(value),
        });
        self.compact_if_sparse();
        Ok(evicted)
    }

    /// The entry under `key`, found with one lookup of the index, to be read and then kept in
    /// place or taken ([`Found::take`]).
    pub fn find(&mut self, key: JoinKey) -> Option<Found<'_, V>> {
        match self.index.entry(key) {
            hash_map::Entry::Occupied(slot) => Some(Found {
                slot,
                ring: &mut self.ring,
                head: &mut self.head,
            }),
            hash_map::Entry::Vacant(_) => None,
        }
    }

    /// Removes and returns the value stored under `key`, with its insertion time.
    pub fn take(&mut self, key: &JoinKey) -> Option<(u64, V)> {
        let position = self.index.remove(key)?;
        let entry = &mut self.ring[(position - self.head) as usize];
        let value = entry.value.take()?;
        let at = entry.at_ms;
        self.trim_front();
        Some((at, value))
    }

    /// Removes the entries older than the TTL at `now_ms`, oldest first.
    pub fn expire(&mut self, now_ms: u64, mut departed: impl FnMut(JoinKey, V)) {
        while let Some(front) = self.ring.front() {
            if front.value.is_some() && now_ms.saturating_sub(front.at_ms) < self.ttl_ms {
                break;
            }
            let entry = self.ring.pop_front().expect("front exists");
            self.head += 1;
            if let Some(value) = entry.value {
                self.index.remove(&entry.key);
                departed(entry.key, value);
            }
        }
    }

    fn pop_oldest(&mut self) -> Option<(JoinKey, V)> {
        while let Some(entry) = self.ring.pop_front() {
            self.head += 1;
            if let Some(value) = entry.value {
                self.index.remove(&entry.key);
                return Some((entry.key, value));
            }
        }
        None
    }

    fn trim_front(&mut self) {
        trim_front(&mut self.ring, &mut self.head);
    }

    /// Rebuilds the ring without tombstones once they are the majority.
    fn compact_if_sparse(&mut self) {
        if self.ring.len() < 64 || self.ring.len() < 2 * self.index.len() {
            return;
        }
        self.ring.retain(|e| e.value.is_some());
        self.head = 0;
        for (i, entry) in self.ring.iter().enumerate() {
            self.index.insert(entry.key, i as u64);
        }
    }
}

/// Drops the tombstones at the front of the ring.
fn trim_front<V>(ring: &mut VecDeque<Entry<V>>, head: &mut u64) {
    while ring.front().is_some_and(|e| e.value.is_none()) {
        ring.pop_front();
        *head += 1;
    }
}

/// An entry of a [`JoinStore`] that [`JoinStore::find`] found: its index slot, held so that
/// taking the entry does not look the key up again.
pub struct Found<'a, V> {
    slot: hash_map::OccupiedEntry<'a, JoinKey, u64>,
    ring: &'a mut VecDeque<Entry<V>>,
    head: &'a mut u64,
}

impl<'a, V> Found<'a, V> {
    fn entry(&mut self) -> &mut Entry<V> {
        let at = (*self.slot.get() - *self.head) as usize;
        &mut self.ring[at]
    }

    /// The value, left in the store.
    pub fn value(&mut self) -> &mut V {
        self.entry()
            .value
            .as_mut()
            .expect("an indexed entry holds a value")
    }

    /// Removes the entry; returns its value with its insertion time.
    pub fn take(mut self) -> (u64, V) {
        let entry = self.entry();
        let (at, value) = (entry.at_ms, entry.value.take());
        self.slot.remove();
        trim_front(self.ring, self.head);
        (at, value.expect("an indexed entry holds a value"))
    }
}

/// A lossy memory of recently resolved keys: a 4-way set-associative table (a bucket of four
/// 8-byte slots shares one cache line) where each slot holds a key's second half and a 1-bit tag.
/// A key goes to a free slot of its bucket, else replaces one picked by its own bits, so the
/// table keeps about the most recent `slots` keys in constant memory with one memory access per
/// write (an exact FIFO set would cost an insert and an eviction in a hash map). Below a quarter
/// full, a key is forgotten only if five keys share its bucket (about 3·10⁻⁵ expected losses for
/// 1 500 keys in 65 536 slots). A lookup matches a different key with probability 2⁻⁶² per slot.
#[derive(Debug)]
pub struct RecentKeys {
    slots: Vec<u64>,
}

const WAYS: usize = 4;

impl RecentKeys {
    pub fn new(slots: usize) -> Self {
        Self {
            slots: vec![0; slots.max(WAYS).next_power_of_two()],
        }
    }

    fn bucket(&self, key: &JoinKey) -> std::ops::Range<usize> {
        let buckets = (self.slots.len() / WAYS) as u64;
        let start = (key.0 & (buckets - 1)) as usize * WAYS;
        start..start + WAYS
    }

    fn fingerprint(key: &JoinKey) -> u64 {
        // Bit 0 holds the tag; bit 1 keeps an occupied slot non-zero.
        (key.1 & !3) | 2
    }

    /// Remembers `key` with a one-bit tag.
    #[inline]
    pub fn insert(&mut self, key: JoinKey, tag: bool) {
        let fingerprint = Self::fingerprint(&key);
        let range = self.bucket(&key);
        let bucket = &mut self.slots[range];
        let way = bucket
            .iter()
            .position(|&v| v == 0 || v & !1 == fingerprint)
            .unwrap_or((key.1 >> 62) as usize);
        bucket[way] = fingerprint | u64::from(tag);
    }

    /// The tag of `key`, if it is still remembered.
    #[inline]
    pub fn get(&self, key: &JoinKey) -> Option<bool> {
        let fingerprint = Self::fingerprint(key);
        self.slots[self.bucket(key)]
            .iter()
            .find(|&&v| v & !1 == fingerprint)
            .map(|&v| v & 1 == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keys_remember_four_per_bucket() {
        // 8 slots: 2 buckets of 4; keys with an even first half share bucket 0.
        let mut recent = RecentKeys::new(8);
        for (i, tag) in [(0, true), (2, false), (4, true), (6, false)] {
            recent.insert((i, (i + 1) << 8), tag);
        }
        assert_eq!(recent.get(&(0, 1 << 8)), Some(true));
        assert_eq!(recent.get(&(6, 7 << 8)), Some(false));
        assert_eq!(recent.get(&(0, 9 << 8)), None, "same bucket, other key");
        recent.insert((2, 3 << 8), true); // same key: its tag is updated in place
        assert_eq!(recent.get(&(2, 3 << 8)), Some(true));
        // A fifth key replaces the way its top bits pick (way 3 here): the key in it is gone.
        recent.insert((8, 3 << 62), false);
        assert_eq!(recent.get(&(8, 3 << 62)), Some(false));
        assert_eq!(recent.get(&(6, 7 << 8)), None);
        assert_eq!(recent.get(&(0, 1 << 8)), Some(true));
    }

    #[test]
    fn take_expire_and_evict() {
        let mut store = JoinStore::new(3, 1_000);
        assert!(store.insert((1, 0), 0, "a").unwrap().is_none());
        assert!(store.insert((2, 0), 100, "b").unwrap().is_none());
        assert_eq!(
            store.insert((2, 0), 150, "b2"),
            Err("b2"),
            "first value kept"
        );
        assert!(store.insert((3, 0), 200, "c").unwrap().is_none());
        assert_eq!(store.take(&(2, 0)), Some((100, "b")));
        assert_eq!(store.take(&(2, 0)), None);
        assert!(store.insert((4, 0), 300, "d").unwrap().is_none());
        // Full: the oldest goes.
        assert_eq!(store.insert((5, 0), 400, "e").unwrap(), Some(((1, 0), "a")));
        let mut gone = Vec::new();
        store.expire(1_250, |k, v| gone.push((k, v)));
        assert_eq!(gone, vec![((3, 0), "c")]);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn a_found_entry_is_kept_or_taken() {
        let mut store = JoinStore::new(3, 1_000);
        for (k, at) in [(1, 0), (2, 10), (3, 20)] {
            store.insert((k, 0), at, k * 10).unwrap();
        }
        assert!(store.find((9, 0)).is_none());
        // Kept: changed in place, still there.
        *store.find((2, 0)).unwrap().value() += 1;
        assert_eq!(store.get(&(2, 0)), Some(&21));
        // Taken from the front: the tombstone goes with it, the next insert evicts (2, 0).
        assert_eq!(store.find((1, 0)).unwrap().take(), (0, 10));
        assert_eq!(store.find((1, 0)).map(|mut f| *f.value()), None);
        assert_eq!(store.ring.len(), 2);
        assert!(store.insert((4, 0), 30, 40).unwrap().is_none());
        assert_eq!(store.insert((5, 0), 40, 50).unwrap(), Some(((2, 0), 21)));
        // A duplicate key into the full store evicts nothing.
        assert_eq!(store.insert((5, 0), 50, 51), Err(51));
        assert_eq!(store.len(), 3);
        // Taken from the middle: a tombstone, skipped by expiry.
        assert_eq!(store.find((4, 0)).unwrap().take(), (30, 40));
        let mut gone = Vec::new();
        store.expire(10_000, |k, v| gone.push((k, v)));
        assert_eq!(gone, vec![((3, 0), 30), ((5, 0), 50)]);
        assert!(store.is_empty() && store.ring.is_empty());
    }

    #[test]
    fn out_of_order_takes_stay_bounded() {
        let mut store = JoinStore::new(100, u64::MAX);
        for i in 0..10_000u64 {
            store.insert((i, 0), i, i).unwrap();
            // Take all but every tenth, newest first, so tombstones pile up behind live ones.
            if i % 10 != 0 {
                assert_eq!(store.take(&(i, 0)), Some((i, i)));
            }
        }
        // 9991 found the store full and evicted the oldest kept entry before being taken.
        assert_eq!(store.len(), 99);
        assert!(store.ring.len() <= 2 * 100 + 64);
        assert!(store.contains(&(9_990, 0)) && store.contains(&(9_010, 0)));
        assert!(!store.contains(&(9_000, 0)));
    }
}
