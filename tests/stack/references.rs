//! Every way a resource reads AWS, on the real API server with the real ESO syncing the
//! Secrets: ClusterExternalSecret parents, `find.path` with a Create event, Secrets Manager,
//! resources that ignore force-sync, Kubernetes Events, `explain`, each on every ESO release
//! the stack runs (`on_each_eso!`); v1beta1, on the release that still serves it (v0.16.2);
//! and kubernetes-external-secrets, which cannot run here (not on any registry the project
//! can use), through its status (tests/stack/kes.rs runs a model of its poller; no ESO
//! release is involved).

use std::time::Duration;

use crate::common::*;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn signed(stack: &Stack, topic: &str, message: Value) -> String {
    let env = ssm_resync::sample::notification(
        message.to_string(),
        topic,
        stack.cert_url(),
        Some(&stack.signing_key()),
    );
    serde_json::to_string(&env).unwrap()
}

fn ssm_event(name: &str, op: &str) -> Value {
    ssm_resync::sample::parameter_store_change(name, op, "us-east-1", "123456789012")
}

async fn events_for(kube: &kube::Client, ns: &str, name: &str) -> Vec<(String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(kube.clone(), ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

async fn wait_for<T, F: AsyncFn() -> Option<T>>(what: &str, f: F) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

on_each_eso!(
    /// A ClusterExternalSecret over two labelled namespaces, its children created and synced
    /// by the real ESO: one change patches the parent once, and both children's Secrets
    /// follow. The service reads ESO's CRD (`--ces-trigger auto`, the default) and picks the
    /// trigger the release copies to the children: on v0.16.2 the parent's
    /// spec.externalSecretMetadata.annotations (its force-sync annotation does nothing
    /// there), on v0.20.4 the parent's external-secrets.io/force-sync annotation, the
    /// parent's spec untouched.
    a_cluster_external_secret_change_reaches_every_child_secret,
    cluster_external_secret
);

async fn cluster_external_secret(eso: Eso) {
    let stack = Stack::shared_eso(eso);
    stack.assert_eso();
    let kube = stack.kube().await;
    let topic = stack
        .topic(&format!("ref-{}", uuid::Uuid::new_v4().simple()))
        .await;
    let p = param("/ref/ces/db");
    stack.put_parameter(&p, "v1").await;
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let css_name = format!("css-{id}");
    cluster_secret_store(&kube, &css_name).await;
    let mut children = Vec::new();
    for _ in 0..2 {
        children.push(labelled_namespace(&kube, "ref-ces", json!({"ref-ces": id})).await);
    }
    let ces_ar =
        ssm_resync::cluster::cluster_external_secret_resource(ssm_resync::cluster::EsoVersion::V1);
    let ces_name = format!("ces-{id}");
    let spec = json!({"refreshInterval": "1h", "secretStoreRef": {"name": css_name, "kind": "ClusterSecretStore"},
        "target": {"name": "db"}, "data": [{"secretKey": "pw", "remoteRef": {"key": p}}]});
    Api::<DynamicObject>::all_with(kube.clone(), &ces_ar)
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ClusterExternalSecret", "metadata": {"name": ces_name},
            "spec": {"externalSecretName": "db", "namespaceSelectors": [{"matchLabels": {"ref-ces": id}}],
                     "externalSecretSpec": spec}
        })).unwrap())
        .await
        .unwrap();
    // ESO creates the children and syncs them.
    for ns in &children {
        wait_secret(&kube, ns, "db", "pw", "v1", Duration::from_secs(30)).await;
    }
    let svc = Service::start(BIN, &stack, &[&topic], &[]).await;
    // The trigger each release copies to a ClusterExternalSecret's children.
    let (trigger, release) = match eso {
        Eso::V0_16_2 => ("spec", "ESO before v0.20.0"),
        Eso::V0_20_4 => ("annotation", "ESO v0.20.0 or later"),
    };
    let decided = format!("ces_trigger=\"{trigger}\"");
    assert!(
        svc.logs().contains(&decided) && svc.logs().contains(release),
        "{eso}'s CRD must be read as {release} ({decided}):\n{}",
        svc.logs()
    );
    stack.put_parameter(&p, "v2").await;
    let (status, body) = svc
        .post(&signed(&stack, &topic, ssm_event(&p, "Update")))
        .await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    assert_eq!(body["targets"], 1, "{body}");
    for ns in &children {
        wait_secret(&kube, ns, "db", "pw", "v2", Duration::from_secs(20)).await;
    }
    let parent = Api::<DynamicObject>::all_with(kube.clone(), &ces_ar)
        .get(&ces_name)
        .await
        .unwrap();
    let in_spec = &parent.data["spec"]["externalSecretMetadata"]["annotations"]["force-sync"];
    let on_parent = parent
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("external-secrets.io/force-sync"));
    match eso {
        Eso::V0_16_2 => assert!(
            in_spec.is_string() && on_parent.is_none(),
            "{eso}: the spec trigger, not the annotation: {:?} {:?}",
            parent.metadata.annotations,
            parent.data["spec"]
        ),
        Eso::V0_20_4 => {
            assert!(
                on_parent.is_some() && in_spec.is_null(),
                "{eso}: the parent's annotation, the spec untouched: {:?} {:?}",
                parent.metadata.annotations,
                parent.data["spec"]
            );
            // ESO copied it to every child.
            for ns in &children {
                assert_eq!(
                    annotation(&kube, ns, "db", "external-secrets.io/force-sync")
                        .await
                        .as_ref(),
                    on_parent,
                    "{ns}/db"
                );
            }
        }
    }
    assert_eq!(
        svc.metric(r#"ssm_resync_patches_total{result="applied"}"#)
            .await,
        1.0,
        "the parent is patched once, not each child"
    );
}

