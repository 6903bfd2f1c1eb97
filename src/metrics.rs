//! The Prometheus registry (OpenMetrics text, prefix `ssm_resync_`). Label values come from
//! closed sets only; parameter names and resource names never become labels.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeResult {
    /// Notification | SubscriptionConfirmation | UnsubscribeConfirmation | unknown
    pub r#type: &'static str,
    /// applied | no_match | ignored | duplicate | dry_run | confirmed | recorded | rejected | failed
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    pub service: &'static str,
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Result_ {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallResult {
    /// The AWS API operation, e.g. ReceiveMessage.
    pub call: &'static str,
    /// ok | error
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// refreshed | failed | no_response
    pub outcome: &'static str,
}

pub struct Metrics {
    pub notifications: Family<TypeResult, Counter>,
    pub rejections: Family<Reason, Counter>,
    pub changes: Family<ChangeLabels, Counter>,
    pub events_ignored: Family<Kind, Counter>,
    pub targets_matched: Counter,
    pub patches: Family<Result_, Counter>,
    pub patch_duration: Histogram,
    pub end_to_end: Histogram,
    pub request_duration: Histogram,
    pub cert_fetches: Family<Result_, Counter>,
    pub index_objects: Family<Kind, Gauge>,
    pub index_references: Gauge,
    pub index_rejected_references: Gauge,
    pub dedupe_ids: Gauge,
    pub watch_events: Family<Kind, Counter>,
    pub watch_restarts: Family<Kind, Counter>,
    pub watch_errors: Family<Kind, Counter>,
    pub watch_stalls: Family<Kind, Counter>,
    pub watch_last_event_age: Family<Kind, Gauge<f64, AtomicU64>>,
    pub watch_synced: Family<Kind, Gauge>,
    pub kube_events: Family<Result_, Counter>,
    pub kube_events_queued: Gauge,
    pub sweep_runs: Family<Result_, Counter>,
    pub sweep_api_calls: Family<Result_, Counter>,
    pub sweep_stale: Counter,
    pub sweep_stale_after_refresh: Counter,
    pub sweep_leader: Gauge,
    pub sweep_failed_regions: Gauge,
    pub unforceable: Counter,
    pub deferred: Counter,
    pub deferred_pending: Gauge,
    pub shed: Counter,
    pub accept_paused: Counter,
    pub refresh: Family<Outcome, Counter>,
    pub refresh_seconds: Histogram,
    pub refresh_pending: Gauge,
    pub queue_messages: Family<Result_, Counter>,
    pub queue_api_calls: Family<CallResult, Counter>,
    pub queue_visibility_extensions: Counter,
    pub queue_lag: Histogram,
    pub queue_in_flight: Gauge,
    registry: Registry,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ssm_resync");
        let m = Self {
            notifications: Family::default(),
            rejections: Family::default(),
            changes: Family::default(),
            events_ignored: Family::default(),
            targets_matched: Counter::default(),
            patches: Family::default(),
            // 1 ms .. ~16 s
            patch_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            end_to_end: Histogram::new(exponential_buckets(0.005, 2.0, 15)),
            request_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            cert_fetches: Family::default(),
            index_objects: Family::default(),
            index_references: Gauge::default(),
            index_rejected_references: Gauge::default(),
            dedupe_ids: Gauge::default(),
            watch_events: Family::default(),
            watch_restarts: Family::default(),
            watch_errors: Family::default(),
            watch_stalls: Family::default(),
            watch_last_event_age: Family::default(),
            watch_synced: Family::default(),
            kube_events: Family::default(),
            kube_events_queued: Gauge::default(),
            sweep_runs: Family::default(),
            sweep_api_calls: Family::default(),
            sweep_stale: Counter::default(),
            sweep_stale_after_refresh: Counter::default(),
            sweep_leader: Gauge::default(),
            sweep_failed_regions: Gauge::default(),
            unforceable: Counter::default(),
            deferred: Counter::default(),
            deferred_pending: Gauge::default(),
            shed: Counter::default(),
            accept_paused: Counter::default(),
            refresh: Family::default(),
            // 50 ms .. ~27 min
            refresh_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 16)),
            refresh_pending: Gauge::default(),
            queue_messages: Family::default(),
            queue_api_calls: Family::default(),
            queue_visibility_extensions: Counter::default(),
            // 5 ms .. ~23 h: a message may wait out an outage in the queue.
            queue_lag: Histogram::new(exponential_buckets(0.005, 2.0, 25)),
            queue_in_flight: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "notifications",
            "SNS deliveries by message type and outcome",
            m.notifications.clone(),
        );
        registry.register(
            "rejections",
            "Rejected deliveries by reason",
            m.rejections.clone(),
        );
        registry.register(
            "changes",
            "Changes decoded from AWS events",
            m.changes.clone(),
        );
        registry.register(
            "events_ignored",
            "Verified messages that carry no change this service acts on, by kind",
            m.events_ignored.clone(),
        );
        registry.register(
            "targets_matched",
            "Resources matched by changes",
            m.targets_matched.clone(),
        );
        registry.register("patches", "Force-sync patches by result", m.patches.clone());
        registry.register(
            "patch_duration_seconds",
            "Time to apply one force-sync patch, retries included",
            m.patch_duration.clone(),
        );
        registry.register(
            "end_to_end_seconds",
            "From the SNS Timestamp to every patch of the notification applied",
            m.end_to_end.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer POST /sns",
            m.request_duration.clone(),
        );
        registry.register(
            "cert_fetches",
            "Signing certificate fetches by result",
            m.cert_fetches.clone(),
        );
        registry.register(
            "index_objects",
            "Objects in the index by kind",
            m.index_objects.clone(),
        );
        registry.register(
            "index_references",
            "Key references in the index",
            m.index_references.clone(),
        );
        registry.register(
            "dedupe_ids",
            "SNS MessageIds remembered so a redelivery is not applied twice (at most 112,500: 100,000 plus one generation)",
            m.dedupe_ids.clone(),
        );
        registry.register(
            "index_rejected_references",
            "References not evaluated as written (a find.name.regexp that does not compile, or compiles too large: matched as every name); `ssm-resync explain` lists them",
            m.index_rejected_references.clone(),
        );
        registry.register(
            "watch_events",
            "Watch events received by kind",
            m.watch_events.clone(),
        );
        registry.register(
            "watch_restarts",
            "Lists (the first and every re-list after a stall or an expired version), by kind",
            m.watch_restarts.clone(),
        );
        registry.register(
            "watch_errors",
            "Watch sessions ended by an error (re-watched with backoff), by kind",
            m.watch_errors.clone(),
        );
        registry.register(
            "watch_stalls",
            "Watches silent beyond --watch-stall-timeout, restarted with a fresh list, by kind",
            m.watch_stalls.clone(),
        );
        registry.register(
            "watch_last_event_age_seconds",
            "Seconds since the watch of a kind last delivered an event",
            m.watch_last_event_age.clone(),
        );
        registry.register(
            "watch_synced",
            "1 once the watch of a kind has listed everything and is in sync",
            m.watch_synced.clone(),
        );
        registry.register(
            "kube_events",
            "Kubernetes Events by result (published, suppressed by the per-resource interval, failed, dropped when the queue was full)",
            m.kube_events.clone(),
        );
        registry.register(
            "kube_events_queued",
            "Kubernetes Events waiting to be posted (they wait while patches are queued or running, at most 10 s)",
            m.kube_events_queued.clone(),
        );
        registry.register(
            "sweep_runs",
            "Catch-up sweeps by result",
            m.sweep_runs.clone(),
        );
        registry.register(
            "sweep_api_calls",
            "SSM DescribeParameters calls made by the catch-up sweep, by result",
            m.sweep_api_calls.clone(),
        );
        registry.register(
            "sweep_stale",
            "Readers found behind their parameters by the sweep (force-synced)",
            m.sweep_stale.clone(),
        );
        registry.register(
            "sweep_stale_after_refresh",
            "Readers the sweep found behind their parameter although a refresh after the change was confirmed (should stay 0)",
            m.sweep_stale_after_refresh.clone(),
        );
        registry.register(
            "sweep_leader",
            "1 while this replica holds the sweep Lease (or sweeps without one)",
            m.sweep_leader.clone(),
        );
        registry.register(
            "sweep_failed_regions",
            "Regions whose parameters the last catch-up sweep could not describe (the other regions were swept)",
            m.sweep_failed_regions.clone(),
        );
        registry.register(
            "unforceable",
            "Matched resources that ignore a force-sync (CreatedOnce, refreshInterval 0, immutable): reported, not patched",
            m.unforceable.clone(),
        );
        registry.register(
            "deferred",
            "Force-syncs held back by a closed ESO sync window, sent when it opens",
            m.deferred.clone(),
        );
        registry.register(
            "deferred_pending",
            "Force-syncs waiting for a sync window to open",
            m.deferred_pending.clone(),
        );
        registry.register(
            "shed",
            "Deliveries answered 503 at once because --max-concurrent-requests were in flight",
            m.shed.clone(),
        );
        registry.register(
            "accept_paused",
            "Times a port stopped accepting because --max-connections were open; new connections wait in the kernel's accept queue until one closes",
            m.accept_paused.clone(),
        );
        registry.register(
            "refresh",
            "Outcomes of applied force-syncs, per target and change: refreshed (the operator synced after the patch), failed (it reported an error), no_response (nothing within --confirm-timeout)",
            m.refresh.clone(),
        );
        registry.register(
            "refresh_seconds",
            "From the SNS Timestamp to the watch seeing the operator's refreshed status: the latency users feel",
            m.refresh_seconds.clone(),
        );
        registry.register(
            "refresh_pending",
            "Force-synced targets whose outcome is awaited",
            m.refresh_pending.clone(),
        );
        registry.register(
            "queue_messages",
            "SQS messages handled, by result: applied, no_match, deferred, dry_run, duplicate, ignored, recorded, subscription_confirmation and rejected are deleted; retry is left to reappear",
            m.queue_messages.clone(),
        );
        registry.register(
            "queue_api_calls",
            "SQS API calls by operation and result",
            m.queue_api_calls.clone(),
        );
        registry.register(
            "queue_visibility_extensions",
            "In-flight SQS messages whose visibility timeout was extended while their patches ran",
            m.queue_visibility_extensions.clone(),
        );
        registry.register(
            "queue_lag_seconds",
            "From a message's SQS SentTimestamp to every patch it caused applied",
            m.queue_lag.clone(),
        );
        registry.register(
            "queue_in_flight",
            "SQS messages received and not yet deleted or released",
            m.queue_in_flight.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let mut m = m;
        m.registry = registry;
        m
    }

    /// Creates every rejection series at 0, so a rate over them exists before the first
    /// rejection (the reasons are the caller's: `sns::Reject::REASONS`).
    pub fn preregister_rejections(&self, reasons: &[&'static str]) {
        for &reason in reasons {
            self.rejections.get_or_create(&Reason { reason }).get();
        }
    }

    pub fn reject(&self, t: &'static str, reason: &'static str) {
        self.rejections.get_or_create(&Reason { reason }).inc();
        self.notification(t, "rejected");
    }

    pub fn notification(&self, t: &'static str, result: &'static str) {
        self.notifications
            .get_or_create(&TypeResult { r#type: t, result })
            .inc();
    }

    pub fn patch(&self, result: &'static str) {
        self.patches.get_or_create(&Result_ { result }).inc();
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}
