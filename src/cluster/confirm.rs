//! The outcome: whether ESO (or KES) refreshed what a force-sync asked for. A patch is a
//! request, not a result: ESO may be down, its credentials broken, its webhook refusing, the
//! item unreadable. After each applied patch the target is followed through the watch the
//! service already has (no extra request per target) until the operator's status shows the
//! outcome:
//!
//! - **refreshed**: ESO's `status.syncedResourceVersion` (KES: `status.lastSync`) moved after
//!   the patch, with `Ready=True` (KES: `status.status` SUCCESS). ESO writes it only after a
//!   successful sync, from the generation and a hash of the annotations, so it moves exactly
//!   when a sync that saw the patch completed. A ClusterExternalSecret is refreshed when every
//!   child it had at the patch is;
//! - **failed**: ESO reported `Ready=False` (its reason and message are kept), or KES an error;
//! - **no response**: nothing within `--confirm-timeout` (ESO down, not serving this class).
//!   The target stays watched for an hour after: a late refresh is still reported.
//!
//! Memory: one pending entry per target (a new patch of the same target updates it), each with
//! the changes waiting on it (at most `MAX_WAITERS`), and one tally per SNS message.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use time::OffsetDateTime;

use super::events::Events;
use crate::index::{Index, ResourceKey, Target, TargetKind};
use crate::metrics::Metrics;

/// Changes kept per pending target (the oldest are dropped, counted, beyond).
pub const MAX_WAITERS: usize = 64;
/// SNS messages whose outcome lines are being tallied.
const MAX_MESSAGES: usize = 10_000;
/// How long a target that did not respond is still watched for a late outcome.
const LATE_WINDOW: Duration = Duration::from_secs(3600);

/// A change waiting for a target's outcome.
#[derive(Debug, Clone)]
pub struct Waiter {
    /// The SNS MessageId (or `sweep`).
    pub message_id: Arc<str>,
    pub parameter: Arc<str>,
    /// The SNS Timestamp: the refresh latency users feel starts here.
    pub since: OffsetDateTime,
}

/// What the operator's status shows about a resource's last sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// A fingerprint of `status.syncedResourceVersion` (ESO) or `status.lastSync` (KES):
    /// it moves when a sync completes.
    pub synced: u64,
    /// `Ready` (ESO) / `status.status` (KES): `Some(None)` ready, `Some(Some(reason))` failing.
    pub failing: Option<Option<String>>,
}

impl SyncStatus {
    /// Reads an ExternalSecret's (or a KES object's) status.
    pub fn of(status: &Value, kes: bool) -> Self {
        let fingerprint = crate::index::model::sync_fingerprint;
        if kes {
            let failing = status.get("status").and_then(Value::as_str).map(|s| {
                (s != "SUCCESS").then(|| format!("KES: {}", crate::text::truncate(s, 300)))
            });
            return Self {
                synced: fingerprint(status.get("lastSync").and_then(Value::as_str)),
                failing,
            };
        }
        let ready = status
            .get("conditions")
            .and_then(Value::as_array)
            .and_then(|c| {
                c.iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
            });
        let failing = ready.map(|c| {
            (c.get("status").and_then(Value::as_str) != Some("True")).then(|| {
                format!(
                    "{}: {}",
                    c.get("reason")
                        .and_then(Value::as_str)
                        .unwrap_or("Ready=False"),
                    crate::text::truncate(
                        c.get("message").and_then(Value::as_str).unwrap_or_default(),
                        300
                    )
                )
            })
        });
        Self {
            synced: fingerprint(status.get("syncedResourceVersion").and_then(Value::as_str)),
            failing,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Refreshed,
    Failed(String),
    NoResponse,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Refreshed => "refreshed",
            Self::Failed(_) => "failed",
            Self::NoResponse => "no_response",
        }
    }
}

#[derive(Debug)]
struct Pending {
    uid: Option<String>,
    deadline: Instant,
    /// Each resource whose status decides (the target, or a ClusterExternalSecret's
    /// children), with what its status showed at the patch.
    members: HashMap<ResourceKey, Member>,
    waiters: Vec<Waiter>,
    /// The timeout was reported: only a late refresh or failure remains to report.
    timed_out: bool,
    /// A status the watch showed while the patch was on its way, written after it: judged
    /// once the first change attaches, so that change gets the outcome.
    replay: Option<(ResourceKey, Value)>,
}

#[derive(Debug)]
struct Member {
    baseline: u64,
    last: SyncStatus,
    refreshed: bool,
}

