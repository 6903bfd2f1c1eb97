//! The deployment artefacts against the real binary and the real API server, so manifests,
//! RBAC, alert rules and dashboard cannot drift from the code:
//! - the container args/env of every overlay pass `ssm-resync serve --check-config`;
//! - the rendered ClusterRole is enough to run (list/watch/patch) and grants no Secrets;
//! - the rendered objects are accepted by kube-apiserver (server-side dry run);
//! - every metric the alerts and the dashboard use is really exposed;
//! - a real Prometheus scrapes the service and loads the alert rules.
//!
//! Needs kubectl (kustomize) and, for the last test, Debian's `prometheus` package
//! (scripts/check-deploy.sh installs it). Static checks of the same files are in
//! tests/deploy/*.py (scripts/check-deploy.sh).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::manifests::*;
use crate::common::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

// --- rendering (helpers shared with tests/stack/helm.rs: harness/src/manifests.rs) ------

#[test]
fn manifests_args_pass_check_config() {
    let flags = serve_env_names(BIN);
    for dir in ["overlays/eks", "overlays/local", "base"] {
        check_config(BIN, &format!("k8s/{dir}"), &kustomize(dir), &flags);
    }
}

// --- the API server ---------------------------------------------------------------------

/// The server admits and validates each object without persisting it (strict server-side
/// field validation: an unknown field is an error), the ServiceMonitor and PrometheusRule
/// against the Prometheus Operator's CRDs (from its Go module); those two are also checked
/// against the objects they select.
#[test]
fn manifests_are_accepted_by_the_api_server_dry_run() {
    let stack = Stack::shared();
    let admin = stack.get("KUBECONFIG");
    for dir in ["overlays/local", "overlays/eks"] {
        let objects = kustomize(dir);
        ensure_namespace(admin, &objects);
        check_dry_run(admin, &format!("k8s/{dir}"), &objects);
    }

    // The check has teeth: an unknown field in the pod spec is refused.
    let mut objects = kustomize("overlays/local");
    let dep = objects
        .iter_mut()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    dep["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = json!(30);
    let out = dry_run(admin, std::slice::from_ref(dep));
    assert!(
        !out.status.success() && text(&out.stderr).contains("unknown field"),
        "a misspelt field must fail the dry run: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

// --- RBAC on the real API server ---------------------------------------------------------

fn can_i(kubeconfig: &str, args: &[&str]) -> bool {
    let out = run(kubectl(kubeconfig).args(["auth", "can-i"]).args(args));
    let answer = text(&out.stdout);
    match answer.trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl auth can-i {args:?}: {other:?} {}",
            text(&out.stderr)
        ),
    }
}

/// A namespace with a SecretStore and one ExternalSecret reading a fresh parameter, synced
/// by ESO.
async fn reader(stack: &Stack, kube: &kube::Client, prefix: &str) -> (String, String) {
    let ns = namespace(kube, prefix).await;
    let parameter = format!("/{}/db/password", unique("deploy"));
    secret_store(kube, &ns, "aws", "us-east-1").await;
    synced_reader(stack, kube, &ns, "db", &[&parameter]).await;
    (ns, parameter)
}

#[tokio::test]
async fn rbac_is_enough_and_forbids_secrets() {
    // Alone on the shared stack: the service runs as deployed, with the start-up sweep, which
    // would force other tests' readers.
    let stack = Stack::shared_alone();
    let admin = stack.get("KUBECONFIG").to_owned();
    let ssm = stack.get("STACK_KUBECONFIG_SSM_RESYNC").to_owned();
    let kube = stack.kube().await;

    // The rendered ClusterRole and the namespaced Role (leases, in the service's namespace),
    // under unique names, bound to the stack's `ssm-resync` user (the token the service runs
    // with below) instead of the ServiceAccount.
    let rendered = kustomize("overlays/local");
    ensure_namespace(&admin, &rendered);
    let name = unique("ssm-resync-deploy-test");
    let user =
        json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ssm-resync"}]);
    let mut cluster_role = find(&rendered, "ClusterRole", "ssm-resync").clone();
    cluster_role["metadata"] = json!({"name": name});
    let mut cluster_binding = find(&rendered, "ClusterRoleBinding", "ssm-resync").clone();
    cluster_binding["metadata"] = json!({"name": name});
    cluster_binding["roleRef"]["name"] = json!(name);
    cluster_binding["subjects"] = user.clone();
    let mut role = find(&rendered, "Role", "ssm-resync").clone();
    role["metadata"] = json!({"name": name, "namespace": "ssm-resync"});
    let mut binding = find(&rendered, "RoleBinding", "ssm-resync").clone();
    binding["metadata"] = json!({"name": name, "namespace": "ssm-resync"});
    binding["roleRef"]["name"] = json!(name);
    binding["subjects"] = user;
    let _cleanup = Cleanup {
        admin: admin.clone(),
        objects: vec![
            ("clusterrolebinding".into(), name.clone()),
            ("clusterrole".into(), name.clone()),
            ("-n=ssm-resync rolebinding".into(), name.clone()),
            ("-n=ssm-resync role".into(), name.clone()),
        ],
    };
    let out = run_stdin(
        kubectl(&admin).args(["create", "-f", "-"]),
        &as_list(&[cluster_role, cluster_binding, role, binding]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let (ns, parameter) = reader(&stack, &kube, "deploy-rbac").await;
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "not-for-the-service"}, "stringData": {"password": "s3cret"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();

    // The authorizer picks the binding up within milliseconds; wait for it explicitly.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !can_i(
        &ssm,
        &[
            "watch",
            "externalsecrets.external-secrets.io",
            "--all-namespaces",
        ],
    ) {
        assert!(Instant::now() < deadline, "binding not effective");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for args in [
        ["list", "externalsecrets.external-secrets.io"],
        ["patch", "externalsecrets.external-secrets.io"],
        ["watch", "secretstores.external-secrets.io"],
        ["watch", "clustersecretstores.external-secrets.io"],
    ] {
        assert!(
            can_i(&ssm, &[args[0], args[1], "--all-namespaces"]),
            "{args:?}"
        );
    }
    for verb in ["get", "create", "patch"] {
        assert!(
            can_i(
                &ssm,
                &[verb, "leases.coordination.k8s.io", "-n", "ssm-resync"]
            ),
            "{verb} leases"
        );
    }
    assert!(
        !can_i(
            &ssm,
            &["get", "leases.coordination.k8s.io", "-n", "default"]
        ),
        "leases only in the service's own namespace"
    );

    // Ready means every watch listed with these permissions only; then a real change.
    let topic = stack.topic(&unique("deploy-rbac")).await;
    // In the pod, POD_NAMESPACE (downward API) is where the service keeps its Lease.
    let svc = Launched::start(
        BIN,
        &stack,
        &ssm,
        &[&topic],
        &[("POD_NAMESPACE", "ssm-resync")],
    )
    .await;
    let (status, body) = svc.post(&signed_change(&stack, &topic, &parameter)).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    wait_annotation_change(&kube, &ns, "db", None, Duration::from_secs(10)).await;
    // Give the asynchronous API users their first try before looking for a 403: the
    // Kubernetes Event of that patch and the sweep's Lease (where this build has them).
    let flags = serve_env_names(BIN);
    if flags.contains("SSM_RESYNC_EVENTS") {
        svc.settle(|m| m.contains("ssm_resync_kube_events_total{"))
            .await;
    }
    if flags.contains("SSM_RESYNC_SWEEP_LEASE") {
        svc.settle(|m| {
            m.lines()
                .any(|l| l.starts_with("ssm_resync_sweep_leader") && l.ends_with(" 1"))
        })
        .await;
    }
    assert!(!svc.logs().contains("Forbidden"), "{}", svc.logs());
    assert!(
        !svc.metrics()
            .await
            .contains(r#"ssm_resync_kube_events_total{result="failed"}"#),
        "Kubernetes Events must be allowed: {}",
        svc.logs()
    );

    // No Secrets, by any verb, anywhere.
    for verb in [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ] {
        assert!(
            !can_i(&ssm, &[verb, "secrets", "--all-namespaces"]),
            "the service's role must not {verb} secrets"
        );
    }
    let as_service = {
        let kc = kube::config::Kubeconfig::read_from(&ssm).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    };
    let err = Api::<Secret>::namespaced(as_service.clone(), &ns)
        .get("not-for-the-service")
        .await
        .expect_err("GET of a Secret must be refused");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "expected 403, got {err:?}"
    );
    let err = Api::<Secret>::all(as_service)
        .list(&Default::default())
        .await
        .expect_err("LIST of Secrets must be refused");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "expected 403, got {err:?}"
    );
}

// --- admission policy on the real API server ---------------------------------------------

/// The shipped ValidatingAdmissionPolicy, on the real API server, for the real ServiceAccount
/// (a TokenRequest token): the service running as it still force-syncs an ExternalSecret, a
/// ClusterExternalSecret (the spec trigger ESO v0.16 needs) and a kubernetes-client.io
/// ExternalSecret; the same identity changing anything else (a spec, another annotation, a
/// label, another status field) is denied, while an administrator may.
#[tokio::test]
async fn admission_policy_lets_the_service_account_change_only_its_triggers() {
    // Alone on the shared stack: the service runs as deployed, with the start-up sweep, which
    // would force other tests' readers.
    let stack = Stack::shared_alone();
    stack.assert_eso();
    let admin = stack.get("KUBECONFIG").to_owned();
    let kube = stack.kube().await;
    let rendered = kustomize("overlays/local");
    ensure_namespace(&admin, &rendered);
    let strip_ns = |o: &Value| {
        let mut o = o.clone();
        o["metadata"].as_object_mut().unwrap().remove("namespace");
        o
    };
    let sa = find(&rendered, "ServiceAccount", "ssm-resync").clone();
    let policy = strip_ns(find(&rendered, "ValidatingAdmissionPolicy", "ssm-resync"));
    let policy_binding = strip_ns(find(
        &rendered,
        "ValidatingAdmissionPolicyBinding",
        "ssm-resync",
    ));
    let name = unique("ssm-resync-vap-test");
    let mut cluster_role = find(&rendered, "ClusterRole", "ssm-resync").clone();
    cluster_role["metadata"] = json!({"name": name});
    let mut cluster_binding = find(&rendered, "ClusterRoleBinding", "ssm-resync").clone();
    cluster_binding["metadata"] = json!({"name": name});
    cluster_binding["roleRef"]["name"] = json!(name);
    let policy_name = policy["metadata"]["name"].as_str().unwrap().to_owned();
    let _cleanup = Cleanup {
        admin: admin.clone(),
        objects: vec![
            ("clusterrolebinding".into(), name.clone()),
            ("clusterrole".into(), name.clone()),
            (
                "validatingadmissionpolicybinding".into(),
                policy_name.clone(),
            ),
            ("validatingadmissionpolicy".into(), policy_name.clone()),
        ],
    };
    let out = run_stdin(
        kubectl(&admin).args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=ssm-resync-deploy-test",
            "-f",
            "-",
        ]),
        &as_list(&[sa, cluster_role, cluster_binding, policy, policy_binding]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let (sa_kubeconfig, token) =
        service_account_kubeconfig(&admin, "ssm-resync", "ssm-resync", dir.path());
    let server = api_server(&admin);

    // Readers of one parameter: an ExternalSecret, a ClusterExternalSecret's child, a KES one.
    let (ns, parameter) = reader(&stack, &kube, "deploy-vap").await;
    let ces = unique("vap");
    Api::<kube::api::DynamicObject>::all_with(
        kube.clone(),
        &ssm_resync::cluster::cluster_external_secret_resource(ssm_resync::cluster::EsoVersion::V1),
    )
    .create(&PostParams::default(), &serde_json::from_value(json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ClusterExternalSecret",
        "metadata": {"name": ces, "annotations": {"owner": "platform"}},
        "spec": {"externalSecretName": "from-ces", "namespaces": [ns],
            "externalSecretMetadata": {"annotations": {"team": "a"}},
            "externalSecretSpec": {"refreshInterval": "1h", "secretStoreRef": {"name": "aws", "kind": "SecretStore"},
                "target": {"name": "from-ces"}, "data": [{"secretKey": "v", "remoteRef": {"key": parameter}}]}}
    })).unwrap())
    .await
    .unwrap();
    Api::<kube::api::DynamicObject>::namespaced_with(kube.clone(), &ns, &ssm_resync::cluster::kes_resource())
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "apiVersion": "kubernetes-client.io/v1", "kind": "ExternalSecret", "metadata": {"name": "legacy", "namespace": ns},
            "spec": {"backendType": "systemManager", "region": "us-east-1", "data": [{"key": parameter, "name": "password"}]}
        })).unwrap())
        .await
        .unwrap();
    // The ClusterExternalSecret is found through its child: ESO must have created it.
    wait_for_child(&kube, &ns, "from-ces", Duration::from_secs(60)).await;
    let es = format!("/apis/external-secrets.io/v1/namespaces/{ns}/externalsecrets/db");
    let ces_path = format!("/apis/external-secrets.io/v1/clusterexternalsecrets/{ces}");
    let kes =
        format!("/apis/kubernetes-client.io/v1/namespaces/{ns}/externalsecrets/legacy/status");

    // The policy takes effect within a moment of its creation: wait for its first denial.
    wait_for_spec_denial(
        &admin,
        &token,
        &ns,
        "db",
        "ValidatingAdmissionPolicy",
        "the ServiceAccount",
    )
    .await;

    // The service itself, as the ServiceAccount, under the policy: all three are patched.
    let topic = stack.topic(&unique("deploy-vap")).await;
    let svc = Launched::start(
        BIN,
        &stack,
        &sa_kubeconfig,
        &[&topic],
        &[("POD_NAMESPACE", "ssm-resync"), ("SSM_RESYNC_KES", "true")],
    )
    .await;
    let (status, body) = svc.post(&signed_change(&stack, &topic, &parameter)).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    let patched: Vec<&str> = body["patched"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in [
        format!("ExternalSecret {ns}/db"),
        format!("ClusterExternalSecret {ces}"),
        format!("ExternalSecret.kubernetes-client.io {ns}/legacy"),
    ] {
        assert!(
            patched.contains(&want.as_str()),
            "{want} not in {patched:?}"
        );
    }
    assert!(
        !svc.logs().contains("ValidatingAdmissionPolicy"),
        "{}",
        svc.logs()
    );

    // The same identity, anything else: denied. (An administrator is not affected.)
    let table: Vec<(&str, &String, Value, u16)> = vec![
        (
            "ES force-sync annotation",
            &es,
            json!({"metadata": {"annotations": {"force-sync": "t1"}}}),
            200,
        ),
        (
            "ES spec.refreshInterval",
            &es,
            json!({"spec": {"refreshInterval": "2h"}}),
            403,
        ),
        (
            "ES spec.data (another key)",
            &es,
            json!({"spec": {"data": [{"secretKey": "v", "remoteRef": {"key": "/other/key"}}]}}),
            403,
        ),
        (
            "ES another annotation",
            &es,
            json!({"metadata": {"annotations": {"other": "x"}}}),
            403,
        ),
        (
            "ES a label",
            &es,
            json!({"metadata": {"labels": {"x": "y"}}}),
            403,
        ),
        (
            "ES a finalizer",
            &es,
            json!({"metadata": {"finalizers": ["x/y"]}}),
            403,
        ),
        (
            "CES external-secrets.io/force-sync annotation",
            &ces_path,
            json!({"metadata": {"annotations": {"external-secrets.io/force-sync": "t1"}}}),
            200,
        ),
        (
            "CES spec.externalSecretMetadata.annotations[force-sync]",
            &ces_path,
            json!({"spec": {"externalSecretMetadata": {"annotations": {"force-sync": "t1"}}}}),
            200,
        ),
        (
            "CES another annotation",
            &ces_path,
            json!({"metadata": {"annotations": {"owner": "me"}}}),
            403,
        ),
        (
            "CES spec.externalSecretMetadata.annotations[team]",
            &ces_path,
            json!({"spec": {"externalSecretMetadata": {"annotations": {"team": "b"}}}}),
            403,
        ),
        (
            "CES spec.externalSecretMetadata.labels",
            &ces_path,
            json!({"spec": {"externalSecretMetadata": {"labels": {"x": "y"}}}}),
            403,
        ),
        (
            "CES spec.namespaces",
            &ces_path,
            json!({"spec": {"namespaces": [ns, "kube-system"]}}),
            403,
        ),
        (
            "CES spec.externalSecretSpec",
            &ces_path,
            json!({"spec": {"externalSecretSpec": {"refreshInterval": "2h"}}}),
            403,
        ),
        (
            "KES status.observedGeneration",
            &kes,
            json!({"status": {"observedGeneration": -7}}),
            200,
        ),
        (
            "KES status.status",
            &kes,
            json!({"status": {"status": "SUCCESS"}}),
            403,
        ),
        (
            "KES status.lastSync",
            &kes,
            json!({"status": {"lastSync": "2026-01-01T00:00:00Z"}}),
            403,
        ),
    ];
    let mut report = String::from(
        "| change by system:serviceaccount:ssm-resync:ssm-resync | answer |\n|---|---|\n",
    );
    for (what, path, body, want) in &table {
        let (code, msg) = patch_as(&server, &token, path, body.clone()).await;
        report.push_str(&format!(
            "| {what} | {} |\n",
            if code == 200 {
                "allowed".into()
            } else {
                format!("denied ({code})")
            }
        ));
        assert_eq!(code, *want, "{what}: {msg}");
        if *want == 403 {
            assert!(
                msg.contains("ssm-resync may"),
                "{what}: denied by something else: {msg}"
            );
        }
    }
    eprintln!("{report}");
    let out = run(kubectl(&admin).args([
        "-n",
        &ns,
        "patch",
        "externalsecrets.external-secrets.io",
        "db",
        "--type=merge",
        "-p",
        r#"{"spec":{"refreshInterval":"2h"}}"#,
    ]));
    assert!(
        out.status.success(),
        "an administrator was denied: {}",
        text(&out.stderr)
    );
}

