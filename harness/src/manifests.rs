//! Rendered manifests as JSON, the checks both renders of the deployment must pass (the
//! kustomize overlays in the deploy tests, the Helm chart in the helm tests), the kubectl
//! helpers both use against the local stack's API server, and `ssm-resync serve` run out of
//! cluster with a rendered ServiceAccount's token ([`Launched`]). Needs kubectl
//! (scripts/install-deps.sh), which the other tests do not.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::ports::free_port;
use crate::service::post_sns;
use crate::{REPO, Stack};

pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("running {cmd:?}: {e} (kubectl is required: scripts/install-deps.sh)")
    })
}

pub fn run_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The objects of a multi-document YAML stream as JSON. kubectl converts the YAML itself
/// (`label --local` removing a label no object has changes nothing and talks to no server),
/// so the tests need no YAML parser.
pub fn yaml_objects(what: &str, yaml: &str) -> Vec<Value> {
    let out = run_stdin(
        Command::new("kubectl")
            .args([
                "label",
                "--local",
                "-f",
                "-",
                "-o",
                "json",
                "ssm-resync.test/absent-",
            ])
            .env("KUBECONFIG", "/nonexistent"),
        yaml,
    );
    assert!(
        out.status.success(),
        "{what}: kubectl label --local: {}",
        text(&out.stderr)
    );
    let mut objects = Vec::new();
    for v in serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Value>() {
        let v = v.unwrap();
        match v["items"].as_array() {
            Some(items) if v["kind"] == "List" => objects.extend(items.iter().cloned()),
            _ => objects.push(v),
        }
    }
    let documents = yaml.lines().filter(|l| l.starts_with("kind: ")).count();
    assert!(documents > 0, "{what} rendered nothing");
    assert_eq!(objects.len(), documents, "{what}: every document converted");
    objects
}

/// `kubectl kustomize k8s/<dir>` as JSON objects.
pub fn kustomize(dir: &str) -> Vec<Value> {
    let out = run(Command::new("kubectl").args(["kustomize", &format!("{REPO}/k8s/{dir}")]));
    assert!(
        out.status.success(),
        "kubectl kustomize k8s/{dir}: {}",
        text(&out.stderr)
    );
    yaml_objects(&format!("k8s/{dir}"), &text(&out.stdout))
}

/// `k8s/<dir>` deployed in namespace `ns` the way docs/deploy.md ("Another namespace") says:
/// a kustomization around it with `namespace: <ns>` and the RoleBinding subjects moved too.
pub fn kustomize_in_namespace(dir: &str, ns: &str) -> Vec<Value> {
    let around = tempfile::tempdir().unwrap();
    // kustomize takes resources by relative path only.
    let up = "../".repeat(around.path().components().count() - 1);
    let yaml = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {ns}\n\
         resources:\n  - {up}{}/k8s/{dir}\n\
         transformers:\n  - |-\n    apiVersion: builtin\n    kind: NamespaceTransformer\n\
         \x20   metadata:\n      name: namespace\n      namespace: {ns}\n\
         \x20   setRoleBindingSubjects: allServiceAccounts\n    unsetOnly: false\n",
        REPO.trim_start_matches('/')
    );
    std::fs::write(around.path().join("kustomization.yaml"), yaml).unwrap();
    let out =
        run(Command::new("kubectl").args(["kustomize", &around.path().display().to_string()]));
    assert!(
        out.status.success(),
        "kubectl kustomize k8s/{dir} in {ns}: {}",
        text(&out.stderr)
    );
    yaml_objects(&format!("k8s/{dir} in {ns}"), &text(&out.stdout))
}

pub fn find<'a>(objects: &'a [Value], kind: &str, name_prefix: &str) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| {
            o["kind"] == kind
                && o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with(name_prefix)
        })
        .collect();
    assert_eq!(found.len(), 1, "one {kind} named {name_prefix}*");
    found[0]
}

/// The container of the (one) Deployment.
pub fn ssm_resync_container(objects: &[Value]) -> &Value {
    let dep = find(objects, "Deployment", "");
    dep["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ssm-resync")
        .expect("container ssm-resync")
}

pub fn config_map<'a>(objects: &'a [Value], name: &str) -> &'a serde_json::Map<String, Value> {
    objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("ConfigMap {name} referenced by the Deployment is not rendered"))
        ["data"]
        .as_object()
        .unwrap()
}

