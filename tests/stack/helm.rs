//! The Helm chart (charts/ssm-resync) against the kustomize overlay it replaces, the binary
//! and the real API server:
//! - `helm lint --strict` with the default values and every ci/*-values.yaml;
//! - every render passes the checks tests/stack/deploy.rs makes on the kustomize renders
//!   (`serve --check-config` of the container's args and env, PDB, ServiceMonitor and
//!   PrometheusRule wiring), and follows the release's namespace and names;
//! - values.schema.json refuses a misspelt key, and reaches every flag of `ssm-resync serve`;
//! - no drift: `helm template` with the default values renders what `kubectl kustomize
//!   k8s/overlays/eks` renders, object by object, every field, but for the differences listed
//!   (with their reasons) in [`ON_PURPOSE`];
//! - the chart's README lists every value with its default;
//! - the renders are accepted by kube-apiserver (server-side dry run, the local stack), and
//!   `helm install --dry-run=server` (Helm 4: the mode is explicit) prints the NOTES;
//! - the chart's admission policy, rendered for another release, namespace and annotation,
//!   binds that release's ServiceAccount and key on the real API server;
//! - `helm install` into the local stack, then a parameter change reaches the Secret through
//!   the installed objects (the service out of cluster with the installed Deployment's args
//!   and env and a TokenRequest token of the installed ServiceAccount), then `helm uninstall`.
//!
//! helm is built from the Go module proxy by `scripts/build-go-tool.sh helm` (cached by
//! version, stack/go/helm); when it cannot be built the tests fail, they never skip.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::manifests::*;
use crate::common::*;
use serde_json::{Value, json};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/ssm-resync");

/// The example values files of the chart (chart-testing's ci/ convention).
const CI_VALUES: [&str; 3] = [
    "ci/eks-values.yaml",
    "ci/minimal-values.yaml",
    "ci/queue-values.yaml",
];

// --- helm ---------------------------------------------------------------------------------

/// The helm binary: the last stdout line of `scripts/build-go-tool.sh helm`, which builds it
/// on first use (about 90 s on two cores) and prints the cached path after.
fn helm_bin() -> &'static str {
    static HELM: OnceLock<String> = OnceLock::new();
    HELM.get_or_init(|| {
        let out = Command::new("bash")
            .arg(format!("{REPO}/scripts/build-go-tool.sh"))
            .arg("helm")
            .stdin(Stdio::null())
            .output()
            .expect("running scripts/build-go-tool.sh helm");
        assert!(
            out.status.success(),
            "scripts/build-go-tool.sh helm failed: helm is required by these tests (Go and the \
             Go module proxy build it):\n{}",
            text(&out.stderr)
        );
        let path = text(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned();
        assert!(
            std::path::Path::new(&path).is_file(),
            "scripts/build-go-tool.sh helm printed {path:?}, not a file"
        );
        path
    })
}

fn helm(args: &[&str]) -> Output {
    helm_on("/nonexistent", args)
}

