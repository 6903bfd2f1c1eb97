//! Shared by the bench binaries: result rows (printed and appended to
//! `$BENCH_OUT/results.jsonl`, which `scripts/bench.sh` turns into the summary table),
//! quantiles, CPU-time and RSS readings from /proc, the local stack's env file, and a real
//! `ssm-resync serve` child process.
#![allow(dead_code)]

pub mod counting;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
pub const SERVICE_BIN: &str = env!("CARGO_BIN_EXE_ssm-resync");
pub const LOADGEN_BIN: &str = env!("CARGO_BIN_EXE_loadgen");
pub const CERT_URL: &str = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef0123456789abcdef.pem";

/// Where results go: `$BENCH_OUT` (scripts/bench.sh sets it) or target/bench.
pub fn out_dir() -> PathBuf {
    let dir = std::env::var_os("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("target/bench"));
    std::fs::create_dir_all(&dir).expect("creating the bench output directory");
    dir
}

pub fn heavy() -> bool {
    std::env::var("BENCH_HEAVY").is_ok_and(|v| v == "1")
}

/// One line of the summary: a figure, its baseline measured in the same run, and the target.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub id: String,
    pub figure: String,
    pub value: f64,
    pub unit: String,
    pub baseline: Option<f64>,
    pub baseline_label: String,
    /// value / baseline unless set otherwise.
    pub ratio: Option<f64>,
    pub target: String,
    pub met: Option<bool>,
    pub note: String,
}

impl Row {
    pub fn new(id: &str, figure: &str, value: f64, unit: &str) -> Self {
        Self {
            id: id.into(),
            figure: figure.into(),
            value,
            unit: unit.into(),
            ..Default::default()
        }
    }

    pub fn baseline(mut self, value: f64, label: &str) -> Self {
        self.baseline = Some(value);
        self.baseline_label = label.into();
        if self.ratio.is_none() && value != 0.0 {
            self.ratio = Some(self.value / value);
        }
        self
    }

    pub fn target(mut self, target: &str, met: bool) -> Self {
        self.target = target.into();
        self.met = Some(met);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// Prints the row and appends it to results.jsonl.
    pub fn emit(self) {
        let base = match self.baseline {
            Some(b) => format!("  (baseline {} {}", fmt(b), self.baseline_label),
            None => "  (".into(),
        };
        let ratio = self
            .ratio
            .map(|r| format!(", ratio {r:.2}"))
            .unwrap_or_default();
        let met = match self.met {
            Some(true) => format!("; target {}: met", self.target),
            Some(false) => format!("; target {}: MISSED", self.target),
            None => String::new(),
        };
        println!(
            "RESULT {} {}: {} {}{base}{ratio}{met})",
            self.id,
            self.figure,
            fmt(self.value),
            self.unit
        );
        let line = json!({
            "id": self.id, "figure": self.figure, "value": finite(self.value), "unit": self.unit,
            "baseline": self.baseline.map(finite), "baseline_label": self.baseline_label,
            "ratio": self.ratio.map(finite), "target": self.target, "met": self.met,
            "note": self.note,
        });
        let path = out_dir().join("results.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("opening results.jsonl");
        writeln!(f, "{line}").expect("writing results.jsonl");
    }
}

fn finite(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

pub fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The q-quantile (0..=1) of unsorted samples (nearest rank).
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

pub fn median(samples: &[f64]) -> f64 {
    quantile(samples, 0.5)
}

/// CPU time this thread has run, in seconds (/proc/thread-self/schedstat, nanoseconds): what
/// `openssl speed` reports rates against too, so a busy machine does not count against us.
pub fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns / 1e9)
}

/// User + system CPU seconds of a whole process (all threads), from /proc/PID/stat.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

/// The kernel's count of connections dropped because a listener's accept queue was full
/// (`TcpExt: ListenOverflows` in /proc/net/netstat; system-wide). Each such client waits
/// for a SYN retransmit (1 s, then 3 s, ...).
pub fn listen_overflows() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").expect("reading /proc/net/netstat");
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        panic!("no TcpExt lines in /proc/net/netstat");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .expect("TcpExt ListenOverflows in /proc/net/netstat")
}

/// A `/proc/PID/status` field in kB (VmRSS, VmHWM).
pub fn status_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN)
}

#[path = "../../tests/common/ports.rs"]
mod ports;
pub use ports::free_port;

/// The local stack started by scripts/bench.sh (`BENCH_STACK_DIR`, default target/bench-stack).
pub struct Stack {
    pub env: HashMap<String, String>,
}

impl Stack {
    pub fn from_env() -> Stack {
        let dir = std::env::var_os("BENCH_STACK_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(REPO).join("target/bench-stack"));
        let path = dir.join("env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "reading {}: {e}; start the stack first (scripts/bench.sh does)",
                path.display()
            )
        });
        let env = text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches(['"', '\'']).to_owned()))
            .collect();
        Stack { env }
    }

    pub fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from the stack env"))
    }

    pub async fn kube(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(self.get("KUBECONFIG")).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    }
}

/// A dev signing key and its self-signed certificate (shaped like SNS's), written once under
/// the output directory; the service pins it with `--sns-signing-cert`.
pub struct DevKey {
    pub key_path: PathBuf,
    pub cert_path: PathBuf,
    pub key: ssm_resync::sns::sign::SigningKey,
}