/// The container's environment as the kubelet builds it: envFrom first, then env (which
/// wins), ConfigMap references resolved from the rendered ConfigMaps.
pub fn container_env(objects: &[Value]) -> BTreeMap<String, String> {
    let c = ssm_resync_container(objects);
    let mut env = BTreeMap::new();
    for from in c["envFrom"].as_array().into_iter().flatten() {
        let name = from["configMapRef"]["name"]
            .as_str()
            .expect("envFrom uses configMapRef only");
        for (k, v) in config_map(objects, name) {
            env.insert(k.clone(), v.as_str().unwrap().to_owned());
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_owned();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_owned()
        } else if let Some(r) = e["valueFrom"].get("configMapKeyRef") {
            let data = config_map(objects, r["name"].as_str().unwrap());
            let key = r["key"].as_str().unwrap();
            data.get(key)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("env {name}: ConfigMap has no key {key}"))
                .to_owned()
        } else if let Some(f) = e["valueFrom"].get("fieldRef") {
            format!("test-{}", f["fieldPath"].as_str().unwrap())
        } else {
            panic!("env {name}: unsupported source {e}");
        };
        env.insert(name, value);
    }
    env
}

/// Kubernetes' `$(VAR)` expansion of args; `$$` escapes.
pub fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let re = regex::Regex::new(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)").unwrap();
    re.replace_all(arg, |c: &regex::Captures| match c.get(1) {
        None => "$".to_owned(),
        Some(v) => env
            .get(v.as_str())
            .cloned()
            .unwrap_or_else(|| c[0].to_owned()),
    })
    .into_owned()
}

/// Every `[env: NAME=` that `bin serve --help` documents.
pub fn serve_env_names(bin: &str) -> BTreeSet<String> {
    let out = run(Command::new(bin).args(["serve", "--help"]));
    assert!(out.status.success());
    let help = text(&out.stdout);
    let names: BTreeSet<String> = regex::Regex::new(r"\[env:\s*([A-Z0-9_]+)=")
        .unwrap()
        .captures_iter(&help)
        .map(|c| c[1].to_owned())
        .collect();
    assert!(names.contains("SSM_RESYNC_TOPIC_ARN"), "{help}");
    names
}

/// The container's args and env of one render pass `ssm-resync serve --check-config` (`bin`),
/// and every SSM_RESYNC_* variable it sets is one of `serve`'s (`flags`: [`serve_env_names`]).
pub fn check_config(bin: &str, what: &str, objects: &[Value], flags: &BTreeSet<String>) {
    let env = container_env(objects);
    for k in env.keys().filter(|k| k.starts_with("SSM_RESYNC_")) {
        assert!(
            flags.contains(k),
            "{what}: {k} is not an env var of `ssm-resync serve` (typo or removed flag): {flags:?}"
        );
    }
    let args: Vec<String> = ssm_resync_container(objects)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| expand(a.as_str().unwrap(), &env))
        .collect();
    assert_eq!(args[0], "serve", "{what}");
    for a in &args {
        assert!(!a.contains("$("), "{what}: unresolved reference in {a:?}");
    }
    let out = run(Command::new(bin)
        .args(&args)
        .arg("--check-config")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&env));
    assert!(
        out.status.success(),
        "{what}: ssm-resync {args:?} --check-config with env {env:?} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("config ok"), "{stdout}");
    for topic in env["SSM_RESYNC_TOPIC_ARN"].split(',') {
        assert!(
            stdout.contains(&format!("\"{topic}\"")),
            "{what}: the ConfigMap's topic {topic} must reach the binary: {stdout}"
        );
    }
}

// --- the API server ---------------------------------------------------------------------

pub fn kubectl(kubeconfig: &str) -> Command {
    let mut c = Command::new("kubectl");
    c.env("KUBECONFIG", kubeconfig);
    c
}

pub fn as_list(objects: &[Value]) -> String {
    json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string()
}

/// The Prometheus Operator kinds the manifests use; their CRDs come from the operator's Go
/// module ([`install_prometheus_operator_crds`]), and they are also checked by field against
/// the objects they select.
pub const PROMETHEUS_OPERATOR_KINDS: [&str; 2] = ["ServiceMonitor", "PrometheusRule"];
/// The Prometheus Operator release whose CRDs the dry runs validate against (the newest the
/// Go module proxy serves for the module that ships them, `example/prometheus-operator-crd/`).
pub const PROMETHEUS_OPERATOR: &str = "github.com/prometheus-operator/prometheus-operator@v0.85.0";

