//! What the bench binaries share: result rows (printed and appended to
//! `$BENCH_OUT/results.jsonl`, which `scripts/bench.sh` turns into the summary table),
//! quantiles, CPU-time and RSS readings from /proc, the dev signing key the benches' services
//! pin, the `loadgen` executable, and the counting allocator ([`counting`]). The bench's
//! service is [`crate::Service::bench`], its stack [`crate::Stack::bench`].

pub mod counting;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::REPO;
use crate::fixtures::change_notification;

pub const CERT_URL: &str = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef0123456789abcdef.pem";

/// The `loadgen` executable (harness/src/bin/loadgen.rs): a binary of this package, so Cargo
/// does not hand its path to the product's benches (`CARGO_BIN_EXE_*` names only a package's
/// own binaries). It is taken from the bench's own target directory: the bench runs as
/// `target/<profile>/deps/<bench>-<hash>`, and `cargo build --release -p
/// ssm-resync-harness --bin loadgen` (scripts/bench.sh runs it first) leaves
/// `target/<profile>/loadgen` next to `deps/`.
pub fn loadgen_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the bench's own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("loadgen"))
        .expect("the bench runs from target/<profile>/deps");
    assert!(
        bin.is_file(),
        "{} missing: build it first with `cargo build --release -p ssm-resync-harness --bin loadgen` (scripts/bench.sh does)",
        bin.display()
    );
    bin
}

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
        change_notification(&self.key, topic, CERT_URL, parameter, Some(at))
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