/// Waits until ESO has created ExternalSecret `name` in `ns` (a ClusterExternalSecret's child).
async fn wait_for_child(kube: &kube::Client, ns: &str, name: &str, within: Duration) {
    let api = Api::<kube::api::DynamicObject>::namespaced_with(
        kube.clone(),
        ns,
        &ssm_resync::cluster::external_secret_resource(ssm_resync::cluster::EsoVersion::V1),
    );
    let deadline = Instant::now() + within;
    while api.get_opt(name).await.unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "ESO did not create {ns}/{name} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Adds a string property to the ClusterExternalSecret CRD's served schema at `spec` and at
/// `spec.externalSecretMetadata` (as a later ESO may add fields) and removes them when dropped.
struct FutureCesFields {
    admin: String,
    version: usize,
}

const FUTURE_FIELD: &str = "ssmResyncTestFuture";
const CES_CRD: &str = "crd/clusterexternalsecrets.external-secrets.io";

impl FutureCesFields {
    fn add(admin: &str) -> Self {
        let out = run(kubectl(admin).args(["get", CES_CRD, "-o", "json"]));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let crd: Value = serde_json::from_slice(&out.stdout).unwrap();
        let version = crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .position(|v| v["name"] == "v1")
            .expect("a v1 version");
        let at =
            format!("/spec/versions/{version}/schema/openAPIV3Schema/properties/spec/properties");
        let patch = json!([
            {"op": "add", "path": format!("{at}/{FUTURE_FIELD}"), "value": {"type": "string"}},
            {"op": "add", "path": format!("{at}/externalSecretMetadata/properties/{FUTURE_FIELD}"), "value": {"type": "string"}},
        ]);
        let out =
            run(kubectl(admin).args(["patch", CES_CRD, "--type=json", "-p", &patch.to_string()]));
        assert!(out.status.success(), "{}", text(&out.stderr));
        Self {
            admin: admin.to_owned(),
            version,
        }
    }
}

impl Drop for FutureCesFields {
    fn drop(&mut self) {
        let at = format!(
            "/spec/versions/{}/schema/openAPIV3Schema/properties/spec/properties",
            self.version
        );
        let patch = json!([
            {"op": "remove", "path": format!("{at}/{FUTURE_FIELD}")},
            {"op": "remove", "path": format!("{at}/externalSecretMetadata/properties/{FUTURE_FIELD}")},
        ]);
        let _ = run(kubectl(&self.admin).args([
            "patch",
            CES_CRD,
            "--type=json",
            "-p",
            &patch.to_string(),
        ]));
    }
}

/// The shipped policy deployed in a namespace other than `ssm-resync` (rendered as
/// docs/deploy.md, "Another namespace", says), on the real API server: the ServiceAccount's
/// triggers pass and a spec change by it is denied (the policy named the shipped namespace
/// until 2026-12 and matched nobody elsewhere). And the ClusterExternalSecret rule covers spec
/// fields it does not name: two fields added to the CRD, as a later ESO may add them, cannot
/// be changed by the service account (the rule listed the fields of ESO v0.16 to v2.9 until
/// 2026-12, and let these through).
#[tokio::test]
async fn admission_policy_applies_in_another_namespace_and_to_fields_eso_adds() {
    // Alone: the CRD's schema changes while the test runs.
    let stack = Stack::shared_alone();
    stack.assert_eso();
    let admin = stack.get("KUBECONFIG").to_owned();
    let kube = stack.kube().await;
    let other = unique("vap-ns");
    let rendered = kustomize_in_namespace("overlays/local", &other);
    ensure_namespace(&admin, &rendered);
    let strip_ns = |o: &Value| {
        let mut o = o.clone();
        o["metadata"].as_object_mut().unwrap().remove("namespace");
        o
    };
    let sa = find(&rendered, "ServiceAccount", "ssm-resync").clone();
    assert_eq!(sa["metadata"]["namespace"], json!(other));
    let policy = strip_ns(find(&rendered, "ValidatingAdmissionPolicy", "ssm-resync"));
    let policy_binding = strip_ns(find(
        &rendered,
        "ValidatingAdmissionPolicyBinding",
        "ssm-resync",
    ));
    let name = unique("ssm-resync-vap-ns-test");
    let mut cluster_role = find(&rendered, "ClusterRole", "ssm-resync").clone();
    cluster_role["metadata"] = json!({"name": name});
    let mut cluster_binding = find(&rendered, "ClusterRoleBinding", "ssm-resync").clone();
    assert_eq!(
        cluster_binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "ssm-resync", "namespace": other}])
    );
    cluster_binding["metadata"] = json!({"name": name});
    cluster_binding["roleRef"]["name"] = json!(name);
    let policy_name = policy["metadata"]["name"].as_str().unwrap().to_owned();
    let _cleanup = Cleanup {
        admin: admin.clone(),
        objects: vec![
            ("clusterrolebinding".into(), name.clone()),
            ("clusterrole".into(), name.clone()),
            (
                "validatingadmissionpolicybinding".into(),
                policy_name.clone(),
            ),
            ("validatingadmissionpolicy".into(), policy_name.clone()),
        ],
    };
    let out = run_stdin(
        kubectl(&admin).args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=ssm-resync-deploy-test",
            "-f",
            "-",
        ]),
        &as_list(&[sa, cluster_role, cluster_binding, policy, policy_binding]),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (_, token) = service_account_kubeconfig(
        &admin,
        &other,
        "ssm-resync",
        tempfile::tempdir().unwrap().path(),
    );
    let server = api_server(&admin);
    let _future = FutureCesFields::add(&admin);

    let (ns, parameter) = reader(&stack, &kube, "deploy-vap-ns").await;
    let ces = unique("vap-ns");
    let ces_api = Api::<kube::api::DynamicObject>::all_with(
        kube.clone(),
        &ssm_resync::cluster::cluster_external_secret_resource(ssm_resync::cluster::EsoVersion::V1),
    );
    ces_api
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ClusterExternalSecret",
            "metadata": {"name": ces},
            "spec": {"externalSecretName": "from-ces-ns", "namespaces": [ns],
                "externalSecretMetadata": {"annotations": {"team": "a"}},
                "externalSecretSpec": {"refreshInterval": "1h", "secretStoreRef": {"name": "aws", "kind": "SecretStore"},
                    "target": {"name": "from-ces-ns"}, "data": [{"secretKey": "v", "remoteRef": {"key": parameter}}]}}
        })).unwrap())
        .await
        .unwrap();
    let es = format!("/apis/external-secrets.io/v1/namespaces/{ns}/externalsecrets/db");
    let ces_path = format!("/apis/external-secrets.io/v1/clusterexternalsecrets/{ces}");

    // The new fields are served (an administrator may set them, and they are kept): a change
    // to them is a change, not a field the API server prunes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run(kubectl(&admin).args([
            "patch",
            "clusterexternalsecrets.external-secrets.io",
            &ces,
            "--type=merge",
            "-p",
            &json!({"spec": {FUTURE_FIELD: "v1", "externalSecretMetadata": {FUTURE_FIELD: "v1"}}})
                .to_string(),
            "-o",
            "json",
        ]));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        if got["spec"][FUTURE_FIELD] == "v1"
            && got["spec"]["externalSecretMetadata"][FUTURE_FIELD] == "v1"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the CRD's new fields were never served: {}",
            got["spec"]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The policy applies to the ServiceAccount of this namespace: its first denial.
    wait_for_spec_denial(
        &admin,
        &token,
        &ns,
        "db",
        "ValidatingAdmissionPolicy",
        &format!("the ServiceAccount in {other}"),
    )
    .await;
    let who = format!("system:serviceaccount:{other}:ssm-resync");
    let table: Vec<(&str, &String, Value, u16)> = vec![
        (
            "ES force-sync annotation",
            &es,
            json!({"metadata": {"annotations": {"force-sync": "t1"}}}),
            200,
        ),
        (
            "ES spec.refreshInterval",
            &es,
            json!({"spec": {"refreshInterval": "2h"}}),
            403,
        ),
        (
            "CES external-secrets.io/force-sync annotation",
            &ces_path,
            json!({"metadata": {"annotations": {"external-secrets.io/force-sync": "t1"}}}),
            200,
        ),
        (
            "CES spec.externalSecretMetadata.annotations[force-sync]",
            &ces_path,
            json!({"spec": {"externalSecretMetadata": {"annotations": {"force-sync": "t1"}}}}),
            200,
        ),
        (
            "CES spec.externalSecretMetadata.annotations[team]",
            &ces_path,
            json!({"spec": {"externalSecretMetadata": {"annotations": {"team": "b"}}}}),
            403,
        ),
        (
            "CES spec.refreshTime",
            &ces_path,
            json!({"spec": {"refreshTime": "2026-01-01T00:00:00Z"}}),
            403,
        ),
        (
            "CES a spec field ESO adds later",
            &ces_path,
            json!({"spec": {FUTURE_FIELD: "changed"}}),
            403,
        ),
        (
            "CES a spec field ESO adds later, removed",
            &ces_path,
            json!({"spec": {FUTURE_FIELD: null}}),
            403,
        ),
        (
            "CES an externalSecretMetadata field ESO adds later",
            &ces_path,
            json!({"spec": {"externalSecretMetadata": {FUTURE_FIELD: "changed"}}}),
            403,
        ),
    ];
    let mut report = format!("| change by {who} | answer |\n|---|---|\n");
    let mut wrong = vec![];
    for (what, path, body, want) in &table {
        let (code, msg) = patch_as(&server, &token, path, body.clone()).await;
        report.push_str(&format!(
            "| {what} | {} |\n",
            if code == 200 {
                "allowed".into()
            } else {
                format!("denied ({code})")
            }
        ));
        if code != *want || (*want == 403 && !msg.contains("ssm-resync may")) {
            wrong.push(format!("{what}: {code} {msg}"));
        }
    }
    eprintln!("{report}");
    let _ = ces_api.delete(&ces, &Default::default()).await;
    // The CRD as it was; a schema change restarts ESO's watch of ClusterExternalSecrets, so
    // wait until it creates a child again before the next test needs it to.
    drop(_future);
    let probe = unique("vap-ns-probe");
    ces_api
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ClusterExternalSecret",
            "metadata": {"name": probe},
            "spec": {"externalSecretName": "probe", "namespaces": [ns],
                "externalSecretSpec": {"refreshInterval": "1h", "secretStoreRef": {"name": "aws", "kind": "SecretStore"},
                    "target": {"name": "probe"}, "data": [{"secretKey": "v", "remoteRef": {"key": parameter}}]}}
        })).unwrap())
        .await
        .unwrap();
    let started = Instant::now();
    wait_for_child(&kube, &ns, "probe", Duration::from_secs(120)).await;
    eprintln!(
        "ESO created a ClusterExternalSecret's child again {:.1?} after the CRD was restored",
        started.elapsed()
    );
    let _ = ces_api.delete(&probe, &Default::default()).await;
    assert!(wrong.is_empty(), "{wrong:#?}");
}

