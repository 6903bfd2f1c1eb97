//! The trigger: a JSON merge-patch that sets one annotation to a new value, which makes the
//! operator re-sync at once.
//!
//! Coalescing, per resource. A patch makes the operator read every parameter afresh, so it
//! covers every change that happened before it was sent. A change reported by an SNS
//! notification happened before the notification's `Timestamp` (SNS stamps the message after
//! EventBridge handed it the event, tens of milliseconds after the change). Hence:
//! - a request whose timestamp is not after the start of a successful (or in-flight) patch is
//!   covered by it: it waits for that patch and sends nothing;
//! - requests that arrive while a patch is queued, not yet sent, share it;
//! - otherwise one follow-up patch is queued, sent no sooner than `coalesce_window` after the
//!   previous one, and every request until it is sent joins it.
//!
//! So two notifications for the same resource at the same time produce one patch, and a burst
//! produces at most one patch per resource per window, without ever skipping a change that
//! happened after the last patch was sent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable as _};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use parking_lot::Mutex;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, watch};

use super::eso::CesTrigger;
use crate::index::{Target, TargetKind};
use crate::metrics::Metrics;

/// How one requested patch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// The resource no longer exists: nothing left to sync.
    Gone,
    DryRun,
    Failed(Arc<str>),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        !matches!(self, Self::Failed(_))
    }
    pub fn label(&self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Gone => "gone",
            Self::DryRun => "dry_run",
            Self::Failed(_) => "failed",
        }
    }
}

type Batch = Arc<watch::Sender<Option<Outcome>>>;

enum Slot {
    Queued(Batch),
    Running {
        started: OffsetDateTime,
        current: Batch,
        next: Option<Batch>,
    },
}

#[derive(Debug, Clone)]
pub struct TriggerConfig {
    pub annotation: String,
    pub concurrency: usize,
    pub dry_run: bool,
    /// Retries for 409/429/5xx and transport errors, with exponential backoff.
    pub max_retries: usize,
    pub field_manager: String,
    /// Least time between two patches of one resource; requests in between share one.
    pub coalesce_window: Duration,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        Self {
            annotation: "force-sync".into(),
            concurrency: 16,
            dry_run: false,
            max_retries: 5,
            field_manager: "ssm-resync".into(),
            coalesce_window: Duration::from_millis(250),
        }
    }
}

#[derive(Clone)]
pub struct Trigger {
    inner: Arc<Inner>,
}

/// The API resources the trigger patches.
#[derive(Debug, Clone)]
pub struct Resources {
    pub external_secret: ApiResource,
    pub cluster_external_secret: ApiResource,
    pub kes_external_secret: ApiResource,
}

impl Resources {
    pub fn new(version: super::EsoVersion) -> Self {
        Self {
            external_secret: super::external_secret_resource(version),
            cluster_external_secret: super::cluster_external_secret_resource(version),
            kes_external_secret: super::kes_resource(),
        }
    }
}

/// The annotation ESO v0.20.0 and later mirror from a ClusterExternalSecret to every
/// ExternalSecret it owns (ESO docs, "ClusterExternalSecret"; v2.9.0
/// `pkg/controllers/clusterexternalsecret/clusterexternalsecret_controller.go`, the mutate
/// function of `CreateOrUpdate`). Earlier releases ignore it (`cluster::eso`).
pub const CES_FORCE_SYNC: &str = "external-secrets.io/force-sync";

struct Inner {
    client: kube::Client,
    resources: Resources,
    config: TriggerConfig,
    permits: Semaphore,
    slots: Mutex<HashMap<Target, Slot>>,
    /// How many targets have a patch queued or running (`slots.len()`), for whoever yields to
    /// patches (`cluster::events`).
    busy: watch::Sender<usize>,
    /// Start time of the last successful patch per resource (what it covers), which is
    /// also when the next one may be sent.
    covered: moka::sync::Cache<Target, (OffsetDateTime, Instant)>,
    last_value: Mutex<i128>,
    last_negative: Mutex<i64>,
    /// How ClusterExternalSecrets are triggered (`cluster::eso`); set at start-up and
    /// whenever the CRD is read again.
    ces_trigger: Mutex<CesTrigger>,
    /// Force-syncs waiting for a sync window to open, by target.
    deferred: Mutex<HashMap<Target, OffsetDateTime>>,
    /// Follows each applied patch to the operator's outcome (`cluster::confirm`).
    confirm: parking_lot::RwLock<Option<super::confirm::Confirmations>>,
    metrics: Arc<Metrics>,
}

