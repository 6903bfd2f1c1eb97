//! Kubernetes Events on the resources this service acts on (events.k8s.io/v1, through
//! kube-runtime's recorder): `ForceSync` on every patched resource, `NotForceable` on those
//! that match but ignore a force-sync, `NotRefreshed` on those the operator did not refresh
//! after the patch, `ReferenceRejected` on those with a reference the index cannot evaluate as
//! written (a `find.name.regexp` that does not compile or compiles too large). At most one
//! Event per resource and reason per
//! interval, and never on the request path (published from a spawned task).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::index::{Match, Target, TargetKind};
use crate::metrics::{Metrics, Result_};

#[derive(Clone)]
pub struct Events {
    recorder: Option<Recorder>,
    recent: moka::sync::Cache<(String, &'static str), ()>,
    metrics: Arc<Metrics>,
    eso_api_version: String,
}

impl Events {
    pub fn new(
        client: kube::Client,
        interval: Duration,
        eso_api_version: String,
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
        Self {
            recorder: Some(recorder),
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
            recorder: None,
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
        let note = crate::sns::envelope::truncate(&note, 1000).to_owned();
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
        let Some(recorder) = self.recorder.clone() else {
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
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let result = match recorder.publish(&event, &reference).await {
                Ok(()) => "published",
                Err(e) => {
                    tracing::warn!(error = %e, "publishing a Kubernetes Event failed");
                    "failed"
                }
            };
            metrics.kube_events.get_or_create(&Result_ { result }).inc();
        });
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
