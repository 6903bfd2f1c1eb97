//! What one tenant's ExternalSecrets cost the service, on the real API server and ESO.

use crate::common::*;
use kube::api::{Api, DeleteParams, DynamicObject};
use serde_json::json;

/// The review's attack: one namespace with 14 ExternalSecrets of 9,000 `data` entries each
/// (about 1.2 MB apiece once ESO's CRD defaults are added, under etcd's limit; their store's
/// credentials do not exist, so ESO makes no AWS call). Before the bounds, `serve` held every
/// reference: a peak RSS of 130 MiB (release build), over the pod's 128 MiB, and a tenant can
/// always add more. Now each keeps its first 1,000 references (`--max-references-per-object`),
/// the rest are counted and reported, and a change to a kept one is still applied.
#[tokio::test]
async fn a_tenants_huge_external_secrets_are_bounded_not_held() {
    let _alone = crate::ALONE.lock().await;
    let s = Scenario::new("ten-mem").await;
    let (objects, entries) = (14, 9_000);
    create(
        &s.kube,
        &ss_resource(),
        &s.ns,
        json!({
            "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
            "metadata": {"name": "locked", "namespace": s.ns},
            "spec": {"provider": {"aws": {"service": "ParameterStore", "region": "us-east-1",
                "auth": {"secretRef": {
                    "accessKeyIDSecretRef": {"name": "absent", "key": "id"},
                    "secretAccessKeySecretRef": {"name": "absent", "key": "secret"}}}}}}
        }),
    )
    .await;
    for o in 0..objects {
        let data: Vec<_> = (0..entries)
            .map(|i| json!({"secretKey": format!("k{i}"), "remoteRef": {"key": format!("/ten/mem/{o}/{i}")}}))
            .collect();
        create(
            &s.kube,
            &es_resource(),
            &s.ns,
            json!({
                "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "metadata": {"name": format!("huge-{o}"), "namespace": s.ns},
                "spec": {"refreshInterval": "1h", "secretStoreRef": {"name": "locked", "kind": "SecretStore"},
                    "target": {"name": format!("huge-{o}")}, "data": data}
            }),
        )
        .await;
    }
    let bin = std::env::var("ATTACK_SERVICE_BIN")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| BIN.to_owned());
    let svc = Service::start(&bin, &s.stack, &[&s.topic], &[]).await;
    // A change to a kept reference of a huge one, while they are held.
    let (status, body) = svc
        .post(&signed_change(&s.stack, &s.topic, "/ten/mem/3/999"))
        .await;
    let (_, peak) = svc.rss();
    let left_out = svc.metric("ssm_resync_index_left_out_references").await;
    let indexed = svc.metric("ssm_resync_index_references").await;
    eprintln!(
        "{objects} ExternalSecrets of {entries} entries: VmHWM {:.1} MiB (limit 128 MiB), references indexed {indexed}, left out {left_out}; change to a kept reference: {status} {body}",
        peak as f64 / 1048576.0
    );
    // Gone before the asserts, so that no later test's service lists them.
    let api: Api<DynamicObject> = Api::namespaced_with(s.kube.clone(), &s.ns, &es_resource());
    for o in 0..objects {
        api.delete(&format!("huge-{o}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    assert_eq!(
        (status, body["targets"].as_u64()),
        (200, Some(1)),
        "{body}\n{}",
        svc.logs()
    );
    assert_eq!(left_out, (objects * (entries - 1_000)) as f64);
    assert!(
        peak < 128 << 20,
        "peak RSS {:.1} MiB: over the pod's 128 MiB",
        peak as f64 / 1048576.0
    );
}
