//! The cluster as the tests see it: ESO's resources, namespaces, ExternalSecrets and
//! SecretStores, and waiting for what users look at (the Secret ESO writes, the annotation
//! the service patches). End-to-end tests end where users look.

use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use crate::Stack;
use crate::fixtures::param;

pub fn es_resource() -> ApiResource {
    ssm_resync::cluster::external_secret_resource(ssm_resync::cluster::EsoVersion::V1)
}

pub fn ss_resource() -> ApiResource {
    ssm_resync::cluster::eso_resource(
        ssm_resync::cluster::EsoVersion::V1,
        "SecretStore",
        "secretstores",
    )
}

/// A uniquely named namespace (there is no namespace controller: namespaces are never
/// deleted, so names must not repeat).
pub async fn namespace(client: &kube::Client, prefix: &str) -> String {
    labelled_namespace(client, prefix, json!({})).await
}

/// As `namespace`, with labels (what a ClusterExternalSecret's namespaceSelectors match).
pub async fn labelled_namespace(client: &kube::Client, prefix: &str, labels: Value) -> String {
    let name = format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap(),
    )
    .await
    .unwrap();
    name
}

pub async fn create(client: &kube::Client, ar: &ApiResource, ns: &str, obj: Value) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(obj).unwrap(),
    )
    .await
    .unwrap();
}

pub async fn secret_store(client: &kube::Client, ns: &str, name: &str, region: &str) {
    create(
        client,
        &ss_resource(),
        ns,
        json!({
            "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"provider": {"aws": {"service": "ParameterStore", "region": region}}}
        }),
    )
    .await;
}

/// A ClusterSecretStore reading Parameter Store in us-east-1 (names are cluster-wide: make
/// them unique).
pub async fn cluster_secret_store(client: &kube::Client, name: &str) {
    let css = ssm_resync::cluster::eso_resource(
        ssm_resync::cluster::EsoVersion::V1,
        "ClusterSecretStore",
        "clustersecretstores",
    );
    Api::<DynamicObject>::all_with(client.clone(), &css)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore", "metadata": {"name": name},
                "spec": {"provider": {"aws": {"service": "ParameterStore", "region": "us-east-1"}}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
}

/// A client for the cluster a kubeconfig file points at.
pub async fn kube_client(kubeconfig: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

pub async fn external_secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
    store: &str,
    keys: &[&str],
) {
    let data: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| json!({"secretKey": format!("k{i}"), "remoteRef": {"key": k}}))
        .collect();
    create(client, &es_resource(), ns, json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"refreshInterval": "1h", "secretStoreRef": {"name": store, "kind": "SecretStore"}, "target": {"name": name}, "data": data}
    }))
    .await;
}

/// The ExternalSecret's annotation value, if set.
pub async fn annotation(client: &kube::Client, ns: &str, name: &str, key: &str) -> Option<String> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &es_resource());
    let obj = api.get(name).await.unwrap();
    obj.metadata.annotations.and_then(|a| a.get(key).cloned())
}

