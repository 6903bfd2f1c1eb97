//! The local stack (real kube-apiserver + etcd, moto, the External Secrets Operator's
//! controller and webhook; `scripts/stack.sh`) as a test or bench finds it.
//!
//! `Stack::shared()` uses the stack named by `SSM_RESYNC_TEST_STACK_DIR` (what `make test`
//! starts once, ESO's default release) or else starts a private one; `Stack::shared_eso(eso)`
//! asks for the shared stack of one ESO release ([`Eso`]: `make test` starts one per release,
//! each named by [`Eso::shared_stack_var`]); `Stack::private()` and `Stack::private_eso(eso)`
//! always start their own (for tests that stop the API server); `Stack::bench()` is the one
//! `scripts/bench.sh` started. A stack that cannot start, or that runs another ESO release than
//! the test asked for, fails the test: these tests never skip.
//!
//! The tests of one binary run concurrently, and every service a test starts watches the
//! whole shared cluster. `Stack::shared()` therefore holds a share of the shared stack for as
//! long as the `Stack` lives, and `Stack::shared_alone()` waits until no other test holds one
//! and keeps the others out meanwhile: for a test whose service sweeps the whole cluster at
//! start-up, as shipped (the sweep would force other tests' readers, which assert what did
//! and did not re-sync). Each shared stack has holds of its own: a service sees only the
//! cluster it runs against.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};

use crate::ports::{free_port, free_run};
use crate::{REPO, cluster};

/// An External Secrets Operator release the local stack runs and the tests judge on: one per
/// wrapper module in stack/go/external-secrets-v*/ (`scripts/build-go-tool.sh --versions
/// external-secrets`, the default first; a harness test checks that the two lists agree).
/// What differs between them for ssm-resync is in docs/eso-versions.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Eso {
    /// v0.20.4, the stack's default: serves `external-secrets.io/v1` only, and copies a
    /// ClusterExternalSecret's own `external-secrets.io/force-sync` annotation to its children.
    V0_20_4,
    /// v0.16.2: serves `v1beta1` beside `v1`, and copies only the parent's
    /// `spec.externalSecretMetadata.annotations` to a ClusterExternalSecret's children.
    V0_16_2,
}

impl Eso {
    /// The release `scripts/stack.sh` runs unless `STACK_ESO_VERSION` says otherwise.
    pub const DEFAULT: Eso = Eso::V0_20_4;
    /// Every release, the default first.
    pub const ALL: [Eso; 2] = [Eso::V0_20_4, Eso::V0_16_2];

    /// As `STACK_ESO_VERSION` and the stack's env file (`SSM_RESYNC_STACK_ESO_VERSION`) say it.
    pub fn version(self) -> &'static str {
        match self {
            Eso::V0_20_4 => "v0.20.4",
            Eso::V0_16_2 => "v0.16.2",
        }
    }

    pub fn from_version(version: &str) -> Option<Eso> {
        Eso::ALL.into_iter().find(|e| e.version() == version)
    }

    /// The variable naming the shared stack of this release that `make test` started
    /// (scripts/test.sh).
    pub fn shared_stack_var(self) -> &'static str {
        match self {
            Eso::V0_20_4 => "SSM_RESYNC_TEST_STACK_DIR",
            Eso::V0_16_2 => "SSM_RESYNC_TEST_STACK_DIR_ESO_V016",
        }
    }

    fn index(self) -> usize {
        match self {
            Eso::V0_20_4 => 0,
            Eso::V0_16_2 => 1,
        }
    }
}

impl std::fmt::Display for Eso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ESO {}", self.version())
    }
}

pub struct Stack {
    pub dir: PathBuf,
    pub env: HashMap<String, String>,
    owned: bool,
    _tmp: Option<tempfile::TempDir>,
    _hold: Option<Hold>,
}

impl Stack {
    /// The shared stack of ESO's default release (`SSM_RESYNC_TEST_STACK_DIR`), shared with
    /// the other tests of the binary; a private one when none is named.
    pub fn shared() -> Stack {
        Self::shared_eso(Eso::DEFAULT)
    }

    /// The shared stack that runs `eso` (named by [`Eso::shared_stack_var`]), shared with the
    /// other tests of the binary; a private one of that release when none is named. A named
    /// stack that runs another release fails the test.
    pub fn shared_eso(eso: Eso) -> Stack {
        Self::shared_holding(eso, Hold::share)
    }

    /// The shared stack (ESO's default release) with no other test of this binary on it until
    /// this `Stack` is dropped (waits for the ones on it to finish): for a test whose service
    /// sweeps the whole cluster at start-up.
    pub fn shared_alone() -> Stack {
        Self::shared_holding(Eso::DEFAULT, Hold::alone)
    }

