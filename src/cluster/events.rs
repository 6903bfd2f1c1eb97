//! Kubernetes Events on the resources this service acts on (events.k8s.io/v1, through
//! kube-runtime's recorder): `ForceSync` on every patched resource, `NotForceable` on those
//! that match but ignore a force-sync, `NotRefreshed` on those the operator did not refresh
//! after the patch, `ReferenceRejected` on those with a reference the index cannot evaluate as
//! written (a `find.name.regexp` that does not compile or compiles too large). At most one
//! Event per resource and reason per
//! interval, and never on the request path.
//!
//! Events yield to patches. They are queued (at most [`QUEUE`]; past that they are dropped and
//! counted, as client-go's broadcaster drops past its 1,000) and posted [`IN_FLIGHT`] at a time,
//! each once the trigger has no patch queued or running, or [`MAX_DELAY`] after it was queued,
//! whichever is first. In a burst the API server's writes go to the patches users wait for,
//! and the Events follow them (the burst bench: about 500 Event writes beside 600 patches).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::index::{Match, Target, TargetKind};
use crate::metrics::{Metrics, Result_};

/// Events waiting to be posted, at most.
pub const QUEUE: usize = 10_000;
/// Events posted at once.
pub const IN_FLIGHT: usize = 4;
/// Longest an Event waits for the patches to finish.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Events {
    lane: Option<Lane<(Event, ObjectReference)>>,
    recent: moka::sync::Cache<(String, &'static str), ()>,
    metrics: Arc<Metrics>,
    eso_api_version: String,
}

impl Events {
    /// `patches_busy` counts the trigger's patches queued or running (`Trigger::busy`).
    pub fn new(
        client: kube::Client,
        interval: Duration,
        eso_api_version: String,
        patches_busy: watch::Receiver<usize>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let instance = std::env::var("POD_NAME")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok());
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: "ssm-resync".into(),
                instance,
            },
        );
        let lane_metrics = metrics.clone();
        let lane = Lane::spawn(
            LaneConfig::default(),
            patches_busy,
            metrics.clone(),
            move |(event, reference): (Event, ObjectReference)| {
                let (recorder, metrics) = (recorder.clone(), lane_metrics.clone());
                async move {
                    let result = match recorder.publish(&event, &reference).await {
                        Ok(()) => "published",
                        Err(e) => {
                            tracing::warn!(error = %e, "publishing a Kubernetes Event failed");
                            "failed"
                        }
                    };
                    metrics.kube_events.get_or_create(&Result_ { result }).inc();
                }
            },
        );
        Self {
            lane: Some(lane),
            recent: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(interval)
                .build(),
            metrics,
            eso_api_version,
        }
    }

    /// No Events (the `--events=false` flag, and dry runs).
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        Self {
            lane: None,
            recent: moka::sync::Cache::new(1),
            metrics,
            eso_api_version: String::new(),
        }
    }

    pub fn force_sync(&self, m: &Match, parameter: &str, message_id: &str) {
        let note = format!(
            "force-sync: parameter {parameter} changed (SNS MessageId {message_id}), read by {} of {}/{}",
            m.reference, m.reader.namespace, m.reader.name
        );
        self.publish(m, EventType::Normal, "ForceSync", note);
    }

    pub fn not_forceable(&self, m: &Match, parameter: &str, message_id: &str) {
        let note = format!(
            "parameter {parameter} changed (SNS MessageId {message_id}) but this resource ignores force-sync: {}",
            m.reason
        );
        self.publish(m, EventType::Warning, "NotForceable", note);
    }

    /// A force-sync was applied but the operator did not refresh the Secret (failed, or no
    /// answer within --confirm-timeout).
    pub fn not_refreshed(
        &self,
        target: &Target,
        uid: Option<&str>,
        parameter: &str,
        message_id: &str,
        why: &str,
    ) {
        let note = format!(
            "parameter {parameter} changed (SNS MessageId {message_id}); the force-sync was applied but the Secret was not refreshed: {why}"
        );
        self.publish_on(
            target,
            uid.map(String::from),
            EventType::Warning,
            "NotRefreshed",
            note,
        );
    }

    /// References of this resource that the index could not evaluate as written.
    pub fn reference_rejected(
        &self,
        reader: &crate::index::ResourceKey,
        uid: Option<String>,
        rejected: &[crate::index::RejectedReference],
    ) {
        let target = Target {
            kind: match reader.kind {
                crate::index::ReaderKind::ExternalSecret => TargetKind::ExternalSecret,
                crate::index::ReaderKind::KesExternalSecret => TargetKind::KesExternalSecret,
            },
            namespace: reader.namespace.clone(),
            name: reader.name.clone(),
        };
        let note = rejected
            .iter()
            .map(|r| format!("{}: {}", r.reference, r.reason))
            .collect::<Vec<_>>()
            .join("; ");
        // An Event note holds at most 1 KiB.
        let note = crate::text::truncate(&note, 1000).to_owned();
        self.publish_on(&target, uid, EventType::Warning, "ReferenceRejected", note);
    }

    fn publish(&self, m: &Match, type_: EventType, reason: &'static str, note: String) {
        self.publish_on(&m.target, m.uid.clone(), type_, reason, note);
    }

    fn publish_on(
        &self,
        target: &Target,
        uid: Option<String>,
        type_: EventType,
        reason: &'static str,
        note: String,
    ) {
        let Some(lane) = &self.lane else {
            return;
        };
        let key = (target.to_string(), reason);
        if self.recent.contains_key(&key) {
            self.metrics
                .kube_events
                .get_or_create(&Result_ {
                    result: "suppressed",
                })
                .inc();
            return;
        }
        self.recent.insert(key, ());
        let (api_version, namespace) = match target.kind {
            TargetKind::ExternalSecret => {
                (self.eso_api_version.clone(), Some(target.namespace.clone()))
            }
            TargetKind::ClusterExternalSecret => (self.eso_api_version.clone(), None),
            TargetKind::KesExternalSecret => (
                "kubernetes-client.io/v1".to_owned(),
                Some(target.namespace.clone()),
            ),
        };
        let reference = ObjectReference {
            api_version: Some(api_version),
            kind: Some(target.kind.as_str().to_owned()),
            name: Some(target.name.clone()),
            namespace,
            uid,
            ..Default::default()
        };
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate_note(note)),
            action: "ForceSync".into(),
            secondary: None,
        };
        lane.push((event, reference));
    }
}