/// Installs the ServiceMonitor and PrometheusRule CRDs of [`PROMETHEUS_OPERATOR`] on the
/// stack (server-side apply: idempotent, safe from concurrent tests) and waits until they are
/// served. The module comes from the Go module proxy (`go mod download`, cached in the module
/// cache by version); a missing `go` or proxy fails the test.
pub fn install_prometheus_operator_crds(admin: &str) {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let out = Command::new("go")
            .args(["mod", "download", "-json", PROMETHEUS_OPERATOR])
            .current_dir(std::env::temp_dir())
            .env("GOFLAGS", "-mod=mod")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run go (Go 1.26 is expected on PATH): {e}"));
        let info: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "go mod download {PROMETHEUS_OPERATOR}: {e}\n{}{}",
                text(&out.stdout),
                text(&out.stderr)
            )
        });
        assert!(
            out.status.success() && info.get("Error").is_none(),
            "go mod download {PROMETHEUS_OPERATOR} failed: {info}\n{}",
            text(&out.stderr)
        );
        let dir = PathBuf::from(info["Dir"].as_str().expect("Dir"))
            .join("example/prometheus-operator-crd");
        let mut args = vec![
            "apply".to_owned(),
            "--server-side".to_owned(),
            "--force-conflicts".to_owned(),
            "--field-manager=ssm-resync-deploy-test".to_owned(),
        ];
        for crd in ["servicemonitors", "prometheusrules"] {
            let file = dir.join(format!("monitoring.coreos.com_{crd}.yaml"));
            assert!(
                file.is_file(),
                "{} is not in {PROMETHEUS_OPERATOR}",
                file.display()
            );
            args.extend(["-f".to_owned(), file.display().to_string()]);
        }
        let out = kubectl(admin).args(&args).output().expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl apply of the Prometheus Operator CRDs: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let out = kubectl(admin)
            .args([
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/servicemonitors.monitoring.coreos.com",
                "crd/prometheusrules.monitoring.coreos.com",
            ])
            .output()
            .expect("kubectl");
        assert!(
            out.status.success(),
            "the Prometheus Operator CRDs were not established: {}",
            text(&out.stderr)
        );
    });
}

/// Real creation of the (one) rendered Namespace (idempotent: namespaces are never deleted
/// on the stack, and the tests use fixed names) so namespaced objects can be dry-run into it.
pub fn ensure_namespace(admin: &str, objects: &[Value]) {
    let ns = find(objects, "Namespace", "");
    let out = run_stdin(
        kubectl(admin).args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=ssm-resync-deploy-test",
            "-f",
            "-",
        ]),
        &ns.to_string(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

pub fn dry_run(admin: &str, objects: &[Value]) -> Output {
    run_stdin(
        kubectl(admin).args(["apply", "--dry-run=server", "-f", "-"]),
        &as_list(objects),
    )
}

/// The server admits and validates each object of one render without persisting it (strict
/// server-side field validation: an unknown field is an error), the ServiceMonitor and
/// PrometheusRule against the Prometheus Operator's own CRDs; those two are also checked by
/// their fields against the objects they select. The namespace must exist
/// ([`ensure_namespace`]).
pub fn check_dry_run(admin: &str, what: &str, objects: &[Value]) {
    install_prometheus_operator_crds(admin);
    let known = objects;
    let later: Vec<&Value> = objects
        .iter()
        .filter(|o| PROMETHEUS_OPERATOR_KINDS.contains(&o["kind"].as_str().unwrap()))
        .collect();
    let out = dry_run(admin, known);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{what}: server dry run failed:\n{stdout}{}",
        text(&out.stderr)
    );
    assert_eq!(
        stdout.matches("(server dry run)").count(),
        known.len(),
        "{what}: every object dry-run:\n{stdout}"
    );
    // A single replica comes without the PDB.
    if let Some(pdb) = objects.iter().find(|o| o["kind"] == "PodDisruptionBudget") {
        check_pdb(objects, pdb);
    }
    for o in later {
        match o["kind"].as_str().unwrap() {
            "ServiceMonitor" => check_service_monitor(objects, o),
            "PrometheusRule" => check_prometheus_rule(o),
            k => unreachable!("{k}"),
        }
    }
}

