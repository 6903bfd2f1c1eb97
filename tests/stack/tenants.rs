//! Cluster objects a tenant may create are input too: on the real API server, with the real
//! ESO making a ClusterExternalSecret's children.

use std::time::Duration;

use crate::common::*;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};
use ssm_resync::cluster::{EsoVersion, cluster_external_secret_resource};

/// `ssm-resync explain` of a change to `parameter`, as JSON.
fn explain(stack: &Stack, parameter: &str) -> Value {
    explain_change(BIN, stack, parameter)
}

fn targets(v: &Value) -> Vec<String> {
    let mut t: Vec<String> = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{} {}",
                t["kind"].as_str().unwrap(),
                t["name"].as_str().unwrap()
            )
        })
        .collect();
    t.sort();
    t
}

/// The review's attack: a tenant whose namespace an admin's ClusterExternalSecret selects
/// copies the owner reference of the child ESO made there (the parent's real uid) onto an
/// ExternalSecret of their own, and puts a made-up uid on another. Before, a change to the
/// tenant's own parameter patched the admin's ClusterExternalSecret, re-syncing every child
/// in every namespace. Now each claimant is patched itself, the parent is left alone, and a
/// change the real children read still patches the parent (ESO's status says where it made
/// them).
#[tokio::test]
async fn a_tenant_cannot_make_the_service_patch_a_cluster_external_secret() {
    let stack = Stack::shared();
    stack.assert_eso();
    let kube = stack.kube().await;
    let topic = stack
        .topic(&format!("ten-{}", uuid::Uuid::new_v4().simple()))
        .await;
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let shared = param("/ten/shared");
    let own = param("/ten/own");
    stack.put_parameter(&shared, "s1").await;
    stack.put_parameter(&own, "o1").await;
    let css = format!("css-{id}");
    cluster_secret_store(&kube, &css).await;
    let team = labelled_namespace(&kube, "ten-team", json!({"ten-ces": id})).await;
    let tenant = labelled_namespace(&kube, "ten-tenant", json!({"ten-ces": id})).await;
    let ces_api = Api::<DynamicObject>::all_with(
        kube.clone(),
        &cluster_external_secret_resource(EsoVersion::V1),
    );
    let ces = format!("ces-{id}");
    ces_api
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ClusterExternalSecret", "metadata": {"name": ces},
            "spec": {"externalSecretName": "db", "namespaceSelectors": [{"matchLabels": {"ten-ces": id}}],
                "externalSecretSpec": {"refreshInterval": "1h",
                    "secretStoreRef": {"name": css, "kind": "ClusterSecretStore"},
                    "target": {"name": "db"}, "data": [{"secretKey": "v", "remoteRef": {"key": shared}}]}}
        })).unwrap())
        .await
        .unwrap();
    for ns in [&team, &tenant] {
        wait_secret(&kube, ns, "db", "v", "s1", Duration::from_secs(30)).await;
    }
    // The tenant reads the owner reference off the child in their own namespace.
    let es_api = Api::<DynamicObject>::namespaced_with(kube.clone(), &tenant, &es_resource());
    let child = es_api.get("db").await.unwrap();
    let copied = serde_json::to_value(child.metadata.owner_references.unwrap()).unwrap();
    assert_eq!(copied[0]["kind"], "ClusterExternalSecret", "{copied}");
    let mut made_up = copied.clone();
    made_up[0]["uid"] = json!(uuid::Uuid::new_v4().to_string());
    secret_store(&kube, &tenant, "own", "us-east-1").await;
    for (name, owners) in [("evil", &copied), ("evil2", &made_up)] {
        create(&kube, &es_resource(), &tenant, json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": name, "ownerReferences": owners},
            "spec": {"refreshInterval": "1h", "secretStoreRef": {"name": "own", "kind": "SecretStore"},
                "target": {"name": name}, "data": [{"secretKey": "v", "remoteRef": {"key": own}}]}
        }))
        .await;
        wait_secret(&kube, &tenant, name, "v", "o1", Duration::from_secs(30)).await;
    }

    let seen = explain(&stack, &own);
    assert_eq!(
        targets(&seen),
        ["ExternalSecret evil", "ExternalSecret evil2"],
        "{seen:#}"
    );
    for t in seen["targets"].as_array().unwrap() {
        assert!(t["reason"].as_str().unwrap().contains("not trusted"), "{t}");
    }
    let real = explain(&stack, &shared);
    assert_eq!(
        targets(&real),
        [format!("ClusterExternalSecret {ces}")],
        "the real children still patch their parent: {real:#}"
    );

    let svc = Service::start(BIN, &stack, &[&topic], &[]).await;
    assert!(svc.metric("ssm_resync_index_untrusted_owners").await >= 2.0);
    let parent_before = ces_api.get(&ces).await.unwrap();
    stack.put_parameter(&own, "o2").await;
    let (status, body) = svc.post(&signed_change(&stack, &topic, &own)).await;
    assert_eq!((status, body["targets"].as_u64()), (200, Some(2)), "{body}");
    for name in ["evil", "evil2"] {
        wait_secret(&kube, &tenant, name, "v", "o2", Duration::from_secs(20)).await;
    }
    let parent_after = ces_api.get(&ces).await.unwrap();
    assert_eq!(
        parent_after.metadata.resource_version, parent_before.metadata.resource_version,
        "the ClusterExternalSecret was not patched"
    );
    assert_eq!(
        svc.metric(r#"ssm_resync_patches_total{result="applied"}"#)
            .await,
        2.0
    );
}
