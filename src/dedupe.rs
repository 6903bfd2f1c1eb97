//! Which SNS MessageIds were already applied, so a redelivery patches nothing twice.
//!
//! Bounded in time and memory: ids live in generations (ten minutes, or an eighth of the
//! capacity, whichever fills first) and are forgotten when their generation is older than the
//! retention (the service uses --max-message-age plus the clock-skew tolerance: an older
//! redelivery is rejected before it gets here); if the total exceeds the capacity the oldest
//! generation goes first, so at most capacity × 9/8 ids are held. An id is kept as a 128-bit
//! value (SNS MessageIds are UUIDs; anything else is hashed), 16 bytes plus the hash table's
//! overhead: [`CAPACITY`] ids take about 4 MiB at most (docs/reliability.md, "Memory
//! budget"). Forgetting an id early costs at most one extra re-sync, never a missed one.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

const GENERATION: Duration = Duration::from_secs(600);

/// The service's capacity: an hour of 28 distinct notifications a second (SNS's retry window
/// is at most the --max-message-age of an hour).
pub const CAPACITY: usize = 100_000;

pub struct Dedupe {
    inner: Mutex<Inner>,
    retention: Duration,
    capacity: usize,
    hasher: std::collections::hash_map::RandomState,
}

struct Inner {
    /// Newest first: (start, ids).
    generations: VecDeque<(Instant, HashSet<u128>)>,
    len: usize,
}

impl Dedupe {
    pub fn new(retention: Duration, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                generations: VecDeque::new(),
                len: 0,
            }),
            retention,
            capacity: capacity.max(1),
            hasher: Default::default(),
        }
    }

    fn key(&self, id: &str) -> u128 {
        uuid::Uuid::parse_str(id)
            .map(|u| u.as_u128())
            .unwrap_or_else(|_| {
                let mut a = self.hasher.build_hasher();
                a.write(id.as_bytes());
                let mut b = self.hasher.build_hasher();
                b.write_u8(1);
                b.write(id.as_bytes());
                (u128::from(a.finish()) << 64) | u128::from(b.finish())
            })
    }

    pub fn contains(&self, id: &str) -> bool {
        let key = self.key(id);
        let mut inner = self.inner.lock();
        inner.expire(Instant::now(), self.retention);
        inner.generations.iter().any(|(_, ids)| ids.contains(&key))
    }

    pub fn insert(&self, id: &str) {
        self.insert_at(id, Instant::now());
    }

    fn insert_at(&self, id: &str, now: Instant) {
        let key = self.key(id);
        let mut inner = self.inner.lock();
        inner.expire(now, self.retention);
        let per_generation = (self.capacity / 8).max(1);
        if inner.generations.front().is_none_or(|(start, ids)| {
            now.duration_since(*start) >= GENERATION || ids.len() >= per_generation
        }) {
            inner.generations.push_front((now, HashSet::new()));
        }
        if inner.generations[0].1.insert(key) {
            inner.len += 1;
        }
        while inner.len > self.capacity && inner.generations.len() > 1 {
            let (_, old) = inner.generations.pop_back().expect("more than one");
            inner.len -= old.len();
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn expire(&mut self, now: Instant, retention: Duration) {
        // A generation is dropped once even its newest possible entry is past retention.
        while let Some((start, _)) = self.generations.back() {
            if now.duration_since(*start) > retention + GENERATION {
                let (_, old) = self.generations.pop_back().expect("checked");
                self.len -= old.len();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_uuids_and_other_ids() {
        let d = Dedupe::new(Duration::from_secs(7200), 1000);
        let id = "792cda85-518f-5dd3-9163-81d851212f3a";
        assert!(!d.contains(id));
        d.insert(id);
        d.insert(id);
        assert!(d.contains(id));
        assert!(!d.contains("792cda85-518f-5dd3-9163-81d851212f3b"));
        d.insert("not-a-uuid");
        assert!(d.contains("not-a-uuid") && !d.contains("not-a-uuid2"));
        assert_eq!(d.len(), 2);
    }

    /// However fast ids arrive, the total stays within capacity × 9/8.
    #[test]
    fn a_burst_within_one_generation_is_bounded_too() {
        let d = Dedupe::new(Duration::from_secs(3600), 800);
        let t0 = Instant::now();
        for i in 0..10_000 {
            d.insert_at(&format!("id-{i}"), t0);
            assert!(d.len() <= 900, "{} ids after {i}", d.len());
        }
        assert!(d.contains("id-9999") && !d.contains("id-0"));
    }

    #[test]
    fn forgets_after_retention() {
        let d = Dedupe::new(Duration::from_secs(3600), 1000);
        let t0 = Instant::now();
        d.insert_at("a", t0);
        d.insert_at("b", t0 + Duration::from_secs(3000));
        // Past retention + one generation for "a"'s generation: gone; "b" (newer generation) kept.
        d.insert_at("c", t0 + Duration::from_secs(3600 + 601));
        assert!(!d.contains("a"));
        assert!(d.contains("b") && d.contains("c"));
    }

    #[test]
    fn capacity_drops_the_oldest_generation_first() {
        // Capacity 16: generations of 2 ids (or ten minutes).
        let d = Dedupe::new(Duration::from_secs(7200), 16);
        let t0 = Instant::now();
        for (i, id) in ["a", "b"].iter().enumerate() {
            d.insert_at(id, t0 + Duration::from_secs(i as u64));
        }
        for i in 0..15 {
            d.insert_at(&format!("n{i}"), t0 + Duration::from_secs(700));
        }
        // 17 > 16: the oldest generation (a, b) went as a whole.
        assert_eq!(d.len(), 15);
        assert!(!d.contains("a") && !d.contains("b"));
        assert!(d.contains("n0") && d.contains("n14"));
    }
}