    fn shared_holding(eso: Eso, hold: fn(Eso) -> Hold) -> Stack {
        let var = eso.shared_stack_var();
        match std::env::var(var) {
            Ok(dir) if !dir.is_empty() => {
                let hold = hold(eso);
                let mut stack = Stack::at(PathBuf::from(dir));
                let runs = stack.eso_version().to_owned();
                assert_eq!(
                    runs,
                    eso.version(),
                    "{var} names {}, a stack of ESO {runs}; this test asked for {eso} \
                     (scripts/test.sh starts one shared stack per release)",
                    stack.dir.display()
                );
                stack._hold = Some(hold);
                stack
            }
            // A private stack has no other test on it.
            _ => Stack::private_eso(eso),
        }
    }

    /// The stack `scripts/bench.sh` started (`BENCH_STACK_DIR`, default target/bench-stack).
    pub fn bench() -> Stack {
        let dir = std::env::var_os("BENCH_STACK_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(REPO).join("target/bench-stack"));
        if !dir.join("env").exists() {
            panic!(
                "reading {}: no such file; start the stack first (scripts/bench.sh does)",
                dir.join("env").display()
            );
        }
        Stack::at(dir)
    }

    /// A running stack started by someone else, described by `dir/env`.
    fn at(dir: PathBuf) -> Stack {
        let env = read_env(&dir.join("env"));
        Stack {
            dir,
            env,
            owned: false,
            _tmp: None,
            _hold: None,
        }
    }

    /// A private stack of ESO's default release.
    pub fn private() -> Stack {
        Self::private_with(&[])
    }

    /// A private stack that runs `eso`.
    pub fn private_eso(eso: Eso) -> Stack {
        Self::private_with(&[("STACK_ESO_VERSION", eso.version())])
    }

    /// A private stack with more of `scripts/stack.sh`'s settings, e.g.
    /// `STACK_API_FEATURE_GATES`, or `STACK_ESO_VERSION` (default: [`Eso::DEFAULT`], whatever
    /// the environment of the test says).
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
            // ESO takes four ports from STACK_ESO_PORT: its webhook, the webhook's health
            // probe, the controller's metrics and (v0.20 and later) its liveness probe.
            let (etcd, api, moto, eso) = (free_pair_port(), free_port(), free_port(), free_run(4));
            let out = Command::new("bash")
                .arg(format!("{REPO}/scripts/stack.sh"))
                .arg("up")
                .env("STACK_DIR", &dir)
                .env("STACK_ETCD_PORT", etcd.to_string())
                .env("STACK_API_PORT", api.to_string())
                .env("STACK_MOTO_PORT", moto.to_string())
                .env("STACK_ESO_PORT", eso.to_string())
                .env("STACK_ESO", "1")
                .env("STACK_ESO_VERSION", Eso::DEFAULT.version())
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
                    _hold: None,
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

    /// The ESO release the stack runs, as its env file says (`SSM_RESYNC_STACK_ESO_VERSION`).
    pub fn eso_version(&self) -> &str {
        self.get("SSM_RESYNC_STACK_ESO_VERSION")
    }

    /// The ESO release the stack runs, one the tests know ([`Eso`]); fails the test otherwise.
    pub fn eso(&self) -> Eso {
        let v = self.eso_version();
        Eso::from_version(v).unwrap_or_else(|| {
            panic!(
                "{} runs ESO {v}, which the harness does not know (harness/src/stack.rs, Eso)",
                self.dir.display()
            )
        })
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
        cluster::kube_client(self.get("KUBECONFIG")).await
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

    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.aws_config().await)
    }