#[derive(Debug, Default)]
struct Tally {
    targets: usize,
    refreshed: Vec<(String, f64)>,
    failed: Vec<String>,
    no_response: Vec<String>,
}

#[derive(Default)]
struct State {
    pending: HashMap<Target, Pending>,
    /// Which pending target a watched resource belongs to.
    members: HashMap<ResourceKey, Target>,
    /// ExternalSecrets (and KES objects) whose patch is on its way to the API server, with the
    /// last status the watch showed meanwhile and its resourceVersion. A fast operator can
    /// sync and write its status before the patch's answer is handled (`patched`): that
    /// status is the refresh, and it must not pass unseen. At most one entry per running
    /// patch (the trigger's concurrency bounds them).
    in_flight: HashMap<ResourceKey, Option<(Value, u64)>>,
    messages: HashMap<Arc<str>, Tally>,
    message_order: std::collections::VecDeque<Arc<str>>,
}

#[derive(Clone)]
pub struct Confirmations {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    timeout: Duration,
    index: Arc<RwLock<Index>>,
    metrics: Arc<Metrics>,
    events: Events,
    /// When each target was last seen refreshed (for the catch-up sweep: a reader behind its
    /// parameter after that is a bug).
    refreshed: moka::sync::Cache<Target, OffsetDateTime>,
    /// Outcomes of the last minute, for changes that attach after their target settled.
    recent: moka::sync::Cache<Target, Outcome>,
}

