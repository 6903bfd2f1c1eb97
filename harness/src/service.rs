//! A real `ssm-resync serve` child process over loopback ([`Service`]), and talking to it the
//! way SNS and Prometheus do.
//!
//! The executable is the caller's (`bin`): Cargo names it, with
//! `env!("CARGO_BIN_EXE_ssm-resync")`, only to the product's own integration tests and
//! benches, so each test or bench binary passes that path in.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Stack;
use crate::bench::{self, DevKey};
use crate::ports::free_port;

/// The stack's variables a service gets (the API server and moto).
const STACK_VARS: [&str; 5] = [
    "KUBECONFIG",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
];

/// A running `ssm-resync serve`, killed on drop.
pub struct Service {
    child: Child,
    pub pid: u32,
    /// `http://127.0.0.1:<port>`: the public port (`POST /sns` is [`Service::sns_url`]).
    pub url: String,
    /// `http://127.0.0.1:<port>`: /healthz, /readyz, /metrics.
    pub admin: String,
    pub log: PathBuf,
    /// When the process was spawned (start-up is measured from here).
    pub spawned: Instant,
    http: reqwest::Client,
    /// How often `wait_ready` polls /readyz.
    poll: Duration,
    /// A test's log lives as long as the service, and is printed if the test fails; a
    /// bench's is kept in `$BENCH_OUT`.
    _logdir: Option<tempfile::TempDir>,
}

impl Service {
    /// `bin serve` against `stack`, allowing `topics`, with `extra` flags
    /// (`--sweep-interval=0s` unless they set it: [`no_sweep_unless_asked`]), the stack's
    /// SNS signing certificate pinned and `RUST_LOG=info,ssm_resync=debug`; returns once it
    /// is ready.
    pub async fn start(bin: &str, stack: &Stack, topics: &[&str], extra: &[&str]) -> Service {
        Self::start_with(bin, stack, topics, extra, &[]).await
    }

    /// As `start`, with environment variables set after the stack's (e.g. a proxy).
    pub async fn start_with(
        bin: &str,
        stack: &Stack,
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
        for k in STACK_VARS {
            cmd.env(k, stack.get(k));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut svc = Self::spawn(cmd, port, admin, log, Some(logdir));
        svc.poll = Duration::from_millis(50);
        svc.wait_ready(Duration::from_secs(30)).await;
        svc
    }

    /// A bench's service: `bin serve` (or `BENCH_SERVICE_BIN`'s, another build to measure
    /// against the same stack and generator) against the bench stack's API server, with the
    /// stack's topic allowed and `dev`'s certificate pinned; `extra` flags are appended, then
    /// `BENCH_SERVICE_ARGS`'s. Logs to `$BENCH_OUT/<name>.log`, `RUST_LOG` from
    /// `BENCH_RUST_LOG`. Does not wait for readiness: [`Service::wait_ready`] measures it.
    pub fn bench(bin: &str, stack: &Stack, dev: &DevKey, name: &str, extra: &[String]) -> Service {
        let (port, admin) = (free_port(), free_port());
        let log = bench::out_dir().join(format!("{name}.log"));
        // BENCH_SERVICE_BIN: another build of the service (e.g. other profile settings), for
        // A/B experiments against the same stack and generator.
        let bin = std::env::var("BENCH_SERVICE_BIN").unwrap_or_else(|_| bin.into());
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
        for k in STACK_VARS {
            cmd.env(k, stack.get(k));
        }
        Self::spawn(cmd, port, admin, log, None)
    }

    fn spawn(
        mut cmd: Command,
        port: u16,
        admin: u16,
        log: PathBuf,
        logdir: Option<tempfile::TempDir>,
    ) -> Service {
        let spawned = Instant::now();
        let child = cmd.spawn().expect("spawning ssm-resync serve");
        Service {
            pid: child.id(),
            child,
            url: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin}"),
            log,
            spawned,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            poll: Duration::from_millis(5),
            _logdir: logdir,
        }
    }