impl DevKey {
    pub fn ensure() -> DevKey {
        let dir = out_dir().join("devcert");
        std::fs::create_dir_all(&dir).unwrap();
        let (key_path, cert_path) = (dir.join("key.pem"), dir.join("cert.pem"));
        if !key_path.exists() || !cert_path.exists() {
            let dc = ssm_resync::sns::sign::dev_cert(30).expect("dev certificate");
            std::fs::write(&key_path, dc.key_pem).unwrap();
            std::fs::write(&cert_path, dc.cert_pem).unwrap();
        }
        let key = ssm_resync::sns::sign::SigningKey::from_file(&key_path.to_string_lossy())
            .expect("dev key");
        DevKey {
            key_path,
            cert_path,
            key,
        }
    }

    pub fn pin_arg(&self) -> String {
        format!("--sns-signing-cert={CERT_URL}={}", self.cert_path.display())
    }

    /// A signed Notification carrying a Parameter Store Change of `parameter`, stamped `at`
    /// (SNS stamps a message when it publishes it, just before delivery).
    pub fn change(&self, topic: &str, parameter: &str, at: time::OffsetDateTime) -> String {
        let event = ssm_resync::sample::parameter_store_change(
            parameter,
            "Update",
            "us-east-1",
            "123456789012",
        );
        let mut env = ssm_resync::sample::notification(event.to_string(), topic, CERT_URL, None);
        env.timestamp = ssm_resync::sns::sign::sns_timestamp(at);
        self.key.sign_envelope(&mut env);
        serde_json::to_string(&env).unwrap()
    }
}

/// A running `ssm-resync serve` (release build), killed on drop.
pub struct Service {
    child: Child,
    pub pid: u32,
    pub url: String,
    pub admin: String,
    pub log: PathBuf,
    pub spawned: Instant,
    http: reqwest::Client,
}

impl Service {
    /// Starts the service against the stack's API server with the stack topic allowed and
    /// the dev certificate pinned; `extra` flags are appended. Does not wait for readiness.
    pub fn spawn(stack: &Stack, dev: &DevKey, name: &str, extra: &[String]) -> Service {
        let (port, admin) = (free_port(), free_port());
        let log = out_dir().join(format!("{name}.log"));
        // BENCH_SERVICE_BIN: another build of the service (e.g. other profile settings), for
        // A/B experiments against the same stack and generator.
        let bin = std::env::var("BENCH_SERVICE_BIN").unwrap_or_else(|_| SERVICE_BIN.into());
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--admin-listen=127.0.0.1:{admin}"))
            .arg(format!("--topic-arn={}", stack.get("SSM_RESYNC_TOPIC_ARN")))
            // A bench that pins another certificate for the same URL (the stack's, which
            // moto signs SNS deliveries with) passes its own --sns-signing-cert.
            .args(
                (!extra.iter().any(|a| a.starts_with("--sns-signing-cert=")))
                    .then(|| dev.pin_arg()),
            )
            .args(extra)
            // Experiments: extra flags for every service started, e.g. "--events=false".
            .args(
                std::env::var("BENCH_SERVICE_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Ok(filter) = std::env::var("BENCH_RUST_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        for k in [
            "KUBECONFIG",
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            cmd.env(k, stack.get(k));
        }
        let spawned = Instant::now();
        let child = cmd.spawn().expect("spawning ssm-resync serve");
        Service {
            pid: child.id(),
            child,
            url: format!("http://127.0.0.1:{port}/sns"),
            admin: format!("http://127.0.0.1:{admin}"),
            log,
            spawned,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    /// Polls /readyz every 5 ms; returns the time from spawn to the first 200.
    pub async fn wait_ready(&mut self, within: Duration) -> Duration {
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/readyz", self.admin))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                && r.status() == 200
            {
                return self.spawned.elapsed();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "ssm-resync serve exited ({status}); log {}:\n{}",
                    self.log.display(),
                    tail(&self.log)
                );
            }
            assert!(
                self.spawned.elapsed() < within,
                "service not ready within {within:?}; log {}:\n{}",
                self.log.display(),
                tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one series, e.g. `ssm_resync_patches_total{result="applied"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }

    pub fn rss_kib(&self) -> f64 {
        status_kib(self.pid, "VmRSS")
    }

    pub fn cpu_seconds(&self) -> f64 {
        process_cpu_seconds(self.pid)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// POSTs a body to the service the way SNS does; returns the status and the JSON answer.
pub async fn post(client: &reqwest::Client, url: &str, body: String) -> (u16, Value) {
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut req = client
        .post(url)
        .header("content-type", "text/plain; charset=UTF-8")
        .body(body);
    for (h, f) in [
        ("x-amz-sns-message-type", "Type"),
        ("x-amz-sns-message-id", "MessageId"),
        ("x-amz-sns-topic-arn", "TopicArn"),
    ] {
        if let Some(x) = v.get(f).and_then(Value::as_str) {
            req = req.header(h, x);
        }
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        }
        Err(e) => {
            // reqwest's Display leaves out the cause (refused, reset, timed out): the chain.
            let mut chain = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                chain += &format!(": {c}");
                cause = c.source();
            }
            (0, json!({"error": chain}))
        }
    }
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|x| x.1.trim().to_owned())
            })
        })
        .unwrap_or_default();
    let n = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{n} cores, {cpu}")
}
