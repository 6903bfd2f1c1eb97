//! Which certificate URL the reserve of fetches goes to: the pure part of the certificate
//! store's admission (no I/O, no clock of its own; `now` is passed in).
//!
//! Anyone who knows an allowed topic can name fresh `SimpleNotificationService-<hex>.pem`
//! URLs on the topic's own SNS host, and nothing about a message can be verified before its
//! certificate is fetched. What an outsider cannot cheaply copy is what genuine traffic does
//! to a URL over time: SNS retries every delivery it could not make, and every genuine
//! delivery of the region names the same certificate. So the store keeps part of its fetch
//! budget (the reserve) for the URL that has been asked for most: named more than once, and
//! ranked by the distinct deliveries (MessageIds) that named it, then by how often it was
//! named, then by how long it has waited. A storm of URLs each named once never reaches the
//! reserve; a URL stuffed with forged deliveries wins one fetch, fails, and is then remembered
//! as failed.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

/// Distinct deliveries counted per URL (more add nothing to its rank).
pub const MAX_DELIVERIES: usize = 16;
/// URLs named more than once, waiting for a fetch: beyond this the lowest-ranked is dropped.
pub const MAX_PENDING: usize = 256;
/// URLs named once are remembered (by a 64-bit hash and the delivery that named them) for
/// one to two of these, so that the next naming (an SNS retry) finds them...
pub const SEEN_WINDOW: Duration = Duration::from_secs(300);
/// ...and at most this many in a generation (a storm rotates them sooner).
pub const SEEN_CAPACITY: usize = 32 * 1024;
/// A pending URL not named again for this long is forgotten.
pub const PENDING_IDLE: Duration = Duration::from_secs(900);

/// How much a URL has been asked for.
#[derive(Debug, Clone)]
struct Demand {
    deliveries: Vec<u64>,
    namings: u32,
    first_seen: Instant,
    last_seen: Instant,
}

impl Demand {
    /// Higher is more deserving: distinct deliveries, then namings, then the older.
    fn rank(&self) -> (usize, u32, std::cmp::Reverse<Instant>) {
        (
            self.deliveries.len(),
            self.namings,
            std::cmp::Reverse(self.first_seen),
        )
    }
}

/// What one naming of a URL makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Named for the first time lately: it may use the shared fetches, not the reserve.
    Fresh,
    /// Named before: it waits for the reserve with the others.
    Repeated,
}

/// URLs waiting for a certificate fetch, and how much each has been asked for.
#[derive(Debug)]
pub struct FetchQueue {
    hasher: std::collections::hash_map::RandomState,
    /// URLs named once, by hash: the delivery that named them and when. Two generations.
    seen: [HashMap<u64, (u64, Instant)>; 2],
    rotated: Instant,
    pending: HashMap<String, Demand>,
}

impl FetchQueue {
    pub fn new(now: Instant) -> Self {
        Self {
            hasher: Default::default(),
            seen: [HashMap::new(), HashMap::new()],
            rotated: now,
            pending: HashMap::new(),
        }
    }

    fn hash(&self, s: &str) -> u64 {
        self.hasher.hash_one(s)
    }

    /// Records that `delivery` (its MessageId) named `url` at `now`.
    pub fn name(&mut self, url: &str, delivery: &str, now: Instant) -> Standing {
        let (u, d) = (self.hash(url), self.hash(delivery));
        if let Some(demand) = self.pending.get_mut(url) {
            demand.namings = demand.namings.saturating_add(1);
            demand.last_seen = now;
            if demand.deliveries.len() < MAX_DELIVERIES && !demand.deliveries.contains(&d) {
                demand.deliveries.push(d);
            }
            return Standing::Repeated;
        }
        if now.duration_since(self.rotated) >= SEEN_WINDOW || self.seen[0].len() >= SEEN_CAPACITY {
            self.seen.swap(0, 1);
            self.seen[0].clear();
            self.rotated = now;
        }
        let earlier = self.seen[0].remove(&u).or_else(|| self.seen[1].remove(&u));
        let Some((first_delivery, first_seen)) = earlier else {
            self.seen[0].insert(u, (d, now));
            return Standing::Fresh;
        };
        let deliveries: Vec<u64> = HashSet::from([first_delivery, d]).into_iter().collect();
        self.make_room(now);
        self.pending.insert(
            url.to_owned(),
            Demand {
                deliveries,
                namings: 2,
                first_seen,
                last_seen: now,
            },
        );
        Standing::Repeated
    }

    /// Drops idle entries, then (if still full) the lowest-ranked one.
    fn make_room(&mut self, now: Instant) {
        if self.pending.len() < MAX_PENDING {
            return;
        }
        self.pending
            .retain(|_, d| now.duration_since(d.last_seen) < PENDING_IDLE);
        if self.pending.len() >= MAX_PENDING
            && let Some(lowest) = self
                .pending
                .iter()
                .min_by_key(|(_, d)| d.rank())
                .map(|(u, _)| u.clone())
        {
            self.pending.remove(&lowest);
        }
    }

    /// The URL the reserve goes to: the highest-ranked of those named more than once and not
    /// idle.
    pub fn top(&self, now: Instant) -> Option<&str> {
        self.pending
            .iter()
            .filter(|(_, d)| now.duration_since(d.last_seen) < PENDING_IDLE)
            .max_by_key(|(_, d)| d.rank())
            .map(|(u, _)| u.as_str())
    }