#[derive(Debug, Clone, Copy)]
struct LaneConfig {
    queue: usize,
    in_flight: usize,
    max_delay: Duration,
}

impl Default for LaneConfig {
    fn default() -> Self {
        Self {
            queue: QUEUE,
            in_flight: IN_FLIGHT,
            max_delay: MAX_DELAY,
        }
    }
}

/// A bounded queue of jobs posted `in_flight` at a time by one task, each once `busy` reads
/// 0 or `max_delay` after it was queued.
struct Lane<J> {
    tx: mpsc::Sender<(Instant, J)>,
    metrics: Arc<Metrics>,
}

impl<J> Clone for Lane<J> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<J: Send + 'static> Lane<J> {
    fn spawn<F, Fut>(
        config: LaneConfig,
        busy: watch::Receiver<usize>,
        metrics: Arc<Metrics>,
        post: F,
    ) -> Self
    where
        F: Fn(J) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<(Instant, J)>(config.queue.max(1));
        let queued = metrics.kube_events_queued.clone();
        tokio::spawn(
            futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).for_each_concurrent(
                config.in_flight.max(1),
                move |(at, job)| {
                    let mut busy = busy.clone();
                    let queued = queued.clone();
                    let posted = post(job);
                    async move {
                        // An Err means the trigger is gone: nothing left to yield to.
                        let _ = tokio::time::timeout_at(
                            at + config.max_delay,
                            busy.wait_for(|n| *n == 0),
                        )
                        .await;
                        queued.dec();
                        posted.await;
                    }
                },
            ),
        );
        Self { tx, metrics }
    }

    /// Queues `job`; drops it (counted, and logged at the first and every 1,000th) when the
    /// queue is full.
    fn push(&self, job: J) {
        match self.tx.try_send((Instant::now(), job)) {
            Ok(()) => {
                self.metrics.kube_events_queued.inc();
            }
            Err(_) => {
                // The counter's value before this drop: this lane is its only writer.
                let n = self
                    .metrics
                    .kube_events
                    .get_or_create(&Result_ { result: "dropped" })
                    .inc();
                if n.is_multiple_of(1000) {
                    tracing::warn!(
                        dropped = n + 1,
                        queue = self.tx.max_capacity(),
                        "Kubernetes Event dropped: the Event queue is full"
                    );
                }
            }
        }
    }
}