impl Confirmations {
    pub fn new(
        timeout: Duration,
        index: Arc<RwLock<Index>>,
        metrics: Arc<Metrics>,
        events: Events,
    ) -> Self {
        let c = Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                timeout,
                index,
                metrics,
                events,
                refreshed: moka::sync::Cache::builder()
                    .max_capacity(200_000)
                    .time_to_live(Duration::from_secs(24 * 3600))
                    .build(),
                recent: moka::sync::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(Duration::from_secs(60))
                    .build(),
            }),
        };
        let ticker = c.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(500));
            loop {
                every.tick().await;
                ticker.expire(Instant::now());
            }
        });
        c
    }

    /// A patch of `target` is about to be sent: what the watch shows of it from now on is
    /// kept until the patch ends (`patched`, `not_patched`). A ClusterExternalSecret's
    /// children are judged from the index at `patched`, as before.
    pub fn patching(&self, target: &Target) {
        if let Some(key) = own_key(target) {
            self.inner.state.lock().in_flight.insert(key, None);
        }
    }

    /// The patch of `target` was not applied: nothing to follow.
    pub fn not_patched(&self, target: &Target) {
        if let Some(key) = own_key(target) {
            self.inner.state.lock().in_flight.remove(&key);
        }
    }

    /// A patch of `target` was applied; `object` is the API server's answer (the object as it
    /// was written, its status the one before ESO saw the patch, unless ESO was faster than
    /// this answer: then the watch has shown the newer status already, kept by `patching`,
    /// and it is judged when the first change attaches).
    pub fn patched(&self, target: &Target, object: &Value) {
        let (members, uid) = match target.kind {
            TargetKind::ClusterExternalSecret => {
                let children = self.inner.index.read().children_of(&target.name);
                let members = children
                    .into_iter()
                    .map(|(key, synced)| {
                        (
                            key,
                            SyncStatus {
                                synced,
                                failing: None,
                            },
                        )
                    })
                    .collect::<Vec<_>>();
                (
                    members,
                    object
                        .pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .map(String::from),
                )
            }
            TargetKind::ExternalSecret | TargetKind::KesExternalSecret => {
                let kes = target.kind == TargetKind::KesExternalSecret;
                let status = SyncStatus::of(object.get("status").unwrap_or(&Value::Null), kes);
                let key = ResourceKey {
                    kind: if kes {
                        crate::index::ReaderKind::KesExternalSecret
                    } else {
                        crate::index::ReaderKind::ExternalSecret
                    },
                    namespace: target.namespace.clone(),
                    name: target.name.clone(),
                };
                (
                    vec![(key, status)],
                    object
                        .pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .map(String::from),
                )
            }
        };
        let deadline = Instant::now() + self.inner.timeout;
        let mut guard = self.inner.state.lock();
        let state = &mut *guard;
        // What the watch showed while the patch was on its way, if it was written after the
        // patch (a greater resourceVersion than the answer's): judged when the first change
        // attaches. resourceVersions that are not integers are not compared (nothing kept).
        let replay = own_key(target).and_then(|key| {
            let (status, seen) = state.in_flight.remove(&key)??;
            let written = resource_version(object)?;
            (seen > written).then_some((key, status))
        });
        let entry = state
            .pending
            .entry(target.clone())
            .or_insert_with(|| Pending {
                uid: None,
                deadline,
                members: HashMap::new(),
                waiters: Vec::new(),
                timed_out: false,
                replay: None,
            });
        // A new patch: a new wait, with the status as it is now as the baseline.
        entry.deadline = deadline;
        entry.timed_out = false;
        entry.replay = replay;
        entry.uid = uid.or(entry.uid.take());
        entry.members = members
            .into_iter()
            .map(|(key, status)| {
                state.members.insert(key.clone(), target.clone());
                (
                    key,
                    Member {
                        baseline: status.synced,
                        last: status,
                        refreshed: false,
                    },
                )
            })
            .collect();
        if entry.members.is_empty() {
            // A ClusterExternalSecret without children: nothing will show a sync.
            entry.deadline = Instant::now();
        }
    }

    /// A change waits for `target`'s outcome (after its patch was applied, or covered by one).
    pub fn attach(&self, target: &Target, waiter: Waiter) {
        {
            let mut guard = self.inner.state.lock();
            let state = &mut *guard;
            if !state.messages.contains_key(&waiter.message_id) {
                state.message_order.push_back(waiter.message_id.clone());
            }
            state
                .messages
                .entry(waiter.message_id.clone())
                .or_default()
                .targets += 1;
            while state.message_order.len() > MAX_MESSAGES {
                if let Some(old) = state.message_order.pop_front() {
                    state.messages.remove(&old);
                }
            }
            if let Some(p) = state.pending.get_mut(target) {
                if p.waiters.len() >= MAX_WAITERS {
                    p.waiters.remove(0);
                }
                p.waiters.push(waiter);
                let replay = p.replay.take();
                drop(guard);
                if let Some((key, status)) = replay {
                    self.observe(&key, &status);
                }
                return;
            }
        }
        // Settled before the change attached (a fast operator, or a change covered by a patch
        // whose outcome is known): that outcome is this change's too.
        if let Some(outcome) = self.inner.recent.get(target) {
            self.report(target, None, &[waiter], &outcome);
        }
    }

    /// The watch saw an ExternalSecret (or KES object), `object` as the watch delivered it:
    /// its status may settle a pending target, or belong to a patch still on its way.
    pub fn observe_object(&self, key: &ResourceKey, object: &Value) {
        let status = object.get("status").unwrap_or(&Value::Null);
        {
            let mut state = self.inner.state.lock();
            if let Some(slot) = state.in_flight.get_mut(key)
                && let Some(version) = resource_version(object)
            {
                *slot = Some((status.clone(), version));
            }
        }
        self.observe(key, status);
    }

    /// The watch saw an ExternalSecret (or KES object): its status may settle a pending target.
    pub fn observe(&self, key: &ResourceKey, status: &Value) {
        let kes = key.kind == crate::index::ReaderKind::KesExternalSecret;
        let resolved = {
            let mut state = self.inner.state.lock();
            let Some(target) = state.members.get(key).cloned() else {
                return;
            };
            let Some(p) = state.pending.get_mut(&target) else {
                state.members.remove(key);
                return;
            };
            let Some(m) = p.members.get_mut(key) else {
                return;
            };
            let now = SyncStatus::of(status, kes);
            // Moved after the patch, and not failing: a sync that saw the patch completed.
            if now.synced != m.baseline
                && now.synced != 0
                && now.failing.clone().flatten().is_none()
            {
                m.refreshed = true;
            }
            // A failure the operator wrote after the patch (its status changed since); an
            // unchanged failing status is the timeout's to judge.
            let failed_now = (now != m.last)
                .then(|| now.failing.clone().flatten())
                .flatten();
            m.last = now;
            let outcome = if p.members.values().all(|m| m.refreshed) {
                Some(Outcome::Refreshed)
            } else {
                failed_now.map(Outcome::Failed)
            };
            outcome.map(|o| {
                let p = state.pending.remove(&target).expect("pending");
                for k in p.members.keys() {
                    state.members.remove(k);
                }
                (target, p, o)
            })
        };
        if let Some((target, p, outcome)) = resolved {
            if outcome == Outcome::Refreshed {
                self.inner
                    .refreshed
                    .insert(target.clone(), OffsetDateTime::now_utc());
            }
            self.inner.recent.insert(target.clone(), outcome.clone());
            let late = p.timed_out;
            if late {
                tracing::info!(target = %target, outcome = outcome.label(), "late outcome after no response within --confirm-timeout");
            }
            self.report(&target, p.uid.as_deref(), &p.waiters, &outcome);
        }
    }

    /// Reports every target whose deadline passed: failed (the operator's last word is an
    /// error) or no response. Kept watched for a late outcome.
    fn expire(&self, now: Instant) {
        let mut due = Vec::new();
        {
            let mut state = self.inner.state.lock();
            let state = &mut *state;
            let mut gone = Vec::new();
            for (target, p) in state.pending.iter_mut() {
                if p.timed_out {
                    if now > p.deadline + LATE_WINDOW {
                        gone.push(target.clone());
                    }
                    continue;
                }
                if now < p.deadline {
                    continue;
                }
                p.timed_out = true;
                let outcome = match p
                    .members
                    .values()
                    .find_map(|m| m.last.failing.clone().flatten())
                {
                    Some(why) => Outcome::Failed(why),
                    None => Outcome::NoResponse,
                };
                due.push((target.clone(), p.uid.clone(), p.waiters.clone(), outcome));
            }
            for t in gone {
                if let Some(p) = state.pending.remove(&t) {
                    for k in p.members.keys() {
                        state.members.remove(k);
                    }
                }
            }
            self.inner
                .metrics
                .refresh_pending
                .set(state.pending.len() as i64);
        }
        for (target, uid, waiters, outcome) in due {
            self.inner.recent.insert(target.clone(), outcome.clone());
            self.report(&target, uid.as_deref(), &waiters, &outcome);
        }
    }

    fn report(&self, target: &Target, uid: Option<&str>, waiters: &[Waiter], outcome: &Outcome) {
        let m = &self.inner.metrics;
        let now = OffsetDateTime::now_utc();
        m.refresh
            .get_or_create(&crate::metrics::Outcome {
                outcome: outcome.label(),
            })
            .inc_by(waiters.len().max(1) as u64);
        for w in waiters {
            let took = (now - w.since).as_seconds_f64().max(0.0);
            if *outcome == Outcome::Refreshed {
                m.refresh_seconds.observe(took);
            } else {
                let why = match outcome {
                    Outcome::Failed(why) => format!("the operator reported {why}"),
                    _ => format!(
                        "no refresh within --confirm-timeout ({:?}): is ESO running and serving this resource's store?",
                        self.inner.timeout
                    ),
                };
                tracing::warn!(target = %target, parameter = %w.parameter, message_id = %w.message_id, outcome = outcome.label(), reason = %why, "force-sync applied but the Secret was not refreshed");
                self.inner
                    .events
                    .not_refreshed(target, uid, &w.parameter, &w.message_id, &why);
            }
            self.tally(&w.message_id, target, outcome, took);
        }
    }

    /// One line per SNS message once every target it patched has an outcome.
    fn tally(&self, message_id: &Arc<str>, target: &Target, outcome: &Outcome, took: f64) {
        let mut state = self.inner.state.lock();
        let Some(t) = state.messages.get_mut(message_id) else {
            return;
        };
        match outcome {
            Outcome::Refreshed => t.refreshed.push((target.to_string(), took)),
            Outcome::Failed(why) => t.failed.push(format!("{target}: {why}")),
            Outcome::NoResponse => t.no_response.push(target.to_string()),
        }
        if t.refreshed.len() + t.failed.len() + t.no_response.len() < t.targets {
            return;
        }
        let t = state.messages.remove(message_id).unwrap_or_default();
        drop(state);
        let slowest = t.refreshed.iter().map(|r| r.1).fold(0.0, f64::max);
        let refreshed: HashSet<&str> = t.refreshed.iter().map(|r| r.0.as_str()).collect();
        tracing::info!(
            message_id = %message_id,
            refreshed = ?refreshed,
            failed = ?t.failed,
            no_response = ?t.no_response,
            seconds = format!("{slowest:.3}"),
            "outcome: {} of {} refreshed{}",
            t.refreshed.len(),
            t.targets,
            if t.refreshed.is_empty() { String::new() } else { format!(" within {slowest:.3} s of the SNS Timestamp") }
        );
    }

    /// When the last confirmed refresh of `target` was seen (the sweep's cross-check).
    pub fn last_refreshed(&self, target: &Target) -> Option<OffsetDateTime> {
        self.inner.refreshed.get(target)
    }
}