impl Trigger {
    pub fn new(
        client: kube::Client,
        resources: Resources,
        config: TriggerConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                resources,
                permits: Semaphore::new(config.concurrency.max(1)),
                config,
                slots: Mutex::new(HashMap::new()),
                busy: watch::channel(0).0,
                covered: moka::sync::Cache::builder()
                    .max_capacity(200_000)
                    .time_to_live(Duration::from_secs(3600))
                    .build(),
                last_value: Mutex::new(0),
                last_negative: Mutex::new(0),
                ces_trigger: Mutex::new(CesTrigger::SpecAnnotations),
                deferred: Mutex::new(HashMap::new()),
                confirm: parking_lot::RwLock::new(None),
                metrics,
            }),
        }
    }

    /// Forces a re-sync of `target` at `at` (a closed ESO sync window's opening), for a change
    /// that happened before `changed_before`. One pending deferral per target: a later change
    /// joins it (the patch at the opening covers every change before it).
    pub fn defer(
        &self,
        target: Target,
        at: OffsetDateTime,
        changed_before: Option<OffsetDateTime>,
    ) {
        {
            let mut pending = self.inner.deferred.lock();
            if pending.get(&target).is_some_and(|t| *t <= at) {
                return;
            }
            pending.insert(target.clone(), at);
            self.inner
                .metrics
                .deferred_pending
                .set(pending.len() as i64);
        }
        let this = self.clone();
        tokio::spawn(async move {
            let wait = (at - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
            tokio::time::sleep(wait.unsigned_abs()).await;
            {
                let mut pending = this.inner.deferred.lock();
                if pending.get(&target) != Some(&at) {
                    return;
                }
                pending.remove(&target);
                this.inner
                    .metrics
                    .deferred_pending
                    .set(pending.len() as i64);
            }
            let outcome = this
                .force_sync(std::slice::from_ref(&target), changed_before)
                .await;
            tracing::info!(target = %target, outcome = ?outcome, "deferred force-sync sent: the sync window opened");
        });
    }

    /// Reports each applied patch to `confirm`, which follows it to the operator's outcome.
    pub fn set_confirmations(&self, confirm: super::confirm::Confirmations) {
        *self.inner.confirm.write() = Some(confirm);
    }

    /// How many targets have a patch queued or running; 0 when the trigger is idle.
    pub fn busy(&self) -> watch::Receiver<usize> {
        self.inner.busy.subscribe()
    }

    /// How ClusterExternalSecrets are patched from now on.
    pub fn set_ces_trigger(&self, trigger: CesTrigger) {
        *self.inner.ces_trigger.lock() = trigger;
    }

    pub fn ces_trigger(&self) -> CesTrigger {
        *self.inner.ces_trigger.lock()
    }

    /// Forces a re-sync of every target for a change that happened before `changed_before`
    /// (the SNS Timestamp; `None` when unknown); resolves when each patch has ended.
    pub async fn force_sync(
        &self,
        targets: &[Target],
        changed_before: Option<OffsetDateTime>,
    ) -> Vec<Outcome> {
        let receivers: Vec<_> = targets
            .iter()
            .map(|t| self.request(t, changed_before))
            .collect();
        let mut out = Vec::with_capacity(receivers.len());
        for mut rx in receivers {
            let outcome = match rx.wait_for(Option::is_some).await {
                Ok(v) => v.clone().expect("waited for Some"),
                Err(_) => Outcome::Failed("patch task ended without a result".into()),
            };
            out.push(outcome);
        }
        out
    }

    /// Joins the patch that covers this change, or queues one.
    fn request(
        &self,
        target: &Target,
        changed_before: Option<OffsetDateTime>,
    ) -> watch::Receiver<Option<Outcome>> {
        let covers = |started: OffsetDateTime| changed_before.is_some_and(|t| t <= started);
        let last = self.inner.covered.get(target);
        let mut slots = self.inner.slots.lock();
        match slots.get_mut(target) {
            Some(Slot::Running {
                started, current, ..
            }) if covers(*started) => current.subscribe(),
            Some(Slot::Queued(batch))
            | Some(Slot::Running {
                next: Some(batch), ..
            }) => batch.subscribe(),
            Some(Slot::Running { next, .. }) => {
                let batch: Batch = Arc::new(watch::channel(None).0);
                let rx = batch.subscribe();
                *next = Some(batch);
                rx
            }
            None if last.is_some_and(|(started, _)| covers(started)) => {
                self.inner.metrics.patch("coalesced");
                watch::channel(Some(Outcome::Applied)).1
            }
            None => {
                let batch: Batch = Arc::new(watch::channel(None).0);
                let rx = batch.subscribe();
                slots.insert(target.clone(), Slot::Queued(batch.clone()));
                self.inner.busy.send_replace(slots.len());
                tokio::spawn(self.inner.clone().drive(target.clone(), batch));
                rx
            }
        }
    }
}