// --- metrics -----------------------------------------------------------------------------

/// Family name -> OpenMetrics type, and every sample name, of an exposition.
fn exposition(text: &str) -> (HashMap<String, String>, BTreeSet<String>) {
    let mut families = HashMap::new();
    let mut samples = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            families.insert(it.next().unwrap().to_owned(), it.next().unwrap().to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_owned());
        }
    }
    (families, samples)
}

/// The family a sample name belongs to, given the types the exposition declares.
fn family_of<'a>(
    name: &'a str,
    families: &HashMap<String, String>,
) -> Option<(&'a str, &'static str)> {
    for (suffix, kinds) in [
        ("_total", &["counter"][..]),
        ("_bucket", &["histogram"][..]),
        ("_sum", &["histogram", "summary"][..]),
        ("_count", &["histogram", "summary"][..]),
        ("_info", &["info"][..]),
        ("", &["gauge", "unknown"][..]),
    ] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(t) = families.get(base)
            && kinds.contains(&t.as_str())
        {
            return Some((base, kinds[0]));
        }
    }
    None
}

fn referenced_metrics(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    regex::Regex::new(r"\bssm_resync_[a-z0-9_]+")
        .unwrap()
        .find_iter(&text)
        .map(|m| m.as_str().to_owned())
        .collect()
}