/// helm against the cluster of `kubeconfig` (its cache, config and data under the temporary
/// directory, not the user's).
fn helm_on(kubeconfig: &str, args: &[&str]) -> Output {
    let home = std::env::temp_dir().join("ssm-resync-helm-test");
    run(Command::new(helm_bin())
        .args(args)
        .current_dir(CHART)
        .env("KUBECONFIG", kubeconfig)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data")))
}

/// `helm template RELEASE charts/ssm-resync -n NAMESPACE -f FILE... ARGS...`: the YAML, or
/// helm's error.
fn template(
    release: &str,
    namespace: &str,
    files: &[&str],
    args: &[&str],
) -> Result<String, String> {
    let mut all = vec!["template", release, CHART, "--namespace", namespace];
    for f in files {
        all.extend(["--values", f]);
    }
    all.extend(args);
    let out = helm(&all);
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

/// The rendered objects as JSON.
fn chart(release: &str, namespace: &str, files: &[&str], args: &[&str]) -> Vec<Value> {
    let what = format!("helm template {release} -n {namespace} {files:?} {args:?}");
    let yaml = template(release, namespace, files, args).unwrap_or_else(|e| panic!("{what}: {e}"));
    yaml_objects(&what, &yaml)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{REPO}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// --- lint and renders -------------------------------------------------------------------------

#[test]
fn helm_lint_strict() {
    let mut runs = vec![vec![]];
    runs.extend(CI_VALUES.iter().map(|f| vec!["--values", f]));
    for extra in runs {
        let mut args = vec!["lint", "--strict", CHART];
        args.extend(extra.iter().copied());
        let out = helm(&args);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("0 chart(s) failed"),
            "helm {args:?}:\n{stdout}{}",
            text(&out.stderr)
        );
        assert!(!stdout.contains("[WARNING]"), "{stdout}");
    }
}

/// The same checks tests/stack/deploy.rs makes on every kustomize render, on the default render
/// and each example values file, under other release names and namespaces too.
#[test]
fn renders_pass_the_deploy_checks() {
    let flags = serve_env_names(BIN);
    let cases: [(&str, &str, &[&str]); 5] = [
        ("ssm-resync", "ssm-resync", &[]),
        ("platform", "team-x", &[]),
        ("ssm-resync", "platform", &[CI_VALUES[0]]),
        ("r", "team-y", &[CI_VALUES[1]]),
        ("ssm-resync", "private", &[CI_VALUES[2]]),
    ];
    for (release, namespace, files) in cases {
        let what = format!("helm template {release} -n {namespace} {files:?}");
        let objects = chart(release, namespace, files, &[]);
        check_config(BIN, &what, &objects, &flags);
        if let Some(pdb) = objects.iter().find(|o| o["kind"] == "PodDisruptionBudget") {
            check_pdb(&objects, pdb);
        }
        for o in &objects {
            match o["kind"].as_str().unwrap() {
                "ServiceMonitor" => check_service_monitor(&objects, o),
                "PrometheusRule" => check_prometheus_rule(o),
                _ => {}
            }
        }

        // Everything namespaced lives in the release namespace.
        for o in &objects {
            let kind = o["kind"].as_str().unwrap();
            if CLUSTER_SCOPED.contains(&kind) {
                assert!(o["metadata"]["namespace"].is_null(), "{what}: {kind} {o}");
            } else {
                assert_eq!(o["metadata"]["namespace"], namespace, "{what}: {kind}");
            }
        }

        // The identity the admission policy and the bindings name is the pod's.
        let pod = &find(&objects, "Deployment", "")["spec"]["template"]["spec"];
        let sa = pod["serviceAccountName"].as_str().unwrap();
        let username = format!("system:serviceaccount:{namespace}:{sa}");
        let vap = find(&objects, "ValidatingAdmissionPolicy", "");
        assert_eq!(
            vap["spec"]["matchConditions"][0]["expression"],
            format!("request.userInfo.username == '{username}'"),
            "{what}"
        );
        let binding = find(&objects, "ValidatingAdmissionPolicyBinding", "");
        assert_eq!(binding["spec"]["policyName"], vap["metadata"]["name"]);
        let env = container_env(&objects);
        assert_eq!(
            vap["spec"]["variables"][0],
            json!({"name": "key", "expression": format!("'{}'", env["SSM_RESYNC_ANNOTATION"])}),
            "{what}: the policy's key is the --annotation"
        );
        for kind in ["ClusterRoleBinding", "RoleBinding"] {
            assert_eq!(
                find(&objects, kind, "")["subjects"],
                json!([{"kind": "ServiceAccount", "name": sa, "namespace": namespace}]),
                "{what}: {kind}"
            );
        }
        if files.is_empty() || files == [CI_VALUES[0]] {
            find(&objects, "ServiceAccount", sa);
        }

        // The Ingress routes to the webhook Service's port; the NetworkPolicies admit the
        // ports the container listens on. The queue path has no webhook: no Service for it,
        // no Ingress.
        let deployment = find(&objects, "Deployment", "")["metadata"]["name"].clone();
        let webhook = objects
            .iter()
            .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == deployment);
        let queue_only = files == [CI_VALUES[2]];
        assert_eq!(
            webhook.is_none(),
            queue_only,
            "{what}: the webhook Service, named like the Deployment, exactly when the webhook is on"
        );
        if let Some(ing) = objects.iter().find(|o| o["kind"] == "Ingress") {
            let webhook = webhook.expect("an Ingress needs the webhook Service");
            let backend = &ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
            assert_eq!(backend["name"], webhook["metadata"]["name"], "{what}");
            assert_eq!(backend["port"]["name"], "http-webhook");
            assert_eq!(ing["spec"]["rules"][0]["http"]["paths"][0]["path"], "/sns");
        }
        let ports: Vec<&Value> = ssm_resync_container(&objects)["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["containerPort"])
            .collect();
        for np in objects.iter().filter(|o| o["kind"] == "NetworkPolicy") {
            for rule in np["spec"]["ingress"].as_array().unwrap() {
                for p in rule["ports"].as_array().unwrap() {
                    assert!(ports.contains(&&p["port"]), "{what}: {np}");
                }
            }
        }
    }

    // The example files switch what they say they switch.
    let minimal = chart("r", "team-y", &[CI_VALUES[1]], &[]);
    let kinds: BTreeSet<&str> = minimal
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    for absent in [
        "Ingress",
        "ServiceMonitor",
        "PrometheusRule",
        "PodDisruptionBudget",
    ] {
        assert!(!kinds.contains(absent), "{absent}: {kinds:?}");
    }
    assert_eq!(
        find(&minimal, "Namespace", "")["metadata"]["name"],
        "team-y"
    );
    assert_eq!(
        find(&minimal, "Deployment", "")["metadata"]["name"],
        "resync"
    );
    assert_eq!(container_env(&minimal)["SSM_RESYNC_KES"], "true");
    let eks = chart("ssm-resync", "platform", &[CI_VALUES[0]], &[]);
    assert_eq!(
        ssm_resync_container(&eks)["image"],
        "ghcr.io/example/ssm-resync@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    assert_eq!(
        find(&eks, "ServiceAccount", "")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::210987654321:role/platform-ssm-resync"
    );
    assert_eq!(
        find(&eks, "ServiceMonitor", "")["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );

    // A changed value rolls the pods (kustomize: the ConfigMap's hashed name).
    let checksum = |args: &[&str]| {
        chart("ssm-resync", "ssm-resync", &[], args)
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .unwrap()["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .clone()
    };
    assert_ne!(
        checksum(&[]),
        checksum(&["--set", "config.env.SSM_RESYNC_KES=true"])
    );
}

// --- schema -----------------------------------------------------------------------------------

/// A misspelt key fails `helm template` (so `helm install`) with the schema's error, at the
/// top level and inside the chart's own objects; so does a wrong type.
#[test]
fn values_schema_refuses_typos() {
    let typo_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        typo_file.path(),
        "ingress:\n  hots: ssm-resync.example.org\n",
    )
    .unwrap();
    let typo_path = typo_file.path().to_str().unwrap();
    let cases: [(&[&str], &[&str], &str); 6] = [
        (
            &[],
            &["--set", "replicaCont=3"],
            "'replicaCont' not allowed",
        ),
        (
            &[],
            &[
                "--set",
                "serviceAccount.irsaRoleARN=arn:aws:iam::123456789012:role/x",
            ],
            "'irsaRoleARN' not allowed",
        ),
        (
            &[],
            &["--set", "config.env.SSM_RESYNC_KESS=true"],
            "'SSM_RESYNC_KESS' not allowed",
        ),
        (
            &[],
            &["--set", "config.esoVersion=v2"],
            "/config/esoVersion",
        ),
        (&[], &["--set", "config.topicArns=null"], "topicArns"),
        (&[typo_path], &[], "'hots' not allowed"),
    ];
    for (files, args, want) in cases {
        let err = template("ssm-resync", "ssm-resync", files, args)
            .expect_err(&format!("{files:?} {args:?} must be refused"));
        assert!(
            err.contains("values don't meet the specifications of the schema")
                && err.contains(want),
            "{files:?} {args:?}: expected a schema error naming {want:?}:\n{err}"
        );
    }
    // And the correct spellings render.
    for args in [
        ["--set", "replicaCount=3"],
        ["--set", "config.env.SSM_RESYNC_KES=true"],
        ["--set", "config.esoVersion=v1beta1"],
    ] {
        template("ssm-resync", "ssm-resync", &[], &args).unwrap();
    }
}

fn schema() -> Value {
    serde_json::from_str(&read("charts/ssm-resync/values.schema.json")).unwrap()
}

/// The ConfigMap variables the chart sets from typed values (so `config.env` must not), and the
/// flags it passes as args.
const TYPED: [(&str, &str); 12] = [
    ("SSM_RESYNC_TOPIC_ARN", "config.topicArns"),
    ("SSM_RESYNC_WEBHOOK", "delivery"),
    ("SSM_RESYNC_SQS_QUEUE_URL", "sqs.queueUrls"),
    ("SSM_RESYNC_SQS_ACCEPT_EVENTBRIDGE", "sqs.acceptEventBridge"),
    ("SSM_RESYNC_SQS_RECEIVERS", "sqs.receivers"),
    ("SSM_RESYNC_SQS_VISIBILITY_TIMEOUT", "sqs.visibilityTimeout"),
    ("SSM_RESYNC_ANNOTATION", "config.annotation"),
    ("SSM_RESYNC_REQUEST_DEADLINE", "config.requestDeadline"),
    ("SSM_RESYNC_ESO_VERSION", "config.esoVersion"),
    ("SSM_RESYNC_LOG_FORMAT", "config.logFormat (--log-format)"),
    ("SSM_RESYNC_LISTEN", "ports.webhook (--listen)"),
    ("SSM_RESYNC_ADMIN_LISTEN", "ports.admin (--admin-listen)"),
];

/// Every flag of `ssm-resync serve` is reachable: a typed value, or a name `config.env`
/// accepts; and `config.env` accepts no name `serve` does not have. A render that sets them
/// passes `--check-config`.
#[test]
fn every_serve_flag_is_reachable_through_values() {
    let flags = serve_env_names(BIN);
    let schema = schema();
    let env_names: BTreeSet<String> =
        schema["properties"]["config"]["properties"]["env"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
    let mut reachable = env_names.clone();
    reachable.extend(TYPED.iter().map(|(k, _)| k.to_string()));
    assert_eq!(
        reachable, flags,
        "values.schema.json config.env plus the typed values must be exactly `serve --help`'s env vars"
    );
    for (k, _) in TYPED {
        assert!(
            !env_names.contains(k),
            "{k} is typed: config.env must refuse it"
        );
    }

    let values: Vec<String> = [
        "SSM_RESYNC_MAX_BODY_BYTES=262144",
        "SSM_RESYNC_MAX_CONCURRENT_REQUESTS=8",
        "SSM_RESYNC_MAX_CONNECTIONS=128",
        "SSM_RESYNC_READ_TIMEOUT=15s",
        "SSM_RESYNC_ACCEPT_PLAIN_FORMAT=false",
        "SSM_RESYNC_PATCH_CONCURRENCY=4",
        "SSM_RESYNC_PATCH_RETRIES=3",
        "SSM_RESYNC_COALESCE_WINDOW=500ms",
        "SSM_RESYNC_MAX_MESSAGE_AGE=1h",
        "SSM_RESYNC_MIN_SIGNATURE_VERSION=2",
        "SSM_RESYNC_MAX_REFERENCES_PER_OBJECT=500",
        "SSM_RESYNC_MAX_REFERENCES_PER_NAMESPACE=5000",
        "SSM_RESYNC_CERT_FETCH_TIMEOUT=3s",
        "SSM_RESYNC_KES=true",
        "SSM_RESYNC_CES_TRIGGER=spec",
        "SSM_RESYNC_ESO_ACCOUNT=123456789012",
        "SSM_RESYNC_ESO_CONTROLLER_CLASS=a\\,b",
        "SSM_RESYNC_FORCE_GENERATORS=true",
        "SSM_RESYNC_EVENTS=false",
        "SSM_RESYNC_EVENT_INTERVAL=1m",
        "SSM_RESYNC_WATCH_STALL_TIMEOUT=5m",
        "SSM_RESYNC_INITIAL_LIST=watch-list",
        "SSM_RESYNC_SWEEP_INTERVAL=0s",
        "SSM_RESYNC_SWEEP_LEASE=",
        "SSM_RESYNC_LEASE_NAMESPACE=elsewhere",
        "SSM_RESYNC_LEASE_DURATION=20s",
        "SSM_RESYNC_CONFIRM_TIMEOUT=2m",
        "SSM_RESYNC_DRY_RUN=true",
    ]
    .iter()
    .map(|kv| format!("config.env.{kv}"))
    .collect();
    let mut args = vec![];
    for v in &values {
        args.extend(["--set-string", v.as_str()]);
    }
    let objects = chart("ssm-resync", "ssm-resync", &[], &args);
    let env = container_env(&objects);
    // All but the certificate pin (it needs a mounted file) are set.
    let unset: Vec<&String> = env_names.iter().filter(|k| !env.contains_key(*k)).collect();
    assert_eq!(unset, ["SSM_RESYNC_SNS_SIGNING_CERT"], "{env:?}");
    assert_eq!(env["SSM_RESYNC_ESO_CONTROLLER_CLASS"], "a,b");
    check_config(BIN, "every flag set", &objects, &flags);
}

// --- no drift from kustomize -----------------------------------------------------------------

const CLUSTER_SCOPED: [&str; 5] = [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// Labels Helm's conventions add to every object's metadata.labels; the kustomize render has
/// some of them on some objects only (its `labels:` transformer covers k8s/base, not
/// k8s/monitoring or the overlay's own files). Where kustomize has one, the values must agree.
const HELM_LABELS: [&str; 5] = [
    "helm.sh/chart",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/name",
];

/// The one label the chart adds to selectors (and so to the pod template): two releases in one
/// namespace select their own pods.
const HELM_SELECTOR_LABELS: [&str; 1] = ["app.kubernetes.io/instance"];

/// Fields that differ on purpose: (kind, JSON pointer, reason). Removed from both renders
/// before they are compared; everything else must be equal. Besides these: the kustomize
/// ConfigMap's hashed name (`ssm-resync-config-<hash>`, configMapGenerator) is the chart's
/// `ssm-resync-config`, app.kubernetes.io/managed-by is kustomize's or Helm's, the labels
/// above, the Namespace (below), and the whitespace of the admission policy's CEL
/// expressions (see [`normalise`]).
const ON_PURPOSE: [(&str, &str, &str); 5] = [
    (
        "ValidatingAdmissionPolicy",
        "/spec/matchConditions",
        "Helm knows the release namespace when it renders and names the exact ServiceAccount; \
         kustomize's base cannot (an outer `namespace:` cannot rewrite a CEL string), so it \
         matches the ServiceAccount's name in any namespace (k8s/base/admissionpolicy.yaml)",
    ),
    (
        "Deployment",
        "/spec/template/metadata/annotations/checksum~1config",
        "Helm rolls the pods on a config change through this annotation; kustomize through \
         the ConfigMap's hashed name",
    ),
    (
        "Deployment",
        "/metadata/annotations/checkov.io~1skip2",
        "the checkov skip says how each pins the image digest (kustomize images[].digest, the \
         chart's image.digest)",
    ),
    (
        "ValidatingAdmissionPolicy",
        "/metadata/namespace",
        "cluster-scoped: kustomize 5 sets its namespace anyway (the API server ignores it), \
         Helm does not",
    ),
    (
        "ValidatingAdmissionPolicyBinding",
        "/metadata/namespace",
        "cluster-scoped, as above",
    ),
];

fn key(o: &Value) -> (String, String) {
    (
        o["kind"].as_str().unwrap().to_owned(),
        o["metadata"]["name"].as_str().unwrap().to_owned(),
    )
}

/// JSON pointers of the label maps of an object: (pointer, is a selector). The object's own
/// metadata.labels are not a selector; matchLabels, a Service's spec.selector and the pod
/// template's labels (which the selectors must match) are.
fn label_maps(kind: &str, v: &Value, at: &str, out: &mut Vec<(String, bool)>) {
    if let Some(map) = v.as_object() {
        for (k, child) in map {
            let here = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
            if child.is_object() {
                if k == "labels" && here == "/metadata/labels" {
                    out.push((here.clone(), false));
                } else if k == "labels" || k == "matchLabels" {
                    out.push((here.clone(), true));
                } else if kind == "Service" && here == "/spec/selector" {
                    out.push((here.clone(), true));
                    continue;
                }
            }
            label_maps(kind, child, &here, out);
        }
    } else if let Some(items) = v.as_array() {
        for (i, child) in items.iter().enumerate() {
            label_maps(kind, child, &format!("{at}/{i}"), out);
        }
    }
}

fn remove(v: &mut Value, pointer: &str) {
    let (parent, leaf) = pointer.rsplit_once('/').unwrap();
    let leaf = leaf.replace("~1", "/").replace("~0", "~");
    if let Some(map) = v.pointer_mut(parent).and_then(Value::as_object_mut) {
        map.remove(&leaf);
        if map.is_empty() && !parent.is_empty() {
            remove(v, parent);
        }
    }
}

/// The helm object as it compares to the kustomize one: the labels Helm's conventions add
/// where kustomize has none, managed-by, and [`ON_PURPOSE`] removed from both.
fn normalise(kustomize: &mut Value, helm: &mut Value) {
    let kind = kustomize["kind"].as_str().unwrap().to_owned();
    for obj in [&mut *kustomize, &mut *helm] {
        let mut maps = vec![];
        label_maps(&kind, obj, "", &mut maps);
        for (at, _) in &maps {
            if let Some(m) = obj.pointer_mut(at).and_then(Value::as_object_mut) {
                m.remove("app.kubernetes.io/managed-by");
            }
        }
    }
    let mut maps = vec![];
    label_maps(&kind, helm, "", &mut maps);
    for (at, selector) in maps {
        let theirs = kustomize.pointer(&at).cloned().unwrap_or(json!({}));
        let added: &[&str] = if selector {
            &HELM_SELECTOR_LABELS
        } else {
            &HELM_LABELS
        };
        let m = helm.pointer_mut(&at).unwrap().as_object_mut().unwrap();
        for l in added {
            if theirs.get(l).is_none() {
                m.remove(*l);
            }
        }
    }
    for obj in [&mut *kustomize, &mut *helm] {
        // kustomize 5.5 (kyaml) re-emits the folded (`>-`) CEL expressions of
        // k8s/base/admissionpolicy.yaml as literal blocks with an empty line added before each
        // more-indented line: whitespace only, which CEL ignores. Compared with every run of
        // whitespace as one space.
        if kind == "ValidatingAdmissionPolicy" {
            for v in obj["spec"]["validations"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                if let Some(e) = v["expression"].as_str() {
                    v["expression"] = json!(e.split_whitespace().collect::<Vec<_>>().join(" "));
                }
            }
        }
        for (k, pointer, _) in ON_PURPOSE {
            if k == kind {
                remove(obj, pointer);
            }
        }
        // Label maps left empty by the above (kustomize has none there).
        let mut maps = vec![];
        label_maps(&kind, obj, "", &mut maps);
        for (at, _) in maps {
            if obj
                .pointer(&at)
                .is_some_and(|m| m.as_object().is_some_and(|m| m.is_empty()))
            {
                remove(obj, &at);
            }
        }
    }
}

/// The differing leaves of two JSON values: (pointer, left, right).
fn diff(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                diff(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &format!("{at}/{k}"),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff(p, q, &format!("{at}/{i}"), out);
            }
        }
        _ if a != b => out.push(format!("{at}: kustomize {a} / helm {b}")),
        _ => {}
    }
}

/// One source of truth: with the default values, release `ssm-resync` in namespace
/// `ssm-resync`, the chart renders the objects of `kubectl kustomize k8s/overlays/eks`, and
/// every field of every object is equal (container args, env, ports, securityContext,
/// resources, probes, RBAC rules, the admission policy's expressions, the NetworkPolicies,
/// the PrometheusRule's groups, the dashboard JSON, ...), after [`normalise`].
#[test]
fn no_drift_from_the_kustomize_eks_overlay() {
    let mut kustomized = kustomize("overlays/eks");
    let helmed = chart("ssm-resync", "ssm-resync", &[], &[]);

    // The chart's copies of k8s/monitoring, byte for byte (the renders are compared below).
    for (copy, source) in [
        (
            "charts/ssm-resync/files/rules.yaml",
            "k8s/monitoring/rules.yaml",
        ),
        (
            "charts/ssm-resync/files/dashboard.json",
            "k8s/monitoring/dashboard.json",
        ),
    ] {
        assert!(
            read(copy) == read(source),
            "{copy} differs from {source}: cp {source} {copy}"
        );
    }

    // configMapGenerator's hashed name.
    let hashed = kustomized
        .iter()
        .map(key)
        .find(|(k, n)| k == "ConfigMap" && n.starts_with("ssm-resync-config-"))
        .expect("the kustomize config ConfigMap")
        .1;
    kustomized = serde_json::from_str(
        &serde_json::to_string(&kustomized)
            .unwrap()
            .replace(&format!("\"{hashed}\""), "\"ssm-resync-config\""),
    )
    .unwrap();

    // The Namespace: Helm installs into --namespace (`helm install -n ssm-resync
    // --create-namespace`) and renders none by default; namespace.create renders this one.
    let ns_at = kustomized
        .iter()
        .position(|o| o["kind"] == "Namespace")
        .unwrap();
    let mut ns = kustomized.remove(ns_at);
    assert!(!helmed.iter().any(|o| o["kind"] == "Namespace"));
    let mut helm_ns = find(
        &chart(
            "ssm-resync",
            "ssm-resync",
            &[],
            &["--set", "namespace.create=true"],
        ),
        "Namespace",
        "",
    )
    .clone();
    normalise(&mut ns, &mut helm_ns);
    assert_eq!(ns, helm_ns, "the Namespace of namespace.create=true");

    assert!(kustomized.len() >= 18, "{}", kustomized.len());
    let differences = drift(&kustomized, &helmed);
    assert!(
        differences.is_empty(),
        "helm template (default values) drifted from kubectl kustomize k8s/overlays/eks; fix \
         the chart, or add the field to ON_PURPOSE with the reason:\n{}",
        differences.join("\n")
    );

    // The comparison has teeth: one changed field of the chart is reported, by its path.
    let changed = chart(
        "ssm-resync",
        "ssm-resync",
        &[],
        &["--set", "resources.limits.memory=256Mi"],
    );
    assert_eq!(
        drift(&kustomized, &changed),
        [
            r#"("Deployment", "ssm-resync") /spec/template/spec/containers/0/resources/limits/memory: kustomize "128Mi" / helm "256Mi""#
        ]
    );
    let fewer = chart(
        "ssm-resync",
        "ssm-resync",
        &[],
        &["--set", "ingress.enabled=false"],
    );
    assert_eq!(
        drift(&kustomized, &fewer),
        [r#"objects only kustomize renders: [("Ingress", "ssm-resync")]"#]
    );
}

/// What differs between the two renders (the Namespace and the ConfigMap name already
/// taken care of), after [`normalise`]: one line per object only one side has, and per
/// differing field.
fn drift(kustomized: &[Value], helmed: &[Value]) -> Vec<String> {
    let by_key = |objects: &[Value]| -> BTreeMap<(String, String), Value> {
        objects.iter().map(|o| (key(o), o.clone())).collect()
    };
    let (k_all, h_all) = (by_key(kustomized), by_key(helmed));
    let mut differences = vec![];
    let only = |a: &BTreeMap<_, _>, b: &BTreeMap<_, _>| -> Vec<(String, String)> {
        a.keys().filter(|k| !b.contains_key(*k)).cloned().collect()
    };
    for (side, keys) in [
        ("kustomize", only(&k_all, &h_all)),
        ("helm", only(&h_all, &k_all)),
    ] {
        if !keys.is_empty() {
            differences.push(format!("objects only {side} renders: {keys:?}"));
        }
    }
    for (k, mut kobj) in k_all {
        let Some(mut hobj) = h_all.get(&k).cloned() else {
            continue;
        };
        normalise(&mut kobj, &mut hobj);
        let mut d = vec![];
        diff(&kobj, &hobj, "", &mut d);
        differences.extend(d.into_iter().map(|d| format!("{k:?} {d}")));
    }
    differences
}

// --- README ---------------------------------------------------------------------------------

/// The values README.md lists: a key per chart-defined object (the schema says
/// `additionalProperties: false`) is expanded, anything else (maps of labels, resources,
/// lists) is one row.
fn value_rows(values: &Value, schema: &Value, at: &str, out: &mut BTreeMap<String, Value>) {
    for (k, v) in values.as_object().unwrap() {
        let path = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        let s = &schema["properties"][k];
        let structured = s["additionalProperties"] == json!(false) && s["properties"].is_object();
        match v.as_object() {
            Some(m) if structured && !m.is_empty() => value_rows(v, s, &path, out),
            _ => {
                out.insert(path, v.clone());
            }
        }
    }
}

/// values.yaml as JSON (kubectl converts it, wrapped as an object of a made-up kind).
fn values_json() -> Value {
    let yaml = format!(
        "apiVersion: ssm-resync.test/v1\nkind: Values\nmetadata:\n  name: values\n{}",
        read("charts/ssm-resync/values.yaml")
    );
    let mut v = yaml_objects("values.yaml", &yaml).remove(0);
    let m = v.as_object_mut().unwrap();
    for k in ["apiVersion", "kind", "metadata"] {
        m.remove(k);
    }
    v
}

/// Every value of values.yaml has a row in the chart's README (`| \`key\` | \`default\` |
/// description |`) with its default as compact JSON, and the README lists no other key.
#[test]
fn readme_lists_every_value_with_its_default() {
    let values = values_json();
    let mut rows = BTreeMap::new();
    value_rows(&values, &schema(), "", &mut rows);
    assert!(rows.len() > 40, "{rows:?}");
    let readme = read("charts/ssm-resync/README.md");
    let mut listed = BTreeMap::new();
    for line in readme.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let cell = |i: usize| {
            cells
                .get(i)
                .map(|c| {
                    c.trim()
                        .trim_start_matches("| ")
                        .trim_matches('`')
                        .to_owned()
                })
                .unwrap_or_default()
        };
        listed.insert(cell(0), cell(1));
    }
    let mut wrong = vec![];
    for (k, v) in &rows {
        let want = v.to_string();
        match listed.get(k) {
            Some(d) if *d == want => {}
            Some(d) => wrong.push(format!("{k}: README says `{d}`, values.yaml `{want}`")),
            None => wrong.push(format!("missing row: | `{k}` | `{want}` | ... |")),
        }
    }
    for k in listed.keys().filter(|k| !rows.contains_key(*k)) {
        wrong.push(format!("{k}: in README.md, not in values.yaml"));
    }
    assert!(
        wrong.is_empty(),
        "charts/ssm-resync/README.md is out of step with values.yaml:\n{}",
        wrong.join("\n")
    );
}

// --- the API server ---------------------------------------------------------------------

/// The renders are accepted by kube-apiserver (server-side dry run, strict field validation),
/// the kinds it does not serve checked as tests/stack/deploy.rs does; Helm 4's `helm install
/// --dry-run=server` against it prints the NOTES with the next steps.
#[test]
fn renders_are_accepted_by_the_api_server_dry_run() {
    let stack = Stack::shared();
    let admin = stack.get("KUBECONFIG");
    let namespace = "ssm-resync-helm";
    ensure_namespace(
        admin,
        &chart(
            "ssm-resync",
            namespace,
            &[],
            &["--set", "namespace.create=true"],
        ),
    );
    let mut runs: Vec<Vec<&str>> = vec![vec![]];
    runs.extend(CI_VALUES.iter().map(|f| vec![*f]));
    for files in runs {
        let what = format!("helm template -n {namespace} {files:?}");
        // minimal-values.yaml renders the Namespace too (it exists already: dry-run as well).
        check_dry_run(admin, &what, &chart("ssm-resync", namespace, &files, &[]));
    }

    let out = helm_on(
        admin,
        &[
            "install",
            "ssm-resync",
            CHART,
            "--namespace",
            namespace,
            // Helm 4's dry run takes its mode: `server` sends every object to the API server
            // as a dry run (server-side apply, Helm 4's default), so the server validates the
            // release as installed; the ServiceMonitor and PrometheusRule pass because
            // check_dry_run installed their CRDs. (`client` never connects: it would prove
            // no more than `helm template`.)
            "--dry-run=server",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "helm install --dry-run=server: {stdout}{}",
        text(&out.stderr)
    );
    let notes = &stdout[stdout.find("NOTES:").expect("NOTES printed")..];
    for want in [
        "kubectl -n ssm-resync-helm rollout status deployment/ssm-resync",
        "/readyz",
        "terraform apply",
        "subscription_endpoint = \"https://ssm-resync.example.com/sns\"",
        "system:serviceaccount:ssm-resync-helm:ssm-resync",
        "WARNING: still the example placeholders",
    ] {
        assert!(notes.contains(want), "NOTES lack {want:?}:\n{notes}");
    }
}

/// The chart's admission policy on the real API server, rendered for another release,
/// namespace and annotation than the overlay's: it binds the release's ServiceAccount (the
/// username follows `--namespace` and the account's name) and its key follows
/// `config.annotation`. As that ServiceAccount: the trigger annotation is let through, the
/// overlay's `force-sync` and a spec change are denied by the policy. tests/stack/deploy.rs checks
/// every rule of the same policy on the kustomize render.
#[tokio::test]
async fn admission_policy_follows_the_release() {
    let stack = Stack::shared();
    stack.assert_eso();
    let admin = stack.get("KUBECONFIG");
    let namespace = "ssm-resync-helm-vap";
    let release = format!("vap-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let objects = chart(
        &release,
        namespace,
        &[],
        &[
            "--set",
            "namespace.create=true",
            "--set",
            "config.annotation=example.org/resync",
        ],
    );
    ensure_namespace(admin, &objects);
    let fullname = format!("{release}-ssm-resync");
    let policy = format!("{fullname}-triggers-only");
    let _cleanup = Cleanup {
        admin: admin.to_owned(),
        objects: vec![
            ("validatingadmissionpolicybinding".into(), policy.clone()),
            ("validatingadmissionpolicy".into(), policy.clone()),
            ("clusterrolebinding".into(), fullname.clone()),
            ("clusterrole".into(), fullname.clone()),
            (format!("-n={namespace} serviceaccount"), fullname.clone()),
            (
                format!("-n={namespace} externalsecrets.external-secrets.io"),
                format!("es-{release}"),
            ),
        ],
    };
    let wanted: Vec<Value> = objects
        .iter()
        .filter(|o| {
            [
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
            ]
            .contains(&o["kind"].as_str().unwrap())
        })
        .cloned()
        .collect();
    assert_eq!(wanted.len(), 5);
    let out = run_stdin(
        kubectl(admin).args([
            "apply",
            "--server-side",
            "--field-manager=ssm-resync-helm-test",
            "-f",
            "-",
        ]),
        &as_list(&wanted),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let es = format!("es-{release}");
    let out = run_stdin(
        kubectl(admin).args(["apply", "--server-side", "-f", "-"]),
        &json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": es, "namespace": namespace},
            "spec": {"refreshInterval": "1h",
                "secretStoreRef": {"name": "aws", "kind": "SecretStore"},
                "target": {"name": es},
                "data": [{"secretKey": "v", "remoteRef": {"key": "/helm/vap"}}]}
        })
        .to_string(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let dir = tempfile::tempdir().unwrap();
    let (_, token) = service_account_kubeconfig(admin, namespace, &fullname, dir.path());
    let server = api_server(admin);
    let path = format!("/apis/external-secrets.io/v1/namespaces/{namespace}/externalsecrets/{es}");
    // The policy is in force once it denies a spec change (RBAC and the policy's informer
    // take a moment); what got through before is undone.
    wait_for_spec_denial(
        admin,
        &token,
        namespace,
        &es,
        "ssm-resync may not change an ExternalSecret's spec",
        &format!("{namespace}/{fullname}"),
    )
    .await;
    let (code, msg) = patch_as(
        &server,
        &token,
        &path,
        json!({"metadata": {"annotations": {"example.org/resync": "t1"}}}),
    )
    .await;
    assert_eq!(
        code, 200,
        "the release's trigger annotation must be allowed: {msg}"
    );
    let (code, msg) = patch_as(
        &server,
        &token,
        &path,
        json!({"metadata": {"annotations": {"force-sync": "t1"}}}),
    )
    .await;
    assert!(
        code == 403 && msg.contains("ssm-resync may change only the annotation example.org/resync"),
        "another annotation than config.annotation must be denied: {code} {msg}"
    );
}

// --- helm install on the local stack, end to end ------------------------------------------

/// Uninstalls the release when dropped: a failed test must not leave the chart's
/// cluster-scoped grants and admission policy on the shared stack.
struct Installed {
    kubeconfig: String,
    release: String,
    namespace: String,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = helm_on(
            &self.kubeconfig,
            &[
                "uninstall",
                &self.release,
                "--namespace",
                &self.namespace,
                "--ignore-not-found",
            ],
        );
    }
}

fn stdout_json(what: &str, out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{what}: not JSON ({e}): {}", text(&out.stdout));
    })
}

/// The objects of `rendered` as the API server has them (`kubectl get -f`); with
/// `missing_ok`, those it does not have are left out instead of failing.
fn live(admin: &str, namespace: &str, rendered: &[Value], missing_ok: bool) -> Vec<Value> {
    let mut args = vec![
        "get",
        "--namespace",
        namespace,
        "-f",
        "-",
        "-o",
        "json",
        "--show-managed-fields",
    ];
    if missing_ok {
        args.push("--ignore-not-found");
    }
    let out = run_stdin(kubectl(admin).args(&args), &as_list(rendered));
    assert!(
        out.status.success(),
        "kubectl get -f (the release's manifest): {}",
        text(&out.stderr)
    );
    if text(&out.stdout).trim().is_empty() {
        return vec![];
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    match v["items"].as_array() {
        Some(items) if v["kind"] == "List" => items.clone(),
        _ => vec![v],
    }
}

/// `helm install` into a fresh namespace of the local stack, then a parameter change reaches
/// the Secret through what was installed.
///
/// The stack has no kubelet or scheduler, so the Deployment's pods never run: no `--wait`
/// (Helm 4 then waits for hooks only, `--wait=hookOnly`; `--wait` alone is its kstatus
/// watcher, which would wait for the pods until `--timeout`):
/// the service runs out of cluster the way the installed Deployment runs it: its container's
/// args and environment are read back from the API server (the installed ConfigMap and the
/// downward API resolved), only the listen addresses moved to free loopback ports and the
/// stack's SNS signing certificate pinned (AWS_* point at moto, what IRSA provides in a pod);
/// its Kubernetes identity is a TokenRequest token of the installed ServiceAccount, so the
/// installed ClusterRole, the Role of the sweep's Lease and the ValidatingAdmissionPolicy are
/// what it works under. The values only name the test's topic; the ServiceMonitor and
/// PrometheusRule are installed too (the Prometheus Operator's CRDs, from its Go module). Then
/// `helm uninstall` removes every object of the release and helm's release records.
#[tokio::test]
async fn helm_install_then_a_change_reaches_the_secret() {
    // Alone on the shared stack: the service runs as installed, with the start-up sweep, which
    // would force other tests' readers, and a foreign sweep would force this one's.
    let stack = Stack::shared_alone();
    let started = Instant::now();
    stack.assert_eso();
    let admin = stack.get("KUBECONFIG");
    let kube = stack.kube().await;
    let release = unique("e2e");
    let namespace = unique("helm-e2e");
    let topic = stack.topic(&unique("helm-e2e")).await;
    install_prometheus_operator_crds(admin);

    // --- helm install --------------------------------------------------------------------
    let values = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        values.path(),
        json!({"config": {"topicArns": [topic]}}).to_string(),
    )
    .unwrap();
    let _installed = Installed {
        kubeconfig: admin.to_owned(),
        release: release.clone(),
        namespace: namespace.clone(),
    };
    let out = helm_on(
        admin,
        &[
            "install",
            &release,
            CHART,
            "--namespace",
            &namespace,
            "--create-namespace",
            "--values",
            values.path().to_str().unwrap(),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("STATUS: deployed"),
        "helm install: {stdout}{}",
        text(&out.stderr)
    );
    let status = stdout_json(
        "helm status",
        &helm_on(
            admin,
            &["status", &release, "--namespace", &namespace, "-o", "json"],
        ),
    );
    assert_eq!(status["info"]["status"], "deployed", "{status}");
    assert_eq!(status["version"], 1);
    let list = stdout_json(
        "helm list",
        &helm_on(admin, &["list", "--namespace", &namespace, "-o", "json"]),
    );
    let releases = list.as_array().unwrap();
    assert_eq!(releases.len(), 1, "{list}");
    assert_eq!(releases[0]["name"], release.as_str());
    assert_eq!(releases[0]["status"], "deployed");
    assert!(
        releases[0]["chart"]
            .as_str()
            .is_some_and(|c| c.starts_with("ssm-resync-")),
        "{list}"
    );

    // Every object of the release is in the API server, owned by it.
    let manifest = helm_on(
        admin,
        &["get", "manifest", &release, "--namespace", &namespace],
    );
    assert!(manifest.status.success(), "{}", text(&manifest.stderr));
    let rendered = yaml_objects("helm get manifest", &text(&manifest.stdout));
    let kinds: BTreeSet<&str> = rendered
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    for want in [
        "Deployment",
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(kinds.contains(want), "the release has no {want}: {kinds:?}");
    }
    let installed = live(admin, &namespace, &rendered, false);
    assert_eq!(
        installed.iter().map(key).collect::<BTreeSet<_>>(),
        rendered.iter().map(key).collect::<BTreeSet<_>>(),
        "the API server holds every object of the release"
    );
    for o in &installed {
        let meta = &o["metadata"];
        assert_eq!(
            meta["annotations"]["meta.helm.sh/release-name"],
            release.as_str(),
            "{:?}",
            key(o)
        );
        assert_eq!(
            meta["annotations"]["meta.helm.sh/release-namespace"],
            namespace.as_str(),
            "{:?}",
            key(o)
        );
        assert_eq!(
            meta["labels"]["app.kubernetes.io/managed-by"],
            "Helm",
            "{:?}",
            key(o)
        );
        // Helm 4 installs by server-side apply (`--server-side` defaults to true), as the
        // field manager named after its binary: a later `kubectl apply --server-side` of a
        // field the chart sets conflicts instead of being silently undone at the next upgrade.
        let applied_by_helm = meta["managedFields"].as_array().is_some_and(|m| {
            m.iter()
                .any(|f| f["manager"] == "helm" && f["operation"] == "Apply")
        });
        assert!(
            applied_by_helm,
            "{:?}: no server-side apply by helm in {}",
            key(o),
            meta["managedFields"]
        );
    }

    // --- the installed Deployment's container, run out of cluster --------------------------
    let deployment = find(&installed, "Deployment", "");
    let sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap()
        .to_owned();
    find(&installed, "ServiceAccount", &sa);
    let container = ssm_resync_container(&installed);
    let pod_name = format!(
        "{}-out-of-cluster",
        deployment["metadata"]["name"].as_str().unwrap()
    );
    let mut env = container_env(&installed);
    for e in container["env"].as_array().into_iter().flatten() {
        if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            let value = match path {
                "metadata.namespace" => namespace.clone(),
                "metadata.name" => pod_name.clone(),
                other => panic!("downward API field {other} of {e}: resolve it here"),
            };
            env.insert(e["name"].as_str().unwrap().to_owned(), value);
        }
    }
    assert_eq!(env["POD_NAMESPACE"], namespace);
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| expand(a.as_str().unwrap(), &env))
        .collect();
    assert_eq!(args[0], "serve", "{args:?}");
    assert!(
        args.contains(&format!("--topic-arn={topic}")),
        "the installed args carry the values' topic: {args:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (sa_kubeconfig, token) = service_account_kubeconfig(admin, &namespace, &sa, dir.path());
    let env_pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let svc = Launched::with_args(BIN, &stack, &sa_kubeconfig, &args, &env_pairs).await;

    // The start-up sweep (the binary's default, which the chart keeps) ran under the release's
    // Lease, in the release namespace (the chart's Role). It is over before the reader below
    // exists: ESO's refreshTime has whole seconds, so a sweep right after the reader's first
    // sync may find it behind a parameter put within the same second, and force it.
    let swept = r#"ssm_resync_sweep_runs_total{result="ok"}"#;
    svc.settle(|m| sample(m, swept) >= 1.0).await;
    assert!(
        sample(&svc.metrics().await, swept) >= 1.0,
        "no catch-up sweep under the chart's Lease Role; log:\n{}",
        svc.logs()
    );
    let lease = stdout_json(
        "kubectl get lease",
        &run(kubectl(admin).args([
            "get",
            "leases.coordination.k8s.io",
            "ssm-resync-sweep",
            "--namespace",
            &namespace,
            "-o",
            "json",
        ])),
    );
    assert!(
        lease["spec"]["holderIdentity"]
            .as_str()
            .is_some_and(|h| h.starts_with(&pod_name)),
        "{lease}"
    );

    // A reader of a fresh parameter, synced by ESO (the service's watch indexes it).
    let reader_ns = crate::common::namespace(&kube, "helm-e2e-reader").await;
    secret_store(&kube, &reader_ns, "aws", "us-east-1").await;
    let parameter = param("/helm-e2e/db/password");
    synced_reader(&stack, &kube, &reader_ns, "db", &[&parameter]).await;
    let annotation_key = env["SSM_RESYNC_ANNOTATION"].clone();
    assert_eq!(
        annotation(&kube, &reader_ns, "db", &annotation_key).await,
        None,
        "nothing forced the reader before the change"
    );

    // --- the change ---------------------------------------------------------------------------
    let rotated = format!("rotated-by-helm-{release}");
    stack.put_parameter(&parameter, &rotated).await;
    let changed = Instant::now();
    let (status, body) = svc.post(&signed_change(&stack, &topic, &parameter)).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("applied")),
        "{body}\nlog:\n{}",
        svc.logs()
    );
    assert_eq!(
        body["patched"],
        json!([format!("ExternalSecret {reader_ns}/db")]),
        "{body}"
    );
    assert!(
        annotation(&kube, &reader_ns, "db", &annotation_key)
            .await
            .is_some(),
        "the installed config.annotation ({annotation_key}) was patched"
    );
    let took = wait_secret(
        &kube,
        &reader_ns,
        "db",
        "k0",
        &rotated,
        Duration::from_secs(20),
    )
    .await;
    eprintln!(
        "helm release {namespace}/{release}: Secret {reader_ns}/db holds the new value {:?} \
         after the notification ({:?} after PutParameter)",
        took,
        changed.elapsed()
    );
    // The Kubernetes Event of the patch (events.k8s.io, the ClusterRole) went through too.
    svc.settle(|m| m.contains("ssm_resync_kube_events_total{"))
        .await;
    let metrics = svc.metrics().await;
    assert!(
        metrics.contains("ssm_resync_kube_events_total{")
            && !metrics.contains(r#"ssm_resync_kube_events_total{result="failed"}"#),
        "Kubernetes Events must be allowed: {}",
        svc.logs()
    );
    assert!(!svc.logs().contains("Forbidden"), "{}", svc.logs());

    // The installed RBAC grants no Secrets; the installed policy holds the same identity to
    // its trigger.
    let out = run(kubectl(&sa_kubeconfig).args(["auth", "can-i", "get", "secrets", "-A"]));
    assert_eq!(text(&out.stdout).trim(), "no", "{}", text(&out.stderr));
    wait_for_spec_denial(
        admin,
        &token,
        &reader_ns,
        "db",
        "ssm-resync may not change an ExternalSecret's spec",
        &format!("{namespace}/{sa}"),
    )
    .await;
    drop(svc);

    // --- helm uninstall ------------------------------------------------------------------------
    let out = helm_on(admin, &["uninstall", &release, "--namespace", &namespace]);
    assert!(
        out.status.success() && text(&out.stdout).contains("uninstalled"),
        "helm uninstall: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = helm_on(admin, &["status", &release, "--namespace", &namespace]);
    assert!(
        !out.status.success() && text(&out.stderr).contains("not found"),
        "helm status after uninstall: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let list = stdout_json(
        "helm list",
        &helm_on(admin, &["list", "--namespace", &namespace, "-o", "json"]),
    );
    assert_eq!(list, json!([]));
    let left = live(admin, &namespace, &rendered, true);
    assert!(
        left.is_empty(),
        "helm uninstall left {:?}",
        left.iter().map(key).collect::<Vec<_>>()
    );
    let out = run(kubectl(admin).args([
        "get",
        "secrets",
        "--namespace",
        &namespace,
        "-l",
        &format!("owner=helm,name={release}"),
        "-o",
        "name",
    ]));
    assert!(
        out.status.success() && text(&out.stdout).trim().is_empty(),
        "helm's release records: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    eprintln!(
        "helm install -> Secret -> helm uninstall: {:?}",
        started.elapsed()
    );
}