impl Inner {
    /// Runs the patches of one target until none is queued.
    async fn drive(self: Arc<Self>, target: Target, mut batch: Batch) {
        loop {
            // Rate limit per resource: the queue fills while we wait, and all of it shares
            // this patch.
            if let Some((_, sent)) = self.covered.get(&target) {
                tokio::time::sleep_until((sent + self.config.coalesce_window).into()).await;
            }
            let permit = self
                .permits
                .acquire()
                .await
                .expect("semaphore never closed");
            let started = OffsetDateTime::now_utc();
            let started_at = Instant::now();
            self.slots.lock().insert(
                target.clone(),
                Slot::Running {
                    started,
                    current: batch.clone(),
                    next: None,
                },
            );
            // Followed from before the request: ESO can sync before the answer is handled.
            let confirm = self.confirm.read().clone();
            if let Some(c) = &confirm {
                c.patching(&target);
            }
            let (outcome, written) = self.patch_with_retries(&target).await;
            if let Some(c) = &confirm {
                match (&outcome, &written) {
                    (Outcome::Applied, Some(object)) => c.patched(&target, object),
                    _ => c.not_patched(&target),
                }
            }
            drop(permit);
            self.metrics
                .patch_duration
                .observe(started_at.elapsed().as_secs_f64());
            self.metrics.patch(outcome.label());
            if let Outcome::Failed(why) = &outcome {
                tracing::warn!(target = %target, error = %why, "force-sync patch failed");
            } else {
                self.covered.insert(target.clone(), (started, started_at));
                tracing::info!(target = %target, result = outcome.label(), "force-sync");
            }
            // Publish and dequeue under the lock, so no request can join a batch that has
            // already been answered.
            let mut slots = self.slots.lock();
            batch.send_replace(Some(outcome));
            match slots.remove(&target) {
                Some(Slot::Running {
                    next: Some(next), ..
                }) => {
                    slots.insert(target.clone(), Slot::Queued(next.clone()));
                    batch = next;
                }
                _ => {
                    self.busy.send_replace(slots.len());
                    return;
                }
            }
        }
    }

    /// How the patch ended and, when applied, the object as the API server wrote it.
    async fn patch_with_retries(&self, target: &Target) -> (Outcome, Option<serde_json::Value>) {
        if self.config.dry_run {
            tracing::info!(target = %target, annotation = %self.config.annotation, "dry run: would patch");
            return (Outcome::DryRun, None);
        }
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(self.config.max_retries)
            .with_jitter();
        let result = (|| self.patch_once(target))
            .retry(backoff)
            .when(retryable)
            .notify(|e, wait| tracing::debug!(target = %target, error = %e, ?wait, "patch retry"))
            .await;
        match result {
            Ok(object) => (Outcome::Applied, serde_json::to_value(object).ok()),
            Err(kube::Error::Api(s)) if s.code == 404 => (Outcome::Gone, None),
            Err(e) => (Outcome::Failed(e.to_string().into()), None),
        }
    }

    async fn patch_once(&self, target: &Target) -> Result<DynamicObject, kube::Error> {
        let params = PatchParams {
            field_manager: Some(self.config.field_manager.clone()),
            ..Default::default()
        };
        let c = self.client.clone();
        let r = &self.resources;
        let annotate =
            |key: &str| serde_json::json!({"metadata": {"annotations": {key: self.next_value()}}});
        match target.kind {
            TargetKind::ExternalSecret => {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(c, &target.namespace, &r.external_secret);
                // The whole object back (not metadata only): its status is the baseline the
                // outcome is judged against.
                api.patch(
                    &target.name,
                    &params,
                    &Patch::Merge(annotate(&self.config.annotation)),
                )
                .await
            }
            TargetKind::ClusterExternalSecret => {
                let api: Api<DynamicObject> = Api::all_with(c, &r.cluster_external_secret);
                let trigger = *self.ces_trigger.lock();
                match trigger {
                    CesTrigger::ParentAnnotation => {
                        api.patch(
                            &target.name,
                            &params,
                            &Patch::Merge(annotate(CES_FORCE_SYNC)),
                        )
                        .await
                    }
                    // ESO copies these to every child, replacing the child's annotations: the
                    // children change, and nothing undoes it (`cluster::eso`).
                    CesTrigger::SpecAnnotations => {
                        let body = serde_json::json!({"spec": {"externalSecretMetadata": {
                            "annotations": {&self.config.annotation: self.next_value()}}}});
                        api.patch(&target.name, &params, &Patch::Merge(body)).await
                    }
                }
            }
            TargetKind::KesExternalSecret => {
                // KES ignores annotations: a MODIFIED event re-creates its poller, which polls at
                // once only when status.observedGeneration < metadata.generation (docs/kes.md).
                let api: Api<DynamicObject> =
                    Api::namespaced_with(c, &target.namespace, &r.kes_external_secret);
                // A value never sent before: an unchanged value is a no-op write that emits no
                // watch event, so a trigger landing mid-poll would be lost.
                let body =
                    serde_json::json!({"status": {"observedGeneration": self.next_negative()}});
                api.patch_status(&target.name, &params, &Patch::Merge(body))
                    .await
            }
        }
    }