    /// `POST /sns`'s URL.
    pub fn sns_url(&self) -> String {
        format!("{}/sns", self.url)
    }

    /// Polls /readyz (every 5 ms for a bench, 50 ms for a test); returns the time from spawn
    /// to the first 200. Fails if the process exits or `within` passes first.
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
                    self.log_for_failure()
                );
            }
            assert!(
                self.spawned.elapsed() < within,
                "service not ready within {within:?}; log {}:\n{}",
                self.log.display(),
                self.log_for_failure()
            );
            tokio::time::sleep(self.poll).await;
        }
    }

    /// A test's whole log (short-lived, and gone with the test); a bench's last lines (it
    /// stays in `$BENCH_OUT`).
    fn log_for_failure(&self) -> String {
        if self._logdir.is_some() {
            self.logs()
        } else {
            tail(&self.log)
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's resident set now and at its peak (`VmRSS`, `VmHWM`), in bytes.
    pub fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
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

    /// `VmRSS` in KiB (NaN once the process is gone).
    pub fn rss_kib(&self) -> f64 {
        bench::status_kib(self.pid, "VmRSS")
    }

    /// User + system CPU seconds of the process.
    pub fn cpu_seconds(&self) -> f64 {
        bench::process_cpu_seconds(self.pid)
    }

    /// POSTs raw bytes with exactly the given headers.
    pub async fn post_raw(&self, body: reqwest::Body, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = reqwest::Client::new().post(self.sns_url()).body(body);
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
        self.http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one sample line, e.g. `ssm_resync_patches_total{result="applied"}`; 0
    /// when absent or when the scrape fails.
    pub async fn metric(&self, series: &str) -> f64 {
        scrape(&self.admin, series).await
    }

    /// As [`Service::metric`], but a failed scrape fails: a bench's figure must not read a
    /// failed scrape as 0.
    pub async fn metric_or_fail(&self, series: &str) -> f64 {
        sample(&self.metrics().await, series)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self._logdir.is_some() && std::thread::panicking() {
            eprintln!("--- ssm-resync log ---\n{}", self.logs());
        }
    }
}

/// `--sweep-interval=0s` unless `args` set it: every service sees the whole shared cluster,
/// and a sweep would force other tests' readers whose parameters they just changed (tests
/// of the sweep ask for it, on a private stack).
pub fn no_sweep_unless_asked(args: &[&str]) -> Option<&'static str> {
    (!args.iter().any(|a| a.starts_with("--sweep-interval"))).then_some("--sweep-interval=0s")
}

/// Accepts and counts TCP connections, answering nothing: stands in for an HTTP(S) proxy or an
/// AWS endpoint the service must not (or may only so often) reach.
pub fn counting_listener() -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", l.local_addr().unwrap());
    let n = Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            c.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (addr, n)
}

/// POSTs a body to `url` (a `.../sns`) the way SNS does: text/plain, the x-amz-sns-* headers
/// taken from the body. Returns the status and the JSON answer; a request that got no answer
/// is status 0 with `{"error": <the error and its causes>}`.
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

/// POSTs a body to `<base>/sns` the way SNS does; fails the test if nothing answers.
pub async fn post_sns(base: &str, body: &str) -> (u16, Value) {
    let url = format!("{base}/sns");
    let (status, answer) = post(&reqwest::Client::new(), &url, body.to_owned()).await;
    assert_ne!(status, 0, "POST {url}: {}", answer["error"]);
    (status, answer)
}

/// One sample's value from an OpenMetrics text, e.g.
/// `ssm_resync_patches_total{result="applied"}`; 0 when absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| {
            v.split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{series}: no value in {v:?}"))
        })
        .unwrap_or(0.0)
}

/// Scrapes `<admin>/metrics` for one sample (0 when the scrape fails).
pub async fn scrape(admin: &str, series: &str) -> f64 {
    match reqwest::get(format!("{admin}/metrics")).await {
        Ok(r) => sample(&r.text().await.unwrap_or_default(), series),
        Err(_) => 0.0,
    }
}

/// The last 30 lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