/// The resource whose own status decides a target's outcome: an ExternalSecret or KES
/// object is its own; a ClusterExternalSecret has its children instead.
fn own_key(target: &Target) -> Option<ResourceKey> {
    let kind = match target.kind {
        TargetKind::ExternalSecret => crate::index::ReaderKind::ExternalSecret,
        TargetKind::KesExternalSecret => crate::index::ReaderKind::KesExternalSecret,
        TargetKind::ClusterExternalSecret => return None,
    };
    Some(ResourceKey {
        kind,
        namespace: target.namespace.clone(),
        name: target.name.clone(),
    })
}

/// `metadata.resourceVersion` as the integer kube-apiserver writes (etcd's revision: a later
/// write of a resource has a greater one), or None for anything else.
fn resource_version(object: &Value) -> Option<u64> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Reader, ReaderKind};
    use serde_json::json;

    fn status(synced: &str, ready: bool, reason: &str) -> Value {
        json!({"syncedResourceVersion": synced, "refreshTime": "2026-12-01T10:00:00Z",
               "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "reason": reason, "message": "m"}]})
    }

    fn es_target(name: &str) -> Target {
        Target {
            kind: TargetKind::ExternalSecret,
            namespace: "app".into(),
            name: name.into(),
        }
    }

    fn key(name: &str) -> ResourceKey {
        ResourceKey {
            kind: ReaderKind::ExternalSecret,
            namespace: "app".into(),
            name: name.into(),
        }
    }

    fn setup(timeout_ms: u64) -> (Confirmations, Arc<Metrics>, Arc<RwLock<Index>>) {
        let metrics = Arc::new(Metrics::new());
        let index = Arc::new(RwLock::new(Index::new()));
        let c = Confirmations::new(
            Duration::from_millis(timeout_ms),
            index.clone(),
            metrics.clone(),
            Events::disabled(metrics.clone()),
        );
        (c, metrics, index)
    }

    fn count(m: &Metrics, outcome: &'static str) -> u64 {
        m.refresh
            .get_or_create(&crate::metrics::Outcome { outcome })
            .get()
    }

    fn waiter(id: &str) -> Waiter {
        Waiter {
            message_id: id.into(),
            parameter: "/p".into(),
            since: OffsetDateTime::now_utc(),
        }
    }

    #[tokio::test]
    async fn a_new_synced_version_after_the_patch_is_a_refresh() {
        let (c, m, _) = setup(5_000);
        let t = es_target("a");
        c.patched(
            &t,
            &json!({"status": status("1-aaa", true, "SecretSynced")}),
        );
        c.attach(&t, waiter("m1"));
        // The watch's echo of the patch itself: same status, nothing yet.
        c.observe(&key("a"), &status("1-aaa", true, "SecretSynced"));
        assert_eq!(count(&m, "refreshed"), 0);
        c.observe(&key("a"), &status("1-bbb", true, "SecretSynced"));
        assert_eq!(count(&m, "refreshed"), 1);
        assert!(
            m.encode().contains("ssm_resync_refresh_seconds_count 1"),
            "latency recorded"
        );
        assert!(c.last_refreshed(&t).is_some());
        // Settled: a change attaching now (covered by that patch) gets the same outcome.
        c.attach(&t, waiter("m2"));
        assert_eq!(count(&m, "refreshed"), 2);
    }

    /// ESO faster than the patch's answer: the watch shows the new status before `patched`
    /// runs. That status, written after the patch (a greater resourceVersion), is the
    /// refresh; one written before it (a lagging watch) is not. Seen on ESO v0.16.2 under
    /// load: the Secret was refreshed, the outcome never came.
    #[tokio::test]
    async fn a_refresh_seen_before_the_patch_is_answered_still_counts() {
        let (c, m, _) = setup(5_000);
        let object = |rv: &str, synced: &str| {
            json!({"metadata": {"resourceVersion": rv},
                   "status": status(synced, true, "SecretSynced")})
        };
        let t = es_target("fast");
        c.patching(&t);
        c.observe_object(&key("fast"), &object("12", "1-new"));
        c.patched(&t, &object("11", "1-old"));
        c.attach(&t, waiter("m1"));
        assert_eq!(count(&m, "refreshed"), 1, "the sync after the patch");

        // A lagging watch: the status it shows is older than the patch's answer.
        let t = es_target("lagging");
        c.patching(&t);
        c.observe_object(&key("lagging"), &object("20", "1-before"));
        c.patched(&t, &object("21", "1-before"));
        c.attach(&t, waiter("m2"));
        assert_eq!(count(&m, "refreshed"), 1, "nothing synced after the patch");
        c.observe_object(&key("lagging"), &object("22", "1-after"));
        assert_eq!(count(&m, "refreshed"), 2);

        // A patch that failed leaves nothing behind.
        let t = es_target("refused");
        c.patching(&t);
        c.observe_object(&key("refused"), &object("30", "1-x"));
        c.not_patched(&t);
        assert!(c.inner.state.lock().in_flight.is_empty());
    }

    #[tokio::test]
    async fn an_error_written_after_the_patch_is_a_failure_with_esos_reason() {
        let (c, m, _) = setup(5_000);
        let t = es_target("b");
        c.patched(
            &t,
            &json!({"status": status("1-aaa", true, "SecretSynced")}),
        );
        c.attach(&t, waiter("m1"));
        c.observe(&key("b"), &status("1-aaa", false, "SecretSyncedError"));
        assert_eq!((count(&m, "failed"), count(&m, "refreshed")), (1, 0));
    }

    #[tokio::test]
    async fn silence_is_no_response_and_a_late_refresh_still_counts() {
        let (c, m, _) = setup(300);
        let t = es_target("c");
        c.patched(
            &t,
            &json!({"status": status("1-aaa", true, "SecretSynced")}),
        );
        c.attach(&t, waiter("m1"));
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(count(&m, "no_response"), 1);
        c.observe(&key("c"), &status("1-bbb", true, "SecretSynced"));
        assert_eq!(count(&m, "refreshed"), 1, "late, after ESO came back");
    }

    #[tokio::test]
    async fn an_error_that_was_already_there_is_judged_at_the_timeout() {
        let (c, m, _) = setup(300);
        let t = es_target("d");
        c.patched(
            &t,
            &json!({"status": status("1-aaa", false, "SecretSyncedError")}),
        );
        c.attach(&t, waiter("m1"));
        c.observe(&key("d"), &status("1-aaa", false, "SecretSyncedError"));
        assert_eq!(count(&m, "failed"), 0, "no new word from ESO yet");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(count(&m, "failed"), 1, "still failing at the timeout");
    }

    #[tokio::test]
    async fn a_cluster_external_secret_is_refreshed_when_every_child_is() {
        let (c, m, index) = setup(5_000);
        let uid = "00000000-0000-4000-8000-000000000001";
        index.write().apply_cluster_external_secret(
            crate::index::ClusterExternalSecret::from_object(&json!({
                "metadata": {"name": "shared", "uid": uid},
                "spec": {"externalSecretName": "db"},
                "status": {"provisionedNamespaces": ["n1", "n2"]}
            }))
            .unwrap(),
        );
        for ns in ["n1", "n2"] {
            index.write().apply_reader(
                Reader::from_external_secret(&json!({
                    "metadata": {"namespace": ns, "name": "db", "ownerReferences": [{"apiVersion": "external-secrets.io/v1",
                        "kind": "ClusterExternalSecret", "name": "shared", "uid": uid, "controller": true}]},
                    "spec": {}, "status": {"syncedResourceVersion": "1-old"}
                }))
                .unwrap(),
            );
        }
        let t = Target {
            kind: TargetKind::ClusterExternalSecret,
            namespace: String::new(),
            name: "shared".into(),
        };
        c.patched(&t, &json!({"metadata": {"uid": "u"}}));
        c.attach(&t, waiter("m1"));
        let child = |ns: &str| ResourceKey {
            kind: ReaderKind::ExternalSecret,
            namespace: ns.into(),
            name: "db".into(),
        };
        c.observe(&child("n1"), &status("1-new", true, "SecretSynced"));
        assert_eq!(count(&m, "refreshed"), 0, "one child of two");
        c.observe(&child("n2"), &status("1-new", true, "SecretSynced"));
        assert_eq!(count(&m, "refreshed"), 1);
    }

    #[test]
    fn kes_status_reads_last_sync_and_status() {
        let ok = SyncStatus::of(
            &json!({"lastSync": "2026-12-01T10:00:00Z", "status": "SUCCESS"}),
            true,
        );
        assert!(ok.synced != 0 && ok.failing == Some(None));
        let bad = SyncStatus::of(
            &json!({"lastSync": "2026-12-01T10:00:00Z", "status": "ERROR, AccessDenied"}),
            true,
        );
        assert!(
            bad.failing
                .clone()
                .flatten()
                .unwrap()
                .contains("AccessDenied")
        );
        assert_eq!(SyncStatus::of(&Value::Null, false), SyncStatus::default());
    }
}