on_each_eso!(
    a_find_path_reader_is_synced_by_a_create_event_below_its_path,
    find_path
);

async fn find_path(eso: Eso) {
    let Scenario {
        stack,
        kube,
        topic,
        ns,
    } = Scenario::on(Stack::shared_eso(eso), "ref-find").await;
    let tree = param("/ref/tree");
    // ESO names each found parameter's key after it, `/` replaced by `_`.
    let key_of = |name: &str| name.replace('/', "_");
    stack.put_parameter(&format!("{tree}/first"), "a").await;
    // ESO's Parameter Store `find` needs `name` (GetParametersByPath + regexp); `path` alone
    // is an error there.
    create(&kube, &es_resource(), &ns, json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": {"name": "all", "namespace": ns},
        "spec": {"refreshInterval": "1h", "secretStoreRef": {"name": "aws", "kind": "SecretStore"},
                 "dataFrom": [{"find": {"path": tree, "name": {"regexp": ".*"}}}]}
    })).await;
    wait_secret(
        &kube,
        &ns,
        "all",
        &key_of(&format!("{tree}/first")),
        "a",
        Duration::from_secs(30),
    )
    .await;
    let svc = Service::start(BIN, &stack, &[&topic], &[]).await;
    stack.put_parameter(&format!("{tree}/brand-new"), "b").await;
    let (status, body) = svc
        .post(&signed(
            &stack,
            &topic,
            ssm_event(&format!("{tree}/brand-new"), "Create"),
        ))
        .await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    assert!(annotation(&kube, &ns, "all", "force-sync").await.is_some());
    wait_secret(
        &kube,
        &ns,
        "all",
        &key_of(&format!("{tree}/brand-new")),
        "b",
        Duration::from_secs(20),
    )
    .await;
    let (status, body) = svc
        .post(&signed(
            &stack,
            &topic,
            ssm_event(&format!("{tree}-sibling/x"), "Create"),
        ))
        .await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("no_match")),
        "{body}"
    );
}

on_each_eso!(
    a_secrets_manager_cloudtrail_event_syncs_secrets_manager_readers,
    secrets_manager
);