    /// A negative number never used before by this process (minus Unix milliseconds,
    /// strictly decreasing): below any `metadata.generation`, and different every time.
    fn next_negative(&self) -> i64 {
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let mut last = self.last_negative.lock();
        *last = (*last - 1).min(-(now as i64));
        *last
    }

    /// A value never used before by this process (RFC 3339, nanoseconds, strictly
    /// increasing): the operator re-syncs only when the annotation actually changes.
    fn next_value(&self) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        let mut last = self.last_value.lock();
        *last = (*last + 1).max(now);
        time::OffsetDateTime::from_unix_timestamp_nanos(*last)
            .expect("nanos from now")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("RFC 3339 formats")
    }
}

/// 409 (conflict), 429 (throttled), 5xx and transport errors are worth another try.
fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 409 || s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(metrics: Arc<Metrics>) -> Trigger {
        // Dry run: nothing is sent, so the client never connects.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        Trigger::new(
            kube::Client::try_from(config).unwrap(),
            Resources::new(super::super::EsoVersion::V1),
            TriggerConfig {
                dry_run: true,
                ..Default::default()
            },
            metrics,
        )
    }

    fn target(name: &str) -> Target {
        Target {
            kind: TargetKind::ExternalSecret,
            namespace: "app".into(),
            name: name.into(),
        }
    }

    /// `busy` counts the targets with a patch queued or running, and reads 0 once none is:
    /// what the Event lane waits for (`cluster::events`).
    #[tokio::test]
    async fn busy_counts_targets_with_a_patch_queued_or_running() {
        let t = trigger(Arc::new(Metrics::new()));
        let mut busy = t.busy();
        assert_eq!(*busy.borrow(), 0);
        let outcomes = t.force_sync(&[target("a"), target("b")], None).await;
        assert_eq!(outcomes, [Outcome::DryRun, Outcome::DryRun]);
        assert_eq!(*busy.borrow_and_update(), 0, "both patches ended");
        // A change of unknown time after a patch: a follow-up, held back for the coalescing
        // window (250 ms) after the first.
        let t2 = t.clone();
        let follow_up = tokio::spawn(async move { t2.force_sync(&[target("a")], None).await });
        busy.wait_for(|n| *n == 1).await.unwrap();
        assert!(!follow_up.is_finished());
        tokio::time::timeout(Duration::from_secs(2), busy.wait_for(|n| *n == 0))
            .await
            .expect("busy back to 0 after the follow-up")
            .unwrap();
        assert_eq!(follow_up.await.unwrap(), [Outcome::DryRun]);
    }

    /// A deferred force-sync is sent once, at the window's opening; later changes join it.
    #[tokio::test]
    async fn a_deferred_force_sync_is_sent_once_at_the_opening() {
        let metrics = Arc::new(Metrics::new());
        let t = trigger(metrics.clone());
        let opens = OffsetDateTime::now_utc() + time::Duration::milliseconds(300);
        t.defer(target("a"), opens, None);
        t.defer(target("a"), opens + time::Duration::seconds(60), None);
        t.defer(target("b"), opens, None);
        assert_eq!(metrics.deferred_pending.get(), 2);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            metrics
                .patches
                .get_or_create(&crate::metrics::Result_ { result: "dry_run" })
                .get(),
            0,
            "nothing before the opening"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            metrics
                .patches
                .get_or_create(&crate::metrics::Result_ { result: "dry_run" })
                .get(),
            2,
            "one patch per target"
        );
        assert_eq!(metrics.deferred_pending.get(), 0);
    }
}