    /// `url` was fetched (whatever the outcome): it waits no more. A failed URL is refused
    /// from memory for a while, and when named again it starts from nothing.
    pub fn remove(&mut self, url: &str) {
        self.pending.remove(url);
        let u = self.hash(url);
        self.seen[0].remove(&u);
        self.seen[1].remove(&u);
    }

    /// URLs named more than once and waiting.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(n: usize) -> String {
        format!("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{n:x}.pem")
    }

    #[test]
    fn a_url_named_once_is_fresh_and_never_reaches_the_reserve() {
        let t0 = Instant::now();
        let mut q = FetchQueue::new(t0);
        for i in 0..1000 {
            assert_eq!(q.name(&url(i), &format!("m{i}"), t0), Standing::Fresh);
        }
        assert_eq!(q.top(t0), None);
        assert_eq!(q.pending(), 0);
    }

    /// The genuine delivery, retried by SNS, wins over a storm of URLs each named once.
    #[test]
    fn an_sns_retry_makes_its_url_the_top_during_a_storm_of_fresh_ones() {
        let t0 = Instant::now();
        let mut q = FetchQueue::new(t0);
        let genuine = url(0xabc);
        assert_eq!(q.name(&genuine, "m-genuine", t0), Standing::Fresh);
        for i in 0..5000 {
            q.name(
                &url(i),
                &format!("storm{i}"),
                t0 + Duration::from_millis(i as u64),
            );
        }
        let retry = t0 + Duration::from_secs(20);
        assert_eq!(q.name(&genuine, "m-genuine", retry), Standing::Repeated);
        assert_eq!(q.top(retry), Some(genuine.as_str()));
    }

    #[test]
    fn distinct_deliveries_rank_first_then_namings_then_age() {
        let t0 = Instant::now();
        let mut q = FetchQueue::new(t0);
        let (a, b, c) = (url(1), url(2), url(3));
        // a: one delivery retried 5 times; b: 3 distinct deliveries; c: like a, but newer.
        for i in 0..5 {
            q.name(&a, "ma", t0 + Duration::from_secs(i));
        }
        for i in 0..3 {
            q.name(&b, &format!("mb{i}"), t0 + Duration::from_secs(10));
        }
        assert_eq!(q.top(t0 + Duration::from_secs(10)), Some(b.as_str()));
        q.remove(&b);
        for i in 0..5 {
            q.name(&c, "mc", t0 + Duration::from_secs(20 + i));
        }
        // a and c: one delivery, five namings each; a waited longer.
        assert_eq!(q.top(t0 + Duration::from_secs(30)), Some(a.as_str()));
        // The same MessageId again adds a naming, not a delivery.
        q.name(&c, "mc", t0 + Duration::from_secs(31));
        assert_eq!(q.top(t0 + Duration::from_secs(31)), Some(c.as_str()));
    }

    #[test]
    fn distinct_deliveries_count_up_to_a_cap() {
        let t0 = Instant::now();
        let mut q = FetchQueue::new(t0);
        let (stuffed, other) = (url(1), url(2));
        for i in 0..1000 {
            q.name(&stuffed, &format!("forged{i}"), t0);
        }
        for i in 0..MAX_DELIVERIES {
            q.name(&other, &format!("real{i}"), t0 + Duration::from_secs(1));
        }
        q.name(&other, "real0", t0 + Duration::from_secs(2));
        // Both at the cap of distinct deliveries; the stuffed one was named more often.
        assert_eq!(q.top(t0 + Duration::from_secs(2)), Some(stuffed.as_str()));
        // Fetched and failed: it waits no more, and starts from nothing if named again.
        q.remove(&stuffed);
        assert_eq!(q.top(t0 + Duration::from_secs(2)), Some(other.as_str()));
        assert_eq!(
            q.name(&stuffed, "forged0", t0 + Duration::from_secs(3)),
            Standing::Fresh
        );
    }

    #[test]
    fn the_pending_table_is_bounded_and_drops_the_lowest_ranked() {
        let t0 = Instant::now();
        let mut q = FetchQueue::new(t0);
        let genuine = url(0);
        for i in 0..3 {
            q.name(&genuine, &format!("g{i}"), t0);
        }
        for i in 1..=(MAX_PENDING * 4) {
            q.name(&url(i), "x", t0 + Duration::from_secs(1));
            q.name(&url(i), "x", t0 + Duration::from_secs(1));
        }
        assert!(q.pending() <= MAX_PENDING);
        assert_eq!(q.top(t0 + Duration::from_secs(2)), Some(genuine.as_str()));
    }

    #[test]
    fn idle_urls_are_not_chosen_and_the_seen_set_rotates() {
        let t0 = Instant::now();
        let mut q = FetchQueue::new(t0);
        let (a, b) = (url(1), url(2));
        q.name(&a, "m1", t0);
        q.name(&a, "m2", t0);
        assert_eq!(q.top(t0 + PENDING_IDLE), None);
        // A URL named once is remembered across one rotation of the seen set, not two.
        q.name(&b, "m", t0);
        q.name(&url(3), "m", t0 + SEEN_WINDOW);
        assert_eq!(
            q.name(&b, "m", t0 + SEEN_WINDOW + Duration::from_secs(1)),
            Standing::Repeated
        );
        let mut q = FetchQueue::new(t0);
        q.name(&b, "m", t0);
        q.name(&url(3), "m", t0 + SEEN_WINDOW);
        q.name(&url(4), "m", t0 + SEEN_WINDOW * 2);
        assert_eq!(q.name(&b, "m", t0 + SEEN_WINDOW * 2), Standing::Fresh);
    }
}