async fn secrets_manager(eso: Eso) {
    let stack = Stack::shared_eso(eso);
    let kube = stack.kube().await;
    let topic = stack
        .topic(&format!("ref-{}", uuid::Uuid::new_v4().simple()))
        .await;
    let secret = param("prod/api-key").trim_start_matches('/').to_owned();
    stack.put_secret(&secret, "v1").await;
    let ns = namespace(&kube, "ref-sm").await;
    create(&kube, &ss_resource(), &ns, json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore", "metadata": {"name": "sm", "namespace": ns},
        "spec": {"provider": {"aws": {"service": "SecretsManager", "region": "us-east-1"}}}
    })).await;
    external_secret(&kube, &ns, "api", "sm", &[&secret]).await;
    wait_secret(&kube, &ns, "api", "k0", "v1", Duration::from_secs(30)).await;
    // Same name read through Parameter Store: must not be touched by a Secrets Manager change.
    secret_store(&kube, &ns, "ps", "us-east-1").await;
    external_secret(&kube, &ns, "ssm-reader", "ps", &[&secret]).await;
    let svc = Service::start(BIN, &stack, &[&topic], &[]).await;
    stack.put_secret(&secret, "v2").await;
    let event = json!({"version": "0", "source": "aws.secretsmanager", "detail-type": "AWS API Call via CloudTrail",
        "account": "123456789012", "region": "us-east-1",
        "detail": {"eventSource": "secretsmanager.amazonaws.com", "eventName": "PutSecretValue", "awsRegion": "us-east-1",
            "requestParameters": {"secretId": format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{secret}-Ab1Cd2")}}});
    let (status, body) = svc.post(&signed(&stack, &topic, event)).await;
    assert_eq!(
        (status, body["result"].as_str(), body["targets"].as_u64()),
        (200, Some("applied"), Some(1)),
        "{body}"
    );
    assert!(annotation(&kube, &ns, "api", "force-sync").await.is_some());
    wait_secret(&kube, &ns, "api", "k0", "v2", Duration::from_secs(20)).await;
    assert_eq!(
        annotation(&kube, &ns, "ssm-reader", "force-sync").await,
        None
    );
}

#[tokio::test]
async fn a_kes_external_secret_is_made_to_poll_through_its_status() {
    let stack = Stack::shared();
    let kube = stack.kube().await;
    let topic = stack
        .topic(&format!("ref-{}", uuid::Uuid::new_v4().simple()))
        .await;
    let p = param("/ref/kes/db");
    let ns = namespace(&kube, "ref-kes").await;
    let kes = ssm_resync::cluster::kes_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(kube.clone(), &ns, &kes);
    let obj = api
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "apiVersion": "kubernetes-client.io/v1", "kind": "ExternalSecret", "metadata": {"name": "legacy", "namespace": ns},
            "spec": {"backendType": "systemManager", "region": "us-east-1", "data": [{"key": p, "name": "password"}]}
        })).unwrap())
        .await
        .unwrap();
    let generation = obj.metadata.generation.unwrap();
    // As KES leaves it after a poll: in sync with the current generation.
    api.patch_status("legacy", &PatchParams::default(), &Patch::Merge(json!({"status": {"observedGeneration": generation, "lastSync": "2026-01-01T00:00:00Z", "status": "SUCCESS"}})))
        .await
        .unwrap();
    let svc = Service::start(BIN, &stack, &[&topic], &["--kes"]).await;
    let (status, body) = svc
        .post(&signed(&stack, &topic, ssm_event(&p, "Update")))
        .await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    let after = api.get("legacy").await.unwrap();
    let observed = after.data["status"]["observedGeneration"].as_i64().unwrap();
    assert!(
        observed < after.metadata.generation.unwrap(),
        "KES polls at once only when observedGeneration < generation"
    );
    assert_eq!(
        after.data["spec"], obj.data["spec"],
        "the spec is never touched (GitOps)"
    );
    assert_eq!(after.metadata.annotations, obj.metadata.annotations);
}

on_each_eso!(
    resources_that_ignore_force_sync_get_an_event_not_a_patch,
    ignore_force_sync
);

async fn ignore_force_sync(eso: Eso) {
    let Scenario {
        stack,
        kube,
        topic,
        ns,
    } = Scenario::on(Stack::shared_eso(eso), "ref-once").await;
    let p = param("/ref/once");
    synced_reader(&stack, &kube, &ns, "normal", &[&p]).await;
    create(&kube, &es_resource(), &ns, json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": {"name": "once", "namespace": ns},
        "spec": {"refreshPolicy": "CreatedOnce", "secretStoreRef": {"name": "aws", "kind": "SecretStore"},
            "target": {"name": "once"}, "data": [{"secretKey": "k", "remoteRef": {"key": p}}]}
    })).await;
    // ESO syncs a CreatedOnce resource once, at creation.
    wait_secret(
        &kube,
        &ns,
        "once",
        "k",
        &initial(&p),
        Duration::from_secs(30),
    )
    .await;
    let svc = Service::start(BIN, &stack, &[&topic], &[]).await;
    stack.put_parameter(&p, "changed").await;
    let msg = signed(&stack, &topic, ssm_event(&p, "Update"));
    let message_id = serde_json::from_str::<Value>(&msg).unwrap()["MessageId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = svc.post(&msg).await;
    assert_eq!(
        (
            status,
            body["result"].as_str(),
            body["unforceable"].as_u64()
        ),
        (200, Some("applied"), Some(1)),
        "{body}"
    );
    assert_eq!(annotation(&kube, &ns, "once", "force-sync").await, None);
    assert!(
        annotation(&kube, &ns, "normal", "force-sync")
            .await
            .is_some()
    );
    let warned = wait_for("a NotForceable event", async || {
        events_for(&kube, &ns, "once")
            .await
            .into_iter()
            .find(|(r, _)| r == "NotForceable")
    })
    .await;
    assert!(
        warned.1.contains("CreatedOnce") && warned.1.contains(&message_id),
        "{warned:?}"
    );
    let synced = wait_for("a ForceSync event", async || {
        events_for(&kube, &ns, "normal")
            .await
            .into_iter()
            .find(|(r, _)| r == "ForceSync")
    })
    .await;
    assert!(
        synced.1.contains(&p) && synced.1.contains(&message_id),
        "{synced:?}"
    );
    assert_eq!(svc.metric("ssm_resync_unforceable_total").await, 1.0);
    wait_secret(
        &kube,
        &ns,
        "normal",
        "k0",
        "changed",
        Duration::from_secs(20),
    )
    .await;
    // The user is told, not misled: CreatedOnce keeps its first value, as ESO promises.
    assert_secret(&kube, &ns, "once", "k", &initial(&p)).await;
}