    /// A queue of its own, subscribed to nothing (for a backlog the caller puts on it).
    pub async fn plain_queue(&self, name: &str) -> String {
        self.sqs()
            .await
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "CreateQueue {name}: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                )
            })
            .queue_url()
            .expect("CreateQueue answers the URL")
            .to_owned()
    }

    /// A fresh SQS queue subscribed to `topic` as infra/ subscribes it (raw message delivery
    /// off: the signed envelope arrives); returns its URL. moto delivers to it synchronously
    /// on Publish.
    pub async fn queue(&self, topic: &str, name: &str) -> String {
        let sqs = self.sqs().await;
        let url = self.plain_queue(name).await;
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .unwrap()
            .clone();
        self.sns()
            .await
            .subscribe()
            .topic_arn(topic)
            .protocol("sqs")
            .endpoint(arn)
            .send()
            .await
            .unwrap();
        url
    }

    /// Messages waiting in `queue` (visible and in flight).
    pub async fn queue_depth(&self, queue: &str) -> (u64, u64) {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .sqs()
            .await
            .get_queue_attributes()
            .queue_url(queue)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let get = |k: A| -> u64 {
            out.attributes()
                .and_then(|a| a.get(&k))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (
            get(A::ApproximateNumberOfMessages),
            get(A::ApproximateNumberOfMessagesNotVisible),
        )
    }

    /// Puts `bodies` on `queue` as a backlog would have arrived: SendMessageBatch, ten
    /// messages a call, `concurrency` calls in flight. Returns how long it took.
    pub async fn fill_queue(
        &self,
        queue: &str,
        bodies: &[String],
        concurrency: usize,
    ) -> std::time::Duration {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let t0 = std::time::Instant::now();
        let sqs = self.sqs().await;
        let chunks: Arc<Vec<Vec<String>>> =
            Arc::new(bodies.chunks(10).map(<[String]>::to_vec).collect());
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let (sqs, chunks, next, queue) =
                (sqs.clone(), chunks.clone(), next.clone(), queue.to_owned());
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(chunk) = chunks.get(i) else { return };
                    let entries = chunk
                        .iter()
                        .enumerate()
                        .map(|(j, b)| {
                            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                                .id(j.to_string())
                                .message_body(b)
                                .build()
                                .expect("id and body set")
                        })
                        .collect();
                    let sent = sqs
                        .send_message_batch()
                        .queue_url(&queue)
                        .set_entries(Some(entries))
                        .send()
                        .await
                        .unwrap_or_else(|e| {
                            panic!(
                                "SendMessageBatch to {queue}: {}",
                                aws_sdk_sqs::error::DisplayErrorContext(e)
                            )
                        });
                    assert!(
                        sent.failed().is_empty(),
                        "SendMessageBatch to {queue}: {:?}",
                        sent.failed()
                    );
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("a SendMessageBatch task panicked");
        }
        t0.elapsed()
    }

    /// The process id of one of the stack's components (`moto`, `kube-apiserver`, `etcd`,
    /// `eso`), from its pid file; for its CPU time during a bench.
    pub fn pid(&self, component: &str) -> Option<u32> {
        std::fs::read_to_string(self.dir.join(format!("{component}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
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

/// A test's hold on a shared stack: shared by many, or held alone by one.
///
/// A share never waits for a test that is waiting to be alone (only for one that is alone),
/// so a test that makes a second `Stack::shared()` while it holds one cannot deadlock; the
/// test that waits to be alone gets the stack when the shares run out (between two tests of
/// the other test thread at the latest). Blocking: it is taken where a test begins, on the
/// test's own thread, before the test has anything else to run. Each shared stack (one per
/// ESO release) has its own holders.
struct Hold {
    eso: Eso,
    alone: bool,
}

struct Holders {
    sharing: usize,
    alone: bool,
}

static HOLDERS: [Mutex<Holders>; Eso::ALL.len()] = [const {
    Mutex::new(Holders {
        sharing: 0,
        alone: false,
    })
}; Eso::ALL.len()];
static CHANGED: [Condvar; Eso::ALL.len()] = [const { Condvar::new() }; Eso::ALL.len()];

impl Hold {
    fn share(eso: Eso) -> Hold {
        let i = eso.index();
        let mut h = HOLDERS[i].lock().unwrap_or_else(|e| e.into_inner());
        while h.alone {
            h = CHANGED[i].wait(h).unwrap_or_else(|e| e.into_inner());
        }
        h.sharing += 1;
        Hold { eso, alone: false }
    }

    fn alone(eso: Eso) -> Hold {
        let i = eso.index();
        let mut h = HOLDERS[i].lock().unwrap_or_else(|e| e.into_inner());
        while h.alone || h.sharing > 0 {
            h = CHANGED[i].wait(h).unwrap_or_else(|e| e.into_inner());
        }
        h.alone = true;
        Hold { eso, alone: true }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        // A test that failed while holding the lock poisoned nothing that matters: the
        // counts are updated here, whatever happened.
        let i = self.eso.index();
        let mut h = HOLDERS[i].lock().unwrap_or_else(|e| e.into_inner());
        if self.alone {
            h.alone = false;
        } else {
            h.sharing -= 1;
        }
        CHANGED[i].notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The releases the harness knows are the ones the stack can run, the default first:
    /// `scripts/build-go-tool.sh --versions external-secrets` (read from stack/go's wrapper
    /// modules, nothing built).
    #[test]
    fn the_harness_knows_the_eso_releases_the_stack_runs() {
        let out = Command::new("bash")
            .arg(format!("{REPO}/scripts/build-go-tool.sh"))
            .args(["--versions", "external-secrets"])
            .env_remove("STACK_ESO_VERSION")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        let known: Vec<&str> = Eso::ALL.iter().map(|e| e.version()).collect();
        assert_eq!(listed, known);
        assert_eq!(Eso::ALL[0], Eso::DEFAULT);
        for e in Eso::ALL {
            assert_eq!(Eso::from_version(e.version()), Some(e));
            assert_eq!(Eso::ALL[e.index()], e);
        }
    }
}
