//! [`Replica`]: `ssm-resync serve` on fixed ports, so it can be killed (SIGKILL) and started
//! again in place, as a pod's container restarts: the reliability tests and the soak.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Stack;
use crate::ports::free_port;
use crate::service::{no_sweep_unless_asked, scrape};

/// `ssm-resync serve` on fixed ports, so it can be killed and started again in place.
pub struct Replica {
    bin: String,
    child: Option<Child>,
    port: u16,
    admin: u16,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: std::path::PathBuf,
}

impl Replica {
    /// Not started yet ([`Replica::start`]). `bin` is the service's executable; the
    /// environment's `RELIABILITY_SERVICE_BIN` replaces it (to measure another build, e.g. a
    /// release before a change).
    pub fn new(
        bin: &str,
        stack: &Stack,
        topics: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
        dir: &std::path::Path,
    ) -> Replica {
        let mut args: Vec<String> = topics.iter().map(|t| format!("--topic-arn={t}")).collect();
        args.extend(no_sweep_unless_asked(extra).map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut full: Vec<(String, String)> = [
            "KUBECONFIG",
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "SSM_RESYNC_SNS_SIGNING_CERT",
        ]
        .iter()
        .map(|k| (k.to_string(), stack.get(k).to_owned()))
        .collect();
        full.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let log = dir.join(format!("serve-{}.log", free_port()));
        Replica {
            bin: bin.to_owned(),
            child: None,
            port: free_port(),
            admin: free_port(),
            args,
            env: full,
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn admin(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin)
    }

    pub async fn start(&mut self) {
        // RELIABILITY_SERVICE_BIN: measure another build (e.g. a release before a change).
        let bin = std::env::var("RELIABILITY_SERVICE_BIN").unwrap_or_else(|_| self.bin.clone());
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg(format!("--listen=127.0.0.1:{}", self.port))
            .arg(format!("--admin-listen=127.0.0.1:{}", self.admin))
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,ssm_resync=debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .unwrap(),
            );
        self.child = Some(cmd.spawn().unwrap());
        self.wait_ready(Duration::from_secs(30)).await;
    }

    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.ready().await {
            assert!(
                Instant::now() < deadline,
                "not ready in {within:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn ready(&self) -> bool {
        matches!(reqwest::get(format!("{}/readyz", self.admin())).await, Ok(r) if r.status() == 200)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// The exit status once the process has exited (it must have been started).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn metric(&self, series: &str) -> f64 {
        scrape(&self.admin(), series).await
    }

    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.logs());
        }
    }
}