#[tokio::test]
async fn metrics_used_by_alerts_and_dashboard_exist() {
    // Alone on the shared stack: the service runs as deployed, with the start-up sweep, which
    // would force other tests' readers.
    let stack = Stack::shared_alone();
    let kube = stack.kube().await;
    let (ns, parameter) = reader(&stack, &kube, "deploy-metrics").await;
    let topic = stack.topic(&unique("deploy-metrics")).await;
    // Certificate fetches go through a proxy that refuses at once: the fetch fails (the
    // cert_fetches{result="error"} series) without any traffic leaving the machine.
    let dead_proxy = format!("http://127.0.0.1:{}", free_port());
    // Both doors: the queue path's series exist only where a queue is consumed.
    let queue = stack.queue(&topic, &unique("deploy-metrics")).await;
    let svc = Launched::start(
        BIN,
        &stack,
        stack.get("KUBECONFIG"),
        &[&topic],
        &[
            ("HTTPS_PROXY", &dead_proxy),
            ("https_proxy", &dead_proxy),
            ("NO_PROXY", "127.0.0.1,localhost"),
            ("no_proxy", "127.0.0.1,localhost"),
            ("SSM_RESYNC_SQS_QUEUE_URL", &queue),
        ],
    )
    .await;

    // Exercise every path a series appears on only once used: an applied change, an
    // ignored message, a certificate that cannot be fetched.
    let (status, body) = svc.post(&signed_change(&stack, &topic, &parameter)).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("applied")),
        "{body}"
    );
    wait_annotation_change(&kube, &ns, "db", None, Duration::from_secs(10)).await;
    let key = stack.signing_key();
    let ignored = ssm_resync::sample::notification(
        "not an AWS event".into(),
        &topic,
        stack.cert_url(),
        Some(&key),
    );
    let (status, body) = svc.post(&serde_json::to_string(&ignored).unwrap()).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("ignored")),
        "{body}"
    );
    let unpinned = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-fedcba9876543210fedcba9876543210.pem";
    let event = ssm_resync::sample::parameter_store_change(
        &parameter,
        "Update",
        "us-east-1",
        "123456789012",
    );
    let fetch = ssm_resync::sample::notification(event.to_string(), &topic, unpinned, Some(&key));
    let (status, body) = svc.post(&serde_json::to_string(&fetch).unwrap()).await;
    assert!(
        status >= 400,
        "an unfetchable certificate must not be accepted: {status} {body}"
    );

    // And one through the queue.
    let event = ssm_resync::sample::parameter_store_change(
        &parameter,
        "Update",
        "us-east-1",
        "123456789012",
    );
    stack
        .sns()
        .await
        .publish()
        .topic_arn(&topic)
        .message(event.to_string())
        .send()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !svc
        .metrics()
        .await
        .contains(r#"ssm_resync_queue_messages_total{result="applied"} 1"#)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the queued change was not applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (families, samples) = exposition(&svc.metrics().await);

    // Everything docs/runbook.md and the dashboard describe, by family and type.
    for (family, kind) in [
        ("ssm_resync_notifications", "counter"),
        ("ssm_resync_rejections", "counter"),
        ("ssm_resync_changes", "counter"),
        ("ssm_resync_events_ignored", "counter"),
        ("ssm_resync_targets_matched", "counter"),
        ("ssm_resync_patches", "counter"),
        ("ssm_resync_patch_duration_seconds", "histogram"),
        ("ssm_resync_end_to_end_seconds", "histogram"),
        ("ssm_resync_request_duration_seconds", "histogram"),
        ("ssm_resync_cert_fetches", "counter"),
        ("ssm_resync_index_objects", "gauge"),
        ("ssm_resync_index_references", "gauge"),
        ("ssm_resync_watch_events", "counter"),
        ("ssm_resync_watch_restarts", "counter"),
        ("ssm_resync_watch_last_event_age_seconds", "gauge"),
        ("ssm_resync_watch_synced", "gauge"),
        ("ssm_resync_queue_messages", "counter"),
        ("ssm_resync_queue_api_calls", "counter"),
        ("ssm_resync_queue_lag_seconds", "histogram"),
        ("ssm_resync_build", "info"),
    ] {
        assert_eq!(
            families.get(family).map(String::as_str),
            Some(kind),
            "{family} in the exposition: {families:?}"
        );
    }

    let mut checked = 0;
    for file in ["k8s/monitoring/rules.yaml", "k8s/monitoring/dashboard.json"] {
        let names = referenced_metrics(&Path::new(REPO).join(file));
        assert!(names.len() >= 5, "{file}: {names:?}");
        for name in names {
            let family = family_of(&name, &families);
            assert!(
                family.is_some(),
                "{file} uses {name}, which the binary does not expose (families: {families:?})"
            );
            assert!(
                samples.contains(&name),
                "{file} uses {name}: family {family:?} exists but no such sample was exposed: {samples:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15);
    for series in [
        r#"ssm_resync_cert_fetches_total{result="error"}"#,
        r#"ssm_resync_patches_total{result="applied"}"#,
    ] {
        assert!(svc.metrics().await.contains(series), "{series}");
    }
}

// --- a real Prometheus -------------------------------------------------------------------

struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let bin = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .unwrap_or_else(|| {
                panic!(
                    "prometheus is not installed: run scripts/check-deploy.sh (it installs \
                     Debian's `prometheus` package) or `apt-get install prometheus`"
                )
            });
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {REPO}/k8s/monitoring/rules.yaml\n\
                 scrape_configs:\n  - job_name: ssm-resync\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = dir.path().join("prometheus.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawning prometheus");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Option<Value> {
        let url =
            url::Url::parse_with_params(&format!("{}/api/v1/{path}", self.url), query).unwrap();
        let resp = reqwest::get(url).await.ok()?;
        let v: Value = resp.json().await.ok()?;
        (v["status"] == "success").then(|| v["data"].clone())
    }

    async fn query(&self, q: &str) -> Vec<Value> {
        self.api("query", &[("query", q)])
            .await
            .and_then(|d| d["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Polls until `check` holds; panics with the log after `within`.
    async fn until<F, Fut>(&self, what: &str, within: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        while !check().await {
            assert!(
                Instant::now() < deadline,
                "prometheus: {what} not within {within:?}; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn prometheus_scrapes_the_service_and_loads_the_rules() {
    let stack = Stack::shared();
    let topic = stack.topic(&unique("deploy-prom")).await;
    let svc = Service::start(BIN, &stack, &[&topic], &[]).await;
    let target = svc.admin.trim_start_matches("http://").to_owned();
    let prom = Prometheus::start(&target);

    prom.until(
        "up{job=\"ssm-resync\"} == 1",
        Duration::from_secs(60),
        || async {
            prom.query(r#"up{job="ssm-resync"}"#)
                .await
                .first()
                .is_some_and(|s| value(s) == 1.0)
        },
    )
    .await;

    let up_seen = time::OffsetDateTime::now_utc();
    let info = prom.query("ssm_resync_build_info").await;
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0]["metric"]["version"], env!("CARGO_PKG_VERSION"));
    let synced = prom.query("ssm_resync_watch_synced").await;
    assert_eq!(synced.len(), 4, "one series per watched kind: {synced:?}");
    assert!(synced.iter().all(|s| value(s) == 1.0), "{synced:?}");
    let rejections = prom.query("sum(ssm_resync_rejections_total)").await;
    assert_eq!(
        rejections.len(),
        1,
        "OpenMetrics counters keep their _total name"
    );

    // Prometheus 2.42 loads every alert and evaluates it without error; once `up` exists
    // none is firing or pending against a healthy service (SSMResyncDown's absent() goes
    // pending on the evaluations before the first scrape, then back to inactive).
    let rules = || async {
        prom.api("rules", &[])
            .await
            .map(|d| {
                d["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                    .collect::<Vec<Value>>()
            })
            .unwrap_or_default()
    };
    let evaluated_after = |r: &Value, t: time::OffsetDateTime| {
        r["lastEvaluation"].as_str().is_some_and(|e| {
            time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339)
                .is_ok_and(|e| e > t)
        })
    };
    prom.until(
        "all 15 rules (11 of the service, 4 of the queue path) evaluated since `up` and inactive",
        Duration::from_secs(30),
        || async {
            let rules = rules().await;
            rules.len() == 15
                && rules
                    .iter()
                    .all(|r| evaluated_after(r, up_seen) && r["state"] == "inactive")
        },
    )
    .await;
    for r in rules().await {
        assert_eq!(r["health"], "ok", "{r}");
        assert_eq!(r["type"], "alerting", "{r}");
        assert!(
            r["lastError"].as_str().unwrap_or_default().is_empty(),
            "{r}"
        );
    }
}
