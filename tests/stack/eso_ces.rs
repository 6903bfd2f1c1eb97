//! How a ClusterExternalSecret's children can be made to re-sync, measured on the real
//! controller of each ESO release the stack runs: the three candidate triggers, each over
//! repeated changes of one parameter read by two children. docs/eso-versions.md quotes the
//! figures this prints.
//!
//! - the parent's `spec.externalSecretMetadata.annotations` (what the service does before
//!   ESO v0.20): every release copies it into every child; every change must reach every
//!   Secret, on v0.16.2 and v0.20.4 alike;
//! - the parent's `external-secrets.io/force-sync` annotation (what the service does on
//!   v0.20 and later): v0.16.2 ignores it, no Secret may change; v0.20.4 copies it to every
//!   child, every change must reach every Secret;
//! - an annotation patched onto a child: ESO's ClusterExternalSecret controller puts the
//!   child's annotations back at once (its `CreateOrUpdate` replaces them, on both
//!   releases), racing ESO's ExternalSecret controller; the rate is printed, not asserted
//!   (it is a race).

use std::time::{Duration, Instant};

use crate::common::*;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use ssm_resync::cluster::{EsoVersion, cluster_external_secret_resource};

const TRIALS: usize = 12;

struct Fixture {
    stack: Stack,
    kube: kube::Client,
    parameter: String,
    ces: String,
    children: Vec<String>,
}

impl Fixture {
    async fn new(eso: Eso) -> Fixture {
        let stack = Stack::shared_eso(eso);
        stack.assert_eso();
        let kube = stack.kube().await;
        let parameter = param("/ces/measure");
        stack.put_parameter(&parameter, "0").await;
        let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        cluster_secret_store(&kube, &format!("css-{id}")).await;
        let mut children = Vec::new();
        for _ in 0..2 {
            children
                .push(labelled_namespace(&kube, "ces-measure", json!({"ces-measure": id})).await);
        }
        let ces = format!("ces-{id}");
        Api::<DynamicObject>::all_with(kube.clone(), &cluster_external_secret_resource(EsoVersion::V1))
            .create(&PostParams::default(), &serde_json::from_value(json!({
                "apiVersion": "external-secrets.io/v1", "kind": "ClusterExternalSecret", "metadata": {"name": ces},
                "spec": {"externalSecretName": "db", "namespaceSelectors": [{"matchLabels": {"ces-measure": id}}],
                    "externalSecretSpec": {"refreshInterval": "1h",
                        "secretStoreRef": {"name": format!("css-{id}"), "kind": "ClusterSecretStore"},
                        "target": {"name": "db"}, "data": [{"secretKey": "v", "remoteRef": {"key": parameter}}]}}
            })).unwrap())
            .await
            .unwrap();
        for ns in &children {
            wait_secret(&kube, ns, "db", "v", "0", Duration::from_secs(30)).await;
        }
        Fixture {
            stack,
            kube,
            parameter,
            ces,
            children,
        }
    }

