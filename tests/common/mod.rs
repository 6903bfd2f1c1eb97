//! Test harness: the local stack (real kube-apiserver + etcd, moto, the External Secrets
//! Operator's controller and webhook) and a real `ssm-resync serve` process, over loopback.
//! End-to-end tests end where users look: the Kubernetes Secret ESO writes.
//!
//! `Stack::shared()` uses the stack named by `SSM_RESYNC_TEST_STACK_DIR` (what `make test`
//! starts once) or else starts a private one; `Stack::private()` always starts its own (for
//! tests that stop the API server). A stack that cannot start fails the test: these tests never
//! skip.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
pub const BIN: &str = env!("CARGO_BIN_EXE_ssm-resync");

/// Accepts and counts TCP connections, answering nothing: stands in for an HTTP(S) proxy or an
/// AWS endpoint the service must not (or may only so often) reach.
pub fn counting_listener() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", l.local_addr().unwrap());
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = n.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(s);
        }
    });
    (addr, n)
}

pub mod ports;
pub use ports::{free_port, free_run};

pub struct Stack {
    pub dir: PathBuf,
    pub env: HashMap<String, String>,
    owned: bool,
    _tmp: Option<tempfile::TempDir>,
}

impl Stack {
    pub fn shared() -> Stack {
        match std::env::var("SSM_RESYNC_TEST_STACK_DIR") {
            Ok(dir) if !dir.is_empty() => {
                let dir = PathBuf::from(dir);
                let env = read_env(&dir.join("env"));
                Stack {
                    dir,
                    env,
                    owned: false,
                    _tmp: None,
                }
            }
            _ => Stack::private(),
        }
    }

    pub fn private() -> Stack {
        Self::private_with(&[])
    }

    /// A private stack with more of `scripts/stack.sh`'s settings, e.g.
    /// `STACK_API_FEATURE_GATES`.
    pub fn private_with(settings: &[(&str, &str)]) -> Stack {
        // Ports are found free, then bound by the stack's processes a moment later; another
        // test's outgoing connection can take one from the same ephemeral range meanwhile
        // (CI once lost ESO's health port so). Such a start is retried with new ports; any
        // other failure is reported at once.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let tmp = tempfile::Builder::new()
                .prefix("ssm-resync-stack-")
                .tempdir()
                .unwrap();
            let dir = tmp.path().to_path_buf();
            let (etcd, api, moto, eso) = (free_pair_port(), free_port(), free_port(), free_run(3));
            let out = Command::new("bash")
                .arg(format!("{REPO}/scripts/stack.sh"))
                .arg("up")
                .env("STACK_DIR", &dir)
                .env("STACK_ETCD_PORT", etcd.to_string())
                .env("STACK_API_PORT", api.to_string())
                .env("STACK_MOTO_PORT", moto.to_string())
                .env("STACK_ESO_PORT", eso.to_string())
                .env("STACK_ESO", "1")
                .envs(settings.iter().copied())
                .stdin(Stdio::null())
                .output()
                .expect("running scripts/stack.sh");
            if out.status.success() {
                let env = read_env(&dir.join("env"));
                return Stack {
                    dir,
                    env,
                    owned: true,
                    _tmp: Some(tmp),
                };
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            let _ = Command::new("bash")
                .arg(format!("{REPO}/scripts/stack.sh"))
                .args(["down", "--purge"])
                .env("STACK_DIR", &dir)
                .stdin(Stdio::null())
                .output();
            // A process's own bind error, or stack.sh's check before it starts one.
            let lost_a_port =
                stderr.contains("address already in use") || stderr.contains("is in use by");
            assert!(
                lost_a_port && attempt < 3,
                "scripts/stack.sh up failed (the local stack is required, not optional; attempt {attempt}):\n{}\n{stderr}",
                String::from_utf8_lossy(&out.stdout),
            );
            eprintln!("stack: a port was taken before it was bound; starting again on other ports");
        }
    }