/// Events API notes are limited to 1 kB.
fn truncate_note(mut note: String) -> String {
    if note.len() > 1000 {
        let cut = (0..=1000)
            .rev()
            .find(|i| note.is_char_boundary(*i))
            .unwrap_or(0);
        note.truncate(cut);
    }
    note
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Jobs as posted, with the (paused-clock) instant of each.
    type Posted = Arc<Mutex<Vec<(u32, Instant)>>>;

    fn lane(config: LaneConfig, busy: watch::Receiver<usize>) -> (Lane<u32>, Posted, Arc<Metrics>) {
        let posted = Arc::new(Mutex::new(Vec::new()));
        let metrics = Arc::new(Metrics::default());
        let sink = posted.clone();
        let lane = Lane::spawn(config, busy, metrics.clone(), move |job| {
            let sink = sink.clone();
            async move { sink.lock().unwrap().push((job, Instant::now())) }
        });
        (lane, posted, metrics)
    }

    fn config(queue: usize) -> LaneConfig {
        LaneConfig {
            queue,
            in_flight: 2,
            max_delay: Duration::from_secs(10),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_waits_while_patches_run_and_is_posted_when_they_end() {
        let (busy_tx, busy) = watch::channel(3);
        let (lane, posted, metrics) = lane(config(10), busy);
        let t0 = Instant::now();
        lane.push(1);
        lane.push(2);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            posted.lock().unwrap().is_empty(),
            "posted while 3 patches ran"
        );
        assert_eq!(metrics.kube_events_queued.get(), 2);
        busy_tx.send_replace(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            posted.lock().unwrap().is_empty(),
            "posted while 1 patch ran"
        );
        busy_tx.send_replace(0);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let posted = posted.lock().unwrap().clone();
        let mut jobs: Vec<u32> = posted.iter().map(|p| p.0).collect();
        jobs.sort();
        assert_eq!(jobs, [1, 2]);
        for (_, at) in posted {
            let waited = at - t0;
            assert!(
                waited >= Duration::from_millis(2100) && waited < Duration::from_millis(2200),
                "posted after {waited:?}"
            );
        }
        assert_eq!(metrics.kube_events_queued.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_trigger_lets_an_event_through_at_once() {
        let (_busy_tx, busy) = watch::channel(0);
        let (lane, posted, _) = lane(config(10), busy);
        let t0 = Instant::now();
        lane.push(7);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let posted = posted.lock().unwrap().clone();
        assert_eq!(posted.len(), 1);
        assert!(posted[0].1 - t0 < Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn patches_that_never_end_hold_an_event_back_for_max_delay_only() {
        let (_busy_tx, busy) = watch::channel(1);
        let (lane, posted, _) = lane(config(10), busy);
        let t0 = Instant::now();
        lane.push(1);
        tokio::time::sleep(Duration::from_secs(4)).await;
        lane.push(2);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(posted.lock().unwrap().is_empty());
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The first one's 10 s are over, the second's (queued at 4 s) not yet.
        assert_eq!(posted.lock().unwrap().len(), 1);
        assert_eq!(posted.lock().unwrap()[0].1 - t0, Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(4)).await;
        let posted = posted.lock().unwrap().clone();
        assert_eq!(posted.len(), 2);
        assert_eq!(posted[1].1 - t0, Duration::from_secs(14));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_queue_an_event_is_dropped_and_counted() {
        let (busy_tx, busy) = watch::channel(1);
        let (lane, posted, metrics) = lane(config(3), busy);
        for job in 0..10 {
            lane.push(job);
        }
        let dropped = || {
            metrics
                .kube_events
                .get_or_create(&Result_ { result: "dropped" })
                .get()
        };
        assert_eq!(dropped(), 7, "10 pushed at once into a queue of 3");
        assert_eq!(metrics.kube_events_queued.get(), 3);
        // The lane takes `in_flight` (2) off the queue to wait: room for 2 more.
        tokio::time::sleep(Duration::from_millis(1)).await;
        for job in 10..15 {
            lane.push(job);
        }
        assert_eq!(dropped(), 10);
        busy_tx.send_replace(0);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut jobs: Vec<u32> = posted.lock().unwrap().iter().map(|p| p.0).collect();
        jobs.sort();
        assert_eq!(jobs, [0, 1, 2, 10, 11]);
        assert_eq!(metrics.kube_events_queued.get(), 0);
    }
}