/// Deletes the test's cluster-scoped objects when dropped (the stack is shared, and the
/// `ssm-resync` user must not keep these grants for other tests): (`kubectl delete` args
/// before the name, e.g. "clusterrole" or "-n=ns role", name).
pub struct Cleanup {
    pub admin: String,
    pub objects: Vec<(String, String)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (kind, name) in &self.objects {
            let _ = kubectl(&self.admin)
                .arg("delete")
                .args(kind.split_whitespace())
                .args([name.as_str(), "--ignore-not-found", "--wait=false"])
                .stdin(Stdio::null())
                .output();
        }
    }
}

/// A kubeconfig for a ServiceAccount (a TokenRequest token on the stack's server), written
/// into `dir`, and the token.
pub fn service_account_kubeconfig(
    admin: &str,
    namespace: &str,
    name: &str,
    dir: &std::path::Path,
) -> (String, String) {
    let out = run(kubectl(admin).args(["create", "token", name, "-n", namespace, "--duration=1h"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    let path = dir.join("kubeconfig-sa");
    std::fs::copy(admin, &path).unwrap();
    let kc = path.display().to_string();
    for args in [
        vec![
            "config",
            "set-credentials",
            "sa",
            &format!("--token={token}"),
        ],
        vec!["config", "set-context", "--current", "--user=sa"],
    ] {
        let out = run(kubectl(&kc).args(&args));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    (kc, token)
}

/// The API server's URL in a kubeconfig.
pub fn api_server(kubeconfig: &str) -> String {
    let out = run(kubectl(kubeconfig).args([
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

/// PATCHes (JSON merge patch) `path` on the stack's API server with `token`: the status code
/// and the server's message.
pub async fn patch_as(server: &str, token: &str, path: &str, body: Value) -> (u16, String) {
    let resp = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .patch(format!("{server}{path}"))
        .bearer_auth(token)
        .header("content-type", "application/merge-patch+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body["message"].as_str().unwrap_or("").to_owned())
}

/// `<prefix>-` and 8 random hex digits: names of cluster-scoped objects, topics, parameters.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

// --- the service as a deployment runs it ----------------------------------------------------

/// A running `ssm-resync serve` with the kubeconfig and env given (the harness's `Service`
/// always uses the stack's admin kubeconfig and a fixed environment): the identity and
/// configuration of a rendered deployment, out of cluster.
pub struct Launched {
    child: Child,
    pub url: String,
    pub admin: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Launched {
    /// `bin serve --topic-arn=...` for each topic, with `env`.
    pub async fn start(
        bin: &str,
        stack: &Stack,
        kubeconfig: &str,
        topics: &[&str],
        env: &[(&str, &str)],
    ) -> Launched {
        let mut args = vec!["serve".to_owned()];
        args.extend(topics.iter().map(|t| format!("--topic-arn={t}")));
        Launched::with_args(bin, stack, kubeconfig, &args, env).await
    }

    /// `args` (from `serve` on) as given but for the listen addresses: `--listen` and
    /// `--admin-listen` are replaced (or added) with free loopback ports. The environment is
    /// PATH, RUST_LOG, `kubeconfig`, the stack's SNS signing certificate pin and its AWS_*
    /// (moto: the sweep's DescribeParameters, ConfirmSubscription; in a pod, IRSA's), then
    /// `env`, which wins.
    pub async fn with_args(
        bin: &str,
        stack: &Stack,
        kubeconfig: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Launched {
        let (port, admin) = (free_port(), free_port());
        let mut args: Vec<String> = args
            .iter()
            .filter(|a| !a.starts_with("--listen=") && !a.starts_with("--admin-listen="))
            .cloned()
            .collect();
        args.push(format!("--listen=127.0.0.1:{port}"));
        args.push(format!("--admin-listen=127.0.0.1:{admin}"));
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        let child = Command::new(bin)
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,ssm_resync=debug")
            .env("KUBECONFIG", kubeconfig)
            .env(
                "SSM_RESYNC_SNS_SIGNING_CERT",
                stack.get("SSM_RESYNC_SNS_SIGNING_CERT"),
            )
            // AWS calls (the sweep's DescribeParameters, ConfirmSubscription) go to moto.
            .envs(
                [
                    "AWS_ENDPOINT_URL",
                    "AWS_REGION",
                    "AWS_ACCESS_KEY_ID",
                    "AWS_SECRET_ACCESS_KEY",
                ]
                .map(|k| (k, stack.get(k))),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawning ssm-resync");
        let svc = Launched {
            child,
            url: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin}"),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", svc.admin)).await
                && r.status() == 200
            {
                return svc;
            }
            assert!(
                Instant::now() < deadline,
                "service `ssm-resync {args:?}` not ready within 30 s (list/watch refused?); \
                 log:\n{}",
                svc.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (at most 10 s) until `done` holds for the exposition.
    pub async fn settle(&self, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&self.metrics().await) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// POSTs to /sns the way SNS does (text/plain, the x-amz-sns-* headers).
    pub async fn post(&self, body: &str) -> (u16, Value) {
        post_sns(&self.url, body).await
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- ssm-resync log ---\n{}", self.logs());
        }
    }
}

/// The PDB was dry-run with the rest; it must also select the pods it protects.
pub fn check_pdb(objects: &[Value], pdb: &Value) {
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let pod_labels = &find(objects, "Deployment", "")["spec"]["template"]["metadata"]["labels"];
    for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "PDB selects the pods");
    }
}

pub fn check_service_monitor(objects: &[Value], sm: &Value) {
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    let selector = sm["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let selected: Vec<&Value> = objects
        .iter()
        .filter(|o| {
            o["kind"] == "Service"
                && selector
                    .iter()
                    .all(|(k, v)| &o["metadata"]["labels"][k] == v)
        })
        .collect();
    assert_eq!(
        selected.len(),
        1,
        "the ServiceMonitor selects exactly the admin Service"
    );
    let svc = selected[0];
    let deployment = find(objects, "Deployment", "")["metadata"]["name"]
        .as_str()
        .unwrap();
    assert_eq!(svc["metadata"]["name"], format!("{deployment}-admin"));
    let endpoints = sm["spec"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    let port = endpoints[0]["port"].as_str().unwrap();
    assert!(
        svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port && p["port"] == 9090),
        "endpoint port {port} is the admin Service's 9090"
    );
    assert_eq!(endpoints[0]["path"], "/metrics");
}

pub fn check_prometheus_rule(pr: &Value) {
    assert_eq!(pr["apiVersion"], "monitoring.coreos.com/v1");
    let groups = pr["spec"]["groups"].as_array().unwrap();
    let mut alerts = 0;
    for g in groups {
        assert!(g["name"].as_str().is_some_and(|n| !n.is_empty()));
        for r in g["rules"].as_array().unwrap() {
            alerts += 1;
            let name = r["alert"].as_str().expect("alerting rules only");
            assert!(
                r["expr"]
                    .as_str()
                    .is_some_and(|e| e.contains("ssm_resync") || e.contains("up{")),
                "{name}"
            );
            assert!(r["labels"]["severity"].is_string(), "{name}");
            assert!(
                r["annotations"]["runbook_url"].as_str().is_some_and(
                    |u| u.ends_with(&format!("docs/runbook.md#{}", name.to_lowercase()))
                ),
                "{name}"
            );
        }
    }
    // Eleven of the service, four of the queue path.
    assert_eq!(alerts, 15);
}

/// Waits until an admission policy denies `token`'s change of the spec of ExternalSecret
/// `name` in `namespace` with a message containing `denied` (a policy takes effect a moment
/// after its creation, and RBAC too), undoing as admin what got through before. `who` names
/// the identity in the failure message.
pub async fn wait_for_spec_denial(
    admin: &str,
    token: &str,
    namespace: &str,
    name: &str,
    denied: &str,
    who: &str,
) {
    let server = api_server(admin);
    let path =
        format!("/apis/external-secrets.io/v1/namespaces/{namespace}/externalsecrets/{name}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, msg) = patch_as(
            &server,
            token,
            &path,
            json!({"spec": {"refreshInterval": "2h"}}),
        )
        .await;
        if code == 403 && msg.contains(denied) {
            return;
        }
        assert!(code == 200 || code == 403, "{code} {msg}");
        assert!(
            Instant::now() < deadline,
            "the policy never denied a spec change by {who}: {code} {msg}"
        );
        if code == 200 {
            let out = run(kubectl(admin).args([
                "-n",
                namespace,
                "patch",
                "externalsecrets.external-secrets.io",
                name,
                "--type=merge",
                "-p",
                r#"{"spec":{"refreshInterval":"1h"}}"#,
            ]));
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