    pub fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from the stack env"))
    }

    fn script(&self, args: &[&str]) {
        let st = Command::new("bash")
            .arg(format!("{REPO}/scripts/stack.sh"))
            .args(args)
            .env("STACK_DIR", &self.dir)
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "stack.sh {args:?} failed");
    }

    pub fn stop_apiserver(&self) {
        self.stop("kube-apiserver");
    }

    pub fn start_apiserver(&self) {
        self.start("kube-apiserver");
    }

    /// Stops one component of a private stack: `kube-apiserver`, `eso`, `eso-webhook`.
    pub fn stop(&self, component: &str) {
        assert!(self.owned, "only a private stack may be stopped");
        self.script(&["stop", component]);
    }

    pub fn start(&self, component: &str) {
        assert!(self.owned, "only a private stack may be started");
        self.script(&["start", component]);
    }

    /// moto's SSM, as ESO reads it.
    pub async fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.aws_config().await)
    }

    pub async fn aws_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(self.get("AWS_REGION").to_owned()))
            .endpoint_url(self.get("AWS_ENDPOINT_URL"))
            .credentials_provider(aws_sdk_sns::config::Credentials::new(
                self.get("AWS_ACCESS_KEY_ID"),
                self.get("AWS_SECRET_ACCESS_KEY"),
                None,
                None,
                "test",
            ))
            .load()
            .await
    }

    /// Creates or overwrites a SecureString parameter in moto; returns its new version.
    pub async fn put_parameter(&self, name: &str, value: &str) -> i64 {
        self.ssm()
            .await
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PutParameter {name}: {}",
                    aws_sdk_ssm::error::DisplayErrorContext(e)
                )
            })
            .version()
    }

    /// moto's Secrets Manager, as ESO reads it.
    pub async fn secrets_manager(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.aws_config().await)
    }

    /// Creates a secret, or puts a new current value if it exists.
    pub async fn put_secret(&self, name: &str, value: &str) {
        let sm = self.secrets_manager().await;
        let created = sm
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await;
        if let Err(e) = created {
            let exists = e
                .as_service_error()
                .is_some_and(|s| s.is_resource_exists_exception());
            assert!(
                exists,
                "CreateSecret {name}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(e)
            );
            sm.put_secret_value()
                .secret_id(name)
                .secret_string(value)
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "PutSecretValue {name}: {}",
                        aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                    )
                });
        }
    }

    /// The stack runs ESO (every stack the tests start does; `STACK_ESO=0` is for benches).
    pub fn assert_eso(&self) {
        assert_eq!(
            self.env.get("STACK_ESO").map(String::as_str),
            Some("1"),
            "this test needs ESO in the stack (scripts/stack.sh with STACK_ESO=1)"
        );
    }

    pub async fn kube(&self) -> kube::Client {
        kube_client(self.get("KUBECONFIG")).await
    }

    pub async fn sns(&self) -> aws_sdk_sns::Client {
        aws_sdk_sns::Client::new(&self.aws_config().await)
    }

    /// A fresh topic for one test (moto fails a Publish if any subscriber is gone, so tests
    /// never share one).
    pub async fn topic(&self, name: &str) -> String {
        let out = self
            .sns()
            .await
            .create_topic()
            .name(name)
            .send()
            .await
            .unwrap();
        out.topic_arn().unwrap().to_owned()
    }

    pub fn signing_key(&self) -> ssm_resync::sns::sign::SigningKey {
        ssm_resync::sns::sign::SigningKey::from_file(self.get("SSM_RESYNC_SAMPLE_SIGN_KEY"))
            .unwrap()
    }

    pub fn cert_url(&self) -> &str {
        self.get("SSM_RESYNC_SAMPLE_CERT_URL")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new("bash")
                .arg(format!("{REPO}/scripts/stack.sh"))
                .args(["down", "--purge"])
                .env("STACK_DIR", &self.dir)
                .stdin(Stdio::null())
                .status();
        }
    }
}

/// `--sweep-interval=0s` unless `args` set it: every service sees the whole shared cluster,
/// and a sweep would force other tests' readers whose parameters they just changed (tests
/// of the sweep ask for it, on a private stack).
pub fn no_sweep_unless_asked(args: &[&str]) -> Option<&'static str> {
    (!args.iter().any(|a| a.starts_with("--sweep-interval"))).then_some("--sweep-interval=0s")
}

/// etcd needs two consecutive free ports (client, peer).
fn free_pair_port() -> u16 {
    free_run(2)
}

fn read_env(path: &Path) -> HashMap<String, String> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.trim_matches(|c| c == '"' || c == '\'').to_owned(),
            )
        })
        .collect()
}