on_each_eso!(explain_prints_targets_and_near_misses_as_json, explain);

async fn explain(eso: Eso) {
    let stack = Stack::shared_eso(eso);
    let kube = stack.kube().await;
    let p = param("/ref/explain");
    stack.put_parameter(&p, "v1").await;
    let ns = namespace(&kube, "ref-explain").await;
    secret_store(&kube, &ns, "east", "us-east-1").await;
    secret_store(&kube, &ns, "west", "us-west-2").await;
    external_secret(&kube, &ns, "hit", "east", &[&p]).await;
    external_secret(&kube, &ns, "miss", "west", &[&p]).await;
    let v = explain_change(BIN, &stack, &p);
    assert_eq!(v["targets"].as_array().unwrap().len(), 1, "{v:#}");
    let t = &v["targets"][0];
    assert_eq!(
        (
            t["kind"].as_str(),
            t["namespace"].as_str(),
            t["name"].as_str()
        ),
        (Some("ExternalSecret"), Some(ns.as_str()), Some("hit"))
    );
    assert_eq!(t["reference"], "spec.data[0].remoteRef.key");
    let misses = v["near_misses"].as_array().unwrap();
    assert!(
        misses
            .iter()
            .any(|m| m["name"] == "miss" && m["reason"].as_str().unwrap().contains("us-west-2")),
        "{v:#}"
    );
    assert!(
        annotation(&kube, &ns, "hit", "force-sync").await.is_none(),
        "explain patches nothing"
    );
}

/// `--eso-version v1beta1` for clusters that still serve only v1beta1: watched and patched
/// through that version. On ESO v0.16.2, the newest release the stack runs that still serves
/// `external-secrets.io/v1beta1` (v0.17.0 stopped serving it; v0.20.4 serves only v1).
#[tokio::test]
async fn eso_v1beta1_opt_in_watches_and_patches_through_v1beta1_on_eso_v0_16_2() {
    let stack = Stack::shared_eso(Eso::V0_16_2);
    let kube = stack.kube().await;
    let topic = stack
        .topic(&format!("ref-{}", uuid::Uuid::new_v4().simple()))
        .await;
    let p = param("/ref/v1beta1");
    stack.put_parameter(&p, "v1").await;
    let ns = namespace(&kube, "ref-beta").await;
    let v1beta1 = ssm_resync::cluster::EsoVersion::V1beta1;
    let ss = ssm_resync::cluster::eso_resource(v1beta1, "SecretStore", "secretstores");
    create(&kube, &ss, &ns, json!({
        "apiVersion": "external-secrets.io/v1beta1", "kind": "SecretStore", "metadata": {"name": "aws", "namespace": ns},
        "spec": {"provider": {"aws": {"service": "ParameterStore", "region": "us-east-1"}}}
    })).await;
    create(&kube, &ssm_resync::cluster::external_secret_resource(v1beta1), &ns, json!({
        "apiVersion": "external-secrets.io/v1beta1", "kind": "ExternalSecret", "metadata": {"name": "old", "namespace": ns},
        "spec": {"refreshInterval": "1h", "secretStoreRef": {"name": "aws", "kind": "SecretStore"}, "data": [{"secretKey": "k", "remoteRef": {"key": p}}]}
    })).await;
    wait_secret(&kube, &ns, "old", "k", "v1", Duration::from_secs(30)).await;
    let svc = Service::start(BIN, &stack, &[&topic], &["--eso-version=v1beta1"]).await;
    stack.put_parameter(&p, "v2").await;
    let (status, body) = svc
        .post(&signed(&stack, &topic, ssm_event(&p, "Update")))
        .await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    assert!(annotation(&kube, &ns, "old", "force-sync").await.is_some());
    wait_secret(&kube, &ns, "old", "k", "v2", Duration::from_secs(20)).await;
}