    /// Changes the parameter to `value`, runs `trigger`, and reports how many children's
    /// Secrets held `value` within `within`.
    async fn trial(&self, value: &str, within: Duration, trigger: impl AsyncFnOnce()) -> usize {
        self.stack.put_parameter(&self.parameter, value).await;
        trigger().await;
        let deadline = Instant::now() + within;
        loop {
            let mut updated = 0;
            for ns in &self.children {
                let data = secret_data(&self.kube, ns, "db").await;
                if data.as_ref().and_then(|d| d.get("v")).map(String::as_str) == Some(value) {
                    updated += 1;
                }
            }
            if updated == self.children.len() || Instant::now() > deadline {
                return updated;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until ESO has stopped writing the children (2 s without a change to their
    /// ExternalSecrets or Secrets). A trial that ends as soon as the Secrets hold its value
    /// can leave a reconcile behind (a status write that conflicted and is retried, or a
    /// second update event already queued); run after the next PutParameter, that reconcile
    /// reads the new value and would be counted against the next trial's trigger.
    async fn settle(&self) {
        wait_quiet(
            &self.kube,
            self.children.iter().map(String::as_str),
            Duration::from_secs(2),
            Duration::from_secs(30),
        )
        .await;
    }

    async fn patch_parent(&self, body: serde_json::Value) {
        Api::<DynamicObject>::all_with(
            self.kube.clone(),
            &cluster_external_secret_resource(EsoVersion::V1),
        )
        .patch(&self.ces, &PatchParams::default(), &Patch::Merge(body))
        .await
        .unwrap();
    }
}

fn stamp() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

on_each_eso!(
    /// The spec trigger reaches every child on every release; the parent's force-sync
    /// annotation reaches them from v0.20 only; a child's own annotation is always undone.
    ces_triggers_measured,
    measure
);

async fn measure(eso: Eso) {
    // What the parent's external-secrets.io/force-sync does to the children: copied from
    // v0.20.0 on (docs/eso-versions.md).
    let parent_annotation_copied = match eso {
        Eso::V0_16_2 => false,
        Eso::V0_20_4 => true,
    };
    let f = Fixture::new(eso).await;
    let n = f.children.len();

    // The spec trigger: every change reaches every child.
    let mut spec_ok = 0;
    let mut spec_times = Vec::new();
    for i in 0..TRIALS {
        let started = Instant::now();
        let got = f
            .trial(&format!("spec-{i}"), Duration::from_secs(10), async || {
                f.patch_parent(json!({"spec": {"externalSecretMetadata": {"annotations": {"force-sync": stamp()}}}}))
                    .await
            })
            .await;
        spec_times.push(started.elapsed());
        spec_ok += usize::from(got == n);
    }

    // The v0.20+ trigger: ignored before v0.20, copied to every child after. Each trial starts
    // once ESO is done with the previous one, so that only this trial's trigger can change a
    // Secret.
    let mut parent_updates = 0;
    for i in 0..3 {
        f.settle().await;
        parent_updates += f
            .trial(&format!("parent-{i}"), Duration::from_secs(3), async || {
                f.patch_parent(json!({"metadata": {"annotations": {"external-secrets.io/force-sync": stamp()}}}))
                    .await
            })
            .await;
    }

    // A child's own annotation: raced by the parent's controller. The parent's spec trigger
    // (and on v0.20 its force-sync annotation) is still in the children's annotations from
    // above; each trial sets another key.
    let mut child_updates = 0;
    let mut reverted = 0;
    let es = es_resource();
    for i in 0..TRIALS {
        let value = format!("child-{i}");
        child_updates += f
            .trial(&value, Duration::from_secs(3), async || {
                for ns in &f.children {
                    Api::<DynamicObject>::namespaced_with(f.kube.clone(), ns, &es)
                        .patch_metadata(
                            "db",
                            &PatchParams::default(),
                            &Patch::Merge(
                                json!({"metadata": {"annotations": {"child-force-sync": stamp()}}}),
                            ),
                        )
                        .await
                        .unwrap();
                }
            })
            .await;
        // The parent's controller reconciles after its child changed, at its own pace: give
        // it up to 5 s to take the annotation back (it took it back in 23 of 24 by the time
        // the Secrets were updated in one run).
        for ns in &f.children {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let gone = annotation(&f.kube, ns, "db", "child-force-sync")
                    .await
                    .is_none();
                if gone || Instant::now() > deadline {
                    reverted += usize::from(gone);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Leave the Secrets at this trial's value for the next one to start from.
        f.patch_parent(
            json!({"spec": {"externalSecretMetadata": {"annotations": {"force-sync": stamp()}}}}),
        )
        .await;
        for ns in &f.children {
            wait_secret(&f.kube, ns, "db", "v", &value, Duration::from_secs(10)).await;
        }
    }
    spec_times.sort();
    eprintln!(
        "{eso}, ClusterExternalSecret with {n} children, {TRIALS} changes each:\n\
         - spec.externalSecretMetadata.annotations: {spec_ok}/{TRIALS} changes reached all {n} Secrets (median {:?}, max {:?})\n\
         - parent external-secrets.io/force-sync: {parent_updates}/{} Secret updates in 3 changes\n\
         - child annotation: {child_updates}/{} Secret updates within 3 s; the parent's controller removed the child's annotation in {reverted}/{} cases",
        spec_times[TRIALS / 2],
        spec_times[TRIALS - 1],
        3 * n,
        TRIALS * n,
        TRIALS * n,
    );
    assert_eq!(
        spec_ok, TRIALS,
        "the spec trigger must reach every child every time ({eso})"
    );
    if parent_annotation_copied {
        assert_eq!(
            parent_updates,
            3 * n,
            "{eso} copies the parent's force-sync annotation to every child"
        );
    } else {
        assert_eq!(
            parent_updates, 0,
            "{eso} does not copy the parent's force-sync annotation"
        );
    }
    assert_eq!(
        reverted,
        TRIALS * n,
        "the parent's controller owns the children's annotations ({eso})"
    );
}