/// Polls until the annotation differs from `before`.
pub async fn wait_annotation_change(
    client: &kube::Client,
    ns: &str,
    name: &str,
    before: Option<&str>,
    within: Duration,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let now = annotation(client, ns, name, "force-sync").await;
        if let Some(v) = now
            && Some(v.as_str()) != before
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "annotation of {ns}/{name} did not change within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How most integration tests begin: a client for the stack, a fresh SNS topic, and a fresh
/// namespace `<prefix>-…` holding SecretStore `aws` (ParameterStore, us-east-1).
pub struct Scenario {
    pub stack: Stack,
    pub kube: kube::Client,
    pub topic: String,
    pub ns: String,
}

impl Scenario {
    /// On the shared stack.
    pub async fn new(prefix: &str) -> Scenario {
        Scenario::on(Stack::shared(), prefix).await
    }

    pub async fn on(stack: Stack, prefix: &str) -> Scenario {
        let kube = stack.kube().await;
        let topic = stack
            .topic(&format!("{prefix}-{}", uuid::Uuid::new_v4().simple()))
            .await;
        let ns = namespace(&kube, prefix).await;
        secret_store(&kube, &ns, "aws", "us-east-1").await;
        Scenario {
            stack,
            kube,
            topic,
            ns,
        }
    }
}

/// Waits until ESO has stopped writing: no ExternalSecret or Secret in `namespaces` changes
/// (their own resourceVersions, not the lists': a list's version moves with any write
/// anywhere in the cluster) for `quiet`. Fails after `within`.
pub async fn wait_quiet<'a>(
    kube: &kube::Client,
    namespaces: impl IntoIterator<Item = &'a str> + Clone,
    quiet: Duration,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    let mut since = Instant::now();
    loop {
        let mut fp = String::new();
        for ns in namespaces.clone() {
            let secrets: Api<k8s_openapi::api::core::v1::Secret> =
                Api::namespaced(kube.clone(), ns);
            let es: Api<DynamicObject> = Api::namespaced_with(kube.clone(), ns, &es_resource());
            let lp = kube::api::ListParams::default();
            let metas = secrets
                .list_metadata(&lp)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|o| o.metadata)
                .chain(
                    es.list_metadata(&lp)
                        .await
                        .unwrap()
                        .items
                        .into_iter()
                        .map(|o| o.metadata),
                );
            for m in metas {
                fp.push_str(m.name.as_deref().unwrap_or_default());
                fp.push('@');
                fp.push_str(m.resource_version.as_deref().unwrap_or_default());
                fp.push(',');
            }
        }
        if fp != last {
            last = fp;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ESO kept writing for {within:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The data of a Secret, decoded; `None` while it does not exist.
pub async fn secret_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Option<std::collections::BTreeMap<String, String>> {
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
    let secret = api.get_opt(name).await.unwrap()?;
    Some(
        secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect(),
    )
}

/// Polls until the Secret ESO writes holds `want` under `key`; returns how long that took.
/// On timeout the failure shows the Secret and the ExternalSecret's status, so a stale
/// Secret says why.
pub async fn wait_secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
    key: &str,
    want: &str,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let data = secret_data(client, ns, name).await;
        if data.as_ref().and_then(|d| d.get(key)).map(String::as_str) == Some(want) {
            return started.elapsed();
        }
        if started.elapsed() > within {
            let es: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &es_resource());
            let status = es
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|o| o.data.get("status").cloned());
            panic!(
                "Secret {ns}/{name} did not hold {key}={want:?} within {within:?}: data {data:?}; ExternalSecret status {status:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts the Secret still holds `want` under `key` (a resource that must not re-sync).
pub async fn assert_secret(client: &kube::Client, ns: &str, name: &str, key: &str, want: &str) {
    let data = secret_data(client, ns, name).await;
    assert_eq!(
        data.as_ref().and_then(|d| d.get(key)).map(String::as_str),
        Some(want),
        "Secret {ns}/{name}: {data:?}"
    );
}

/// An ExternalSecret `name` (refreshInterval 1h, SecretStore `aws`) reading `keys` into
/// Secret `name` as k0, k1, ...: each parameter is put first with the value
/// `initial:<key>`, and this returns once ESO's first sync wrote them all.
pub async fn synced_reader(
    stack: &Stack,
    kube: &kube::Client,
    ns: &str,
    name: &str,
    keys: &[&str],
) {
    stack.assert_eso();
    for k in keys {
        stack.put_parameter(k, &initial(k)).await;
    }
    external_secret(kube, ns, name, "aws", keys).await;
    for (i, k) in keys.iter().enumerate() {
        wait_secret(
            kube,
            ns,
            name,
            &format!("k{i}"),
            &initial(k),
            Duration::from_secs(30),
        )
        .await;
    }
}

/// The value `synced_reader` puts first.
pub fn initial(key: &str) -> String {
    format!("initial:{key}")
}

/// `n` ExternalSecrets `es-<i>` in `ns`, each reading its own parameter through store `aws`
/// into Secret `es-<i>` (key `k0`), synced once by ESO before this returns.
pub async fn readers(stack: &Stack, kube: &kube::Client, ns: &str, n: usize) -> Vec<String> {
    stack.assert_eso();
    let base = param(&format!("/{ns}"));
    let params: Vec<String> = (0..n).map(|i| format!("{base}/{i}")).collect();
    for (i, p) in params.iter().enumerate() {
        stack.put_parameter(p, &initial(p)).await;
        external_secret(kube, ns, &format!("es-{i}"), "aws", &[p]).await;
    }
    for (i, p) in params.iter().enumerate() {
        wait_secret(
            kube,
            ns,
            &format!("es-{i}"),
            "k0",
            &initial(p),
            Duration::from_secs(60),
        )
        .await;
    }
    params
}