/// A running `ssm-resync serve`, killed on drop.
pub struct Service {
    child: Child,
    pub url: String,
    pub admin: String,
    pub log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Service {
    pub async fn start(stack: &Stack, topics: &[&str], extra: &[&str]) -> Service {
        Self::start_with(stack, topics, extra, &[]).await
    }

    /// As `start`, with environment variables set after the stack's (e.g. a proxy).
    pub async fn start_with(
        stack: &Stack,
        topics: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Service {
        Self::launch(stack, BIN, topics, extra, env).await
    }

    /// As `start`, running another build of the service (measurements of an older version).
    pub async fn start_binary(
        stack: &Stack,
        bin: &str,
        topics: &[&str],
        extra: &[&str],
    ) -> Service {
        Self::launch(stack, bin, topics, extra, &[]).await
    }

    async fn launch(
        stack: &Stack,
        bin: &str,
        topics: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Service {
        let (port, admin) = (free_port(), free_port());
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("serve.log");
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--admin-listen=127.0.0.1:{admin}"))
            .args(topics.iter().map(|t| format!("--topic-arn={t}")))
            .args(no_sweep_unless_asked(extra))
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,ssm_resync=debug")
            .env(
                "SSM_RESYNC_SNS_SIGNING_CERT",
                stack.get("SSM_RESYNC_SNS_SIGNING_CERT"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for k in [
            "KUBECONFIG",
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            cmd.env(k, stack.get(k));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawning ssm-resync");
        let svc = Service {
            child,
            url: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin}"),
            log,
            _logdir: logdir,
        };
        svc.wait_ready(Duration::from_secs(30)).await;
        svc
    }

    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.admin)).await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "service not ready within {within:?}; log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's resident set now and at its peak (`VmRSS`, `VmHWM`), in bytes.
    pub fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the service is running");
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{key} missing from /proc status"))
        };
        (kib("VmRSS:") * 1024, kib("VmHWM:") * 1024)
    }

    /// POSTs raw bytes with exactly the given headers.
    pub async fn post_raw(&self, body: reqwest::Body, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .post(format!("{}/sns", self.url))
            .body(body);
        for (h, v) in headers {
            req = req.header(*h, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    }

    /// POSTs a body to /sns the way SNS does (text/plain, the x-amz-sns-* headers).
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

    /// The value of one sample line, e.g. `ssm_resync_patches_total{result="applied"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        scrape(&self.admin, series).await
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- ssm-resync log ---\n{}", self.logs());
        }
    }
}

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

/// A signed SNS Notification carrying a Parameter Store Change for `parameter`.
pub fn signed_change(stack: &Stack, topic: &str, parameter: &str) -> String {
    let event = ssm_resync::sample::parameter_store_change(
        parameter,
        "Update",
        "us-east-1",
        "123456789012",
    );
    let key = stack.signing_key();
    let env =
        ssm_resync::sample::notification(event.to_string(), topic, stack.cert_url(), Some(&key));
    serde_json::to_string(&env).unwrap()
}

/// A parameter name no other test uses: every service on a shared stack watches every
/// namespace, so two tests reading the same key would patch each other's resources.
pub fn param(base: &str) -> String {
    format!("{base}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// POSTs a body to `<base>/sns` the way SNS does (text/plain, the x-amz-sns-* headers taken
/// from the body).
pub async fn post_sns(base: &str, body: &str) -> (u16, Value) {
    let env: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let mut req = reqwest::Client::new()
        .post(format!("{base}/sns"))
        .header("content-type", "text/plain; charset=UTF-8")
        .body(body.to_owned());
    for (h, f) in [
        ("x-amz-sns-message-type", "Type"),
        ("x-amz-sns-message-id", "MessageId"),
        ("x-amz-sns-topic-arn", "TopicArn"),
    ] {
        if let Some(v) = env.get(f).and_then(Value::as_str) {
            req = req.header(h, v);
        }
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

/// One sample's value from an OpenMetrics text, e.g.
/// `ssm_resync_patches_total{result="applied"}`; 0 when absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Scrapes `<admin>/metrics` for one sample (0 when the scrape fails).
pub async fn scrape(admin: &str, series: &str) -> f64 {
    match reqwest::get(format!("{admin}/metrics")).await {
        Ok(r) => sample(&r.text().await.unwrap_or_default(), series),
        Err(_) => 0.0,
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
